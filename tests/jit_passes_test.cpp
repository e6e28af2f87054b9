// JIT graph passes (jit/passes.cpp): the structure each pass leaves, the effects it must keep
// (writes to inputs, writes read later, random ops), and, through a small reference interpreter,
// the same results before and after the whole pipeline.
#include <map>
#include <string>
#include <vector>

#include "core/shape.h"
#include "jit/passes.h"
#include "test_util.h"

using namespace kiln;
using namespace kiln::jit;
using kiln::testing::to_vec;

namespace {

// Builds graphs by hand the way the trace recorder does: output geometry comes from the rows'
// own infer and view functions, run on placeholder tensors of the values' geometry.
class Builder {
 public:
  Graph g;

  int input(const Shape& sizes, DType dt = kFloat32) {
    int s = g.add_storage({nbytes(sizes, dt), Device(kCPU), static_cast<int>(g.inputs.size())});
    int v = g.add_value(dense(sizes, dt, s));
    add(NodeKind::Input, nullptr, {}, {v});
    return v;
  }
  int alloc(const Shape& sizes, DType dt = kFloat32) {
    int v = fresh(sizes, dt);
    add(NodeKind::Alloc, nullptr, {}, {v});
    return v;
  }
  int constant(const Tensor& t) {
    StorageInfo info{t.nbytes(), t.device()};
    info.constant = true;
    int v = g.add_value(dense(t.sizes().vec(), t.dtype(), g.add_storage(info)));
    Node n;
    n.kind = NodeKind::Constant;
    n.outputs = {v};
    n.constant = t;
    g.add_node(std::move(n));
    return v;
  }
  std::vector<int> ops(std::string_view name, const std::vector<int>& inputs, const Attrs& attrs = {}) {
    const OpDef& op = op_def(name);
    std::vector<int> outs;
    for (const TensorMeta& m : op.infer(op, placeholders(inputs), attrs)) outs.push_back(fresh(m.sizes, m.dtype));
    add(NodeKind::Op, &op, inputs, outs, attrs);
    return outs;
  }
  int op(std::string_view name, const std::vector<int>& inputs, const Attrs& attrs = {}) {
    return ops(name, inputs, attrs).at(0);
  }
  int view(std::string_view name, int x, const Attrs& attrs) {
    const OpDef& op = op_def(name);
    ViewGeometry geo = op.view(op, placeholder(x), attrs);
    Value v = g.value(x);
    v.sizes = geo.sizes;
    v.strides = geo.strides;
    v.offset = geo.offset;
    int out = g.add_value(v);
    add(NodeKind::View, &op, {x}, {out}, attrs);
    return out;
  }
  int mutate(std::string_view name, int target, const std::vector<int>& inputs, const Attrs& attrs = {}) {
    Node n;
    n.kind = NodeKind::Mutate;
    n.op = &op_def(name);
    n.target = target;
    n.inputs = inputs;
    n.attrs = attrs;
    return g.add_node(std::move(n));
  }
  int fill_(int target, const Scalar& value) {
    const Value& t = g.value(target);
    return mutate("fill", target, {}, Attrs{value, t.sizes, t.dtype});
  }
  int uniform(const Shape& sizes) {
    return op("uniform", {}, Attrs{sizes, kFloat32, int64_t{7}, int64_t{0}, 0.0, 1.0});
  }
  void output(int v) { g.storages.at(static_cast<size_t>(g.value(v).storage)).output = true; }

  Tensor placeholder(int v) const {
    const Value& val = g.value(v);
    const StorageInfo& s = g.storages.at(static_cast<size_t>(val.storage));
    return empty({static_cast<int64_t>(s.nbytes / itemsize(val.dtype))}, val.dtype)
        .as_strided(val.sizes, val.strides, val.offset);
  }

 private:
  static size_t nbytes(const Shape& sizes, DType dt) { return static_cast<size_t>(shape_numel(sizes)) * itemsize(dt); }
  static Value dense(const Shape& sizes, DType dt, int storage) {
    Value v;
    v.sizes = sizes;
    v.strides = contiguous_strides(sizes);
    v.dtype = dt;
    v.storage = storage;
    return v;
  }
  int fresh(const Shape& sizes, DType dt) { return g.add_value(dense(sizes, dt, g.add_storage({nbytes(sizes, dt)}))); }
  TensorList placeholders(const std::vector<int>& vs) const {
    TensorList t;
    for (int v : vs) t.push_back(placeholder(v));
    return t;
  }
  void add(NodeKind kind, const OpDef* op, const std::vector<int>& inputs, const std::vector<int>& outputs,
           const Attrs& attrs = {}) {
    Node n;
    n.kind = kind;
    n.op = op;
    n.inputs = inputs;
    n.outputs = outputs;
    n.attrs = attrs;
    g.add_node(std::move(n));
  }
};

Tensor as_tensor_of(const Value& v, const Tensor& base) { return base.as_strided(v.sizes, v.strides, v.offset); }

void run_kernel(const Node& n, const TensorList& in, TensorList& out) {
  n.op->kernels[static_cast<int>(DeviceType::CPU)](*n.op, in, out, n.attrs);
}

// What a run leaves observable: each output storage's contents, and every graph input after it.
struct RunResult {
  std::map<int, std::vector<double>> outputs;
  std::vector<std::vector<double>> inputs;
};

// The reference interpreter: every node the plain way. View nodes take their geometry from the
// row (not from the recorded value), so a rewritten view is checked against its row as well.
RunResult run(const Graph& g, const TensorList& args) {
  std::vector<Tensor> vals(g.values.size());
  std::map<int, Tensor> base;  // storage -> the tensor that defined it
  for (const Node& n : g.nodes) {
    TensorList in;
    for (int v : n.inputs) in.push_back(vals[static_cast<size_t>(v)]);
    TensorList out;
    switch (n.kind) {
      case NodeKind::Input:
        out = {args.at(static_cast<size_t>(n.input_index)).clone()};
        break;
      case NodeKind::Alloc: {
        const Value& v = g.value(n.outputs[0]);
        size_t bytes = g.storages[static_cast<size_t>(v.storage)].nbytes;
        out = {as_tensor_of(v, empty({static_cast<int64_t>(bytes / itemsize(v.dtype))}, v.dtype))};
        break;
      }
      case NodeKind::Constant:
        out = {n.constant};
        break;
      case NodeKind::Op:
        for (int v : n.outputs) out.push_back(empty(g.value(v).sizes, g.value(v).dtype));
        run_kernel(n, in, out);
        break;
      case NodeKind::View: {
        ViewGeometry geo = n.op->view(*n.op, in[0], n.attrs);
        const Value& v = g.value(n.outputs[0]);
        EXPECT_EQ(geo.sizes, v.sizes);
        EXPECT_EQ(geo.strides, v.strides);
        EXPECT_EQ(geo.offset, v.offset);
        out = {in[0].as_strided(geo.sizes, geo.strides, geo.offset)};
        break;
      }
      case NodeKind::Mutate: {
        TensorList target{vals[static_cast<size_t>(n.target)]};
        run_kernel(n, in, target);
        break;
      }
    }
    for (size_t k = 0; k < n.outputs.size(); ++k) {
      vals[static_cast<size_t>(n.outputs[k])] = out[k];
      base.emplace(g.value(n.outputs[k]).storage, out[k]);
    }
  }
  RunResult r;
  for (size_t s = 0; s < g.storages.size(); ++s)
    if (g.storages[s].output) r.outputs[static_cast<int>(s)] = to_vec(base.at(static_cast<int>(s)));
  for (int v : g.inputs) r.inputs.push_back(to_vec(vals[static_cast<size_t>(v)]));
  return r;
}

int count(const Graph& g, NodeKind kind) {
  int c = 0;
  for (const Node& n : g.nodes) c += n.kind == kind;
  return c;
}

int count_op(const Graph& g, std::string_view name) {
  int c = 0;
  for (const Node& n : g.nodes) c += n.op && n.op->name == name;
  return c;
}

const Node& def(const Graph& g, int v) { return g.nodes.at(static_cast<size_t>(g.value(v).node)); }

bool has_line(const Graph& g, const std::string& text) { return g.str().find(text) != std::string::npos; }

Tensor f32(const std::vector<float>& v, const Shape& sizes) { return tensor(v).reshape(sizes); }

// --- verify ------------------------------------------------------------------------------------

TEST(JitGraphVerify, CatchesUseBeforeDefinition) {
  Builder b;
  int x = b.input({3});
  int y = b.op("exp", {x});
  b.g.verify();
  // A node reading %y placed before y's definition.
  Node early;
  early.kind = NodeKind::Mutate;
  early.op = &op_def("add");
  early.target = x;
  early.inputs = {x, y};
  b.g.nodes.insert(b.g.nodes.begin() + 1, early);
  b.g.values[static_cast<size_t>(y)].node = 2;
  EXPECT_KILN_ERROR(b.g.verify(), "[internal]", "node 1 uses %1 before its definition");
}

// --- dead code -----------------------------------------------------------------------------------

TEST(JitDce, RemovesUnusedChainsKeepsInputsAndOutputs) {
  Builder b;
  int x = b.input({4});
  int unused_input = b.input({2});
  int a = b.op("exp", {x});
  b.op("neg", {a});  // dead, and makes `a` dead
  int y = b.op("mul", {x, x});
  b.output(y);
  Graph g = eliminate_dead_code(b.g);
  g.verify();
  ASSERT_EQ(g.nodes.size(), 3u);
  EXPECT_EQ(count(g, NodeKind::Input), 2);
  EXPECT_EQ(def(g, y).op->name, "mul");
  EXPECT_EQ(g.value(a).node, -1);
  EXPECT_EQ(g.inputs, (std::vector<int>{x, unused_input}));
  EXPECT_TRUE(has_line(g, "%4 = mul(%0, %0) : f32[4]"));
}

TEST(JitDce, KeepsWritesToInputsAndOutputs) {
  Builder b;
  int x = b.input({3});
  int one = b.constant(f32({1, 1, 1}, {3}));
  b.mutate("add", x, {x, one});  // visible to the caller through the input
  int y = b.alloc({3});
  b.output(y);
  b.fill_(y, 2.0);  // y is held outside the graph
  Graph g = eliminate_dead_code(b.g);
  g.verify();
  EXPECT_EQ(g.nodes.size(), b.g.nodes.size());
  EXPECT_TRUE(has_line(g, "add_(%0, %0, %1)  # writes %0 (graph input 0)"));
  EXPECT_TRUE(has_line(g, "fill_(%2, value=2"));
}

TEST(JitDce, KeepsWritesReadLaterEvenThroughViews) {
  Builder b;
  int x = b.input({3, 2});
  int buf = b.alloc({2, 3});
  int bt = b.view("transpose", buf, {int64_t{0}, int64_t{1}});
  b.mutate("copy", bt, {x}, {kFloat32});  // written through a view...
  int y = b.op("exp", {buf});             // ...and read through the base
  b.output(y);
  b.mutate("add", buf, {buf, buf});  // internal, and nothing reads it afterwards
  Graph g = eliminate_dead_code(b.g);
  g.verify();
  ASSERT_EQ(g.nodes.size(), b.g.nodes.size() - 1);
  EXPECT_EQ(count(g, NodeKind::Mutate), 1);
  EXPECT_EQ(g.nodes.back().op->name, "exp");
  EXPECT_EQ(run(g, {f32({1, 2, 3, 4, 5, 6}, {3, 2})}).outputs, run(b.g, {f32({1, 2, 3, 4, 5, 6}, {3, 2})}).outputs);
}

TEST(JitDce, DropsWritesToDeadInternalBuffers) {
  Builder b;
  int x = b.input({3});
  int buf = b.alloc({3});
  b.mutate("copy", buf, {x}, {kFloat32});
  b.mutate("mul", buf, {buf, x});
  Graph g = eliminate_dead_code(b.g);
  g.verify();
  EXPECT_EQ(g.nodes.size(), 1u);  // only the input binding
}

TEST(JitDce, KeepsUnusedRandomOps) {
  Builder b;
  int r = b.uniform({4});
  b.op("exp", {r});  // dead
  int x = b.input({4});
  b.mutate("bernoulli", b.alloc({4}), {x}, {int64_t{1}, int64_t{0}});  // random write into a dead buffer
  Graph g = eliminate_dead_code(b.g);
  g.verify();
  EXPECT_EQ(count_op(g, "uniform"), 1);
  EXPECT_EQ(count_op(g, "bernoulli"), 1);
  EXPECT_EQ(count(g, NodeKind::Alloc), 1);  // the random write's target stays defined
  EXPECT_EQ(count_op(g, "exp"), 0);
}

// --- common subexpressions ------------------------------------------------------------------------

TEST(JitCse, MergesEqualOpsAndViews) {
  Builder b;
  int x = b.input({2, 3});
  int e1 = b.op("exp", {x});
  int e2 = b.op("exp", {x});
  int t1 = b.view("transpose", e1, {int64_t{0}, int64_t{1}});
  int t2 = b.view("transpose", e2, {int64_t{0}, int64_t{1}});
  int y = b.op("add", {t1, t2});
  b.output(y);
  Graph g = eliminate_common_subexpressions(b.g);
  g.verify();
  EXPECT_EQ(count_op(g, "exp"), 1);
  EXPECT_EQ(count_op(g, "transpose"), 1);
  EXPECT_EQ(def(g, y).inputs, (std::vector<int>{t1, t1}));
  EXPECT_TRUE(has_line(g, "%5 = add(%3, %3)"));
  const std::vector<float> in{1, 2, 3, 4, 5, 6};
  EXPECT_EQ(run(g, {f32(in, {2, 3})}).outputs, run(b.g, {f32(in, {2, 3})}).outputs);
}

TEST(JitCse, ChainsMergeInOnePass) {
  Builder b;
  int x = b.input({3});
  int a1 = b.op("exp", {x}), a2 = b.op("exp", {x});
  int n1 = b.op("neg", {a1}), n2 = b.op("neg", {a2});
  int y = b.op("mul", {n1, n2});
  b.output(y);
  Graph g = eliminate_common_subexpressions(b.g);
  g.verify();
  EXPECT_EQ(g.nodes.size(), 4u);
  EXPECT_EQ(def(g, y).inputs, (std::vector<int>{n1, n1}));
}

TEST(JitCse, WriteToAnInputInBetweenPreventsMerging) {
  Builder b;
  int x = b.input({3});
  int one = b.constant(f32({1, 1, 1}, {3}));
  int e1 = b.op("exp", {x});
  b.mutate("add", x, {x, one});
  int e2 = b.op("exp", {x});
  b.output(b.op("sub", {e1, e2}));
  Graph g = eliminate_common_subexpressions(b.g);
  g.verify();
  EXPECT_EQ(count_op(g, "exp"), 2);
  auto r = run(g, {f32({0, 1, 2}, {3})});
  EXPECT_NE(r.outputs.begin()->second, std::vector<double>(3, 0.0));
}

TEST(JitCse, WriteToEitherResultPreventsMerging) {
  Builder b;
  int x = b.input({3});
  int e1 = b.op("exp", {x});
  int e2 = b.op("exp", {x});
  b.mutate("mul", e1, {e1, x});  // merging would make this write visible through e2
  b.output(b.op("sub", {e1, e2}));
  Graph g = eliminate_common_subexpressions(b.g);
  g.verify();
  EXPECT_EQ(count_op(g, "exp"), 2);
}

TEST(JitCse, NeverMergesRandomOpsOrSecondOutputs) {
  Builder b;
  int x = b.input({4});
  int r1 = b.uniform({4}), r2 = b.uniform({4});
  int e1 = b.op("exp", {x}), e2 = b.op("exp", {x});
  b.output(e2);  // a tensor outside refers to e2's own memory
  b.output(b.op("add", {r1, r2}));
  b.output(e1);
  Graph g = eliminate_common_subexpressions(b.g);
  g.verify();
  EXPECT_EQ(count_op(g, "uniform"), 2);
  EXPECT_EQ(count_op(g, "exp"), 2);
}

TEST(JitCse, AttributesCompareExactly) {
  Builder b;
  auto fill = [&](const Scalar& v) { return b.op("fill", {}, Attrs{v, Shape{2}, kFloat32}); };
  int pos = fill(0.0), neg = fill(-0.0), i1 = fill(int64_t{1}), d1 = fill(1.0), d1b = fill(1.0);
  int s0 = b.op("sum", {pos}, Attrs{Shape{0}, false, Attr{}});
  int s1 = b.op("sum", {pos}, Attrs{Shape{0}, false, kFloat32});  // same result type, other attribute
  int y = b.op("add", {b.op("add", {b.op("add", {pos, neg}), b.op("add", {i1, d1})}), d1b});
  b.output(y);
  b.output(b.op("add", {s0, s1}));
  Graph g = eliminate_common_subexpressions(b.g);
  g.verify();
  EXPECT_EQ(count_op(g, "fill"), 4);  // 0.0 and -0.0, int 1 and float 1 stay apart
  EXPECT_EQ(count_op(g, "sum"), 2);
  EXPECT_EQ(def(g, y).inputs.at(1), d1);
}

// --- constant folding -----------------------------------------------------------------------------

TEST(JitFold, EvaluatesOpsOnConstants) {
  Builder b;
  int x = b.input({3});
  int k1 = b.constant(f32({1, 2, 3}, {3}));
  int k2 = b.constant(f32({4, 5, 6}, {3}));
  int k = b.op("add", {k1, k2});
  int s = b.op("sum", {k}, Attrs{Shape{0}, false, Attr{}});
  int y = b.op("mul", {x, k});
  b.output(b.op("add", {y, s}));
  Graph g = fold_constants(b.g);
  g.verify();
  EXPECT_EQ(count(g, NodeKind::Constant), 4);
  EXPECT_EQ(count_op(g, "add"), 1);
  ASSERT_EQ(def(g, k).kind, NodeKind::Constant);
  EXPECT_EQ(to_vec(def(g, k).constant), (std::vector<double>{5, 7, 9}));
  EXPECT_EQ(to_vec(def(g, s).constant), (std::vector<double>{21}));
  EXPECT_TRUE(g.storages[static_cast<size_t>(g.value(k).storage)].constant);
  EXPECT_TRUE(has_line(g, "%3 = constant() : f32[3]"));
  EXPECT_EQ(run(g, {f32({1, 2, 3}, {3})}).outputs, run(b.g, {f32({1, 2, 3}, {3})}).outputs);
}

TEST(JitFold, FilledBufferBecomesAConstant) {
  Builder b;
  int x = b.input({2, 2});
  int a = b.alloc({2, 2});
  b.fill_(a, 3.0);
  int t = b.view("transpose", a, {int64_t{0}, int64_t{1}});
  int e = b.op("exp", {t});
  b.output(b.op("mul", {x, e}));
  Graph g = fold_constants(b.g);
  g.verify();
  EXPECT_EQ(count(g, NodeKind::Alloc), 0);
  EXPECT_EQ(count(g, NodeKind::Mutate), 0);
  EXPECT_EQ(count_op(g, "exp"), 0);
  EXPECT_EQ(to_vec(def(g, a).constant), std::vector<double>(4, 3.0));
  EXPECT_TRUE(kiln::testing::close(def(g, e).constant, exp(full({2, 2}, 3.0))));
  EXPECT_EQ(def(g, t).kind, NodeKind::View);  // a view of the constant, which DCE may drop
}

TEST(JitFold, FoldsThroughStridedViewsOfConstants) {
  Builder b;
  int k = b.constant(f32({1, 2, 3, 4, 5, 6}, {2, 3}));
  int t = b.view("transpose", k, {int64_t{0}, int64_t{1}});
  int c = b.op("copy", {t}, {kFloat64});  // materialises the transposed order
  b.output(b.op("neg", {c}));
  Graph g = fold_constants(b.g);
  g.verify();
  ASSERT_EQ(def(g, c).kind, NodeKind::Constant);
  EXPECT_EQ(def(g, c).constant.dtype(), kFloat64);
  EXPECT_EQ(to_vec(def(g, c).constant), (std::vector<double>{1, 4, 2, 5, 3, 6}));
  EXPECT_EQ(count_op(g, "neg"), 1);  // its result is held outside the graph
}

TEST(JitFold, LeavesWhatMustRunAtRunTime) {
  Builder b;
  int k = b.constant(f32({1, 2, 3}, {3}));
  int out = b.op("exp", {k});
  b.output(out);              // held outside: must be a real buffer
  int r = b.uniform({3});     // random
  int big = b.alloc({4097});  // too big to keep as a constant
  b.fill_(big, 1.0);
  int twice = b.alloc({3});  // written twice
  b.fill_(twice, 1.0);
  b.mutate("add", twice, {twice, k});
  int early = b.alloc({3});  // read before its fill
  int pre = b.op("neg", {early});
  b.fill_(early, 1.0);
  int idx = b.constant(tensor(std::vector<int64_t>{0, 5}));
  int bad = b.op("index_select", {k, idx}, {int64_t{0}});  // raises at run time, not now
  int wide = b.op("neg", {b.constant(zeros({4097}))});     // a result too big to keep
  for (int v : {r, big, twice, pre, early, bad, wide}) b.output(b.op("neg", {v}));
  Graph g = fold_constants(b.g);
  g.verify();
  EXPECT_EQ(def(g, out).kind, NodeKind::Op);
  EXPECT_EQ(count_op(g, "uniform"), 1);
  EXPECT_EQ(count(g, NodeKind::Alloc), 3);
  EXPECT_EQ(count(g, NodeKind::Mutate), 4);
  EXPECT_EQ(count_op(g, "index_select"), 1);
  EXPECT_EQ(def(g, wide).kind, NodeKind::Op);
  EXPECT_EQ(count(g, NodeKind::Constant), 3);
}

// --- algebraic simplification ---------------------------------------------------------------------

TEST(JitSimplify, RemovesIdentityArithmetic) {
  Builder b;
  int x = b.input({3});
  int ones = b.constant(f32({1, 1, 1}, {3}));
  int zero = b.constant(f32({0}, {}));
  int m = b.op("mul", {ones, x});  // 1 * x
  int d = b.op("div", {m, ones});  // x / 1
  int a = b.op("add", {zero, d});  // 0 + x
  int s = b.op("sub", {a, zero});  // x - 0
  int y = b.op("exp", {s});
  b.output(y);
  Graph g = simplify_algebra(b.g);
  g.verify();
  EXPECT_EQ(g.num_ops(), 3);  // two constants and exp
  EXPECT_EQ(def(g, y).inputs, (std::vector<int>{x}));
  EXPECT_TRUE(has_line(g, "= exp(%0)"));
}

TEST(JitSimplify, KeepsNonIdentities) {
  Builder b;
  int x = b.input({3});
  int xi = b.input({3}, kInt64);
  int ones = b.constant(f32({1, 1, 1}, {3}));
  int zeros = b.constant(f32({0, 0, 0}, {3}));
  int mixed = b.constant(f32({1, 1, 2}, {3}));
  int scalar_x = b.input({});
  int part = b.alloc({3});
  b.fill_(b.view("slice", part, {int64_t{0}, int64_t{0}, int64_t{2}, int64_t{1}}), 1);  // two of three
  std::vector<int> kept{
      b.op("sub", {zeros, x}),        // 0 - x is -x
      b.op("div", {ones, x}),         // 1 / x
      b.op("mul", {x, mixed}),        // not all ones
      b.op("add", {x, ones}),         // adds one
      b.op("mul", {xi, ones}),        // int * float: the dtype changes
      b.op("mul", {scalar_x, ones}),  // broadcasts: the shape changes
      b.op("mul", {x, part}),         // only partly filled with ones
  };
  for (int v : kept) b.output(b.op("neg", {v}));  // read, not held outside
  Graph g = simplify_algebra(b.g);
  g.verify();
  for (int v : kept) EXPECT_EQ(def(g, v).kind, NodeKind::Op) << "%" << v;
}

TEST(JitSimplify, SeesFilledBuffersAsUnits) {
  Builder b;
  int x = b.input({2, 2});
  int one = b.alloc({2, 2});
  b.fill_(one, 1);
  int y = b.op("mul", {x, one});
  b.fill_(one, 5);  // a later write does not change what mul read
  int z = b.op("add", {y, one});
  b.output(z);
  Graph g = simplify_algebra(b.g);
  g.verify();
  EXPECT_EQ(count_op(g, "mul"), 0);
  EXPECT_EQ(def(g, z).inputs, (std::vector<int>{x, one}));
  const std::vector<float> in{1, 2, 3, 4};
  EXPECT_EQ(run(g, {f32(in, {2, 2})}).outputs, run(b.g, {f32(in, {2, 2})}).outputs);
}

TEST(JitSimplify, KeepsTheCopyWhenItsSourceChangesOrItIsVisible) {
  Builder b;
  int x = b.input({3});
  int ones = b.constant(f32({1, 1, 1}, {3}));
  int copy = b.op("mul", {x, ones});
  b.mutate("add", x, {x, ones});  // x changes while `copy` is still read below
  int read_after = b.op("exp", {copy});
  int visible = b.op("mul", {x, ones});
  b.output(visible);  // held outside: must be its own tensor
  int written = b.op("mul", {x, ones});
  b.mutate("neg", written, {written});  // writing it would write x
  int late = b.op("mul", {x, ones});
  int used = b.op("exp", {late});
  b.mutate("add", x, {x, ones});  // after the last read of `late`: fine
  for (int v : {read_after, written, used}) b.output(v);
  Graph g = simplify_algebra(b.g);
  g.verify();
  EXPECT_EQ(def(g, copy).kind, NodeKind::Op);
  EXPECT_EQ(def(g, visible).kind, NodeKind::Op);
  EXPECT_EQ(def(g, written).kind, NodeKind::Op);
  EXPECT_EQ(g.value(late).node, -1);
  EXPECT_EQ(def(g, used).inputs, (std::vector<int>{x}));
  const std::vector<float> in{1, 2, 3};
  auto before = run(b.g, {f32(in, {3})}), after = run(g, {f32(in, {3})});
  EXPECT_EQ(after.outputs, before.outputs);
  EXPECT_EQ(after.inputs, before.inputs);
}

TEST(JitSimplify, TransposeOfTransposeIsTheRoot) {
  Builder b;
  int x = b.input({2, 3});
  int t = b.view("transpose", x, {int64_t{0}, int64_t{1}});
  int tt = b.view("transpose", t, {int64_t{1}, int64_t{0}});
  int u = b.view("unsqueeze", x, {int64_t{1}});
  int su = b.view("squeeze", u, {Shape{1}});
  int y = b.op("add", {tt, su});
  b.output(y);
  Graph g = simplify_algebra(b.g);
  g.verify();
  EXPECT_EQ(def(g, y).inputs, (std::vector<int>{x, x}));
  g = eliminate_dead_code(std::move(g));
  g.verify();
  EXPECT_EQ(count(g, NodeKind::View), 0);
  EXPECT_EQ(g.num_ops(), 1);
}

TEST(JitSimplify, ViewOfViewBecomesOneAsStrided) {
  Builder b;
  int x = b.input({4, 6});
  int t = b.view("transpose", x, {int64_t{0}, int64_t{1}});                      // [6, 4]
  int s = b.view("slice", t, {int64_t{0}, int64_t{1}, int64_t{5}, int64_t{2}});  // [2, 4]
  int sel = b.view("select", s, {int64_t{1}, int64_t{3}});                       // [2]
  int y = b.op("neg", {sel});
  int keep = b.op("exp", {t});  // the intermediate view has another use
  b.output(y);
  b.output(keep);
  Graph g = simplify_algebra(b.g);
  g.verify();
  const Node& ns = def(g, s);
  const Node& nsel = def(g, sel);
  EXPECT_EQ(ns.op->name, "as_strided");
  EXPECT_EQ(ns.inputs, (std::vector<int>{x}));
  EXPECT_EQ(nsel.op->name, "as_strided");
  EXPECT_EQ(nsel.inputs, (std::vector<int>{x}));
  EXPECT_EQ(def(g, t).op->name, "transpose");
  EXPECT_TRUE(has_line(g, "as_strided(%0, sizes=[2], strides=[2], offset=19) : f32[2] strides=[2] offset=19"));
  std::vector<float> in(24);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>(i);
  auto after = run(g, {f32(in, {4, 6})});
  EXPECT_EQ(after.outputs, run(b.g, {f32(in, {4, 6})}).outputs);
  EXPECT_EQ(after.outputs.at(b.g.value(y).storage), (std::vector<double>{-19, -21}));
  g = eliminate_dead_code(std::move(g));
  g.verify();
  EXPECT_EQ(count(g, NodeKind::View), 2);  // the unused as_strided for `s` is gone
}

// --- buffer planning ------------------------------------------------------------------------------

// No two storages alive at once share a slot, and every slot holds its storages.
void expect_sound(const Graph& g, const BufferPlan& plan) {
  const size_t ns = g.storages.size();
  std::vector<int> first(ns, -1), last(ns, -1);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    std::vector<int> vs = g.nodes[i].inputs;
    vs.insert(vs.end(), g.nodes[i].outputs.begin(), g.nodes[i].outputs.end());
    if (g.nodes[i].target >= 0) vs.push_back(g.nodes[i].target);
    for (int v : vs) {
      size_t s = static_cast<size_t>(g.value(v).storage);
      if (first[s] < 0) first[s] = static_cast<int>(i);
      last[s] = static_cast<int>(i);
    }
  }
  for (size_t a = 0; a < ns; ++a) {
    int slot = plan.slot_of_storage[a];
    if (slot < 0) continue;
    EXPECT_GE(plan.slot_bytes.at(static_cast<size_t>(slot)), g.storages[a].nbytes);
    for (size_t b = a + 1; b < ns; ++b)
      if (plan.slot_of_storage[b] == slot)
        EXPECT_TRUE(last[a] < first[b] || last[b] < first[a]) << "storages " << a << " and " << b << " overlap";
  }
}

TEST(JitPlanBuffers, PointwiseChainUsesTwoSlots) {
  Builder b;
  int x = b.input({16});
  int v = x;
  std::vector<int> chain;
  for (int i = 0; i < 10; ++i) chain.push_back(v = b.op("exp", {v}));
  b.output(v);
  BufferPlan plan = plan_buffers(b.g);
  expect_sound(b.g, plan);
  EXPECT_EQ(plan.slot_bytes.size(), 2u);
  EXPECT_EQ(plan.unplanned_bytes, 9u * 16 * 4);
  EXPECT_EQ(plan.planned_bytes(), 2u * 16 * 4);
  EXPECT_LT(plan.planned_bytes(), plan.unplanned_bytes);
  EXPECT_EQ(plan.slot_of_storage[static_cast<size_t>(b.g.value(x).storage)], -1);
  EXPECT_EQ(plan.slot_of_storage[static_cast<size_t>(b.g.value(chain.back()).storage)], -1);
  EXPECT_NE(plan.slot_of_storage[static_cast<size_t>(b.g.value(chain[0]).storage)],
            plan.slot_of_storage[static_cast<size_t>(b.g.value(chain[1]).storage)]);
}

TEST(JitPlanBuffers, ViewsAndWritesExtendLifetimes) {
  Builder b;
  int x = b.input({4});
  int a = b.op("exp", {x});
  int av = b.view("view", a, {Shape{2, 2}});
  int c = b.op("neg", {x});
  int d = b.op("neg", {c});
  b.mutate("add", av, {av, b.view("view", d, {Shape{2, 2}})});  // a is alive until here
  int e = b.op("exp", {x});
  b.output(b.op("add", {e, a}));
  b.constant(f32({1}, {1}));
  BufferPlan plan = plan_buffers(b.g);
  expect_sound(b.g, plan);
  auto slot = [&](int v) { return plan.slot_of_storage[static_cast<size_t>(b.g.value(v).storage)]; };
  EXPECT_NE(slot(a), slot(c));
  EXPECT_NE(slot(a), slot(d));
  EXPECT_NE(slot(a), slot(e));
  EXPECT_EQ(slot(e), slot(c));  // c and d are dead by then; c's slot is found first
  for (size_t s = 0; s < b.g.storages.size(); ++s)
    if (b.g.storages[s].constant) EXPECT_EQ(plan.slot_of_storage[s], -1);
}

TEST(JitPlanBuffers, BestFitPicksTheSmallestSlotThatFits) {
  Builder b;
  int big = b.input({100}), small = b.input({10});
  int a = b.op("exp", {big});    // 400 bytes
  int s = b.op("exp", {small});  // 40 bytes
  b.output(b.op("add", {a, big}));
  b.output(b.op("add", {s, small}));
  int s2 = b.op("neg", {small});                                    // fits both free slots: takes the 40-byte one
  int cat = b.op("cat", std::vector<int>(5, small), {int64_t{0}});  // 200 bytes: the 400-byte slot
  int m = b.op("neg", {cat});
  b.output(b.op("add", {s2, small}));
  b.output(m);
  BufferPlan plan = plan_buffers(b.g);
  expect_sound(b.g, plan);
  auto slot = [&](int v) { return plan.slot_of_storage[static_cast<size_t>(b.g.value(v).storage)]; };
  EXPECT_EQ(slot(s2), slot(s));
  EXPECT_EQ(slot(cat), slot(a));
  EXPECT_EQ(plan.slot_bytes.size(), 2u);
  EXPECT_EQ(plan.planned_bytes(), 440u);
}

TEST(JitPlanBuffers, GrowsAFreeSlotRatherThanAddingOne) {
  Builder b;
  int x = b.input({10});
  int a = b.op("neg", {x});                         // 40 bytes
  int big = b.op("cat", {a, a, a}, {int64_t{0}});   // 120 bytes: a is still alive, so a new slot
  b.output(b.op("neg", {big}));                     // both free after this
  int y = b.op("cat", {x, x, x, x}, {int64_t{0}});  // 160 bytes: no slot fits, the 120-byte one grows
  b.output(b.op("neg", {y}));
  BufferPlan plan = plan_buffers(b.g);
  expect_sound(b.g, plan);
  auto slot = [&](int v) { return plan.slot_of_storage[static_cast<size_t>(b.g.value(v).storage)]; };
  EXPECT_EQ(plan.slot_bytes.size(), 2u);
  EXPECT_EQ(slot(y), slot(big));
  EXPECT_EQ(plan.slot_bytes[static_cast<size_t>(slot(y))], 160u);
  EXPECT_EQ(plan.planned_bytes(), 200u);
  EXPECT_EQ(plan.unplanned_bytes, 40u + 120u + 160u);
}

// --- pipeline -------------------------------------------------------------------------------------

TEST(JitPipeline, RunsEveryPassInOrderAndKeepsResults) {
  Builder b;
  int x = b.input({2, 3});
  int w = b.input({3});
  int ones = b.alloc({3});
  b.fill_(ones, 1.0);
  int xa = b.op("mul", {x, ones});                     // simplify: x
  int e1 = b.op("exp", {xa}), e2 = b.op("exp", {xa});  // cse
  int tt = b.view("transpose", b.view("transpose", x, {int64_t{0}, int64_t{1}}), {int64_t{0}, int64_t{1}});
  int k = b.op("mul", {b.constant(f32({1, 2, 3}, {3})), b.constant(f32({2, 2, 2}, {3}))});  // fold
  int f = b.op("add", {b.op("add", {b.op("add", {e1, e2}), tt}), k});
  b.output(f);
  b.op("neg", {x});               // dead
  b.mutate("add", w, {w, ones});  // a write the caller sees
  b.uniform({3});                 // random: stays
  std::vector<std::string> stages;
  Graph g = run_pipeline(b.g, {}, [&](std::string_view name, const Graph& after) {
    after.verify();
    stages.emplace_back(name);
  });
  EXPECT_EQ(stages, (std::vector<std::string>{"simplify_algebra", "fold_constants", "eliminate_common_subexpressions",
                                              "eliminate_dead_code"}));
  EXPECT_EQ(count_op(g, "mul"), 0);
  EXPECT_EQ(count_op(g, "exp"), 1);
  EXPECT_EQ(count_op(g, "neg"), 0);
  EXPECT_EQ(count(g, NodeKind::View), 0);
  EXPECT_EQ(count_op(g, "uniform"), 1);
  EXPECT_EQ(count_op(g, "add"), 4);  // three adds and the write to w
  EXPECT_EQ(to_vec(def(g, k).constant), (std::vector<double>{2, 4, 6}));
  const TensorList args{f32({0.5f, -1, 2, 0, 1, -2}, {2, 3}), f32({1, 2, 3}, {3})};
  auto before = run(b.g, args), after = run(g, args);
  EXPECT_EQ(after.outputs, before.outputs);
  EXPECT_EQ(after.inputs, before.inputs);
  EXPECT_EQ(after.inputs[1], (std::vector<double>{2, 3, 4}));

  stages.clear();
  PassPipeline only_dce;
  only_dce.simplify = only_dce.fold = only_dce.cse = false;
  Graph d = run_pipeline(b.g, only_dce, [&](std::string_view name, const Graph&) { stages.emplace_back(name); });
  EXPECT_EQ(stages, std::vector<std::string>{"eliminate_dead_code"});
  EXPECT_EQ(count_op(d, "exp"), 2);
  EXPECT_EQ(count_op(d, "neg"), 0);
}

}  // namespace
