#include "fusion/partition.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <unordered_map>

#include <unistd.h>

#include "core/error.h"
#include "core/logging.h"
#include "fusion/symbolic.h"
#if KILN_HAS_CUDA_TOOLKIT
#include "fusion/cuda_launch.h"
#endif
#include "kernels/cpu/parallel.h"

namespace kiln::fusion {

using jit::Graph;
using jit::Node;
using jit::NodeKind;
using jit::Value;

namespace {

size_t idx(int i) { return static_cast<size_t>(i); }

// A value's index as an affine function of the iteration index: index[k] = coef[k] . i + add[k].
struct Affine {
  std::vector<std::vector<int64_t>> coef;  // [value dim][iteration dim]
  std::vector<int64_t> add;
  bool operator==(const Affine& o) const { return coef == o.coef && add == o.add; }
  std::string key() const {
    std::ostringstream os;
    for (size_t k = 0; k < add.size(); ++k) {
      for (int64_t c : coef[k]) os << c << ",";
      os << "+" << add[k] << ";";
    }
    return os.str();
  }
};

// T (base index from view index) composed with M (view index from iteration index).
Affine compose(const Affine& t, const Affine& m, size_t rank) {
  Affine r;
  r.coef.assign(t.add.size(), std::vector<int64_t>(rank, 0));
  r.add = t.add;
  for (size_t k = 0; k < t.add.size(); ++k)
    for (size_t d = 0; d < m.add.size(); ++d) {
      int64_t c = t.coef[k][d];
      if (c == 0) continue;
      for (size_t j = 0; j < rank; ++j) r.coef[k][j] += c * m.coef[d][j];
      r.add[k] += c * m.add[d];
    }
  return r;
}

// Maps a value of shape `w` right-aligned onto `out` (with out's map `m`), as broadcasting does.
bool broadcast_map(IntArrayRef w, IntArrayRef out, const Affine& m, size_t rank, Affine& r) {
  if (w.size() > out.size()) return false;
  const size_t lead = out.size() - w.size();
  r.coef.assign(w.size(), std::vector<int64_t>(rank, 0));
  r.add.assign(w.size(), 0);
  for (size_t k = 0; k < w.size(); ++k) {
    const int64_t o = out[k + lead];
    if (w[k] == o) {
      r.coef[k] = m.coef[k + lead];
      r.add[k] = m.add[k + lead];
    } else if (w[k] != 1) {
      return false;
    }
  }
  return true;
}

// The base index (in `base`'s geometry) of every element of view `u` over the same storage,
// when it is affine in u's index; false otherwise (a reshape merging dims, overlapping...).
bool view_to_base(const Value& u, const Value& base, Affine& t) {
  const size_t nu = u.sizes.size(), nb = base.sizes.size();
  t.coef.assign(nb, std::vector<int64_t>(nu, 0));
  t.add.assign(nb, 0);
  if (u.sizes == base.sizes && u.strides == base.strides && u.offset == base.offset) {
    for (size_t k = 0; k < nb; ++k) t.coef[k][k] = 1;
    return true;
  }
  int64_t numel = 1;
  for (int64_t s : u.sizes) numel *= s;
  std::vector<size_t> order;
  for (size_t k = 0; k < nb; ++k)
    if (base.sizes[k] > 1) {
      if (base.strides[k] <= 0) return false;
      order.push_back(k);
    }
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return base.strides[a] > base.strides[b]; });
  int64_t rem = u.offset - base.offset;
  if (rem < 0) return false;
  for (size_t k : order) {
    t.add[k] = rem / base.strides[k];
    rem -= t.add[k] * base.strides[k];
  }
  if (rem != 0) return false;
  for (size_t d = 0; d < nu; ++d) {
    if (u.sizes[d] <= 1 || u.strides[d] == 0) continue;
    if (u.strides[d] < 0) return false;
    bool found = false;
    for (size_t k : order)
      if (u.strides[d] % base.strides[k] == 0) {
        t.coef[k][d] = u.strides[d] / base.strides[k];
        found = true;
        break;
      }
    if (!found) return false;
  }
  if (numel == 0) return true;
  for (size_t k = 0; k < nb; ++k) {
    int64_t hi = t.add[k];
    for (size_t d = 0; d < nu; ++d) hi += t.coef[k][d] * (u.sizes[d] - 1);
    if (hi >= std::max<int64_t>(base.sizes[k], 1)) return false;
  }
  return true;
}

// PyTorch's result_type over graph values.
DType promoted(const Graph& g, const std::vector<int>& ins) {
  std::vector<PromotionOperand> ops;
  for (int v : ins) ops.push_back({g.value(v).dtype, g.value(v).sizes.empty(), g.value(v).wrapped});
  return result_type(ops);
}

bool fusible_dtype(DType t) { return t != DType::Float16 && t != DType::BFloat16; }

// No two elements share memory (an expanded or unfolded view writes some elements twice, in an
// order only the eager kernel defines).
bool non_overlapping(const Value& v) {
  std::vector<std::pair<int64_t, int64_t>> dims;  // (stride, size)
  for (size_t d = 0; d < v.sizes.size(); ++d)
    if (v.sizes[d] > 1) dims.push_back({v.strides[d], v.sizes[d]});
  std::sort(dims.begin(), dims.end());
  int64_t span = 1;  // elements covered by the smaller dims
  for (auto [stride, size] : dims) {
    if (stride < span) return false;
    span = stride * size;
  }
  return true;
}

// The dims a reduction row reduces: `dims` attr (empty: all), wrapped.
std::vector<char> reduce_mask(const std::vector<int64_t>& dims, size_t rank) {
  std::vector<char> m(rank, dims.empty() ? 1 : 0);
  for (int64_t d : dims) m[idx(static_cast<int>(d < 0 ? d + static_cast<int64_t>(rank) : d))] = 1;
  return m;
}

enum class SourceKind : uint8_t { Formula, Fixed };

// What a storage holds after the group's latest write to it.
struct Source {
  SourceKind kind = SourceKind::Fixed;
  int node = -1;   // member that wrote it
  int value = -1;  // the value whose geometry the content is laid out in
  Affine map;      // iteration index -> that value's index, where `expr` holds
  int expr = -1;
};

struct Group {
  int id = -1;
  Shape iter;
  std::vector<char> reduced;
  bool has_reduction = false, has_mutation = false;
  Kernel k;
  std::vector<int> members;
  std::vector<std::string> ops;
  std::map<int, Source> content;  // storage -> latest content
  std::map<int, int> buffer_of;   // storage -> kernel buffer
  std::vector<int> buffer_rep;    // per buffer: the value first used for it
  std::map<std::string, int> memo;
  std::map<int, std::vector<int>> loads_of;  // storage -> indices of its loads (pre-write content)
  std::set<int> reads, writes;               // storages
  std::map<int, int> first_read, first_write;  // storage -> the member that first read / wrote it
  std::map<int, int> created;                   // storage -> the member output value that made it
  std::set<int> mutated;                        // storages written by in-place members
  std::vector<int> expr_stage;               // per expr: latest accumulator stage it reads (-1)
  bool open = true;

  size_t rank() const { return iter.size(); }
  Affine identity(IntArrayRef w) const {
    Affine id;
    id.coef.assign(rank(), std::vector<int64_t>(rank(), 0));
    id.add.assign(rank(), 0);
    for (size_t k = 0; k < rank(); ++k) id.coef[k][k] = 1;
    Affine r;
    if (!broadcast_map(w, iter, id, rank(), r)) r.add.clear(), r.coef.clear();
    return r;
  }
};

// The map of a member's output of shape `sizes`: the iteration space itself (full), or in a
// group with reductions the reduced shape with or without kept dims (outer). False otherwise.
bool output_map(const Group& G, const Shape& sizes, Affine& m) {
  if (sizes == G.iter) {
    m = G.identity(sizes);
    return m.coef.size() == sizes.size();
  }
  if (!G.has_reduction) return false;
  Shape keep, drop;
  for (size_t d = 0; d < G.rank(); ++d) {
    keep.push_back(G.reduced[d] ? 1 : G.iter[d]);
    if (!G.reduced[d]) drop.push_back(G.iter[d]);
  }
  m = Affine{};
  if (sizes == keep) {
    m = G.identity(keep);
    for (size_t d = 0; d < G.rank(); ++d)
      if (G.reduced[d]) m.coef[d].assign(G.rank(), 0);
  } else if (sizes == drop) {
    for (size_t d = 0; d < G.rank(); ++d)
      if (!G.reduced[d]) {
        m.coef.push_back(std::vector<int64_t>(G.rank(), 0));
        m.coef.back()[d] = 1;
        m.add.push_back(0);
      }
  } else {
    return false;
  }
  return m.coef.size() == sizes.size();
}

// An index that moves with the reduced dims (read or written inside the stage loops).
bool inner_index(const Group& G, const Index& ix) {
  for (size_t d = 0; d < G.rank() && d < ix.strides.size(); ++d)
    if (G.has_reduction && G.reduced[d] && ix.strides[d].value != 0) return true;
  return false;
}

struct Failure {};  // the node cannot join this group (thrown inside try_add, caught there)

class Partitioner {
 public:
  Partitioner(const Graph& g, const FusionOptions& o) : g_(g), opts_(o) {}
  FusionResult run();

 private:
  // --- expression building inside a group -------------------------------------------------
  int note(Group& G, int e) {
    if (G.expr_stage.size() < G.k.exprs.size()) {
      for (size_t i = G.expr_stage.size(); i < G.k.exprs.size(); ++i) {
        const Expr& x = G.k.exprs[i];
        int st = -1;
        if (x.op == ExprOp::Acc) st = G.k.accs[idx(x.acc)].stage;
        for (int a = 0; a < expr_arity(x.op); ++a) st = std::max(st, G.expr_stage[idx(x.args[a])]);
        G.expr_stage.push_back(st);
      }
    }
    return e;
  }
  int constant(Group& G, double v, DType t) {
    ExprBuilder b(G.k);
    return note(G, b.constant(v, t));
  }
  int cast(Group& G, int e, DType t) {
    ExprBuilder b(G.k);
    return note(G, b.cast(e, t));
  }
  int buffer(Group& G, int storage, int rep, DType dtype) {
    auto it = G.buffer_of.find(storage);
    if (it != G.buffer_of.end()) return it->second;
    Buffer b;
    b.dtype = dtype;
    b.label = "%" + std::to_string(rep);
    const jit::StorageInfo& info = g_.storages[idx(storage)];
    if (info.input >= 0) b.label += " (input " + std::to_string(info.input) + ")";
    G.k.buffers.push_back(b);
    G.buffer_rep.push_back(rep);
    int id = static_cast<int>(G.k.buffers.size()) - 1;
    G.buffer_of[storage] = id;
    return id;
  }
  int index(Group& G, const Value& v, const Affine& m) {
    Index ix;
    int64_t off = v.offset;
    ix.strides.assign(G.rank(), Int::constant(0));
    for (size_t k = 0; k < m.add.size(); ++k) {
      off += v.strides[k] * m.add[k];
      for (size_t d = 0; d < G.rank(); ++d) ix.strides[d].value += v.strides[k] * m.coef[k][d];
    }
    ix.offset = Int::constant(off);
    G.k.indices.push_back(ix);
    return static_cast<int>(G.k.indices.size()) - 1;
  }
  static bool same_index(const Index& a, const Index& b) {
    if (a.offset.value != b.offset.value) return false;
    for (size_t d = 0; d < a.strides.size(); ++d)
      if (a.strides[d].value != b.strides[d].value) return false;
    return true;
  }

  // Value `u` at iteration map `m`.
  int gen(Group& G, int u, const Affine& m);
  // Node `n`'s pointwise result at output map `m` (reading its inputs as they are now).
  int pointwise(Group& G, int n, const Affine& m);
  int reduction(Group& G, int n);
  bool try_add(Group& G, int n);
  void close_hazards(int n, int joined);
  bool fusible(const Node& n) const;
  void finalize(Group& G);
  void reuse_stored_values(Group& G);

  const Graph& g_;
  FusionOptions opts_;
  bool fusible_type(DType t) const { return fusible_dtype(t) || opts_.reduced_float; }
  int current_ = -1;        // the node try_add is adding
  std::set<int> inlined_;  // storages of other groups it recomputed instead of reading
  std::vector<Group> groups_;
  std::vector<int> group_of_;  // per node
  std::map<int, std::pair<double, DType>> fills_;  // storage -> constant it holds (a whole-storage fill)
  std::map<int, int> fill_node_;                   // storage -> the fill node
};

int Partitioner::gen(Group& G, int u, const Affine& m) {
  const Value& val = g_.value(u);
  const int s = val.storage;
  if (auto it = G.content.find(s); it != G.content.end()) {
    const Source& src = it->second;
    Affine t;
    if (!view_to_base(val, g_.value(src.value), t)) throw Failure{};
    Affine mm = compose(t, m, G.rank());
    if (mm == src.map) return src.expr;
    if (src.kind != SourceKind::Formula || G.has_mutation) throw Failure{};
    return pointwise(G, src.node, mm);  // recomputed at another index (a transposed or broadcast read)
  }
  // A pointwise value of another open group is recomputed here rather than stored and loaded
  // (the producer's kernel dies if nobody else needs the value).
  for (const Group& other : groups_) {
    if (other.id == G.id || !other.open || other.has_mutation || other.has_reduction) continue;
    auto it = other.content.find(s);
    if (it == other.content.end() || it->second.kind != SourceKind::Formula) continue;
    Affine t;
    if (!view_to_base(val, g_.value(it->second.value), t)) break;
    inlined_.insert(s);
    return pointwise(G, it->second.node, compose(t, m, G.rank()));
  }
  if (auto it = fills_.find(s); it != fills_.end()) return cast(G, constant(G, it->second.first, it->second.second), val.dtype);
  const Node& def = g_.nodes[idx(val.node)];
  if (def.kind == NodeKind::Constant && def.constant.numel() == 1 && val.sizes.empty()) {
    Scalar c = def.constant.item();
    return constant(G, c.is_floating_point() ? c.to_double() : static_cast<double>(c.to_int()), val.dtype);
  }
  if (!fusible_type(val.dtype)) throw Failure{};
  if (G.writes.count(s)) throw Failure{};  // written by the group at another geometry
  int b = buffer(G, s, u, val.dtype);
  G.k.buffers[idx(b)].read = true;
  int ix = index(G, val, m);
  std::ostringstream key;
  key << "l" << b << "|" << G.k.indices[idx(ix)].offset.value;
  for (const Int& st : G.k.indices[idx(ix)].strides) key << "," << st.value;
  if (auto it = G.memo.find(key.str()); it != G.memo.end()) {
    G.k.indices.pop_back();
    return it->second;
  }
  Expr e;
  e.op = ExprOp::Load;
  e.dtype = val.dtype;
  e.buffer = b;
  e.index = ix;
  ExprBuilder eb(G.k);
  int id = note(G, eb.add(e));
  G.memo[key.str()] = id;
  G.loads_of[s].push_back(ix);
  G.reads.insert(s);
  G.first_read.emplace(s, current_);
  return id;
}

int Partitioner::pointwise(Group& G, int ni, const Affine& m) {
  const Node& n = g_.nodes[idx(ni)];
  std::string key = "n" + std::to_string(ni) + "|" + m.key();
  if (auto it = G.memo.find(key); it != G.memo.end()) return it->second;
  const IntArrayRef out = n.kind == NodeKind::Mutate ? IntArrayRef(g_.value(n.target).sizes) : IntArrayRef(g_.value(n.outputs[0]).sizes);
  std::vector<int> args;
  for (int in : n.inputs) {
    if (in < 0) throw Failure{};
    Affine im;
    if (!broadcast_map(g_.value(in).sizes, out, m, G.rank(), im)) throw Failure{};
    args.push_back(gen(G, in, im));
  }
  int r;
  const DType out_dtype = n.kind == NodeKind::Mutate ? n.result : g_.value(n.outputs[0]).dtype;
  if (n.op->name == "copy") {
    r = cast(G, args.at(0), out_dtype);
  } else {
    std::vector<int> operands = n.inputs;
    if (n.op->name == "where") operands.erase(operands.begin());  // the condition does not promote
    DType promo = promoted(g_, operands);
    DType compute = promo;
    if (n.op->rule == PointwiseRule::FloatOut && !is_floating_point(promo)) compute = default_dtype();
    // float16/bfloat16 compute in float32 and round once, as the eager kernels (opmath) do.
    if (compute == DType::Float16 || compute == DType::BFloat16) compute = DType::Float32;
    for (int& a : args) a = cast(G, a, compute);
    ExprBuilder b(G.k);
    r = apply_formula(b, n.op->name, args, compute);
    if (r < 0) throw Failure{};
    note(G, r);
    r = cast(G, r, out_dtype);
  }
  G.memo[key] = r;
  return r;
}

int Partitioner::reduction(Group& G, int ni) {
  const Node& n = g_.nodes[idx(ni)];
  const std::string& name = n.op->name;
  const Value& x = g_.value(n.inputs.at(0));
  const Value& o = g_.value(n.outputs.at(0));
  const size_t r = G.rank();
  std::vector<char> mask;
  if (name == "softmax" || name == "log_softmax") {
    mask.assign(r, 0);
    int64_t d = n.attrs.i(0);
    mask[idx(static_cast<int>(d < 0 ? d + static_cast<int64_t>(r) : d))] = 1;
  } else if (name == "layer_norm") {
    mask.assign(r, 0);
    for (size_t k = 0; k < n.attrs.ints(0).size(); ++k) mask[r - 1 - k] = 1;
  } else {
    mask = reduce_mask(n.attrs.ints(0), r);
  }
  if (G.has_reduction) {
    if (mask != G.reduced) throw Failure{};
  } else {
    if (G.has_mutation) throw Failure{};
    G.reduced = mask;
    G.has_reduction = true;
  }
  int64_t count = 1;
  for (size_t d = 0; d < r; ++d)
    if (mask[d]) count *= G.iter[d];
  // Reads of storages the group wrote must not move into the stages.
  for (int s : G.writes)
    for (int l : G.loads_of[s])
      if (inner_index(G, G.k.indices[idx(l)])) throw Failure{};

  ExprBuilder b(G.k);
  auto acc = [&](ReduceOp op, int value, DType dt) {
    value = cast(G, value, dt);
    Accumulator a;
    a.op = op;
    a.dtype = dt;
    a.value = value;
    a.stage = G.expr_stage[idx(value)] + 1;
    G.k.accs.push_back(a);
    Expr e;
    e.op = ExprOp::Acc;
    e.dtype = dt;
    e.acc = static_cast<int>(G.k.accs.size()) - 1;
    return note(G, b.add(e));
  };
  auto bin = [&](ExprOp op, int a, int c) { return note(G, b.binary(op, a, c)); };
  auto un = [&](ExprOp op, int a) { return note(G, b.unary(op, a)); };
  auto k = [&](double v, DType t) { return constant(G, v, t); };

  const Affine id = G.identity(x.sizes);
  int xe = gen(G, n.inputs[0], id);
  int result = -1;
  const DType ot = o.dtype;
  // Statistics (mean, variance) of float32 accumulate in float64 as eager's do: a constant row's
  // mean comes out exact, so its deviations are exactly zero. Plain sums (and softmax's sum of
  // exponentials) accumulate in float32 vector lanes: 2-3x faster, within float32 tolerance.
  const DType wide = ot == DType::Float32 ? DType::Float64 : ot;
  auto sum = [&](int v) { return acc(ReduceOp::Sum, v, wide); };
  auto plain_sum = [&](int v) { return acc(ReduceOp::Sum, v, ot); };
  auto narrow = [&](int v) { return cast(G, v, ot); };
  if (name == "sum") {
    result = plain_sum(xe);
  } else if (name == "prod") {
    result = acc(ReduceOp::Prod, xe, ot);
  } else if (name == "mean") {
    result = narrow(bin(ExprOp::Div, sum(xe), k(static_cast<double>(count), wide)));
  } else if (name == "amax" || name == "amin") {
    result = acc(name == "amax" ? ReduceOp::Max : ReduceOp::Min, xe, ot);
  } else if (name == "var" || name == "std") {
    int xw = cast(G, xe, wide);
    int mean = bin(ExprOp::Div, sum(xw), k(static_cast<double>(count), wide));
    int dev = bin(ExprOp::Sub, xw, mean);
    const int64_t correction = n.attrs.i(1);
    result = bin(ExprOp::Div, sum(bin(ExprOp::Mul, dev, dev)), k(static_cast<double>(std::max<int64_t>(count - correction, 0)), wide));
    if (name == "std") result = un(ExprOp::Sqrt, result);
    result = narrow(result);
  } else if (name == "logsumexp") {
    int xc = cast(G, xe, ot);
    int mx = acc(ReduceOp::Max, xc, ot);
    // Shift by the max unless it is infinite (all -inf rows give -inf, as eager).
    int inf = bin(ExprOp::Eq, un(ExprOp::Abs, mx), k(std::numeric_limits<double>::infinity(), ot));
    int shift = note(G, b.select(inf, k(0, ot), mx));
    int s = plain_sum(un(ExprOp::Exp, bin(ExprOp::Sub, xc, shift)));
    result = bin(ExprOp::Add, un(ExprOp::Log, s), shift);
  } else if (name == "softmax" || name == "log_softmax") {
    int xc = cast(G, xe, ot);
    int mx = acc(ReduceOp::Max, xc, ot);
    int sh = bin(ExprOp::Sub, xc, mx);
    int ex = un(ExprOp::Exp, sh);
    int s = plain_sum(ex);
    result = name == "softmax" ? bin(ExprOp::Div, ex, s) : bin(ExprOp::Sub, sh, un(ExprOp::Log, s));
  } else if (name == "layer_norm") {
    // As eager: mean and centred variance in float64, then normalised in the input's dtype.
    const double eps = n.attrs.d(1);
    int xw = cast(G, xe, wide);
    int mean = bin(ExprOp::Div, sum(xw), k(static_cast<double>(count), wide));
    int dev = bin(ExprOp::Sub, xw, mean);
    int var = bin(ExprOp::Div, sum(bin(ExprOp::Mul, dev, dev)), k(static_cast<double>(count), wide));
    int rstd = narrow(bin(ExprOp::Div, k(1, wide), un(ExprOp::Sqrt, bin(ExprOp::Add, var, k(eps, wide)))));
    result = bin(ExprOp::Mul, bin(ExprOp::Sub, cast(G, xe, ot), narrow(mean)), rstd);
    for (size_t p = 1; p <= 2; ++p) {
      if (p >= n.inputs.size() || n.inputs[p] < 0) continue;
      Affine pm;
      if (!broadcast_map(g_.value(n.inputs[p]).sizes, x.sizes, id, r, pm)) throw Failure{};
      int w = cast(G, gen(G, n.inputs[p], pm), ot);
      result = bin(p == 1 ? ExprOp::Mul : ExprOp::Add, result, w);
    }
  } else {
    throw Failure{};
  }
  return cast(G, result, ot);
}

bool Partitioner::fusible(const Node& n) const {
  if (!n.op || (n.kind != NodeKind::Op && n.kind != NodeKind::Mutate)) return false;
  if (n.runtime_slot >= 0) return false;
  for (int v : n.outputs)
    if (!fusible_type(g_.value(v).dtype)) return false;
  if (n.kind == NodeKind::Mutate && (!fusible_type(g_.value(n.target).dtype) || !non_overlapping(g_.value(n.target))))
    return false;
  for (int v : n.inputs)
    if (v < 0 && n.op->name != "layer_norm") return false;
  if (n.op->kind == OpKind::Pointwise) return n.op->name == "copy" || formula_supported(n.op->name, DType::Float32);
  if (n.kind != NodeKind::Op) return false;
  // Never destroyed: the background compiler may still be partitioning while statics are torn
  // down at exit (jit/backend.cpp, AsyncCompiler).
  static const auto& reductions = *new std::set<std::string>{
      "sum", "prod", "mean", "amax", "amin", "var", "std", "logsumexp", "softmax", "log_softmax", "layer_norm"};
  if (!reductions.count(n.op->name)) return false;
  if (n.op->name == "softmax" || n.op->name == "log_softmax" || n.op->name == "layer_norm")
    return is_floating_point(g_.value(n.outputs[0]).dtype);
  return true;
}

bool Partitioner::try_add(Group& G, int ni) {
  const Node& n = g_.nodes[idx(ni)];
  Group saved = G;
  current_ = ni;
  inlined_.clear();
  try {
    const bool red = n.op->kind != OpKind::Pointwise;
    if (n.kind == NodeKind::Mutate) {
      const Value& t = g_.value(n.target);
      if (G.members.empty()) G.iter = t.sizes, G.reduced.assign(t.sizes.size(), 0);
      Affine m;
      if (!output_map(G, t.sizes, m)) throw Failure{};
      // In a group with reductions only writes at the outer point (after every stage), and only
      // to storages the stages do not read: a stage must not see a later write.
      if (G.has_reduction) {
        if (t.sizes == G.iter) throw Failure{};
        for (int l : G.loads_of[t.storage])
          if (inner_index(G, G.k.indices[idx(l)])) throw Failure{};
      }
      int e = cast(G, pointwise(G, ni, m), t.dtype);
      const int s = t.storage;
      // The write replaces exactly what the group holds for this storage, at the same elements.
      if (auto it = G.content.find(s); it != G.content.end()) {
        const Value& cv = g_.value(it->second.value);
        if (cv.sizes != t.sizes || cv.strides != t.strides || cv.offset != t.offset || !(it->second.map == m))
          throw Failure{};
      }
      int ix = index(G, t, m);
      for (int l : G.loads_of[s])
        if (!same_index(G.k.indices[idx(l)], G.k.indices[idx(ix)])) throw Failure{};
      G.k.indices.pop_back();
      G.content[s] = Source{SourceKind::Fixed, ni, n.target, m, e};
      G.writes.insert(s);
      G.mutated.insert(s);
      G.first_write.emplace(s, ni);
      G.has_mutation = true;
    } else if (!red) {
      const Value& o = g_.value(n.outputs.at(0));
      if (G.members.empty()) G.iter = o.sizes, G.reduced.assign(o.sizes.size(), 0);
      Affine m;
      if (!output_map(G, o.sizes, m)) throw Failure{};
      if (m.coef.size() != o.sizes.size()) throw Failure{};
      int e = pointwise(G, ni, m);
      G.content[o.storage] = Source{SourceKind::Formula, ni, n.outputs[0], m, e};
      G.created[o.storage] = n.outputs[0];
      G.writes.insert(o.storage);
      G.first_write.emplace(o.storage, ni);
    } else {
      const Value& x = g_.value(n.inputs.at(0));
      const Value& o = g_.value(n.outputs.at(0));
      if (G.members.empty()) G.iter = x.sizes, G.reduced.assign(x.sizes.size(), 0);
      if (x.sizes != G.iter || G.rank() == 0) throw Failure{};
      int e = reduction(G, ni);
      Affine m;
      if (n.op->name == "softmax" || n.op->name == "log_softmax" || n.op->name == "layer_norm") {
        m = G.identity(o.sizes);
      } else {
        const bool keepdim = n.attrs.b(n.op->name == "var" || n.op->name == "std" ? 2 : 1);
        for (size_t d = 0; d < G.rank(); ++d) {
          if (G.reduced[d] && !keepdim) continue;
          m.coef.push_back(std::vector<int64_t>(G.rank(), 0));
          if (!G.reduced[d]) m.coef.back()[d] = 1;
          m.add.push_back(0);
        }
      }
      if (m.coef.size() != o.sizes.size()) throw Failure{};
      G.content[o.storage] = Source{SourceKind::Fixed, ni, n.outputs[0], m, e};
      G.created[o.storage] = n.outputs[0];
      G.writes.insert(o.storage);
      G.first_write.emplace(o.storage, ni);
    }
  } catch (const Failure&) {
    G = std::move(saved);
    inlined_.clear();
    return false;
  }
  G.members.push_back(ni);
  G.ops.push_back(n.op->name + (n.kind == NodeKind::Mutate ? "_" : ""));
  return true;
}

// Node `n` (extern, or a member of group `joined`) runs where it stands: an open group that
// wrote what it touches, or read what it writes, must run before it, so it takes no more members.
void Partitioner::close_hazards(int ni, int joined) {
  const Node& n = g_.nodes[idx(ni)];
  std::set<int> touch, write;
  for (int v : n.inputs)
    if (v >= 0 && !(joined >= 0 && inlined_.count(g_.value(v).storage))) touch.insert(g_.value(v).storage);
  if (n.target >= 0) touch.insert(g_.value(n.target).storage), write.insert(g_.value(n.target).storage);
  for (int v : n.outputs) write.insert(g_.value(v).storage);
  for (Group& G : groups_) {
    if (!G.open || G.id == joined) continue;
    bool hazard = false;
    for (int s : touch) hazard |= G.writes.count(s) > 0;
    for (int s : write) hazard |= G.reads.count(s) > 0 || G.writes.count(s) > 0;
    if (hazard) G.open = false;
  }
}

void Partitioner::finalize(Group& G) {
  Kernel& k = G.k;
  k.name = "k" + std::to_string(G.id) + "_" + G.ops.front();
  if (G.has_reduction && std::find(G.ops.begin(), G.ops.end(), "softmax") != G.ops.end()) k.name = "k" + std::to_string(G.id) + "_softmax";
  const size_t r = G.rank();
  if (!G.has_reduction) G.reduced.assign(r, 0);

  // Stages: every store after the accumulators its value reads.
  int stages = 0;
  for (const Accumulator& a : k.accs) stages = std::max(stages, a.stage + 1);
  for (Store& st : k.stores) {
    bool inner = false;
    const Index& ix = k.indices[idx(st.index)];
    for (size_t d = 0; d < r; ++d)
      if (G.reduced[d] && ix.strides[d].value != 0) inner = true;
    st.stage = inner ? G.expr_stage[idx(st.value)] + 1 : -1;
    stages = std::max(stages, st.stage + 1);
  }

  reuse_stored_values(G);

  // Dims: kept ones first, size-1 dims dropped, neighbours that every index walks as one merged.
  std::vector<size_t> order;
  for (int pass = 0; pass < 2; ++pass)
    for (size_t d = 0; d < r; ++d)
      if (static_cast<bool>(G.reduced[d]) == (pass == 1) && G.iter[d] != 1) order.push_back(d);
  struct D {
    int64_t size;
    bool reduced;
    std::vector<int64_t> strides;  // per index
  };
  std::vector<D> dims;
  for (size_t d : order) {
    D x{G.iter[d], static_cast<bool>(G.reduced[d]), {}};
    for (const Index& ix : k.indices) x.strides.push_back(ix.strides[d].value);
    if (!dims.empty() && dims.back().reduced == x.reduced) {
      D& p = dims.back();
      bool merge = true;
      for (size_t i = 0; i < k.indices.size(); ++i) merge &= p.strides[i] == x.strides[i] * x.size;
      if (merge) {
        p.size *= x.size;
        p.strides = x.strides;
        continue;
      }
    }
    dims.push_back(std::move(x));
  }
  if (dims.empty() || dims.front().reduced) dims.insert(dims.begin(), D{1, false, std::vector<int64_t>(k.indices.size(), 0)});
  if (G.has_reduction && !dims.back().reduced) dims.push_back(D{1, true, std::vector<int64_t>(k.indices.size(), 0)});
  k.dims.clear();
  k.num_outer = 0;
  for (const D& d : dims) {
    k.dims.push_back(Int::constant(d.size));
    if (!d.reduced) ++k.num_outer;
  }
  for (size_t i = 0; i < k.indices.size(); ++i) {
    k.indices[i].strides.clear();
    for (const D& d : dims) k.indices[i].strides.push_back(Int::constant(d.strides[i]));
  }
  k.num_stages = G.has_reduction ? std::max(stages, 1) : 0;
  if (!G.has_reduction && !opts_.symbolic_sizes) {
    double bytes = 0;
    for (const Store& st : k.stores) bytes += static_cast<double>(itemsize(k.buffers[idx(st.buffer)].dtype));
    for (const Int& d : k.dims) bytes *= static_cast<double>(d.value);
    k.stream_stores = bytes >= static_cast<double>(stream_store_bytes());
  }
  if (opts_.symbolic_sizes) {
    auto param = [&](Int& v) {
      if (v.value != 0 && v.value != 1) v.param = k.num_params++;
    };
    for (Int& d : k.dims) param(d);
    for (Index& ix : k.indices) {
      param(ix.offset);
      for (Int& s : ix.strides) param(s);
    }
  }
  k.verify();
}

// A costly value computed in stage s-1 for an accumulator and needed again by a store in stage s
// (softmax's exp(x - max): summed in stage 1, divided in stage 2) is stored to that store's
// buffer in stage s-1 and loaded back in stage s instead of being recomputed: each outer point
// is one thread's, so the load sees the store.
void Partitioner::reuse_stored_values(Group& G) {
  Kernel& k = G.k;
  auto costly = [&](int e) {
    std::vector<int> todo{e};
    std::set<int> seen;
    while (!todo.empty()) {
      int x = todo.back();
      todo.pop_back();
      if (!seen.insert(x).second) continue;
      const Expr& ex = k.exprs[idx(x)];
      switch (ex.op) {
        case ExprOp::Exp: case ExprOp::Exp2: case ExprOp::Expm1: case ExprOp::Log: case ExprOp::Log2:
        case ExprOp::Log10: case ExprOp::Log1p: case ExprOp::Tanh: case ExprOp::Erf: case ExprOp::Pow:
        case ExprOp::Sin: case ExprOp::Cos: case ExprOp::Tan:
          return true;
        default: break;
      }
      for (int a = 0; a < expr_arity(ex.op); ++a) todo.push_back(ex.args[a]);
    }
    return false;
  };
  auto reachable = [&](int root, std::set<int>& out) {
    std::vector<int> todo{root};
    while (!todo.empty()) {
      int x = todo.back();
      todo.pop_back();
      if (!out.insert(x).second) continue;
      const Expr& ex = k.exprs[idx(x)];
      for (int a = 0; a < expr_arity(ex.op); ++a) todo.push_back(ex.args[a]);
    }
  };
  const size_t nstores = k.stores.size();
  for (size_t si = 0; si < nstores; ++si) {
    const Store st = k.stores[si];
    if (st.stage < 1) continue;
    std::set<int> acc_uses;  // what stage st.stage - 1 computes anyway
    for (const Accumulator& a : k.accs)
      if (a.stage == st.stage - 1) reachable(a.value, acc_uses);
    const DType bt = k.buffers[idx(st.buffer)].dtype;
    // The largest costly subexpression of the stored value that the previous stage computes.
    int found = -1;
    std::vector<int> todo{st.value};
    std::set<int> seen;
    while (!todo.empty() && found < 0) {
      int x = todo.front();
      todo.erase(todo.begin());
      if (!seen.insert(x).second) continue;
      const Expr& ex = k.exprs[idx(x)];
      if (acc_uses.count(x) && ex.dtype == bt && ex.op != ExprOp::Load && costly(x)) {
        found = x;
        break;
      }
      for (int a = 0; a < expr_arity(ex.op); ++a) todo.push_back(ex.args[a]);
    }
    if (found < 0) continue;
    k.buffers[idx(st.buffer)].read = true;
    Store early = st;
    early.value = found;
    early.stage = st.stage - 1;
    k.stores.push_back(early);
    Expr ld;
    ld.op = ExprOp::Load;
    ld.dtype = bt;
    ld.buffer = st.buffer;
    ld.index = st.index;
    ExprBuilder b(k);
    const int load = b.add(ld);
    // Rebuild the stored value with the load in place of `found` (new exprs go last: SSA holds).
    std::map<int, int> rebuilt{{found, load}};
    std::function<int(int)> rebuild = [&](int x) -> int {
      if (auto it = rebuilt.find(x); it != rebuilt.end()) return it->second;
      Expr ex = k.exprs[idx(x)];
      bool changed = false;
      for (int a = 0; a < expr_arity(ex.op); ++a) {
        int na = rebuild(ex.args[a]);
        changed |= na != ex.args[a];
        ex.args[a] = na;
      }
      int r = changed ? b.add(ex) : x;
      rebuilt[x] = r;
      return r;
    };
    k.stores[si].value = rebuild(st.value);
    note(G, load);
  }
}

FusionResult Partitioner::run() {
  const size_t nn = g_.nodes.size();
  group_of_.assign(nn, -1);
  std::vector<char> fill_extern(nn, 0);
  for (size_t i = 0; i < nn; ++i) {
    const Node& n = g_.nodes[i];
    const int ni = static_cast<int>(i);
    if (n.kind == NodeKind::Input || n.kind == NodeKind::Alloc || n.kind == NodeKind::View || n.kind == NodeKind::Constant)
      continue;
    // A fill of a whole fresh storage: readers in kernels inline the constant.
    if (n.op && n.op->name == "fill" && n.runtime_slot < 0) {
      const Value& t = g_.value(n.kind == NodeKind::Mutate ? n.target : n.outputs.at(0));
      const jit::StorageInfo& info = g_.storages[idx(t.storage)];
      int64_t numel = 1;
      for (int64_t s : t.sizes) numel *= s;
      const bool whole = info.input < 0 && t.offset == 0 && static_cast<size_t>(numel) * itemsize(t.dtype) == info.nbytes;
      close_hazards(ni, -1);
      fills_.erase(t.storage);
      if (whole && fusible_type(t.dtype)) {
        const Scalar& v = n.attrs.scalar(0);
        fills_[t.storage] = {v.is_floating_point() ? v.to_double() : static_cast<double>(v.to_int()), t.dtype};
        fill_node_[t.storage] = ni;
        fill_extern[i] = 1;
      }
      continue;
    }
    int joined = -1;
    if (fusible(n)) {
      // Join the open group that produced one of its inputs, else start a group.
      std::vector<int> cands;
      for (int v : n.inputs) {
        if (v < 0) continue;
        for (Group& G : groups_)
          if (G.open && G.content.count(g_.value(v).storage) &&
              std::find(cands.begin(), cands.end(), G.id) == cands.end())
            cands.push_back(G.id);
      }
      if (n.target >= 0)
        for (Group& G : groups_)
          if (G.open && G.content.count(g_.value(n.target).storage) &&
              std::find(cands.begin(), cands.end(), G.id) == cands.end())
            cands.push_back(G.id);
      // Siblings: groups reading the same inputs share their loads (mean and var of one tensor).
      for (int v : n.inputs) {
        if (v < 0) continue;
        for (Group& G : groups_)
          if (G.open && G.reads.count(g_.value(v).storage) &&
              std::find(cands.begin(), cands.end(), G.id) == cands.end())
            cands.push_back(G.id);
      }
      // Horizontal: an unrelated open group this pointwise node fits (Adam's two moment updates
      // of one parameter, over its shape or its gradient's reduced shape), the most recent first.
      if (n.op->kind == OpKind::Pointwise) {
        Affine unused;
        const Shape& shape = g_.value(n.kind == NodeKind::Mutate ? n.target : n.outputs.at(0)).sizes;
        for (size_t gi = groups_.size(); gi-- > 0;) {
          const Group& G = groups_[gi];
          if (G.open && output_map(G, shape, unused) && std::find(cands.begin(), cands.end(), G.id) == cands.end())
            cands.push_back(G.id);
        }
      }
      for (int c : cands)
        if (try_add(groups_[idx(c)], ni)) {
          joined = c;
          break;
        }
      if (joined < 0) {
        Group G;
        G.id = static_cast<int>(groups_.size());
        groups_.push_back(std::move(G));
        if (try_add(groups_.back(), ni))
          joined = groups_.back().id;
        else
          groups_.pop_back();
      }
    }
    close_hazards(ni, joined);
    if (joined >= 0) group_of_[i] = joined;
    // Any other write ends what we know about a fill.
    if (n.target >= 0) fills_.erase(g_.value(n.target).storage);
  }

  // Which storages each group must store: those someone outside the group touches later.
  const size_t ns = g_.storages.size();
  std::vector<std::vector<std::pair<int, int>>> touchers(ns);  // (node index, group or -1)
  for (size_t i = 0; i < nn; ++i) {
    const Node& n = g_.nodes[i];
    if (n.kind != NodeKind::Op && n.kind != NodeKind::Mutate) continue;
    if (group_of_[i] >= 0 || fill_extern[i]) continue;
    for (int v : n.inputs)
      if (v >= 0) touchers[idx(g_.value(v).storage)].push_back({static_cast<int>(i), -1});
    if (n.target >= 0) touchers[idx(g_.value(n.target).storage)].push_back({static_cast<int>(i), -1});
  }
  for (const Group& G : groups_) {
    for (auto [s, at] : G.first_read) touchers[idx(s)].push_back({at, G.id});
    for (auto [s, at] : G.first_write)
      if (G.mutated.count(s)) touchers[idx(s)].push_back({at, G.id});
  }
  std::vector<char> needed_fill(ns, 0);
  for (Group& G : groups_) {
    for (auto& [s, src] : G.content) {
      const jit::StorageInfo& info = g_.storages[idx(s)];
      bool needed = info.input >= 0 || info.output;
      for (auto [node, grp] : touchers[idx(s)])
        if (grp != G.id && node > G.first_write.at(s)) needed = true;
      if (!needed) continue;
      const Value& v = g_.value(src.value);
      int b = buffer(G, s, src.value, v.dtype);
      G.k.buffers[idx(b)].written = true;
      Store st;
      st.buffer = b;
      st.index = index(G, v, src.map);
      st.value = cast(G, src.expr, v.dtype);
      G.k.stores.push_back(st);
    }
  }
  for (size_t s = 0; s < ns; ++s)
    if (fill_node_.count(static_cast<int>(s))) {
      const jit::StorageInfo& info = g_.storages[s];
      needed_fill[s] = info.input >= 0 || info.output || !touchers[s].empty();
    }

  FusionResult res;
  res.group_of_node = group_of_;
  // Groups that store nothing are dead (their values were only read by themselves).
  for (Group& G : groups_)
    if (!G.k.stores.empty()) finalize(G);

  // The new graph: members replaced by one Fused node at the place of the group's last member;
  // views of what a kernel defines move after it.
  Graph& out = res.graph;
  out.values = g_.values;
  out.storages = g_.storages;
  out.inputs = g_.inputs;
  for (Value& v : out.values) v.node = -1;
  std::vector<char> defined(g_.values.size(), 0);
  std::vector<int> last_member(groups_.size(), -1);
  for (const Group& G : groups_) last_member[idx(G.id)] = G.members.back();
  std::vector<const Node*> pending_views;
  auto emit = [&](Node n) {
    int at = static_cast<int>(out.nodes.size());
    for (int v : n.outputs) {
      out.values[idx(v)].node = at;
      defined[idx(v)] = 1;
    }
    out.nodes.push_back(std::move(n));
  };
  auto flush_views = [&] {
    for (bool progress = true; progress;) {
      progress = false;
      for (auto it = pending_views.begin(); it != pending_views.end();)
        if (defined[idx((*it)->inputs[0])]) {
          emit(**it);
          it = pending_views.erase(it);
          progress = true;
        } else {
          ++it;
        }
    }
  };
  for (size_t i = 0; i < nn; ++i) {
    const Node& n = g_.nodes[i];
    if (fill_extern[i]) {
      const Value& t = g_.value(n.kind == NodeKind::Mutate ? n.target : n.outputs.at(0));
      if (!needed_fill[idx(t.storage)]) continue;
    }
    const int gi = group_of_[i];
    if (gi < 0) {
      if (n.kind == NodeKind::View && !defined[idx(n.inputs[0])]) {
        pending_views.push_back(&n);
        continue;
      }
      if (n.kind == NodeKind::Op || n.kind == NodeKind::Mutate) ++res.externs;
      emit(n);
      flush_views();
      continue;
    }
    if (last_member[idx(gi)] != static_cast<int>(i)) continue;
    Group& G = groups_[idx(gi)];
    if (G.k.stores.empty()) continue;
    auto call = std::make_shared<FusedCall>();
    call->group = G.id;
    call->summary = "";
    for (size_t m = 0; m < G.ops.size(); ++m) call->summary += (m ? " " : "") + G.ops[m];
    Node f;
    f.kind = NodeKind::Fused;
    for (size_t b = 0; b < G.k.buffers.size(); ++b) {
      int rep = G.buffer_rep[b];
      // A storage the group creates is defined by the Fused node itself.
      const int s = g_.value(rep).storage;
      if (auto it = G.created.find(s); it != G.created.end()) {
        rep = it->second;
        f.outputs.push_back(rep);
      } else {
        f.inputs.push_back(rep);
      }
      call->buffer_values.push_back(rep);
    }
    int64_t work = 1;
    for (size_t d = 1; d < G.k.dims.size(); ++d) work *= std::max<int64_t>(G.k.dims[d].value, 1);
    work *= std::max(G.k.num_stages, 1);
    call->grain = std::max<int64_t>(1, cpu::kParallelGrain / std::max<int64_t>(work, 1));
    call->params = G.k.param_values();
    call->ir = G.k;
    std::set<int> listed;
    for (int m : G.members) {
      const Node& src = g_.nodes[idx(m)];
      const int v = src.kind == NodeKind::Mutate ? src.target : src.outputs.empty() ? -1 : src.outputs[0];
      if (v >= 0 && listed.insert(v).second) call->sources += (call->sources.empty() ? "%" : " %") + std::to_string(v);
    }
    call->cost = estimate_cost(G.k);
    f.fused = call;
    ++res.kernels;
    emit(std::move(f));
    flush_views();
  }
  // Views and allocations nobody reads any more are dropped.
  std::vector<char> used(out.values.size(), 0);
  std::vector<char> keep(out.nodes.size(), 1);
  for (size_t i = out.nodes.size(); i-- > 0;) {
    const Node& n = out.nodes[i];
    if (n.kind == NodeKind::View || n.kind == NodeKind::Alloc || n.kind == NodeKind::Constant) {
      bool live = false;
      for (int v : n.outputs) live |= used[idx(v)] || out.storages[idx(out.values[idx(v)].storage)].output;
      if (!live) {
        keep[i] = 0;
        continue;
      }
    }
    for (int v : n.inputs)
      if (v >= 0) used[idx(v)] = 1;
    if (n.target >= 0) used[idx(n.target)] = 1;
  }
  Graph pruned;
  pruned.values = out.values;
  pruned.storages = out.storages;
  pruned.inputs = out.inputs;
  for (Value& v : pruned.values) v.node = -1;
  for (size_t i = 0; i < out.nodes.size(); ++i) {
    if (!keep[i]) continue;
    int at = static_cast<int>(pruned.nodes.size());
    for (int v : out.nodes[i].outputs) pruned.values[idx(v)].node = at;
    pruned.nodes.push_back(out.nodes[i]);
  }
  res.graph = std::move(pruned);
  for (const Group& G : groups_) res.group_names.push_back(G.k.stores.empty() ? "" : G.k.name);
  try {
    res.graph.verify();
  } catch (const InternalError& e) {
    throw InternalError(std::string(e.what()) + "\nfused graph:\n" + res.graph.str() + "input graph:\n" + g_.str());
  }
  return res;
}

}  // namespace

FusionResult fuse(const Graph& g, const FusionOptions& options) { return Partitioner(g, options).run(); }

int compile_fused(Graph& g, const CodegenOptions& options) {
  std::vector<const Kernel*> ks;
  std::vector<FusedCall*> calls;
  std::map<int, std::vector<FusedCall*>> cuda_calls;  // by device
  for (Node& n : g.nodes) {
    if (n.kind != NodeKind::Fused) continue;
    const Device dev = n.fused->buffer_values.empty() ? Device(kCPU) : g.value(n.fused->buffer_values[0]).device;
    if (dev.is_cuda()) {
      n.fused->cuda_device = dev.index() < 0 ? 0 : dev.index();
      for (int v : n.fused->buffer_values)
        KILN_CHECK(g.value(v).device == dev, "[fusion] kernel ", n.fused->ir.name, " on ", dev, " reads a ",
                   g.value(v).device, " value (", g.value_type(v), "): its graph runs through the eager CUDA kernels");
      cuda_calls[n.fused->cuda_device].push_back(n.fused.get());
      continue;
    }
    ks.push_back(&n.fused->ir);
    calls.push_back(n.fused.get());
  }
  for (auto& [device, dcalls] : cuda_calls) {
#if KILN_HAS_CUDA_TOOLKIT
    std::vector<const Kernel*> dks;
    for (FusedCall* c : dcalls) dks.push_back(&c->ir);
    std::string name = dks.front()->name;
    std::replace(name.begin(), name.end(), '/', '_');  // the NVRTC program name names dump files
    auto fns = load_cuda_kernels(dks, device, name);
    for (size_t i = 0; i < dcalls.size(); ++i) dcalls[i]->cuda_code = fns[i];
#else
    KILN_FAIL("[fusion] a graph on cuda:", device, " needs the CUDA toolkit, and kiln was built without it");
#endif
  }
  if (ks.empty()) return 0;
  const CacheStats before = cache_stats();
  auto code = compile_kernels(ks, options);
  for (size_t i = 0; i < calls.size(); ++i) calls[i]->code = code[i];
  const CacheStats after = cache_stats();
  return static_cast<int>((after.memory_hits - before.memory_hits) + (after.disk_hits - before.disk_hits));
}

// The kernel's view of the cache (sysfs, as lscpu shows it); glibc's sysconf reports the whole
// package's L3 on some virtual machines (256 MiB on an EPYC guest that has 32 MiB).
int64_t last_level_cache_bytes() {
  int64_t best = 0;
  for (int i = 0; i < 8; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    std::ifstream size_file(dir + "size"), type_file(dir + "type");
    std::string size, type;
    if (!(size_file >> size) || !(type_file >> type) || type == "Instruction") continue;
    char* end = nullptr;
    int64_t bytes = std::strtoll(size.c_str(), &end, 10);
    if (end && (*end == 'K' || *end == 'k')) bytes <<= 10;
    if (end && (*end == 'M' || *end == 'm')) bytes <<= 20;
    best = std::max(best, bytes);
  }
  if (best > 0) return best;
  const long llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
  return llc > 0 ? static_cast<int64_t>(llc) : int64_t(32) << 20;
}

namespace {
std::atomic<int64_t> g_stream_store_bytes{-1};  // -1: not decided yet
}  // namespace

int64_t set_stream_store_bytes(int64_t bytes) {
  KILN_CHECK(bytes >= 0, "[fusion] set_stream_store_bytes: bytes must be >= 0, got ", bytes);
  const int64_t before = stream_store_bytes();
  g_stream_store_bytes.store(bytes);
  return before;
}

int64_t stream_store_bytes() {
  if (int64_t set = g_stream_store_bytes.load(std::memory_order_relaxed); set >= 0) return set;
  static const int64_t bytes = [] {
    if (const char* env = std::getenv("KILN_STREAM_STORE_BYTES")) {
      char* end = nullptr;
      const long long v = std::strtoll(env, &end, 10);
      if (end != env && *end == '\0' && v >= 0) return static_cast<int64_t>(v);
      logging::logger().warn("[fusion] KILN_STREAM_STORE_BYTES='{}' is not a byte count; using the cache size", env);
    }
    // A kernel's output smaller than the last-level cache is likely still there when the next
    // kernel reads it; a larger one is not, and then its lines need not be read before writing.
    return last_level_cache_bytes();
  }();
  return bytes;
}

void run_fused(const FusedCall& call, char* const* buffers) {
  if (call.cuda_device >= 0) {
#if KILN_HAS_CUDA_TOOLKIT
    KILN_CHECK(call.cuda_code, "[fusion] kernel ", call.ir.name, " was not compiled for cuda:", call.cuda_device);
    uint64_t addr[64];
    KILN_CHECK(call.ir.buffers.size() <= 64, "[fusion] kernel ", call.ir.name, " has more than 64 buffers");
    for (size_t b = 0; b < call.ir.buffers.size(); ++b) addr[b] = reinterpret_cast<uint64_t>(buffers[b]);
    launch_cuda_kernel(*static_cast<const CudaFunction*>(call.cuda_code.get()), call.ir, call.params, addr,
                       cuda::current_stream(call.cuda_device));
    return;
#else
    KILN_FAIL("[fusion] kernel ", call.ir.name, " runs on CUDA, and kiln was built without the CUDA toolkit");
#endif
  }
  KernelFn fn = call.code->fn;
  const int64_t* params = call.params.data();
  const int64_t n0 = call.ir.dims[0].is_const() ? call.ir.dims[0].value : call.params[idx(call.ir.dims[0].param)];
  cpu::parallel_for(n0, call.grain, [&](int64_t b, int64_t e) { fn(buffers, params, b, e); });
}

std::string fusion_dot(const Graph& g, const FusionResult& r, const std::string& name) {
  static const char* palette[] = {"#8dd3c7", "#ffffb3", "#bebada", "#fb8072", "#80b1d3", "#fdb462",
                                  "#b3de69", "#fccde5", "#bc80bd", "#ccebc5", "#ffed6f", "#d9d9d9"};
  std::ostringstream os;
  os << "digraph \"" << name << "\" {\n  rankdir=TB;\n  node [shape=box, fontname=monospace];\n";
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    const int grp = i < r.group_of_node.size() ? r.group_of_node[i] : -1;
    std::string label = g.node_str(i);
    std::string esc;
    for (char c : label) esc += c == '"' ? std::string("\\\"") : std::string(1, c);
    if (grp >= 0 && idx(grp) < r.group_names.size()) esc = r.group_names[idx(grp)] + "\\n" + esc;
    const char* color = grp >= 0 ? palette[idx(grp) % (sizeof(palette) / sizeof(palette[0]))]
                        : (n.kind == NodeKind::Op || n.kind == NodeKind::Mutate) ? "white"
                                                                                 : "lightgrey";
    os << "  n" << i << " [label=\"" << esc << "\", style=filled, fillcolor=\"" << color << "\"];\n";
    std::vector<int> reads = n.inputs;
    if (n.target >= 0) reads.insert(reads.begin(), n.target);
    for (int v : reads)
      if (v >= 0 && g.value(v).node >= 0) os << "  n" << g.value(v).node << " -> n" << i << ";\n";
  }
  os << "}\n";
  return os.str();
}

}  // namespace kiln::fusion
