// Autograd semantics against PyTorch's behaviour (hand-computed expected values): leaves and
// requires_grad propagation, accumulation, retain_graph, grad(), higher order, grad mode,
// detach, in-place ops (version checks, leaves, non-leaves, through views), hooks,
// retain_grad, broadcasting, dtypes, multi-output ops and the error paths.
#include <pthread.h>

#include <string>
#include <thread>
#include <vector>

#include "autograd/autograd.h"
#include "autograd/node.h"
#include "test_util.h"

using namespace kiln;
using kiln::testing::close;
using kiln::testing::to_vec;

namespace {

Tensor vec(std::vector<double> v, DType dt = kFloat32) { return tensor(v, TensorOptions().dtype(dt)); }
Tensor leaf(std::vector<double> v, DType dt = kFloat32) { return vec(std::move(v), dt).requires_grad_(); }
std::string node_name(const Tensor& t) {
  auto fn = t.grad_fn();
  return fn ? fn->name() : std::string("<none>");
}

// --- leaves, requires_grad, grad_fn ------------------------------------------------------------

TEST(Autograd, LeafAndNonLeaf) {
  Tensor x = leaf({1, 2, 3});
  EXPECT_TRUE(x.is_leaf());
  EXPECT_TRUE(x.requires_grad());
  EXPECT_EQ(x.grad_fn(), nullptr);
  Tensor y = x * 2;
  EXPECT_FALSE(y.is_leaf());
  EXPECT_TRUE(y.requires_grad());
  EXPECT_EQ(node_name(y), "mulBackward");
  Tensor c = vec({1, 2, 3});
  EXPECT_TRUE(c.is_leaf());
  EXPECT_FALSE(c.requires_grad());
  Tensor d = c * 2;  // nothing requires grad: nothing recorded
  EXPECT_TRUE(d.is_leaf());
  EXPECT_FALSE(d.requires_grad());
  Tensor e = c + x;  // one input is enough
  EXPECT_TRUE(e.requires_grad());
  EXPECT_EQ(node_name(e), "addBackward");
  Tensor f = e.exp().sum();
  EXPECT_EQ(node_name(f), "sumBackward");
  // The graph: sum -> exp -> add -> (none for c, AccumulateGrad for x).
  auto add_node = f.grad_fn()->next_edges.at(0).fn->next_edges.at(0).fn;
  ASSERT_NE(add_node, nullptr);
  EXPECT_EQ(add_node->name(), "addBackward");
  EXPECT_FALSE(add_node->next_edges.at(0).valid());
  ASSERT_TRUE(add_node->next_edges.at(1).valid());
  EXPECT_EQ(add_node->next_edges.at(1).fn->name(), "AccumulateGrad");
}

TEST(Autograd, NonLeafGradIsUndefinedAndLeafGradStartsUndefined) {
  Tensor x = leaf({1, 2, 3});
  EXPECT_FALSE(x.grad().defined());
  Tensor y = x * x;
  y.sum().backward();
  EXPECT_TRUE(close(x.grad(), vec({2, 4, 6})));
  EXPECT_FALSE(y.grad().defined());
  EXPECT_FALSE(x.grad().requires_grad());
  EXPECT_EQ(x.grad().dtype(), kFloat32);
}

TEST(Autograd, BackwardOnLeafItself) {
  Tensor x = leaf({1, 2});
  Tensor g = vec({3, 4});
  x.backward(g);
  EXPECT_TRUE(close(x.grad(), vec({3, 4})));
  g.mul_(10);  // .grad must not alias the caller's gradient
  EXPECT_TRUE(close(x.grad(), vec({3, 4})));
}

TEST(Autograd, DiamondGraph) {
  Tensor x = leaf({1, 2, 3});
  Tensor a = x * 2, b = x * 3;
  (a * b).sum().backward();  // 6 x^2 -> 12 x
  EXPECT_TRUE(close(x.grad(), vec({12, 24, 36})));
}

TEST(Autograd, SameOutputTwiceAsRoot) {
  Tensor x = leaf({1, 2});
  Tensor y = (x * 3).sum();
  autograd::backward({y, y});
  EXPECT_TRUE(close(x.grad(), vec({6, 6})));
}

// --- accumulation, retain_graph, non-scalar outputs ----------------------------------------------

TEST(Autograd, GradientsAccumulateOverBackwardCalls) {
  Tensor x = leaf({1, 2, 3});
  (x * 3).sum().backward();
  (x * x).sum().backward();
  EXPECT_TRUE(close(x.grad(), vec({5, 7, 9})));
  x.mutable_grad().zero_();
  (x * 3).sum().backward();
  EXPECT_TRUE(close(x.grad(), vec({3, 3, 3})));
  x.set_grad(Tensor());
  (x * 2).sum().backward();
  EXPECT_TRUE(close(x.grad(), vec({2, 2, 2})));
}

TEST(Autograd, RetainGraph) {
  Tensor x = leaf({1, 2, 3});
  Tensor y = (x * x).sum();
  y.backward({}, /*retain_graph=*/true);
  y.backward({}, /*retain_graph=*/true);
  EXPECT_TRUE(close(x.grad(), vec({4, 8, 12})));
  y.backward();  // frees the graph
  EXPECT_TRUE(close(x.grad(), vec({6, 12, 18})));
  EXPECT_KILN_ERROR(y.backward(), "retain_graph", "second time", "mul");
  EXPECT_TRUE(close(x.grad(), vec({6, 12, 18})));
}

TEST(Autograd, RetainGraphAlsoAppliesToGrad) {
  Tensor x = leaf({2});
  Tensor y = x.exp();
  autograd::grad({y}, {x});
  EXPECT_KILN_ERROR(autograd::grad({y}, {x}), "retain_graph");
}

TEST(Autograd, NonScalarBackwardNeedsGradient) {
  Tensor x = leaf({1, 2, 3});
  Tensor y = x * 2;
  EXPECT_KILN_ERROR(y.backward(), "[backward]", "implicitly created only for scalar outputs", "[3]");
  EXPECT_KILN_ERROR(y.backward(vec({1, 1})), "[backward]", "mismatch in shape", "[2]", "[3]");
  y.backward(vec({1, 0.5, -1}));
  EXPECT_TRUE(close(x.grad(), vec({2, 1, -2})));
  // A one-element tensor of any rank is fine.
  Tensor z = leaf({4});
  (z * 3).view({1, 1}).backward();
  EXPECT_TRUE(close(z.grad(), vec({3})));
  // The seed's dtype is cast to the output's.
  Tensor w = leaf({1, 2});
  (w * 2).backward(vec({1, 1}, kFloat64));
  EXPECT_EQ(w.grad().dtype(), kFloat32);
  EXPECT_TRUE(close(w.grad(), vec({2, 2})));
}

TEST(Autograd, BackwardOnTensorOutsideTheGraphRaises) {
  Tensor c = vec({1, 2});
  EXPECT_KILN_ERROR(c.sum().backward(), "[backward]", "does not require grad");
  Tensor x = leaf({1});
  EXPECT_KILN_ERROR(autograd::grad({x * 2}, {c}), "[grad]", "input 0", "does not require grad");
  EXPECT_KILN_ERROR(autograd::backward({x * 2}, {vec({1}), vec({1})}), "[backward]", "1 outputs", "2 grad_outputs");
}

// --- grad() ----------------------------------------------------------------------------------------

TEST(Autograd, GradReturnsGradientsWithoutTouchingDotGrad) {
  Tensor x = leaf({1, 2, 3});
  Tensor w = leaf({4, 5, 6});
  Tensor y = (x * w).sum();
  TensorList g = autograd::grad({y}, {w, x});
  ASSERT_EQ(g.size(), 2u);
  EXPECT_TRUE(close(g[0], vec({1, 2, 3})));
  EXPECT_TRUE(close(g[1], vec({4, 5, 6})));
  EXPECT_FALSE(g[0].requires_grad());
  EXPECT_FALSE(x.grad().defined());
  EXPECT_FALSE(w.grad().defined());
}

TEST(Autograd, GradOfIntermediateAndPartialInputs) {
  Tensor x = leaf({1, 2});
  Tensor w = leaf({3, 4});
  Tensor h = x * w;  // non-leaf input of grad()
  Tensor y = (h * h).sum();
  TensorList g = autograd::grad({y}, {h}, {}, /*retain_graph=*/true);
  EXPECT_TRUE(close(g[0], vec({6, 16})));  // 2h
  g = autograd::grad({y}, {x});
  EXPECT_TRUE(close(g[0], vec({18, 64})));  // 2 h w
  EXPECT_FALSE(w.grad().defined());
  EXPECT_FALSE(x.grad().defined());
}

TEST(Autograd, GradWithGradOutputs) {
  Tensor x = leaf({1, 2});
  Tensor y = x * x;
  TensorList g = autograd::grad({y}, {x}, {vec({10, -1})});
  EXPECT_TRUE(close(g[0], vec({20, -4})));
}

TEST(Autograd, AllowUnused) {
  Tensor x = leaf({1, 2});
  Tensor z = leaf({5});
  Tensor y = (x * 2).sum();
  EXPECT_KILN_ERROR(autograd::grad({y}, {x, z}, {}, true), "[grad]", "input 1", "allow_unused");
  TensorList g = autograd::grad({y}, {x, z}, {}, std::nullopt, false, /*allow_unused=*/true);
  EXPECT_TRUE(close(g[0], vec({2, 2})));
  EXPECT_FALSE(g[1].defined());
}

// --- higher order ------------------------------------------------------------------------------------

TEST(Autograd, DoubleBackwardOfCube) {
  for (bool use_pow : {false, true}) {
    Tensor x = leaf({2, -1}, kFloat64);
    Tensor y = use_pow ? x.pow(3) : x * x * x;
    TensorList g1 = autograd::grad({y.sum()}, {x}, {}, std::nullopt, /*create_graph=*/true);
    EXPECT_TRUE(g1[0].requires_grad());
    EXPECT_TRUE(close(g1[0], vec({12, 3}, kFloat64)));  // 3x^2
    TensorList g2 = autograd::grad({g1[0].sum()}, {x}, {}, std::nullopt, true);
    EXPECT_TRUE(close(g2[0], vec({12, -6}, kFloat64)));  // 6x
    TensorList g3 = autograd::grad({g2[0].sum()}, {x});
    EXPECT_TRUE(close(g3[0], vec({6, 6}, kFloat64)));
  }
}

TEST(Autograd, BackwardWithCreateGraph) {
  Tensor x = leaf({3}, kFloat64);
  Tensor y = x.exp() * x;  // y' = e^x (x + 1), y'' = e^x (x + 2)
  y.backward({}, std::nullopt, /*create_graph=*/true);
  Tensor g = x.grad();
  EXPECT_TRUE(g.requires_grad());
  EXPECT_NEAR(g.item<double>(), std::exp(3.0) * 4, 1e-9);
  Tensor gg = autograd::grad({g}, {x})[0];
  EXPECT_NEAR(gg.item<double>(), std::exp(3.0) * 5, 1e-9);
  // x.grad's graph saves x: a reference cycle, as in PyTorch (which warns); reset .grad.
  x.set_grad(Tensor());
}

TEST(Autograd, DoubleBackwardThroughSavedOutputsAndViews) {
  // tanh saves its output; the second derivative must see the output's own history.
  Tensor x = leaf({0.5, -0.3}, kFloat64);
  Tensor y = x.tanh().view({2, 1}).transpose(0, 1).sum();
  Tensor g = autograd::grad({y}, {x}, {}, std::nullopt, true)[0];
  Tensor gg = autograd::grad({g.sum()}, {x})[0];
  for (int i = 0; i < 2; ++i) {
    double v = to_vec(x)[i], t = std::tanh(v);
    EXPECT_NEAR(to_vec(g)[i], 1 - t * t, 1e-12);
    EXPECT_NEAR(to_vec(gg)[i], -2 * t * (1 - t * t), 1e-12);
  }
}

TEST(Autograd, SavedIntegerOutputsStayOutsideTheGraph) {
  // max(dim) saves its indices; differentiating its backward must not make them require grad.
  Tensor x = leaf({1, 5, 3, 2}, kFloat64);
  auto [v, i] = x.view({2, 2}).max(1, /*keepdim=*/true);
  Tensor h = autograd::grad({v.sum()}, {x}, {}, std::nullopt, /*create_graph=*/true)[0];
  EXPECT_TRUE(close(h, vec({0, 1, 1, 0}, kFloat64)));
  EXPECT_FALSE(h.requires_grad());  // the scatter of a constant gradient by constant indices
}

TEST(Autograd, CreateGraphGradsOfDifferentLeavesDoNotAlias) {
  Tensor a = leaf({1, 2}, kFloat64);
  Tensor b = leaf({3, 4}, kFloat64);
  (a + b).sum().backward({}, std::nullopt, /*create_graph=*/true);  // add passes one gradient to both
  EXPECT_NE(a.grad().data_ptr(), b.grad().data_ptr());
  a.mutable_grad().mul_(5);
  EXPECT_TRUE(close(b.grad(), vec({1, 1}, kFloat64)));
}

TEST(Autograd, DoubleBackwardThroughInplaceOnView) {
  // y = [x0^2, x1^2, x2] via mul_ on a view; d/dx sum(y^2) = [4 x0^3, 4 x1^3, 2 x2].
  Tensor x = leaf({1.5, -2, 3}, kFloat64);
  Tensor y = x * 1;
  y.narrow(0, 0, 2).mul_(x.narrow(0, 0, 2));
  Tensor g = autograd::grad({(y * y).sum()}, {x}, {}, std::nullopt, /*create_graph=*/true)[0];
  EXPECT_TRUE(close(g, vec({4 * 3.375, 4 * -8.0, 6}, kFloat64)));
  ASSERT_TRUE(g.requires_grad());
  Tensor gg = autograd::grad({g.sum()}, {x})[0];
  EXPECT_TRUE(close(gg, vec({12 * 2.25, 12 * 4.0, 2}, kFloat64)));
}

TEST(Autograd, RootThatFeedsAnotherRoot) {
  Tensor x = leaf({1, 2});
  Tensor y = x * 3;
  Tensor z = y * y;
  autograd::backward({y, z}, {vec({1, 1}), vec({1, 10})});  // dy: 1 + 2y dz
  EXPECT_TRUE(close(x.grad(), vec({3 * (1 + 6), 3 * (1 + 120)})));
  Tensor w = x * 2;
  EXPECT_TRUE(close(autograd::grad({w}, {w}, {vec({4, 5})})[0], vec({4, 5})));  // an output w.r.t. itself
}

// --- grad mode -----------------------------------------------------------------------------------

TEST(Autograd, NoGradAndEnableGradNest) {
  Tensor x = leaf({1, 2});
  EXPECT_TRUE(GradMode::is_enabled());
  {
    NoGradGuard no_grad;
    EXPECT_FALSE(GradMode::is_enabled());
    Tensor a = x * 2;
    EXPECT_FALSE(a.requires_grad());
    EXPECT_TRUE(a.is_leaf());
    {
      EnableGradGuard enable;
      EXPECT_TRUE(GradMode::is_enabled());
      Tensor b = x * 2;
      EXPECT_TRUE(b.requires_grad());
      {
        NoGradGuard inner;
        EXPECT_FALSE((x * 2).requires_grad());
      }
      EXPECT_TRUE(GradMode::is_enabled());
      b.sum().backward();  // backward works in an enabled scope
    }
    EXPECT_FALSE(GradMode::is_enabled());
    EXPECT_FALSE(x.view({2, 1}).requires_grad());
  }
  EXPECT_TRUE(GradMode::is_enabled());
  EXPECT_TRUE(close(x.grad(), vec({2, 2})));
  EXPECT_TRUE((x * 2).requires_grad());
}

TEST(Autograd, GradModeIsThreadLocalAndRestoredAfterErrors) {
  NoGradGuard no_grad;
  bool in_thread = false;
  std::thread([&] { in_thread = GradMode::is_enabled(); }).join();
  EXPECT_TRUE(in_thread);  // a new thread starts with grad mode on
  EXPECT_FALSE(GradMode::is_enabled());
  {
    EnableGradGuard enable;
    Tensor x = leaf({1});
    Tensor y = x.exp();
    y.mul_(2);
    EXPECT_KILN_ERROR(y.backward({}, std::nullopt, /*create_graph=*/true), "modified by an in-place operation");
    EXPECT_TRUE(GradMode::is_enabled());
  }
  EXPECT_FALSE(GradMode::is_enabled());
}

TEST(Autograd, BackwardInsideNoGradStillComputesGradients) {
  // As in PyTorch, backward() itself is independent of the ambient grad mode.
  Tensor x = leaf({1, 2});
  Tensor y = (x * x).sum();
  NoGradGuard no_grad;
  y.backward();
  EXPECT_TRUE(close(x.grad(), vec({2, 4})));
}

// --- detach --------------------------------------------------------------------------------------

TEST(Autograd, Detach) {
  Tensor x = leaf({1, 2, 3});
  Tensor y = x * 2;
  Tensor d = y.detach();
  EXPECT_FALSE(d.requires_grad());
  EXPECT_TRUE(d.is_leaf());
  EXPECT_EQ(d.data_ptr(), y.data_ptr());  // shares storage
  Tensor z = (y * d).sum();               // d is a constant: dz/dx = 2 d
  z.backward();
  EXPECT_TRUE(close(x.grad(), vec({4, 8, 12})));
  // An in-place write to the detached alias is seen by the graph's version check.
  Tensor w = y.sin();  // saves y
  d.add_(1);
  EXPECT_KILN_ERROR(w.sum().backward(), "modified by an in-place operation");
  Tensor y2 = x * 3;
  y2.detach_();
  EXPECT_TRUE(y2.is_leaf());
  EXPECT_FALSE(y2.requires_grad());
  EXPECT_KILN_ERROR((x * 1).view({3}).detach_(), "[detach_]", "view");
}

// --- in place ------------------------------------------------------------------------------------

TEST(Autograd, InplaceOnSavedOutputRaisesNamingOpAndVersions) {
  Tensor x = leaf({1, 2});
  Tensor y = x.exp();
  uint32_t v0 = y._version();
  y.mul_(2);
  EXPECT_EQ(y._version(), v0 + 1);
  std::string now = "is at version " + std::to_string(v0 + 1), then = "expected version " + std::to_string(v0);
  EXPECT_KILN_ERROR(y.sum().backward(), "modified by an in-place operation", "output 0 of exp", now.c_str(),
                    then.c_str());
}

TEST(Autograd, InplaceOnSavedInputRaises) {
  Tensor x = leaf({0.5, 1});
  Tensor a = x * 1;
  Tensor b = a.sin();  // saves its input a
  a.add_(1);
  EXPECT_KILN_ERROR(b.sum().backward(), "input 0 of sin", "version");
  // An op that saves nothing is not affected by the write.
  Tensor p = x * 1;
  Tensor q = p + 1;
  p.add_(1);
  q.sum().backward();
  EXPECT_TRUE(close(x.grad(), vec({1, 1})));
}

TEST(Autograd, InplaceOnLeafRequiringGradRaises) {
  Tensor x = leaf({1, 2});
  EXPECT_KILN_ERROR(x.add_(1), "[add_]", "leaf", "in-place");
  EXPECT_KILN_ERROR(x.mul_(vec({2, 2})), "[mul_]", "leaf");
  EXPECT_KILN_ERROR(x.copy_(vec({2, 2})), "[copy_]", "leaf");
  EXPECT_KILN_ERROR(x.zero_(), "leaf");
  EXPECT_KILN_ERROR(x.narrow(0, 0, 1).add_(1), "[add_]", "view of a leaf");
  EXPECT_TRUE(close(x, vec({1, 2})));  // nothing was written
  Tensor buf = zeros({4});
  Tensor v = buf.narrow(0, 1, 2).requires_grad_();  // a view that is itself a leaf
  EXPECT_TRUE(v.is_leaf());
  EXPECT_KILN_ERROR(v.mul_(2), "[mul_]", "leaf");
  {
    NoGradGuard no_grad;
    x.add_(1);
    x.narrow(0, 1, 1).mul_(10);
  }
  EXPECT_TRUE(close(x, vec({2, 30})));
  EXPECT_TRUE(x.is_leaf());
  EXPECT_TRUE(x.requires_grad());
  (x * x).sum().backward();
  EXPECT_TRUE(close(x.grad(), vec({4, 60})));
}

TEST(Autograd, InplaceOnNonLeaf) {
  Tensor x = leaf({1, 2, 3});
  Tensor y = x * 2;
  y.mul_(3);
  EXPECT_FALSE(y.is_leaf());
  EXPECT_EQ(node_name(y), "mulBackward");
  y.sum().backward();
  EXPECT_TRUE(close(x.grad(), vec({6, 6, 6})));
}

TEST(Autograd, InplaceWithSelfAsBothOperands) {
  Tensor x = leaf({1, 2, 3});
  Tensor y = x * 2;
  y.mul_(y);  // (2x)^2 -> 8x; needs the old y for both factors
  y.sum().backward();
  EXPECT_TRUE(close(x.grad(), vec({8, 16, 24})));
}

TEST(Autograd, InplaceUnaryAndOtherOperandGradients) {
  Tensor x = leaf({0.5, 1.5});
  Tensor z = leaf({2, 3});
  Tensor y = x * 1;
  y.mul_(z);  // z's gradient needs the old y (= x), which the write destroys
  y.exp_();   // saves its output after the write
  y.sum().backward();
  std::vector<double> xv = {0.5, 1.5}, zv = {2, 3};
  for (int i = 0; i < 2; ++i) {
    EXPECT_NEAR(to_vec(x.grad())[i], zv[i] * std::exp(xv[i] * zv[i]), 1e-4);
    EXPECT_NEAR(to_vec(z.grad())[i], xv[i] * std::exp(xv[i] * zv[i]), 1e-4);
  }
  // As in PyTorch, writing over exp_'s saved result breaks its backward.
  Tensor w = x * 1;
  w.exp_();
  w.mul_(z);
  EXPECT_KILN_ERROR(w.sum().backward(), "output 0 of exp", "modified by an in-place operation");
}

TEST(Autograd, CopyIntoBufferThatDoesNotRequireGrad) {
  Tensor x = leaf({1, 2}, kFloat64);
  Tensor buf = zeros({2}, kFloat32);
  buf.copy_(x);  // cast float64 -> float32 is differentiable too
  EXPECT_TRUE(buf.requires_grad());
  EXPECT_FALSE(buf.is_leaf());
  (buf * vec({3, 4})).sum().backward();
  EXPECT_EQ(x.grad().dtype(), kFloat64);
  EXPECT_TRUE(close(x.grad(), vec({3, 4}, kFloat64)));
}

TEST(Autograd, FillOnNonLeafCutsItsHistory) {
  Tensor x = leaf({1, 2, 3});
  Tensor y = x * 2;
  y.fill_(1);
  (y * x).sum().backward();  // only the second factor reaches x
  EXPECT_TRUE(close(x.grad(), vec({1, 1, 1})));
  Tensor x2 = leaf({1, 2, 3});
  Tensor y2 = x2 * 2;
  y2.narrow(0, 0, 1).zero_();
  y2.sum().backward();
  EXPECT_TRUE(close(x2.grad(), vec({0, 2, 2})));
}

// --- in place through views ------------------------------------------------------------------------

TEST(Autograd, CopyIntoNarrowOfBuffer) {
  Tensor x = leaf({1, 2, 3});
  Tensor buf = zeros({5});
  buf.narrow(0, 1, 3).copy_(x * 2);
  EXPECT_TRUE(buf.requires_grad());
  EXPECT_EQ(node_name(buf).rfind("CopySlices", 0), 0u) << node_name(buf);
  EXPECT_TRUE(close(buf, vec({0, 2, 4, 6, 0})));
  (buf * vec({1, 2, 3, 4, 5})).sum().backward();
  EXPECT_TRUE(close(x.grad(), vec({4, 6, 8})));
}

TEST(Autograd, InplaceThroughViewThenUseBase) {
  Tensor x = leaf({1, 2, 3, 4, 5, 6});
  Tensor y = (x * 2).view({2, 3});
  Tensor v = y.view({6});
  v.mul_(vec({1, 2, 3, 4, 5, 6}));
  EXPECT_TRUE(close(y, vec({2, 8, 18, 32, 50, 72}).view({2, 3})));
  (y * y).sum().backward();  // y = 2 x c: d/dx sum(y^2) = 8 x c^2
  EXPECT_TRUE(close(x.grad(), vec({8, 64, 216, 512, 1000, 1728})));

  Tensor a = leaf({1, 2, 3, 4});
  Tensor b = leaf({10, 20, 30, 40});
  Tensor ya = a * 2;
  Tensor va = ya.view({2, 2});
  va.add_(b.view({2, 2}) * b.view({2, 2}));  // ya = 2 a + b^2
  EXPECT_TRUE(close(ya, vec({102, 404, 906, 1608})));
  (ya * vec({1, -1, 2, 0})).sum().backward();
  EXPECT_TRUE(close(a.grad(), vec({2, -2, 4, 0})));
  EXPECT_TRUE(close(b.grad(), vec({20, -40, 120, 0})));
}

TEST(Autograd, InplaceThroughViewWithOperandRequiringGrad) {
  Tensor x = leaf({1, 2, 3, 4});
  Tensor z = leaf({5, 7});
  Tensor y = x * 1;
  y.narrow(0, 1, 2).mul_(z);  // y = [x0, x1 z0, x2 z1, x3]
  (y * vec({1, 2, 3, 4})).sum().backward();
  EXPECT_TRUE(close(x.grad(), vec({1, 10, 21, 4})));
  EXPECT_TRUE(close(z.grad(), vec({4, 9})));  // [2 x1, 3 x2]
  Tensor a = leaf({1, 1});
  Tensor b = a * 1;
  b.select(0, 1).add_(z.sum());
  b.sum().backward();
  EXPECT_TRUE(close(a.grad(), vec({1, 1})));
  EXPECT_TRUE(close(z.grad(), vec({5, 10})));
}

TEST(Autograd, ViewsSeeWritesToTheirBase) {
  Tensor x = leaf({1, 2, 3, 4});
  Tensor y = x * 2;
  Tensor v = y.narrow(0, 0, 2);  // made before the write
  y.mul_(3);
  EXPECT_TRUE(close(v, vec({6, 12})));
  EXPECT_EQ(node_name(v), "as_stridedBackward");
  v.sum().backward();
  EXPECT_TRUE(close(x.grad(), vec({6, 6, 0, 0})));
}

TEST(Autograd, SiblingViewWrite) {
  Tensor x = leaf({1, 2, 3});
  Tensor z = leaf({10});
  Tensor y = x * 2;
  Tensor v1 = y.narrow(0, 0, 2);
  Tensor v2 = y.narrow(0, 1, 2);
  v2.mul_(z);  // y = [2 x0, 2 x1 z, 2 x2 z]
  v1.sum().backward();  // v1 = [2 x0, 2 x1 z]
  EXPECT_TRUE(close(x.grad(), vec({2, 20, 0})));
  EXPECT_TRUE(close(z.grad(), vec({4})));
}

TEST(Autograd, ViewOfViewWrite) {
  Tensor x = leaf({1, 2, 3, 4, 5, 6});
  Tensor y = x * 1;
  Tensor m = y.view({2, 3});
  m.select(1, 2).mul_(2);  // column 2 of the 2x3 view: elements 2 and 5
  y.sum().backward();
  EXPECT_TRUE(close(x.grad(), vec({1, 1, 2, 1, 1, 2})));
}

TEST(Autograd, StaleViewOfBufferWrittenThroughAnotherView) {
  // v is taken before buf depends on x; writing buf through another view must make v depend
  // on x too (PyTorch: a view's requires_grad follows its base).
  Tensor x = leaf({3, 4});
  Tensor buf = zeros({4});
  Tensor v = buf.narrow(0, 0, 2);
  buf.narrow(0, 0, 2).copy_(x);
  EXPECT_FALSE(v.is_leaf());
  EXPECT_NE(v.grad_fn(), nullptr);
  Tensor out = (v * v).sum();
  ASSERT_TRUE(out.requires_grad());
  out.backward();
  EXPECT_TRUE(close(x.grad(), vec({6, 8})));
  // The same when the stale view is first viewed again.
  Tensor x2 = leaf({3, 4});
  Tensor buf2 = zeros({4});
  Tensor v2 = buf2.narrow(0, 0, 2);
  buf2.narrow(0, 0, 2).copy_(x2);
  Tensor u = v2.unsqueeze(0);
  ASSERT_TRUE(u.requires_grad());
  (u * u).sum().backward();
  EXPECT_TRUE(close(x2.grad(), vec({6, 8})));
}

// --- hooks and retain_grad --------------------------------------------------------------------------

TEST(Autograd, LeafHookModifiesGradient) {
  Tensor x = leaf({1, 2});
  Tensor seen;
  x.register_hook([&](const Tensor& g) { seen = g.clone(); return g * 2; });
  (x * 3).sum().backward();
  EXPECT_TRUE(close(seen, vec({3, 3})));
  EXPECT_TRUE(close(x.grad(), vec({6, 6})));
}

TEST(Autograd, NonLeafHookModifiesGradientUpstream) {
  Tensor x = leaf({1, 2});
  Tensor y = x * 3;
  int calls = 0;
  int64_t h = y.register_hook([&](const Tensor& g) { ++calls; return g * 10; });
  y.sum().backward({}, true);
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(close(x.grad(), vec({30, 30})));
  y.remove_hook(h);
  x.set_grad(Tensor());
  y.sum().backward();
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(close(x.grad(), vec({3, 3})));
}

TEST(Autograd, HooksChainInRegistrationOrderAndObserveOnly) {
  Tensor x = leaf({1});
  x.register_hook([](const Tensor& g) { return g + 1; });
  int64_t observer = x.register_hook([](const Tensor&) { return Tensor(); });  // keeps the gradient
  x.register_hook([](const Tensor& g) { return g * 2; });
  (x * 5).sum().backward();
  EXPECT_TRUE(close(x.grad(), vec({12})));
  x.remove_hook(observer);
  x.remove_hook(12345);  // unknown handles are ignored
}

TEST(Autograd, HookOnOneOutputOfMultiOutputOp) {
  Tensor x = leaf({1, 5, 3, 2}, kFloat64);
  auto [v, i] = x.view({2, 2}).max(1);
  v.register_hook([](const Tensor& g) { return g * 7; });
  v.sum().backward();
  EXPECT_TRUE(close(x.grad(), vec({0, 7, 7, 0}, kFloat64)));
}

TEST(Autograd, NonLeafHookRunsOnceOnTheSummedGradient) {
  Tensor x = leaf({1, 2});
  Tensor y = x * 2;
  std::vector<Tensor> seen;
  y.register_hook([&](const Tensor& g) { seen.push_back(g.clone()); return Tensor(); });
  (y * y + y).sum().backward();  // three uses of y
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_TRUE(close(seen[0], vec({5, 9})));  // 2y + 1
}

TEST(Autograd, LeafHooksAlsoRunForGrad) {
  // In PyTorch, a leaf's tensor hooks rewrite the gradient grad() returns for it too.
  Tensor x = leaf({1, 2});
  x.register_hook([](const Tensor& g) { return g * 10; });
  TensorList g = autograd::grad({(x * 3).sum()}, {x});
  EXPECT_TRUE(close(g[0], vec({30, 30})));
  EXPECT_FALSE(x.grad().defined());
  // Hooks of tensors grad() is not asked about do not fire.
  Tensor w = leaf({2, 2});
  Tensor h = w * 1;
  int fired = 0;
  w.register_hook([&](const Tensor&) { ++fired; return Tensor(); });
  h.register_hook([&](const Tensor&) { ++fired; return Tensor(); });
  g = autograd::grad({(x * h).sum()}, {x});
  EXPECT_TRUE(close(g[0], vec({20, 20})));
  EXPECT_EQ(fired, 0);
}

TEST(Autograd, HookMustKeepShapeAndDtype) {
  Tensor x = leaf({1, 2});
  Tensor y = x * 2;
  y.register_hook([](const Tensor& g) { return g.sum(); });
  EXPECT_KILN_ERROR(y.sum().backward(), "hook", "changed the size", "[2]");
  Tensor z = leaf({1, 2});
  z.register_hook([](const Tensor& g) { return g.to(kFloat64); });
  EXPECT_KILN_ERROR((z * 2).sum().backward(), "hook", "changed the dtype", "float64");
}

TEST(Autograd, HookErrors) {
  Tensor c = vec({1});
  EXPECT_KILN_ERROR(c.register_hook([](const Tensor& g) { return g; }), "[register_hook]", "doesn't require");
  EXPECT_KILN_ERROR(c.retain_grad(), "[retain_grad]", "requires_grad=false");
}

TEST(Autograd, RetainGrad) {
  Tensor x = leaf({1, 2});
  Tensor y = x * 3;
  Tensor u = x * 4;  // not retained
  y.retain_grad();
  EXPECT_TRUE(y.retains_grad());
  EXPECT_FALSE(u.retains_grad());
  ((y * y).sum() + u.sum()).backward({}, true);
  EXPECT_TRUE(close(y.grad(), vec({6, 12})));  // 2y
  EXPECT_FALSE(u.grad().defined());
  EXPECT_TRUE(close(x.grad(), vec({22, 40})));  // 18x + 4
  ((y * y).sum()).backward();                   // retained grads accumulate like leaves'
  EXPECT_TRUE(close(y.grad(), vec({12, 24})));
  x.retain_grad();  // a no-op on leaves
  EXPECT_TRUE(x.is_leaf());
}

TEST(Autograd, RetainedGradSeesHooksRegisteredLater) {
  // PyTorch runs the retain_grad hook after the tensor's other hooks, whatever the order.
  Tensor x = leaf({1, 2});
  Tensor y = x * 3;
  y.retain_grad();
  y.register_hook([](const Tensor& g) { return g * 2; });
  y.sum().backward();
  EXPECT_TRUE(close(y.grad(), vec({2, 2})));
  EXPECT_TRUE(close(x.grad(), vec({6, 6})));
}

// --- broadcasting, dtypes, multi-output, integers ---------------------------------------------------

TEST(Autograd, BroadcastGradientsHaveInputShapes) {
  Tensor A = leaf({1, 2, 3, 4, 5, 6});
  Tensor b = leaf({1, 10, 100});
  Tensor C = leaf({1, 2});
  Tensor s = full({}, 2.0).requires_grad_();
  Tensor y = A.view({2, 3}) * b + C.view({2, 1}) * s;
  y.sum().backward();
  EXPECT_EQ(A.grad().sizes(), IntArrayRef({6}));
  EXPECT_TRUE(close(A.grad(), vec({1, 10, 100, 1, 10, 100})));
  EXPECT_EQ(b.grad().sizes(), IntArrayRef({3}));
  EXPECT_TRUE(close(b.grad(), vec({5, 7, 9})));
  EXPECT_TRUE(close(C.grad(), vec({6, 6})));
  EXPECT_EQ(s.grad().dim(), 0);
  EXPECT_NEAR(s.grad().item<double>(), 9, 1e-6);  // 3 * (1 + 2)
  // Leading broadcast dims and size-1 dims at once.
  Tensor k = tensor({{1.0}, {2.0}}).requires_grad_();
  Tensor m = vec({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}).view({2, 2, 3});
  (k * m).sum().backward();
  EXPECT_EQ(k.grad().sizes(), IntArrayRef({2, 1}));
  EXPECT_TRUE(close(k.grad(), vec({1 + 2 + 3 + 7 + 8 + 9, 4 + 5 + 6 + 10 + 11 + 12}).view({2, 1})));
}

TEST(Autograd, MixedDtypesCastBack) {
  Tensor a = leaf({1, 2});
  Tensor b = leaf({3, 4}, kFloat64);
  Tensor y = a * b;
  EXPECT_EQ(y.dtype(), kFloat64);
  y.sum().backward();
  EXPECT_EQ(a.grad().dtype(), kFloat32);
  EXPECT_EQ(b.grad().dtype(), kFloat64);
  EXPECT_TRUE(close(a.grad(), vec({3, 4})));
  EXPECT_TRUE(close(b.grad(), vec({1, 2}, kFloat64)));
  // Integer operand: promotes, gets no gradient.
  Tensor i = tensor({2, 5});
  Tensor c = leaf({1, 1});
  Tensor z = c * i;
  EXPECT_EQ(z.dtype(), kFloat32);
  z.sum().backward();
  EXPECT_TRUE(close(c.grad(), vec({2, 5})));
  EXPECT_FALSE(i.requires_grad());
  // Explicit casts are differentiable.
  Tensor d = leaf({1.5, 2.5});
  (d.to(kFloat64) * 2).sum().backward();
  EXPECT_EQ(d.grad().dtype(), kFloat32);
  EXPECT_TRUE(close(d.grad(), vec({2, 2})));
}

TEST(Autograd, MaxDimValuesAndIndices) {
  Tensor x = leaf({1, 5, 3, 9, 2, 4}, kFloat64);
  auto [values, indices] = x.view({2, 3}).max(1);
  EXPECT_TRUE(values.requires_grad());
  EXPECT_FALSE(indices.requires_grad());
  EXPECT_EQ(indices.dtype(), kInt64);
  (values * vec({1, 2}, kFloat64)).sum().backward();
  EXPECT_TRUE(close(x.grad(), vec({0, 1, 0, 2, 0, 0}, kFloat64)));
}

TEST(Autograd, VarMeanEitherOrBothOutputs) {
  std::vector<double> xv = {1, 2, 4, 3, 3, 6};
  for (int use = 0; use < 3; ++use) {  // 0: var only, 1: mean only, 2: both
    Tensor x = leaf(xv, kFloat64);
    auto [v, m] = var_mean(x.view({2, 3}), {1});
    Tensor loss = use == 0 ? v.sum() : use == 1 ? m.sum() : (v + m).sum();
    loss.backward();
    std::vector<double> expect(6);
    for (int r = 0; r < 2; ++r) {
      double mean = (xv[r * 3] + xv[r * 3 + 1] + xv[r * 3 + 2]) / 3;
      for (int k = 0; k < 3; ++k) {
        double dv = 2 * (xv[r * 3 + k] - mean) / 2;  // correction 1: n - 1 = 2
        double dm = 1.0 / 3;
        expect[r * 3 + k] = (use != 1 ? dv : 0) + (use != 0 ? dm : 0);
      }
    }
    EXPECT_TRUE(close(x.grad(), vec(expect, kFloat64), 1e-12, 1e-12)) << "use " << use;
  }
}

TEST(Autograd, IntegerTensorsNeverRequireGrad) {
  Tensor i = arange(4);
  EXPECT_FALSE(i.requires_grad());
  Tensor x = leaf({1, 2, 3, 4});
  EXPECT_FALSE((i * 2).requires_grad());
  EXPECT_FALSE(x.argmax().requires_grad());
  EXPECT_FALSE((x > 2).requires_grad());           // comparisons are not differentiable
  EXPECT_FALSE(x.to(kInt32).requires_grad());      // casting to an integer dtype cuts the graph
  EXPECT_FALSE(x.floor().to(kInt64).requires_grad());
  EXPECT_KILN_ERROR(i.requires_grad_(), "[requires_grad_]", "floating point", "int64");
  EXPECT_KILN_ERROR(tensor({true, false}).requires_grad_(), "[requires_grad_]", "bool");
  i.requires_grad_(false);  // always allowed on a leaf
}

TEST(Autograd, RequiresGradFalseOnlyOnLeaves) {
  Tensor x = leaf({1, 2});
  Tensor y = x * 2;
  EXPECT_KILN_ERROR(y.requires_grad_(false), "[requires_grad_]", "leaf", "detach");
  x.requires_grad_(false);
  EXPECT_FALSE(x.requires_grad());
  EXPECT_FALSE((x * 2).requires_grad());
  Tensor z = vec({1});
  z.requires_grad_();
  EXPECT_TRUE(z.is_leaf());
  EXPECT_TRUE(z.requires_grad());
}

TEST(Autograd, SetGradChecks) {
  Tensor x = leaf({1, 2});
  EXPECT_KILN_ERROR(x.set_grad(vec({1, 2, 3})), "[set_grad]", "shape");
  EXPECT_KILN_ERROR(x.set_grad(vec({1, 2}, kFloat64)), "[set_grad]", "dtype");
  x.set_grad(vec({10, 10}));
  (x * 2).sum().backward();
  EXPECT_TRUE(close(x.grad(), vec({12, 12})));
}

// Runs f on a thread with a small stack, so that recursion proportional to a graph's depth
// fails here without needing a graph deep enough to overflow the main thread's 8 MiB.
void on_small_stack(void (*f)(void*), void* arg) {
  struct Call {
    void (*f)(void*);
    void* arg;
  } call{f, arg};
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  pthread_t thread;
  ASSERT_EQ(pthread_create(&thread, &attr, [](void* p) -> void* {
    auto* c = static_cast<Call*>(p);
    c->f(c->arg);
    return nullptr;
  }, &call), 0);
  pthread_join(thread, nullptr);
  pthread_attr_destroy(&attr);
}

TEST(Autograd, DeepGraphsRunAndFreeWithoutDeepRecursion) {
  Tensor x = leaf({1}, kFloat64);
  Tensor w = leaf({1}, kFloat64);
  Tensor y = x;
  for (int i = 0; i < 10000; ++i) y = y * w + 1;  // mul saves its inputs: the chain runs through them too
  on_small_stack([](void* p) { static_cast<Tensor*>(p)->backward(); }, &y);
  // y_k = y_(k-1) w + 1 at w = x = 1: y_k = k + 1, dy_n/dw = sum_(k<n) y_k = n + n (n - 1) / 2.
  EXPECT_TRUE(close(x.grad(), vec({1}, kFloat64)));
  EXPECT_TRUE(close(w.grad(), vec({10000 + 10000.0 * 9999 / 2}, kFloat64)));
  on_small_stack([](void* p) { *static_cast<Tensor*>(p) = Tensor(); }, &y);  // frees the graph
  EXPECT_FALSE(y.defined());
}

TEST(Autograd, RetainGradFollowsInplace) {
  Tensor x = leaf({1, 2});
  Tensor y = x * 3;
  y.retain_grad();
  y.mul_(2);
  (y * y).sum().backward();  // .grad is for the current value of y: 2 y = 12 x
  EXPECT_TRUE(close(y.grad(), vec({12, 24})));
  EXPECT_TRUE(close(x.grad(), vec({72, 144})));
}

}  // namespace

namespace {
// Regressions found while merging the op families.
TEST(AutogradMerged, InPlaceClampPowMaskedFillOnNonLeaf) {
  kiln::Tensor x = kiln::tensor({-2.0, 0.5, 3.0}, kiln::TensorOptions().dtype(kiln::kFloat64)).requires_grad_();
  kiln::Tensor y = x * 1;
  y.clamp_(-1.0, 1.0);
  y.pow_(2);
  y.masked_fill_(kiln::tensor({false, false, true}), 7.0);
  y.sum().backward();
  // d/dx clamp(x)^2: 0 outside the bounds, 2x inside; the masked element gets nothing.
  EXPECT_EQ(kiln::testing::to_vec(x.grad()), (std::vector<double>{0.0, 1.0, 0.0}));
}

TEST(AutogradMerged, WrappedFloatScalarKeepsDoublePrecision) {
  kiln::Tensor x = kiln::ones({1}, kiln::TensorOptions().dtype(kiln::kFloat64));
  EXPECT_EQ((x - x * 0.1).item<double>(), 1.0 - 0.1);
  // ... while still promoting as the default dtype: int tensor * 0.5 is float32.
  EXPECT_EQ((kiln::ones({1}, kiln::TensorOptions().dtype(kiln::kInt64)) * 0.5).dtype(), kiln::kFloat32);
  EXPECT_EQ((kiln::ones({1}) * 0.1).dtype(), kiln::kFloat32);
}

TEST(AutogradMerged, DropoutWithPOneStaysInTheGraph) {
  kiln::Tensor x = kiln::ones({3}).requires_grad_();
  kiln::dropout(x, 1.0, true).sum().backward();
  EXPECT_EQ(kiln::testing::to_vec(x.grad()), (std::vector<double>{0, 0, 0}));
}
}  // namespace
