// Gradients of the conv, index and nn op families: float64 gradcheck of every op and option
// variant (including non-contiguous inputs and double backward through the backward rows),
// float32 conv2d gradients against float64, hand-computed cases, and the backward ops' errors.
#include <cmath>
#include <limits>

#include "autograd/autograd.h"
#include "autograd/gradcheck.h"
#include "test_util.h"

namespace kiln {
namespace {

using autograd::gradcheck;
using testing::close;
using testing::to_vec;
using Fn = std::function<TensorList(const TensorList&)>;

Tensor leaf(Tensor t) {
  t.requires_grad_();
  return t;
}
Tensor r64(IntArrayRef sizes) { return leaf(randn(sizes, kFloat64)); }

// Distinct values spaced far beyond gradcheck's eps, so no max/argmax changes under perturbation.
Tensor distinct64(IntArrayRef sizes) {
  const int64_t n = shape_numel(sizes);
  return leaf((randperm(n).to(kFloat64) * 0.1 - 0.05 * static_cast<double>(n)).view(sizes));
}

// A leaf whose strides are those of `perm` applied to a contiguous tensor (values random).
Tensor permuted64(IntArrayRef sizes, IntArrayRef perm) {
  Shape base(sizes.size());
  for (size_t i = 0; i < perm.size(); ++i) base[static_cast<size_t>(perm[i])] = sizes[i];
  Shape inverse(perm.size());
  for (size_t i = 0; i < perm.size(); ++i) inverse[static_cast<size_t>(perm[i])] = static_cast<int64_t>(i);
  Tensor t = randn(base, kFloat64).permute(perm);
  EXPECT_EQ(t.sizes(), sizes);
  return leaf(t);
}

#define EXPECT_GRADCHECK(fn, ...)                        \
  do {                                                   \
    auto res_ = gradcheck(fn, TensorList{__VA_ARGS__});  \
    EXPECT_TRUE(res_.ok) << res_.message;                \
  } while (0)

// Fixed, varied weights of a given shape (no two neighbours equal).
Tensor probe(IntArrayRef sizes) {
  return arange(shape_numel(sizes), TensorOptions().dtype(kFloat64)).view(sizes).sin() + 1.5;
}

// sum_i sum(probe_i * out_i): one output, so the check costs one backward pass and 2 forward
// evaluations per input element (for the larger cases); still every output element counts.
Fn projected(Fn fn) {
  return [fn](const TensorList& in) {
    Tensor total = zeros({}, kFloat64);
    for (const Tensor& y : fn(in)) total = total + (y * probe(y.sizes())).sum();
    return TensorList{total};
  };
}

// gradcheck of the first-order gradients of `fn` (of sum(w * y^2) for a fixed w, so that the
// upstream gradient depends on the inputs): exercises the vjps of the backward ops.
Fn gradients_of(Fn fn, size_t n_inputs) {
  return [fn, n_inputs](const TensorList& in) {
    EnableGradGuard enable;  // gradcheck evaluates numerically under NoGradGuard
    Tensor y = fn(in)[0];
    Tensor weights = probe(y.sizes());
    TensorList diff;
    for (size_t i = 0; i < n_inputs; ++i) diff.push_back(in[i]);
    return autograd::grad({(y * y * weights).sum()}, diff, {}, true, /*create_graph=*/true);
  };
}

// --- conv2d ------------------------------------------------------------------------------------

struct ConvCfg {
  Shape stride{1, 1}, padding{0, 0}, dilation{1, 1};
  int64_t groups = 1;
};

Fn conv_fn(ConvCfg c) {
  return [c](const TensorList& in) {
    std::optional<Tensor> b;
    if (in.size() == 3) b = in[2];
    return TensorList{conv2d(in[0], in[1], b, c.stride, c.padding, c.dilation, c.groups)};
  };
}

TEST(AutogradConv, Conv2dPlainAndBias) {
  manual_seed(1);
  EXPECT_GRADCHECK(projected(conv_fn({})), r64({2, 3, 4, 3}), r64({2, 3, 3, 2}), r64({2}));
  // Full Jacobians on the smallest shapes, projections (every output weighted) on the rest.
  EXPECT_GRADCHECK(conv_fn({}), r64({1, 2, 4, 4}), r64({3, 2, 1, 1}));
  EXPECT_GRADCHECK(conv_fn({.stride = {2, 1}, .padding = {1, 0}}), r64({1, 2, 4, 3}), r64({2, 2, 2, 2}), r64({2}));
}

TEST(AutogradConv, Conv2dStridePaddingDilation) {
  manual_seed(2);
  // H = 6 with stride 2 leaves the last input row outside every window.
  EXPECT_GRADCHECK(projected(conv_fn({.stride = {2, 1}, .padding = {0, 2}})), r64({1, 2, 6, 5}), r64({2, 2, 3, 3}),
                   r64({2}));
  EXPECT_GRADCHECK(projected(conv_fn({.stride = {2, 3}, .padding = {1, 1}})), r64({2, 1, 5, 7}), r64({2, 1, 3, 2}));
  EXPECT_GRADCHECK(projected(conv_fn({.padding = {1, 0}, .dilation = {2, 3}})), r64({1, 2, 6, 7}), r64({2, 2, 2, 2}),
                   r64({2}));
}

TEST(AutogradConv, Conv2dGroups) {
  manual_seed(3);
  EXPECT_GRADCHECK(projected(conv_fn({.stride = {1, 2}, .padding = {1, 1}, .groups = 2})), r64({1, 4, 3, 3}),
                   r64({4, 2, 2, 2}), r64({4}));
  EXPECT_GRADCHECK(conv_fn({.groups = 2}), r64({1, 2, 3, 2}), r64({2, 1, 2, 1}));
  // Depthwise with a channel multiplier, dilated.
  EXPECT_GRADCHECK(projected(conv_fn({.padding = {1, 1}, .dilation = {1, 2}, .groups = 3})), r64({2, 3, 4, 5}),
                   r64({6, 1, 2, 2}), r64({6}));
}

TEST(AutogradConv, Conv2dUnbatchedAndNonContiguous) {
  manual_seed(4);
  EXPECT_GRADCHECK(projected(conv_fn({.padding = {1, 1}})), r64({2, 4, 3}), r64({3, 2, 2, 2}), r64({3}));
  // Channels-last input, weight with permuted strides.
  EXPECT_GRADCHECK(projected(conv_fn({.stride = {2, 2}})), permuted64({2, 3, 5, 5}, {0, 3, 1, 2}),
                   permuted64({2, 3, 2, 2}, {1, 0, 3, 2}), r64({2}));
}

TEST(AutogradConv, Conv2dOnlySomeInputsRequireGrad) {
  manual_seed(5);
  Tensor x = randn({1, 2, 4, 4}, kFloat64), w = r64({2, 2, 3, 3}), b = randn({2}, kFloat64);
  EXPECT_GRADCHECK(conv_fn({}), x, w, b);
  EXPECT_GRADCHECK(conv_fn({}), r64({1, 2, 4, 4}), randn({2, 2, 3, 3}, kFloat64));
}

TEST(AutogradConv, Conv2dDoubleBackward) {
  manual_seed(6);
  ConvCfg c{.stride = {2, 1}, .padding = {1, 0}, .dilation = {1, 2}, .groups = 2};
  EXPECT_GRADCHECK(projected(gradients_of(conv_fn(c), 2)), r64({1, 4, 4, 5}), r64({2, 2, 2, 2}));
  EXPECT_GRADCHECK(gradients_of(conv_fn({.padding = {1, 1}}), 2), r64({1, 1, 2, 2}), r64({1, 1, 2, 2}));
}

// float32 (oneDNN) gradients against float64 (GEMM + col2im / im2col) on larger shapes.
TEST(AutogradConv, Conv2dFloat32MatchesFloat64) {
  manual_seed(7);
  struct Case {
    Shape x, w;
    ConvCfg c;
  };
  const Case cases[] = {
      {{4, 6, 11, 9}, {8, 6, 3, 3}, {.padding = {1, 1}}},
      {{3, 6, 12, 10}, {6, 3, 3, 2}, {.stride = {2, 2}, .padding = {1, 0}, .groups = 2}},
      {{2, 4, 13, 13}, {8, 1, 3, 3}, {.stride = {2, 1}, .padding = {2, 2}, .dilation = {2, 2}, .groups = 4}},
      {{5, 8, 7, 7}, {16, 8, 1, 1}, {}},
      {{2, 3, 16, 16}, {4, 3, 5, 5}, {.stride = {3, 3}, .padding = {2, 1}}},
  };
  for (const Case& k : cases) {
    Tensor x64 = r64(k.x), w64 = r64(k.w), b64 = r64({k.w[0]});
    Tensor x32 = leaf(x64.detach().to(kFloat32)), w32 = leaf(w64.detach().to(kFloat32)),
           b32 = leaf(b64.detach().to(kFloat32));
    Tensor y64 = conv_fn(k.c)({x64, w64, b64})[0];
    Tensor g64 = randn(y64.sizes(), kFloat64);
    y64.backward(g64);
    conv_fn(k.c)({x32, w32, b32})[0].backward(g64.to(kFloat32));
    EXPECT_TRUE(close(x32.grad(), x64.grad(), 1e-4, 1e-4)) << "input grad, x " << IntArrayRef(k.x);
    EXPECT_TRUE(close(w32.grad(), w64.grad(), 1e-4, 1e-3)) << "weight grad, x " << IntArrayRef(k.x);
    EXPECT_TRUE(close(b32.grad(), b64.grad(), 1e-4, 1e-3)) << "bias grad, x " << IntArrayRef(k.x);
    EXPECT_EQ(x32.grad().dtype(), kFloat32);
  }
}

TEST(AutogradConv, Conv2dBackwardOpsHalfPrecision) {
  manual_seed(8);
  Tensor gy = randn({2, 4, 3, 3}), w = randn({4, 3, 2, 2}), x = randn({2, 3, 4, 4});
  Tensor gi = conv2d_backward_input(gy, w, {2, 3, 4, 4});
  Tensor gw = conv2d_backward_weight(gy, x, {4, 3, 2, 2});
  Tensor gi16 = conv2d_backward_input(gy.to(kBFloat16), w.to(kBFloat16), {2, 3, 4, 4});
  Tensor gw16 = conv2d_backward_weight(gy.to(kFloat16), x.to(kFloat16), {4, 3, 2, 2});
  EXPECT_EQ(gi16.dtype(), kBFloat16);
  EXPECT_EQ(gw16.dtype(), kFloat16);
  EXPECT_TRUE(close(gi16, gi, 5e-2, 5e-2));
  EXPECT_TRUE(close(gw16, gw, 1e-2, 1e-2));
}

TEST(AutogradConv, Conv2dBackwardOpsErrors) {
  Tensor gy = ones({1, 4, 3, 3}), w = ones({4, 2, 2, 2}), x = ones({1, 2, 4, 4});
  EXPECT_KILN_ERROR(conv2d_backward_input(ones({1, 4, 2, 3}), w, {1, 2, 4, 4}), "[conv2d_backward_input]",
                    "grad_output of shape [1, 4, 3, 3]", "[1, 4, 2, 3]");
  EXPECT_KILN_ERROR(conv2d_backward_input(gy, w, {1, 3, 4, 4}), "[conv2d_backward_input]", "2 channels",
                    "[1, 3, 4, 4]");
  EXPECT_KILN_ERROR(conv2d_backward_input(gy, w, {4, 4}), "[conv2d_backward_input]", "3-D", "4-D", "[4, 4]");
  EXPECT_KILN_ERROR(conv2d_backward_input(gy, w, {1, 2, -4, 4}), "[conv2d_backward_input]", "input_size",
                    "non-negative");
  EXPECT_KILN_ERROR(conv2d_backward_input(gy, w.to(kFloat64), {1, 2, 4, 4}), "[conv2d_backward_input]",
                    "grad_output and weight", "float32 != float64");
  EXPECT_KILN_ERROR(conv2d_backward_input(gy.to(kInt64), w.to(kInt64), {1, 2, 4, 4}), "[conv2d_backward_input]",
                    "floating point", "int64");
  EXPECT_KILN_ERROR(conv2d_backward_input(gy, w, {1, 2, 4, 4}, {0}), "[conv2d_backward_input]", "stride", "[0, 0]");
  EXPECT_KILN_ERROR(conv2d_backward_weight(gy, x, {4, 2, 2}), "[conv2d_backward_weight]", "weight", "4-D");
  EXPECT_KILN_ERROR(conv2d_backward_weight(gy, x, {4, 2, 3, 3}), "[conv2d_backward_weight]",
                    "grad_output of shape [1, 4, 2, 2]");
  EXPECT_KILN_ERROR(conv2d_backward_weight(gy, x, {3, 2, 2, 2}, {1}, {0}, {1}, 2), "[conv2d_backward_weight]",
                    "divisible by groups");
  EXPECT_KILN_ERROR(conv2d_backward_weight(gy, x, {4, 2, 2, 2}, {1}, {0}, {1}, 0), "[conv2d_backward_weight]",
                    "groups", "0");
}

TEST(AutogradConv, Conv2dBackwardOpsEmpty) {
  // An empty batch sends nothing back to the weight; zero-size inputs give zero-size grads.
  Tensor gw = conv2d_backward_weight(ones({0, 3, 2, 2}), ones({0, 2, 4, 4}), {3, 2, 3, 3});
  EXPECT_TRUE(close(gw, zeros({3, 2, 3, 3})));
  EXPECT_EQ(conv2d_backward_input(ones({0, 3, 2, 2}), ones({3, 2, 3, 3}), {0, 2, 4, 4}).sizes(),
            IntArrayRef({0, 2, 4, 4}));
}

// --- pooling -----------------------------------------------------------------------------------

struct PoolCfg {
  Shape kernel{2, 2}, stride{}, padding{0, 0}, dilation{1, 1};
  bool ceil_mode = false, count_include_pad = true;
};

Fn max_pool_fn(PoolCfg c) {
  return [c](const TensorList& in) {
    return TensorList{max_pool2d(in[0], c.kernel, c.stride, c.padding, c.dilation, c.ceil_mode)};
  };
}
Fn avg_pool_fn(PoolCfg c) {
  return [c](const TensorList& in) {
    return TensorList{avg_pool2d(in[0], c.kernel, c.stride, c.padding, c.ceil_mode, c.count_include_pad)};
  };
}

TEST(AutogradPool, MaxPool2d) {
  manual_seed(10);
  EXPECT_GRADCHECK(max_pool_fn({}), distinct64({2, 2, 4, 4}));
  EXPECT_GRADCHECK(max_pool_fn({.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}}), distinct64({1, 2, 5, 6}));
  EXPECT_GRADCHECK(max_pool_fn({.kernel = {2, 3}, .stride = {1, 2}, .dilation = {2, 1}}), distinct64({1, 1, 6, 7}));
  // Overlapping windows: an element that is the max of several windows sums their gradients.
  EXPECT_GRADCHECK(max_pool_fn({.kernel = {3, 3}, .stride = {1, 1}, .padding = {1, 1}}), distinct64({1, 1, 4, 4}));
}

TEST(AutogradPool, MaxPool2dCeilModeUnbatchedNonContiguous) {
  manual_seed(11);
  EXPECT_GRADCHECK(max_pool_fn({.kernel = {2, 2}, .stride = {2, 2}, .ceil_mode = true}), distinct64({1, 2, 5, 5}));
  EXPECT_GRADCHECK(max_pool_fn({.kernel = {3, 2}, .stride = {2, 2}, .padding = {1, 1}, .ceil_mode = true}),
                   distinct64({2, 5, 4}));
  Tensor nc = leaf(distinct64({1, 5, 6, 2}).detach().permute({0, 3, 1, 2}));
  EXPECT_GRADCHECK(max_pool_fn({.kernel = {2, 2}, .stride = {1, 2}}), nc);
}

TEST(AutogradPool, MaxPool2dTiesGoToFirstMax) {
  // All equal: each 2x2 window sends its gradient to its top-left element.
  Tensor x = leaf(zeros({1, 1, 2, 4}, kFloat64));
  max_pool2d(x, {2}).backward(tensor({{{{1.0, 2.0}}}}, kFloat64));
  EXPECT_EQ(to_vec(x.grad()), (std::vector<double>{1, 0, 2, 0, 0, 0, 0, 0}));
  // Stride 1: the centre is the max of all four windows; a tie with a later element keeps the first.
  Tensor y = leaf(tensor({{{{0.0, 0.0, 0.0}, {0.0, 5.0, 5.0}, {0.0, 0.0, 0.0}}}}, kFloat64));
  max_pool2d(y, {2}, {1}).sum().backward();
  EXPECT_EQ(to_vec(y.grad()), (std::vector<double>{0, 0, 0, 0, 4, 0, 0, 0, 0}));
  // A NaN is the window's max and takes its gradient.
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Tensor z = leaf(tensor({{{{1.0, nan}, {3.0, 2.0}}}}, kFloat64));
  max_pool2d(z, {2}).sum().backward();
  EXPECT_EQ(to_vec(z.grad()), (std::vector<double>{0, 1, 0, 0}));
}

TEST(AutogradPool, MaxPool2dIndices) {
  Tensor x = tensor({{{1.0, 7.0, 3.0}, {4.0, 5.0, 9.0}, {2.0, 8.0, 6.0}}});
  // Padding 1, kernel 2, stride 2: windows start at -1.
  Tensor idx = max_pool2d_indices(x, {2}, {2}, {1});
  EXPECT_EQ(idx.dtype(), kInt64);
  EXPECT_EQ(to_vec(idx), (std::vector<double>{0, 1, 3, 5}));
  EXPECT_EQ(to_vec(max_pool2d_indices(x, {2}, {1}, {0}, {2})), (std::vector<double>{8}));
  // Padding 1 and dilation 3 on a 2x2 input: the window's taps (-1 and 2) all miss the input.
  Tensor small = leaf(ones({1, 2, 2}, kFloat64));
  EXPECT_EQ(to_vec(max_pool2d_indices(small, {2}, {1}, {1}, {3})), (std::vector<double>{-1}));
  Tensor m = max_pool2d(small, {2}, {1}, {1}, {3});
  EXPECT_EQ(to_vec(m), (std::vector<double>{-std::numeric_limits<double>::infinity()}));
  m.sum().backward();
  EXPECT_EQ(to_vec(small.grad()), (std::vector<double>(4, 0.0)));
  // NaNs: the value is NaN and the index the window's last NaN in row-major order (PyTorch's rule:
  // move on a greater value or a NaN), whichever lane of a row the window is in.
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<float> xs(40, 0.0f);
  xs[0] = xs[21] = static_cast<float>(nan);  // window 0: NaNs at 0 and 21
  xs[17] = static_cast<float>(nan);          // window 8: a NaN at 17 before a larger value at 37
  xs[37] = 5.0f;
  Tensor xn = tensor(xs).view({1, 2, 20});
  Tensor idn = max_pool2d_indices(xn, {2}, {2});
  std::vector<double> want(10, 0.0);
  for (int k = 0; k < 10; ++k) want[static_cast<size_t>(k)] = 2 * k;  // all-zero windows: the first element
  want[0] = 21, want[8] = 17;
  EXPECT_EQ(to_vec(idn), want);
  std::vector<double> vals = to_vec(max_pool2d(xn, {2}, {2}));
  EXPECT_TRUE(std::isnan(vals[0]) && std::isnan(vals[8]));
  EXPECT_EQ(vals[1], 0.0);
  // The backward row scatters by those indices, summing repeated ones.
  Tensor g = max_pool2d_backward(tensor({{{1.0, 2.0}, {3.0, 4.0}}}), tensor({{{4, 4}, {8, 0}}}), {1, 3, 3});
  EXPECT_EQ(to_vec(g), (std::vector<double>{4, 0, 0, 0, 3, 0, 0, 0, 3}));
}

TEST(AutogradPool, MaxPool2dDoubleBackward) {
  manual_seed(12);
  EXPECT_GRADCHECK(projected(gradients_of(max_pool_fn({.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}}), 1)),
                   distinct64({1, 2, 5, 5}));
}

TEST(AutogradPool, AvgPool2d) {
  manual_seed(13);
  EXPECT_GRADCHECK(avg_pool_fn({}), r64({2, 2, 4, 4}));
  EXPECT_GRADCHECK(avg_pool_fn({.kernel = {3, 3}, .stride = {2, 1}, .padding = {1, 1}}), r64({1, 2, 5, 4}));
  EXPECT_GRADCHECK(avg_pool_fn({.kernel = {3, 3}, .stride = {2, 1}, .padding = {1, 1}, .count_include_pad = false}),
                   r64({1, 2, 5, 4}));
  EXPECT_GRADCHECK(avg_pool_fn({.kernel = {2, 3}, .stride = {2, 2}, .padding = {1, 1}, .ceil_mode = true}),
                   r64({1, 1, 6, 6}));
  EXPECT_GRADCHECK(avg_pool_fn({.kernel = {2, 3}, .stride = {2, 2}, .padding = {1, 1}, .ceil_mode = true,
                                .count_include_pad = false}),
                   r64({2, 5, 5}));
  EXPECT_GRADCHECK(avg_pool_fn({.kernel = {2, 2}, .stride = {1, 1}}), permuted64({1, 3, 4, 4}, {0, 2, 3, 1}));
}

TEST(AutogradPool, AvgPool2dDoubleBackwardAndValues) {
  manual_seed(14);
  EXPECT_GRADCHECK(projected(gradients_of(avg_pool_fn({.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1},
                                                       .count_include_pad = false}),
                                          1)),
                   r64({1, 1, 5, 5}));
  // 3x3 input, kernel 2, stride 1: the centre is in all four windows of 4 elements.
  Tensor x = leaf(ones({1, 1, 3, 3}, kFloat64));
  avg_pool2d(x, {2}, {1}).sum().backward();
  EXPECT_EQ(to_vec(x.grad()), (std::vector<double>{0.25, 0.5, 0.25, 0.5, 1, 0.5, 0.25, 0.5, 0.25}));
}

TEST(AutogradPool, BackwardOpsErrors) {
  EXPECT_KILN_ERROR(max_pool2d_backward(ones({1, 2, 2}), tensor({{{0, 1}, {2, 9}}}), {1, 3, 3}),
                    "[max_pool2d_backward]", "index 9", "9 elements");
  EXPECT_KILN_ERROR(max_pool2d_backward(ones({1, 1, 1}), tensor({{{-2}}}), {1, 3, 3}), "[max_pool2d_backward]",
                    "index -2");
  EXPECT_KILN_ERROR(max_pool2d_backward(ones({1, 2, 2}), zeros({1, 2, 2}, kInt32), {1, 3, 3}),
                    "[max_pool2d_backward]", "int64", "int32");
  EXPECT_KILN_ERROR(max_pool2d_backward(ones({1, 2, 2}), zeros({1, 2, 1}, kInt64), {1, 3, 3}),
                    "[max_pool2d_backward]", "indices of shape [1, 2, 1]");
  EXPECT_KILN_ERROR(max_pool2d_backward(ones({2, 2, 2}), zeros({2, 2, 2}, kInt64), {1, 3, 3}),
                    "[max_pool2d_backward]", "input_size [1, 3, 3]", "dimension 0");
  EXPECT_KILN_ERROR(max_pool2d_backward(ones({1, 2, 2}, kInt64), zeros({1, 2, 2}, kInt64), {1, 3, 3}),
                    "[max_pool2d_backward]", "floating point");
  EXPECT_KILN_ERROR(max_pool2d_backward(ones({1, 2, 2}), zeros({1, 2, 2}, kInt64), {3, 3}), "[max_pool2d_backward]",
                    "input_size", "[3, 3]");
  EXPECT_KILN_ERROR(avg_pool2d_backward(ones({1, 3, 3}), {1, 5, 5}, {3}, {2}), "[avg_pool2d_backward]",
                    "[1, 2, 2]", "[1, 3, 3]");
  EXPECT_KILN_ERROR(avg_pool2d_backward(ones({1, 2, 2}), {1, 4, 4}, {2}, {0}), "[avg_pool2d_backward]", "stride");
  EXPECT_KILN_ERROR(max_pool2d_indices(ones({1, 4, 4}, kBool), {2}), "[max_pool2d_indices]", "bool");
  EXPECT_KILN_ERROR(max_pool2d_indices(ones({4, 4}), {2}), "[max_pool2d_indices]", "3-D", "[4, 4]");
}

// --- index family --------------------------------------------------------------------------------

TEST(AutogradIndex, Cat) {
  manual_seed(20);
  Fn cat1 = [](const TensorList& in) { return TensorList{cat(in, 1)}; };
  EXPECT_GRADCHECK(cat1, r64({2, 3}), permuted64({2, 1}, {1, 0}), r64({2, 2}));
  Fn cat_neg = [](const TensorList& in) { return TensorList{cat(in, -1)}; };
  // A legacy [0] tensor is skipped by cat; its gradient is empty.
  EXPECT_GRADCHECK(cat_neg, r64({2, 2, 1}), r64({0}), r64({2, 2, 3}));
  Tensor a = r64({2}), b = r64({3});
  Tensor out = cat({a, b});
  out.backward(arange(5, TensorOptions().dtype(kFloat64)));
  EXPECT_EQ(to_vec(a.grad()), (std::vector<double>{0, 1}));
  EXPECT_EQ(to_vec(b.grad()), (std::vector<double>{2, 3, 4}));
  // stack is unsqueeze + cat.
  Fn stack1 = [](const TensorList& in) { return TensorList{stack(in, 1)}; };
  EXPECT_GRADCHECK(stack1, r64({2, 3}), r64({2, 3}));
}

TEST(AutogradIndex, IndexSelect) {
  manual_seed(21);
  Tensor idx = tensor({2, 0, 2, 1});
  Fn f0 = [idx](const TensorList& in) { return TensorList{index_select(in[0], 0, idx)}; };
  Fn f1 = [idx](const TensorList& in) { return TensorList{index_select(in[0], -1, idx.to(kInt32))}; };
  EXPECT_GRADCHECK(f0, r64({3, 2}));
  EXPECT_GRADCHECK(f1, permuted64({2, 2, 3}, {2, 0, 1}));
  Tensor scalar_idx = tensor({1}).reshape({});
  Fn f2 = [scalar_idx](const TensorList& in) { return TensorList{index_select(in[0], 1, scalar_idx)}; };
  EXPECT_GRADCHECK(f2, r64({2, 3}));
  Tensor x = r64({3});
  index_select(x, 0, idx).sum().backward();
  EXPECT_EQ(to_vec(x.grad()), (std::vector<double>{1, 1, 2}));
}

TEST(AutogradIndex, Gather) {
  manual_seed(22);
  Tensor idx = tensor({{0, 0, 2}, {1, 2, 1}});
  Fn f1 = [idx](const TensorList& in) { return TensorList{gather(in[0], 1, idx)}; };
  EXPECT_GRADCHECK(f1, r64({3, 4}));  // index smaller than input outside dim
  Fn f0 = [idx](const TensorList& in) { return TensorList{gather(in[0], 0, idx.to(kInt32))}; };
  EXPECT_GRADCHECK(f0, permuted64({3, 3}, {1, 0}));
}

TEST(AutogradIndex, Scatter) {
  manual_seed(23);
  Tensor idx = tensor({{1, 0}, {2, 1}});  // unique per row: each written position has one source
  Fn f = [idx](const TensorList& in) { return TensorList{scatter(in[0], 1, idx, in[1])}; };
  EXPECT_GRADCHECK(f, r64({2, 3}), r64({2, 2}));
  EXPECT_GRADCHECK(f, r64({3, 4}), r64({3, 3}));  // src larger than index: the rest gets no grad
  Fn fv = [idx](const TensorList& in) { return TensorList{scatter(in[0], 1, idx, Scalar(2.5))}; };
  EXPECT_GRADCHECK(fv, permuted64({2, 3}, {1, 0}));
  Tensor x = r64({2, 3}), src = r64({2, 3});
  scatter(x, 1, idx, src).sum().backward();
  EXPECT_EQ(to_vec(x.grad()), (std::vector<double>{0, 0, 1, 1, 0, 0}));
  EXPECT_EQ(to_vec(src.grad()), (std::vector<double>{1, 1, 0, 1, 1, 0}));
}

TEST(AutogradIndex, ScatterAdd) {
  manual_seed(24);
  Tensor idx = tensor({{1, 1, 0}, {2, 2, 2}});  // duplicates accumulate
  Fn f = [idx](const TensorList& in) { return TensorList{scatter_add(in[0], 1, idx, in[1])}; };
  EXPECT_GRADCHECK(f, r64({2, 3}), r64({2, 3}));
  EXPECT_GRADCHECK(f, r64({3, 4}), permuted64({4, 3}, {1, 0}));
  Fn f0 = [idx](const TensorList& in) { return TensorList{scatter_add(in[0], 0, idx.t().contiguous(), in[1])}; };
  EXPECT_GRADCHECK(f0, r64({3, 2}), r64({3, 2}));
}

TEST(AutogradIndex, Embedding) {
  manual_seed(25);
  Tensor ids = tensor({{0, 2, 2}, {3, 0, 1}});
  Fn f = [ids](const TensorList& in) { return TensorList{embedding(in[0], ids)}; };
  EXPECT_GRADCHECK(f, r64({4, 3}));
  Tensor w = r64({4, 2});
  embedding(w, ids, 2).sum().backward();
  EXPECT_EQ(to_vec(w.grad()), (std::vector<double>{2, 2, 1, 1, 0, 0, 1, 1}));  // row 2 is padding
  Tensor w2 = r64({4, 2});
  embedding(w2, ids.to(kInt32), -4).sum().backward();  // padding_idx -4 is row 0
  EXPECT_EQ(to_vec(w2.grad()), (std::vector<double>{0, 0, 1, 1, 2, 2, 1, 1}));
  // The padding row still reads its values forward, so gradcheck applies only where it is unused.
  Tensor ids2 = tensor({1, 0, 1, 2});
  Fn fp = [ids2](const TensorList& in) { return TensorList{embedding(in[0], ids2, -1)}; };
  EXPECT_GRADCHECK(fp, permuted64({4, 3}, {1, 0}));
}

TEST(AutogradIndex, TrilTriu) {
  manual_seed(26);
  for (int64_t d : {-1, 0, 2}) {
    Fn lo = [d](const TensorList& in) { return TensorList{tril(in[0], d)}; };
    Fn hi = [d](const TensorList& in) { return TensorList{triu(in[0], d)}; };
    EXPECT_GRADCHECK(lo, r64({2, 3, 4}));
    EXPECT_GRADCHECK(hi, permuted64({3, 4}, {1, 0}));
  }
}

// --- nn family ------------------------------------------------------------------------------------

TEST(AutogradNn, LayerNorm) {
  manual_seed(30);
  Fn full = [](const TensorList& in) { return TensorList{layer_norm(in[0], {4}, in[1], in[2], 1e-5)}; };
  EXPECT_GRADCHECK(full, r64({3, 4}), r64({4}), r64({4}));
  Fn two_d = [](const TensorList& in) { return TensorList{layer_norm(in[0], {2, 3}, in[1], in[2], 0.1)}; };
  EXPECT_GRADCHECK(two_d, permuted64({2, 2, 3}, {2, 0, 1}), r64({2, 3}), r64({2, 3}));
  Fn plain = [](const TensorList& in) { return TensorList{layer_norm(in[0], {5})}; };
  EXPECT_GRADCHECK(plain, r64({2, 5}));
  Fn weight_only = [](const TensorList& in) { return TensorList{layer_norm(in[0], {3}, in[1])}; };
  EXPECT_GRADCHECK(weight_only, r64({2, 2, 3}), r64({3}));
  Fn bias_only = [](const TensorList& in) { return TensorList{layer_norm(in[0], {3}, std::nullopt, in[1])}; };
  EXPECT_GRADCHECK(bias_only, r64({4, 3}), r64({3}));
  // weight given but not requiring grad still scales the input's gradient.
  EXPECT_GRADCHECK(full, r64({3, 4}), randn({4}, kFloat64), r64({4}));
}

TEST(AutogradNn, LayerNormDoubleBackward) {
  manual_seed(31);
  Fn full = [](const TensorList& in) { return TensorList{layer_norm(in[0], {3}, in[1], in[2])}; };
  EXPECT_GRADCHECK(gradients_of(full, 3), r64({2, 3}), r64({3}), r64({3}));
}

TEST(AutogradNn, Dropout) {
  manual_seed(32);
  // The front end draws a fresh Philox offset per call; reseeding makes the mask a constant.
  Fn f = [](const TensorList& in) {
    manual_seed(99);
    return TensorList{dropout(in[0], 0.4)};
  };
  EXPECT_GRADCHECK(f, r64({3, 5}));
  Tensor x = leaf(ones({200}, kFloat64) + rand({200}, kFloat64));
  Tensor y = dropout(x, 0.25);
  Tensor g = randn({200}, kFloat64);
  y.backward(g);
  Tensor expected = where(y != 0, g / 0.75, 0);
  EXPECT_TRUE(close(x.grad(), expected, 1e-12, 1e-12));
  // A non-contiguous gradient is masked element by element the same way.
  Tensor x2 = leaf(ones({4, 6}, kFloat64));
  Tensor y2 = dropout(x2, 0.5);
  Tensor g2 = randn({6, 4}, kFloat64).t();
  y2.backward(g2);
  EXPECT_TRUE(close(x2.grad(), where(y2 != 0, g2 * 2, 0), 1e-12, 1e-12));
}

Fn ce_fn(Tensor target, std::optional<Tensor> weight, Reduction red, int64_t ignore = -100, double ls = 0.0) {
  return [=](const TensorList& in) { return TensorList{cross_entropy(in[0], target, weight, red, ignore, ls)}; };
}

TEST(AutogradNn, CrossEntropyClassTargets) {
  manual_seed(33);
  Tensor t = tensor({1, 0, 3, 3});
  Tensor w = tensor({0.5, 1.0, 2.0, 1.5}, kFloat64);
  for (Reduction red : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
    EXPECT_GRADCHECK(ce_fn(t, std::nullopt, red), r64({4, 4}));
    EXPECT_GRADCHECK(ce_fn(t, w, red), r64({4, 4}));
    EXPECT_GRADCHECK(ce_fn(t, std::nullopt, red, 3), r64({4, 4}));              // ignore_index
    EXPECT_GRADCHECK(ce_fn(t, w, red, 0, 0.2), permuted64({4, 4}, {1, 0}));     // all options
    EXPECT_GRADCHECK(ce_fn(t.to(kInt32), std::nullopt, red, -100, 0.3), r64({4, 4}));
  }
}

TEST(AutogradNn, CrossEntropyShapes) {
  manual_seed(34);
  Tensor w = tensor({0.5, 1.0, 2.0}, kFloat64);
  // [N, C, d1, d2] with spatial targets.
  Tensor ts = tensor({{{0, 2}, {1, 1}, {2, 0}}, {{1, 0}, {0, 2}, {2, 2}}});
  EXPECT_GRADCHECK(ce_fn(ts, w, Reduction::Mean, 2, 0.1), r64({2, 3, 3, 2}));
  EXPECT_GRADCHECK(ce_fn(ts, std::nullopt, Reduction::None, -100, 0.0), permuted64({2, 3, 3, 2}, {0, 3, 1, 2}));
  // Unbatched [C] input with a 0-dim target.
  Tensor t0 = tensor({2}).reshape({});
  EXPECT_GRADCHECK(ce_fn(t0, w, Reduction::Mean, -100, 0.25), r64({3}));
  EXPECT_GRADCHECK(ce_fn(t0, std::nullopt, Reduction::None), r64({3}));
}

TEST(AutogradNn, CrossEntropyProbabilityTargets) {
  manual_seed(35);
  Tensor w = tensor({0.5, 1.0, 2.0}, kFloat64);
  Fn f_both = [](const TensorList& in) { return TensorList{cross_entropy(in[0], in[1])}; };
  Tensor probs = leaf(softmax(randn({4, 3}, kFloat64), 1).detach());
  EXPECT_GRADCHECK(f_both, r64({4, 3}), probs);
  for (Reduction red : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
    Fn f = [w, red](const TensorList& in) { return TensorList{cross_entropy(in[0], in[1], w, red, -100, 0.2)}; };
    EXPECT_GRADCHECK(f, r64({2, 3, 2}), leaf(rand({2, 3, 2}, kFloat64)));
  }
  Fn unbatched = [](const TensorList& in) {
    return TensorList{cross_entropy(in[0], in[1], std::nullopt, Reduction::Sum, -100, 0.1)};
  };
  EXPECT_GRADCHECK(unbatched, r64({3}), leaf(rand({3}, kFloat64)));
}

TEST(AutogradNn, CrossEntropyMatchesSoftmaxFormula) {
  // Mean over non-ignored targets: d/dx = (softmax(x) - onehot) / count.
  Tensor x = leaf(tensor({{1.0, 2.0, 3.0}, {0.5, 0.5, 0.5}, {2.0, -1.0, 0.0}}, kFloat64));
  cross_entropy(x, tensor({2, 1, -100})).backward();
  Tensor p = softmax(x.detach(), 1);
  Tensor onehot = tensor({{0.0, 0.0, 1.0}, {0.0, 1.0, 0.0}, {0.0, 0.0, 0.0}}, kFloat64);
  Tensor mask = tensor({{1.0}, {1.0}, {0.0}}, kFloat64);
  EXPECT_TRUE(close(x.grad(), (p - onehot) * mask / 2, 1e-12, 1e-12));
}

TEST(AutogradNn, NllLoss) {
  manual_seed(36);
  Tensor t = tensor({1, 0, 2, 2});
  Tensor w = tensor({0.5, 1.0, 2.0}, kFloat64);
  for (Reduction red : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
    Fn f = [=](const TensorList& in) { return TensorList{nll_loss(in[0], t, std::nullopt, red)}; };
    Fn fw = [=](const TensorList& in) { return TensorList{nll_loss(in[0], t, w, red, 0)}; };
    EXPECT_GRADCHECK(f, r64({4, 3}));
    EXPECT_GRADCHECK(fw, permuted64({4, 3}, {1, 0}));
  }
  Tensor ts = tensor({{1, 0}, {2, 1}});
  Fn fs = [=](const TensorList& in) { return TensorList{nll_loss(in[0], ts, w, Reduction::Mean, 1)}; };
  EXPECT_GRADCHECK(fs, r64({2, 3, 2}));
  // Hand check: weighted mean divides by the sum of the counted targets' weights.
  Tensor x = leaf(zeros({2, 3}, kFloat64));
  nll_loss(x, tensor({2, 0}), w).backward();
  EXPECT_TRUE(close(x.grad(), tensor({{0.0, 0.0, -2.0 / 2.5}, {-0.5 / 2.5, 0.0, 0.0}}, kFloat64), 1e-12, 1e-12));
}

TEST(AutogradNn, LossClassWeightGetsNoGradient) {
  Tensor x = leaf(randn({2, 3}, kFloat64));
  Tensor w = leaf(ones({3}, kFloat64));
  EXPECT_KILN_ERROR(cross_entropy(x, tensor({0, 2}), w).backward(), "[cross_entropy]", "'weight'");
  EXPECT_KILN_ERROR(nll_loss(x, tensor({0, 2}), w).backward(), "[nll_loss]", "'weight'");
}

TEST(AutogradNn, MseLoss) {
  manual_seed(37);
  for (Reduction red : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
    Fn f = [red](const TensorList& in) { return TensorList{mse_loss(in[0], in[1], red)}; };
    EXPECT_GRADCHECK(f, r64({3, 4}), r64({3, 4}));
    EXPECT_GRADCHECK(f, permuted64({3, 4}, {1, 0}), r64({4}));  // broadcast target: its grad is summed
    EXPECT_GRADCHECK(f, r64({2, 1}), randn({2, 3}, kFloat64));
  }
}

// Gradients flow through a small CNN (conv, relu, pools, layer_norm, dropout, cross_entropy)
// and SGD on them lowers the loss.
TEST(AutogradNn, SmallCnnTrains) {
  manual_seed(38);
  Tensor x = randn({8, 1, 8, 8});
  Tensor y = randint(0, 3, {8});
  Tensor w1 = leaf(randn({4, 1, 3, 3}) * 0.3), b1 = leaf(zeros({4}));
  Tensor w2 = leaf(randn({3, 4}) * 0.3);
  Tensor ln_w = leaf(ones({4})), ln_b = leaf(zeros({4}));
  auto loss_fn = [&] {
    Tensor h = relu(conv2d(x, w1, b1, {1}, {1}));
    h = avg_pool2d(max_pool2d(h, {2}), {4});  // [8, 4, 1, 1]
    h = layer_norm(h.reshape({8, 4}), {4}, ln_w, ln_b);
    return cross_entropy(matmul(h, w2.t()), y, std::nullopt, Reduction::Mean, -100, 0.1);
  };
  const double first = loss_fn().item<float>();
  for (int step = 0; step < 30; ++step) {
    Tensor loss = loss_fn();
    loss.backward();
    NoGradGuard no_grad;
    for (Tensor* p : {&w1, &b1, &w2, &ln_w, &ln_b}) {
      ASSERT_TRUE(p->grad().defined());
      p->sub_(p->grad() * 0.5);
      p->mutable_grad().zero_();
    }
  }
  EXPECT_LT(loss_fn().item<float>(), first * 0.8);
}

}  // namespace
TEST(AutogradNn, ClassWeightsAreNotDifferentiable) {
  Tensor logits = randn({3, 4}, kFloat64).requires_grad_();
  Tensor weight = ones({4}, kFloat64).requires_grad_();
  Tensor loss = cross_entropy(logits, tensor({0, 1, 3}), weight);
  EXPECT_KILN_ERROR(loss.backward(), "[cross_entropy]", "'weight'", "weight.detach()");
  Tensor ok = cross_entropy(logits, tensor({0, 1, 3}), weight.detach());
  ok.backward();
  EXPECT_TRUE(logits.grad().defined());
}

}  // namespace kiln
