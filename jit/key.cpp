#include "jit/key.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <functional>
#include <sstream>

#include "core/shape.h"

namespace kiln::jit {

namespace {

struct Hasher {
  uint64_t h = 0x243f6a8885a308d3ull;
  static uint64_t mix(uint64_t x) {  // splitmix64 finaliser
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
  }
  void add(uint64_t x) { h = mix(h ^ x) + 0x632be59bd9b4e019ull; }
  void add_double(double d) { add(std::bit_cast<uint64_t>(d)); }
  void add_str(const std::string& s) { add(std::hash<std::string>{}(s)); }
};

constexpr uint64_t kSymbol = 0x5359'4d00'0000'0000ull;

bool is_scalar_fill(const Graph& g, const Node& n) {
  return n.kind == NodeKind::Mutate && n.op->name == "fill" && g.value(n.target).sizes.empty();
}

struct KeyWriter {
  const Graph& g;
  const KeySpec& spec;
  Hasher hs;

  void add_int(int64_t x) {
    if (x >= 2 && spec.everything_dynamic) {  // the skeleton: any size may have changed
      hs.add(kSymbol - 2);
      return;
    }
    if (x >= 2 && !spec.symbols.empty()) {
      auto it = std::find(spec.symbols.begin(), spec.symbols.end(), x);
      if (it != spec.symbols.end()) {
        hs.add(kSymbol + static_cast<uint64_t>(it - spec.symbols.begin()));
        return;
      }
    }
    hs.add(static_cast<uint64_t>(x));
  }
  void add_scalar(const Scalar& s) {
    hs.add(static_cast<uint64_t>(s.kind()));
    hs.add_double(s.to_double());
    if (s.kind() == Scalar::Kind::Int) hs.add(static_cast<uint64_t>(s.to_int()));
  }
  void add_attr(const Attr& a) {
    hs.add(a.index());
    std::visit(
        [&](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, std::monostate>) {
          } else if constexpr (std::is_same_v<T, int64_t>) {
            add_int(v);
          } else if constexpr (std::is_same_v<T, double>) {
            hs.add_double(v);
          } else if constexpr (std::is_same_v<T, bool>) {
            hs.add(v);
          } else if constexpr (std::is_same_v<T, Shape>) {
            hs.add(v.size());
            for (int64_t x : v) add_int(x);
          } else if constexpr (std::is_same_v<T, Scalar>) {
            add_scalar(v);
          } else if constexpr (std::is_same_v<T, DType>) {
            hs.add(static_cast<uint64_t>(v));
          } else {
            hs.add_str(v);
          }
        },
        a);
  }
  // `input`: the graph input index of an Input node's value, else -1.
  void add_value(int id, int input) {
    const Value& v = g.value(id);
    hs.add(static_cast<uint64_t>(v.dtype));
    hs.add(static_cast<uint64_t>(v.device.type()) * 131 + static_cast<uint64_t>(v.device.index() + 1));
    hs.add(v.sizes.size());
    hs.add(static_cast<uint64_t>(v.storage) * 2 + v.wrapped);
    const bool is_input = input >= 0;
    if (spec.everything_dynamic) {
      if (is_input) hs.add(is_contiguous_strides(v.sizes, v.strides));
      return;
    }
    const bool dynamic = !spec.dynamic_dims.empty();
    if (!is_input && dynamic) return;  // derived from inputs and attributes
    if (dynamic) {
      // By position: a dynamic dim is a symbol whatever its value (0 and 1 stay specialised);
      // a static dim is its value, even when it equals a dynamic dim's current value (matching
      // by value made batch == some feature size a different key, i.e. another compile).
      for (size_t d = 0; d < v.sizes.size(); ++d) {
        const int64_t x = v.sizes[d];
        if (x >= 2 && spec.dynamic_dims.count({input, static_cast<int64_t>(d)})) hs.add(kSymbol - 3);
        else hs.add(static_cast<uint64_t>(x));
      }
    } else {
      for (int64_t x : v.sizes) add_int(x);
    }
    // Over an input whose offset varies, offsets count from that input's own.
    const StorageInfo& st = g.storages[static_cast<size_t>(v.storage)];
    const bool free_offset = st.input >= 0 && spec.dynamic_offsets.count(st.input);
    const int64_t offset = free_offset ? v.offset - g.value(g.inputs[static_cast<size_t>(st.input)]).offset : v.offset;
    if (dynamic) {
      hs.add(is_contiguous_strides(v.sizes, v.strides));
      hs.add(offset == 0);
    } else {
      for (int64_t x : v.strides) hs.add(static_cast<uint64_t>(x));
      hs.add(static_cast<uint64_t>(offset));
    }
  }
};

}  // namespace

GraphFacts graph_facts(const Graph& g) {
  GraphFacts f;
  for (int v : g.inputs) {
    f.input_sizes.push_back(g.value(v).sizes);
    f.input_offsets.push_back(g.value(v).offset);
  }
  for (size_t i = 0; i < g.nodes.size(); ++i)
    if (is_scalar_fill(g, g.nodes[i])) f.fills.emplace_back(static_cast<int>(i), g.nodes[i].attrs.scalar(0));
  return f;
}

uint64_t graph_key(const Graph& g, const KeySpec& spec, bool grad_mode, const std::vector<char>& training,
                   const std::vector<std::string>& facts) {
  KeyWriter w{g, spec, {}};
  w.hs.add(grad_mode);
  w.hs.add(training.size());
  for (char t : training) w.hs.add(static_cast<uint64_t>(t));
  for (const std::string& f : facts) w.hs.add_str(f);
  w.hs.add(g.nodes.size());
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    w.hs.add(static_cast<uint64_t>(n.kind));
    w.hs.add(n.op ? std::hash<std::string>{}(n.op->name) : 0);
    w.hs.add(n.inputs.size());
    for (int v : n.inputs) w.hs.add(static_cast<uint64_t>(v + 1));
    w.hs.add(static_cast<uint64_t>(n.target + 1));
    if (n.kind == NodeKind::Mutate) w.hs.add(static_cast<uint64_t>(n.result));
    const bool symbolic_fill =
        is_scalar_fill(g, n) && (spec.everything_dynamic || spec.dynamic_fills.count(static_cast<int>(i)));
    const auto rng = n.op ? rng_attr_indices(*n.op) : std::pair{-1, -1};
    for (size_t a = 0; a < n.attrs.size(); ++a) {
      if (static_cast<int>(a) == rng.first || static_cast<int>(a) == rng.second) continue;  // bound per run
      if (symbolic_fill && a == 0) {
        w.hs.add(kSymbol - 1);
        continue;
      }
      w.add_attr(n.attrs[a]);
    }
    for (int v : n.outputs) w.add_value(v, n.kind == NodeKind::Input ? n.input_index : -1);
    if (n.kind == NodeKind::Constant) w.hs.add(reinterpret_cast<uintptr_t>(n.constant.impl()));
  }
  w.hs.add(g.storages.size());
  for (const StorageInfo& s : g.storages) {
    w.hs.add(static_cast<uint64_t>(s.input + 1));
    w.hs.add(s.output * 2 + s.constant);
  }
  return w.hs.h;
}

std::string first_difference(const Graph& a, const Graph& b) {
  std::istringstream sa(a.str()), sb(b.str());
  std::string la, lb;
  int line = 0;
  while (true) {
    bool ga = static_cast<bool>(std::getline(sa, la)), gb = static_cast<bool>(std::getline(sb, lb));
    if (!ga && !gb) return "no textual difference (attributes hidden from the printer differ)";
    if (!ga || !gb || la != lb) {
      auto trim = [](std::string s) {
        s.erase(0, s.find_first_not_of(' '));
        return s.empty() ? std::string("(end of graph)") : s;
      };
      return "line " + std::to_string(line) + ": `" + trim(ga ? la : "") + "` became `" + trim(gb ? lb : "") + "`";
    }
    ++line;
  }
}

Plan::RngKeys rng_keys(const Graph& g) {
  Plan::RngKeys keys;
  for (const Node& n : g.nodes) {
    if (!n.op) continue;
    auto [seed, offset] = rng_attr_indices(*n.op);
    if (seed >= 0) keys.emplace_back(n.attrs.i(static_cast<size_t>(seed)), n.attrs.i(static_cast<size_t>(offset)));
  }
  return keys;
}

}  // namespace kiln::jit
