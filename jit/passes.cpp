#include "jit/passes.h"

#include <algorithm>
#include <bit>
#include <map>
#include <optional>
#include <utility>

#include "core/ops.h"
#include "core/profiler.h"
#include "core/shape.h"

namespace kiln::jit {

namespace {

// Folded results live in the compiled graph for good; bigger ones would bloat it for little gain.
constexpr int64_t kMaxFoldNumel = 4096;

size_t idx(int i) { return static_cast<size_t>(i); }

// Random rows carry their Philox key as attributes, which each run advances like eager does;
// they are never folded, merged or dropped, so a compiled run draws what eager would.
bool is_random(const OpDef* op) {
  return op && std::find(op->attr_names.begin(), op->attr_names.end(), "seed") != op->attr_names.end();
}

bool observable(const Graph& g, int storage) {
  const StorageInfo& s = g.storages.at(idx(storage));
  return s.input >= 0 || s.output;
}

int storage_of(const Graph& g, int v) { return g.value(v).storage; }

// Node indices of the Mutates writing each storage, in program order.
std::vector<std::vector<int>> writes_by_storage(const Graph& g) {
  std::vector<std::vector<int>> w(g.storages.size());
  for (size_t i = 0; i < g.nodes.size(); ++i)
    if (g.nodes[i].kind == NodeKind::Mutate) w[idx(storage_of(g, g.nodes[i].target))].push_back(static_cast<int>(i));
  return w;
}

// Whether a write lies in the node range (lo, hi].
bool written_in(const std::vector<int>& writes, int lo, int hi) {
  auto it = std::upper_bound(writes.begin(), writes.end(), lo);
  return it != writes.end() && *it <= hi;
}

// Replaces the node list, re-pointing each value at its defining node (-1 once its node is gone).
void set_nodes(Graph& g, std::vector<Node> nodes) {
  for (Value& v : g.values) v.node = -1;
  for (size_t i = 0; i < nodes.size(); ++i)
    for (int v : nodes[i].outputs) g.values.at(idx(v)).node = static_cast<int>(i);
  g.nodes = std::move(nodes);
}

void drop_nodes(Graph& g, const std::vector<char>& drop) {
  std::vector<Node> kept;
  kept.reserve(g.nodes.size());
  for (size_t i = 0; i < g.nodes.size(); ++i)
    if (!drop[i]) kept.push_back(std::move(g.nodes[i]));
  set_nodes(g, std::move(kept));
}

// Points a node's reads at replacement values (repl[v] == v when v is kept).
void apply_replacements(Node& n, const std::vector<int>& repl) {
  for (int& v : n.inputs)
    if (v >= 0) v = repl[idx(v)];
  if (n.target >= 0) n.target = repl[idx(n.target)];
}

std::vector<int> identity_map(size_t n) {
  std::vector<int> m(n);
  for (size_t i = 0; i < n; ++i) m[i] = static_cast<int>(i);
  return m;
}

bool same_geometry(const Value& a, const Value& b) {
  return a.sizes == b.sizes && a.strides == b.strides && a.offset == b.offset && a.dtype == b.dtype &&
         a.device == b.device;
}

// Floats compare by bits: 0.0 and -0.0 are different attributes (fill values), NaN equals itself.
bool attr_equal(const Attr& a, const Attr& b) {
  if (a.index() != b.index()) return false;
  if (const double* x = std::get_if<double>(&a))
    return std::bit_cast<uint64_t>(*x) == std::bit_cast<uint64_t>(std::get<double>(b));
  if (const Scalar* x = std::get_if<Scalar>(&a)) {
    const Scalar& y = std::get<Scalar>(b);
    if (x->kind() != y.kind()) return false;
    if (x->is_floating_point())
      return std::bit_cast<uint64_t>(x->to_double()) == std::bit_cast<uint64_t>(y.to_double());
    return x->to_int() == y.to_int();
  }
  return a == b;
}

bool attrs_equal(const Attrs& a, const Attrs& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!attr_equal(a[i], b[i])) return false;
  return true;
}

KernelFn cpu_kernel(const OpDef& op) { return op.kernels[static_cast<int>(DeviceType::CPU)]; }

// Runs a row's CPU kernel directly: passes run at compile time, outside dispatch and autograd.
void run_cpu(const OpDef& op, const TensorList& inputs, TensorList& outs, const Attrs& attrs) {
  KernelFn k = cpu_kernel(op);
  KILN_INTERNAL_ASSERT(k != nullptr, "jit passes: op ", op.name, " has no CPU kernel");
  k(op, inputs, outs, attrs);
}

// The realised tensors of constant storages, as written by their Constant nodes.
std::vector<Tensor> constant_roots(const Graph& g) {
  std::vector<Tensor> roots(g.storages.size());
  for (const Node& n : g.nodes)
    if (n.kind == NodeKind::Constant) roots[idx(storage_of(g, n.outputs[0]))] = n.constant;
  return roots;
}

// A constant value as a tensor: the root itself, or a view of the root's storage.
Tensor constant_tensor(const Graph& g, const std::vector<Tensor>& roots, int v) {
  const Value& val = g.value(v);
  const Tensor& root = roots[idx(val.storage)];
  if (root.sizes() == IntArrayRef(val.sizes) && root.strides() == IntArrayRef(val.strides) &&
      root.storage_offset() == val.offset && root.dtype() == val.dtype)
    return root;  // keeps the wrapped-number flag that promotion looks at
  auto impl = std::make_shared<TensorImpl>(root.impl()->storage(), val.dtype, val.sizes, val.strides, val.offset);
  impl->set_wrapped_number(val.wrapped);
  return Tensor(std::move(impl));
}

bool is_constant(const Graph& g, const std::vector<Tensor>& roots, int v) {
  int s = storage_of(g, v);
  return g.storages[idx(s)].constant && roots[idx(s)].defined();
}

// The one number every element of `t` holds, if there is one.
std::optional<double> uniform_elements(const Tensor& t) {
  if (t.numel() == 0 || !t.device().is_cpu()) return std::nullopt;
  TensorList out{empty(t.sizes(), DType::Float64)};
  run_cpu(op_def("copy"), {t}, out, Attrs{DType::Float64});
  const double* p = out[0].data_ptr<double>();
  for (int64_t i = 1; i < out[0].numel(); ++i)
    if (p[i] != p[0]) return std::nullopt;
  return p[0];
}

int64_t numel_of(const Value& v) { return shape_numel(v.sizes); }

size_t value_nbytes(const Value& v) { return static_cast<size_t>(numel_of(v)) * itemsize(v.dtype); }

bool is_dense(const Value& v) { return v.offset == 0 && is_contiguous_strides(v.sizes, v.strides); }

// Whether `w` is a fill Mutate that covers all of its target's storage.
bool is_whole_fill(const Graph& g, const Node& w) {
  // A fill whose value is bound at each run (a dynamic scalar) is not a compile-time constant.
  if (w.kind != NodeKind::Mutate || w.op->name != "fill" || w.runtime_slot >= 0) return false;
  const Value& t = g.value(w.target);
  return is_dense(t) && value_nbytes(t) >= g.storages[idx(t.storage)].nbytes;
}

// What every element of value `v` holds just before node `at`, if that is one number: a constant
// of equal elements, or an internal buffer whose only earlier write fills all of it.
std::optional<double> uniform_value(const Graph& g, const std::vector<Tensor>& roots,
                                    const std::vector<std::vector<int>>& writes, int v, int at) {
  if (v < 0) return std::nullopt;
  int s = storage_of(g, v);
  if (is_constant(g, roots, v)) return uniform_elements(constant_tensor(g, roots, v));
  if (g.storages[idx(s)].input >= 0) return std::nullopt;
  const std::vector<int>& w = writes[idx(s)];
  auto end = std::lower_bound(w.begin(), w.end(), at);
  if (end - w.begin() != 1) return std::nullopt;
  const Node& fill = g.nodes[idx(w.front())];
  if (!is_whole_fill(g, fill)) return std::nullopt;
  return fill.attrs.scalar(0).to_double();
}

}  // namespace

// --- dead code -------------------------------------------------------------------------------

Graph eliminate_dead_code(Graph g) {
  // Backward: a node stays if a later kept node uses its outputs, or if it writes a storage that
  // is observable or read later (through any value on it, views included).
  std::vector<char> used(g.values.size(), 0), read(g.storages.size(), 0), drop(g.nodes.size(), 0);
  for (size_t i = g.nodes.size(); i-- > 0;) {
    const Node& n = g.nodes[i];
    bool keep = n.kind == NodeKind::Input || is_random(n.op);
    if (n.kind == NodeKind::Mutate) {
      int s = storage_of(g, n.target);
      keep = keep || observable(g, s) || read[idx(s)];
    } else {
      for (int v : n.outputs)
        keep = keep || used[idx(v)] || (n.kind != NodeKind::View && g.storages[idx(storage_of(g, v))].output);
    }
    if (!keep) {
      drop[i] = 1;
      continue;
    }
    for (int v : n.inputs) {
      if (v < 0) continue;  // an absent optional input
      used[idx(v)] = 1;
      read[idx(storage_of(g, v))] = 1;
    }
    if (n.target >= 0) used[idx(n.target)] = 1;
  }
  drop_nodes(g, drop);
  return g;
}

// --- common subexpressions -------------------------------------------------------------------

namespace {

bool same_outputs(const Graph& g, const Node& a, const Node& b) {
  if (a.outputs.size() != b.outputs.size()) return false;
  for (size_t k = 0; k < a.outputs.size(); ++k)
    if (!same_geometry(g.value(a.outputs[k]), g.value(b.outputs[k]))) return false;
  return true;
}

// Whether node `j` may reuse the outputs of the equal earlier node `i`.
bool can_merge(const Graph& g, const std::vector<std::vector<int>>& writes, int i, int j) {
  const Node& a = g.nodes[idx(i)];
  const Node& b = g.nodes[idx(j)];
  if (!attrs_equal(a.attrs, b.attrs) || !same_outputs(g, a, b)) return false;
  if (b.kind == NodeKind::View) return true;  // same geometry over the same storage
  // The inputs must hold the same contents at both nodes...
  for (int v : a.inputs)
    if (v >= 0 && written_in(writes[idx(storage_of(g, v))], i, j)) return false;
  // ...and, once merged, the two results alias: neither may be written, and b's own storage
  // must not be one a tensor outside the graph holds.
  for (size_t k = 0; k < a.outputs.size(); ++k) {
    int sa = storage_of(g, a.outputs[k]), sb = storage_of(g, b.outputs[k]);
    if (g.storages[idx(sb)].output || !writes[idx(sa)].empty() || !writes[idx(sb)].empty()) return false;
  }
  return true;
}

}  // namespace

Graph eliminate_common_subexpressions(Graph g) {
  const auto writes = writes_by_storage(g);
  std::vector<int> repl = identity_map(g.values.size());
  std::vector<char> drop(g.nodes.size(), 0);
  std::map<std::pair<const OpDef*, std::vector<int>>, std::vector<int>> seen;
  for (size_t j = 0; j < g.nodes.size(); ++j) {
    Node& n = g.nodes[j];
    apply_replacements(n, repl);
    if ((n.kind != NodeKind::Op && n.kind != NodeKind::View) || is_random(n.op)) continue;
    std::vector<int>& same = seen[{n.op, n.inputs}];
    auto hit =
        std::find_if(same.begin(), same.end(), [&](int i) { return can_merge(g, writes, i, static_cast<int>(j)); });
    if (hit == same.end()) {
      same.push_back(static_cast<int>(j));
      continue;
    }
    const Node& first = g.nodes[idx(*hit)];
    for (size_t k = 0; k < n.outputs.size(); ++k) {
      int from = n.outputs[k], to = first.outputs[k];
      repl[idx(from)] = to;
      // Views of the dropped result move onto the kept storage (same layout, so same geometry).
      int sfrom = storage_of(g, from), sto = storage_of(g, to);
      if (sfrom != sto)
        for (Value& v : g.values)
          if (v.storage == sfrom) v.storage = sto;
    }
    drop[j] = 1;
  }
  drop_nodes(g, drop);
  return g;
}

// --- constant folding ------------------------------------------------------------------------

namespace {

Node constant_node(Tensor t, int value, bool wrapped = false) {
  if (wrapped) t.impl()->set_wrapped_number(true);
  Node c;
  c.kind = NodeKind::Constant;
  c.outputs = {value};
  c.constant = std::move(t);
  return c;
}

// The fill Mutate that makes Alloc node `i` a constant, or -1: the buffer is internal, small,
// written exactly once by a fill of all of it, and nothing reads it before that fill.
int foldable_fill(const Graph& g, const std::vector<std::vector<int>>& writes, int i) {
  const Node& n = g.nodes[idx(i)];
  const Value& a = g.value(n.outputs[0]);
  const StorageInfo& s = g.storages[idx(a.storage)];
  if (observable(g, a.storage) || s.constant || !a.device.is_cpu() || numel_of(a) > kMaxFoldNumel) return -1;
  const std::vector<int>& w = writes[idx(a.storage)];
  if (w.size() != 1) return -1;
  const Node& fill = g.nodes[idx(w[0])];
  if (!is_whole_fill(g, fill) || fill.target != n.outputs[0]) return -1;
  for (int k = i + 1; k < w[0]; ++k) {
    const Node& m = g.nodes[idx(k)];
    if (m.kind == NodeKind::View) continue;  // geometry only, no data read
    for (int v : m.inputs)
      if (v >= 0 && storage_of(g, v) == a.storage) return -1;
  }
  return w[0];
}

bool foldable_op(const Graph& g, const std::vector<Tensor>& roots, const std::vector<std::vector<int>>& writes,
                 const Node& n) {
  if (n.kind != NodeKind::Op || is_random(n.op) || !cpu_kernel(*n.op)) return false;
  for (int v : n.inputs)
    if (v < 0 || !is_constant(g, roots, v) || !g.value(v).device.is_cpu()) return false;
  for (int v : n.outputs) {
    const Value& o = g.value(v);
    if (!o.device.is_cpu() || numel_of(o) > kMaxFoldNumel || observable(g, o.storage) ||
        !writes[idx(o.storage)].empty())
      return false;
  }
  return true;
}

}  // namespace

Graph fold_constants(Graph g) {
  const auto writes = writes_by_storage(g);
  std::vector<Tensor> roots = constant_roots(g);
  std::vector<char> folded_fill(g.nodes.size(), 0);
  std::vector<Node> out;
  out.reserve(g.nodes.size());
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    Node& n = g.nodes[i];
    if (folded_fill[i]) continue;
    if (n.kind == NodeKind::Alloc) {
      int w = foldable_fill(g, writes, static_cast<int>(i));
      if (w >= 0) {
        const Node& fill = g.nodes[idx(w)];
        const Value& a = g.value(n.outputs[0]);
        TensorList t{empty(a.sizes, a.dtype)};
        run_cpu(*fill.op, {}, t, fill.attrs);
        roots[idx(a.storage)] = t[0];
        g.storages[idx(a.storage)].constant = true;
        folded_fill[idx(w)] = 1;
        out.push_back(constant_node(t[0], n.outputs[0], a.wrapped));
        continue;
      }
    } else if (foldable_op(g, roots, writes, n)) {
      TensorList inputs, results;
      for (int v : n.inputs) inputs.push_back(constant_tensor(g, roots, v));
      for (int v : n.outputs) results.push_back(empty(g.value(v).sizes, g.value(v).dtype));
      bool ok = true;
      try {
        run_cpu(*n.op, inputs, results, n.attrs);
      } catch (const Error&) {
        ok = false;  // a data-dependent error (index out of range...) belongs to run time
      }
      if (ok) {
        for (size_t k = 0; k < n.outputs.size(); ++k) {
          int s = storage_of(g, n.outputs[k]);
          roots[idx(s)] = results[k];
          g.storages[idx(s)].constant = true;
          out.push_back(constant_node(results[k], n.outputs[k]));
        }
        continue;
      }
    }
    out.push_back(std::move(n));
  }
  set_nodes(g, std::move(out));
  return g;
}

// --- algebraic simplification ----------------------------------------------------------------

namespace {

// For add/sub/mul/div with an identity operand (x + 0, 0 + x, x - 0, x * 1, 1 * x, x / 1), the
// position of x; -1 otherwise. The rows carry no alpha (the front end scales the operand first);
// a row with attributes is left alone. Like XLA, x + 0 -> x gives up the sign of a -0.0 result.
int identity_operand(const Graph& g, const std::vector<Tensor>& roots, const std::vector<std::vector<int>>& writes,
                     const Node& n, int at) {
  if (n.kind != NodeKind::Op || n.inputs.size() != 2 || n.outputs.size() != 1 || n.attrs.size() != 0) return -1;
  const std::string& name = n.op->name;
  const bool additive = name == "add" || name == "sub";
  if (!additive && name != "mul" && name != "div") return -1;
  const double unit = additive ? 0.0 : 1.0;
  const bool commutes = name == "add" || name == "mul";
  auto is_unit = [&](int k) {
    std::optional<double> c = uniform_value(g, roots, writes, n.inputs[idx(k)], at);
    return c && *c == unit;
  };
  if (is_unit(1)) return 0;
  if (commutes && is_unit(0)) return 1;
  return -1;
}

}  // namespace

Graph simplify_algebra(Graph g) {
  const auto writes = writes_by_storage(g);
  const std::vector<Tensor> roots = constant_roots(g);
  const OpDef& as_strided = op_def("as_strided");
  std::vector<int> repl = identity_map(g.values.size());
  std::vector<int> last_use(g.values.size(), -1), values_on(g.storages.size(), 0);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    for (int v : n.inputs)
      if (v >= 0) last_use[idx(v)] = static_cast<int>(i);
    if (n.target >= 0) last_use[idx(n.target)] = static_cast<int>(i);
    for (int v : n.outputs) ++values_on[idx(storage_of(g, v))];
  }
  std::vector<char> drop(g.nodes.size(), 0);
  auto replace = [&](int from, int to, size_t node) {
    repl[idx(from)] = to;
    last_use[idx(to)] = std::max(last_use[idx(to)], last_use[idx(from)]);
    drop[node] = 1;
  };
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    Node& n = g.nodes[i];
    apply_replacements(n, repl);
    const int at = static_cast<int>(i);
    if (n.kind == NodeKind::Op) {
      int k = identity_operand(g, roots, writes, n, at);
      if (k < 0) continue;
      int x = n.inputs[idx(k)], y = n.outputs[0];
      const Value &xv = g.value(x), &yv = g.value(y);
      // y is a fresh buffer; x stands in for it only if nobody can tell the difference: same
      // dtype and shape, y never written or held outside, and x unchanged while y is read.
      if (xv.dtype != yv.dtype || xv.sizes != yv.sizes || xv.device != yv.device) continue;
      if (observable(g, yv.storage) || !writes[idx(yv.storage)].empty() || values_on[idx(yv.storage)] != 1) continue;
      if (written_in(writes[idx(xv.storage)], at, std::max(at, last_use[idx(y)]))) continue;
      replace(y, x, i);
    } else if (n.kind == NodeKind::View) {
      const Node& inner = g.nodes[idx(g.value(n.inputs[0]).node)];
      if (inner.kind != NodeKind::View) continue;
      // Earlier views were already collapsed, so `inner` reads a value that is not a view.
      int root = inner.inputs[0], v = n.outputs[0];
      const Value &rv = g.value(root), &vv = g.value(v);
      if (same_geometry(rv, vv)) {
        replace(v, root, i);
      } else if (rv.dtype == vv.dtype) {
        n.op = &as_strided;
        n.inputs = {root};
        n.attrs = Attrs{vv.sizes, vv.strides, vv.offset};
      }
    }
  }
  drop_nodes(g, drop);
  return g;
}

// --- buffer planning -------------------------------------------------------------------------

size_t BufferPlan::planned_bytes() const {
  size_t total = 0;
  for (size_t b : slot_bytes) total += b;
  return total;
}

BufferPlan plan_buffers(const Graph& g) {
  const size_t ns = g.storages.size();
  std::vector<int> first(ns, -1), last(ns, -1);
  auto touch = [&](int v, int i) {
    size_t s = idx(storage_of(g, v));
    if (first[s] < 0) first[s] = i;
    last[s] = std::max(last[s], i);
  };
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    const int at = static_cast<int>(i);
    for (int v : n.outputs) touch(v, at);
    for (int v : n.inputs)
      if (v >= 0) touch(v, at);
    if (n.target >= 0) touch(n.target, at);
  }
  BufferPlan plan;
  plan.slot_of_storage.assign(ns, -1);
  auto planned = [&](size_t s) {
    const StorageInfo& info = g.storages[s];
    return info.input < 0 && !info.output && !info.constant && first[s] >= 0;
  };
  std::vector<std::vector<size_t>> born(g.nodes.size()), dies(g.nodes.size());
  for (size_t s = 0; s < ns; ++s)
    if (planned(s)) {
      born[idx(first[s])].push_back(s);
      dies[idx(last[s])].push_back(s);
      plan.unplanned_bytes += g.storages[s].nbytes;
    }
  std::vector<Device> slot_device;
  std::vector<int> free_slots;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    // Storages born here get slots before those dying here are released, so a node never writes
    // its result over one of its own operands.
    for (size_t s : born[i]) {
      const StorageInfo& info = g.storages[s];
      // Best fit: the smallest free slot that is big enough, else the largest free one, grown.
      int best = -1;
      for (int slot : free_slots) {
        if (slot_device[idx(slot)] != info.device) continue;
        if (best < 0) {
          best = slot;
          continue;
        }
        size_t have = plan.slot_bytes[idx(slot)], cur = plan.slot_bytes[idx(best)];
        bool fits = have >= info.nbytes, cur_fits = cur >= info.nbytes;
        if (fits ? (!cur_fits || have < cur) : (!cur_fits && have > cur)) best = slot;
      }
      if (best < 0) {
        best = static_cast<int>(plan.slot_bytes.size());
        plan.slot_bytes.push_back(0);
        slot_device.push_back(info.device);
      } else {
        free_slots.erase(std::find(free_slots.begin(), free_slots.end(), best));
      }
      plan.slot_bytes[idx(best)] = std::max(plan.slot_bytes[idx(best)], info.nbytes);
      plan.slot_of_storage[s] = best;
    }
    for (size_t s : dies[i]) free_slots.push_back(plan.slot_of_storage[s]);
  }
  return plan;
}

// --- pipeline --------------------------------------------------------------------------------

Graph run_pipeline(Graph g, const PassPipeline& which, const PassDumpHook& dump) {
  auto stage = [&](bool on, std::string_view name, Graph (*pass)(Graph)) {
    if (!on) return;
    profiler::Scope scope(name, profiler::Category::Jit);
    g = pass(std::move(g));
    g.verify();
    if (dump) dump(name, g);
  };
  stage(which.simplify, "simplify_algebra", &simplify_algebra);
  stage(which.fold, "fold_constants", &fold_constants);
  stage(which.cse, "eliminate_common_subexpressions", &eliminate_common_subexpressions);
  stage(which.dce, "eliminate_dead_code", &eliminate_dead_code);
  return g;
}

}  // namespace kiln::jit
