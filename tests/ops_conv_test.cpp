// conv2d, max_pool2d, avg_pool2d against naive float64 loops, plus every error path.
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "core/op.h"
#include "op_table.h"

namespace kiln {
namespace {

using optable::check_case;
using optable::OpCase;

struct ConvArgs {
  int64_t sH = 1, sW = 1, pH = 0, pW = 0, dH = 1, dW = 1, groups = 1;
};

// Direct definition: out[n, o, y, x] = b[o] + sum_{c, i, j} in[n, g*Cg + c, y*s - p + i*d, x*s - p + j*d] * w[o, c, i, j].
Tensor ref_conv2d(const TensorList& in, const ConvArgs& a) {
  const bool batched = in[0].dim() == 4;
  const Tensor x = batched ? in[0] : in[0].view({1, in[0].size(0), in[0].size(1), in[0].size(2)});
  const Tensor& w = in[1];
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t O = w.size(0), Cg = w.size(1), kH = w.size(2), kW = w.size(3), Og = O / a.groups;
  const int64_t oH = (H + 2 * a.pH - a.dH * (kH - 1) - 1) / a.sH + 1;
  const int64_t oW = (W + 2 * a.pW - a.dW * (kW - 1) - 1) / a.sW + 1;
  Tensor out = empty({N, O, oH, oW}, kFloat64);
  const double *xp = x.data_ptr<double>(), *wp = w.data_ptr<double>();
  double* op = out.data_ptr<double>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t y = 0; y < oH; ++y)
        for (int64_t z = 0; z < oW; ++z) {
          double s = in.size() == 3 ? in[2].data_ptr<double>()[o] : 0.0;
          const int64_t g = o / Og;
          for (int64_t c = 0; c < Cg; ++c)
            for (int64_t i = 0; i < kH; ++i)
              for (int64_t j = 0; j < kW; ++j) {
                const int64_t h = y * a.sH - a.pH + i * a.dH, ww = z * a.sW - a.pW + j * a.dW;
                if (h < 0 || h >= H || ww < 0 || ww >= W) continue;
                s += xp[((n * C + g * Cg + c) * H + h) * W + ww] * wp[((o * Cg + c) * kH + i) * kW + j];
              }
          op[((n * O + o) * oH + y) * oW + z] = s;
        }
  return batched ? out : out.view({O, oH, oW});
}

OpCase conv_case(std::string name, std::vector<std::vector<Shape>> shapes, ConvArgs a) {
  return OpCase{.name = std::move(name),
                .shape_sets = std::move(shapes),
                .dtypes = optable::float_dtypes(),
                .run =
                    [a](const TensorList& in) {
                      std::optional<Tensor> b;
                      if (in.size() == 3) b = in[2];
                      return conv2d(in[0], in[1], b, {a.sH, a.sW}, {a.pH, a.pW}, {a.dH, a.dW}, a.groups);
                    },
                .ref = [a](const TensorList& in) { return ref_conv2d(in, a); },
                .tol_scale = 10};
}

TEST(OpsConv, Conv2d) {
  check_case(conv_case("conv2d_plain", {{{2, 3, 6, 5}, {4, 3, 3, 3}}, {{1, 2, 4, 4}, {3, 2, 1, 1}}, {{3, 5, 5}, {2, 3, 2, 2}}},
                       {}));
  check_case(conv_case("conv2d_bias", {{{2, 3, 6, 5}, {4, 3, 3, 2}, {4}}, {{3, 5, 4}, {2, 3, 3, 3}, {2}}}, {}));
  check_case(conv_case("conv2d_stride_padding", {{{2, 3, 7, 6}, {4, 3, 3, 3}, {4}}, {{2, 6, 6}, {3, 2, 2, 3}}},
                       {.sH = 2, .sW = 3, .pH = 1, .pW = 2}));
  check_case(conv_case("conv2d_dilation", {{{1, 2, 9, 8}, {3, 2, 3, 2}, {3}}, {{2, 7, 7}, {2, 2, 2, 2}}},
                       {.pH = 2, .pW = 1, .dH = 2, .dW = 3}));
  check_case(conv_case("conv2d_groups", {{{2, 4, 6, 6}, {6, 2, 3, 3}, {6}}, {{6, 5, 5}, {4, 3, 2, 2}}},
                       {.sH = 2, .sW = 1, .pH = 1, .pW = 1, .groups = 2}));
  check_case(conv_case("conv2d_depthwise", {{{2, 3, 5, 5}, {6, 1, 3, 3}, {6}}}, {.pH = 1, .pW = 1, .groups = 3}));
  // Empty batch, kernel covering exactly the padded input.
  check_case(conv_case("conv2d_edge", {{{0, 3, 5, 5}, {2, 3, 3, 3}, {2}}, {{1, 2, 2, 3}, {2, 2, 4, 5}, {2}}},
                       {.pH = 1, .pW = 1}));
}

TEST(OpsConv, Conv2dShapes) {
  EXPECT_EQ(conv2d(ones({1, 3, 8, 8}), ones({8, 3, 3, 3})).sizes(), IntArrayRef({1, 8, 6, 6}));
  EXPECT_EQ(conv2d(ones({3, 8, 8}), ones({8, 3, 3, 3}), std::nullopt, {2}, {1}).sizes(), IntArrayRef({8, 4, 4}));
  EXPECT_EQ(conv2d(ones({1, 4, 9, 9}), ones({4, 1, 3, 3}), std::nullopt, {1}, {0}, {2}, 4).sizes(),
            IntArrayRef({1, 4, 5, 5}));
  // All-padding windows (empty spatial input) give the bias.
  Tensor r = conv2d(ones({1, 2, 0, 0}), ones({3, 2, 1, 1}), tensor({1.0, 2.0, 3.0}), {1}, {1});
  EXPECT_TRUE(kiln::testing::close(r, tensor({1.0, 2.0, 3.0}).view({1, 3, 1, 1}).expand({1, 3, 2, 2})));
  // Non-contiguous out= target.
  Tensor x = optable::random_input({1, 2, 5, 5}, kFloat32, {}, 3), w = optable::random_input({3, 2, 3, 3}, kFloat32, {}, 4);
  Tensor out = zeros({1, 3, 3, 3}).transpose(2, 3);
  call_op_out(op_def("conv2d"), out, {x, w}, {Shape{1, 1}, Shape{0, 0}, Shape{1, 1}, int64_t(1)});
  EXPECT_TRUE(kiln::testing::close(out, ref_conv2d({x.to(kFloat64), w.to(kFloat64)}, {}), 1e-4, 1e-5));
}

// --- conv2d backward kernels ---------------------------------------------------------------------

struct ConvGeom {
  int64_t N, C, H, W, O, kH, kW;
  ConvArgs a;
  int64_t oH() const { return (H + 2 * a.pH - a.dH * (kH - 1) - 1) / a.sH + 1; }
  int64_t oW() const { return (W + 2 * a.pW - a.dW * (kW - 1) - 1) / a.sW + 1; }
};

// Both gradients of conv2d by direct loops in float64 (gy, x, w float64 contiguous):
// grad_weight[o, c, i, j] = sum_{n, y, z} gy[n, o, y, z] * x[n, g*Cg + c, h(y, i), w(z, j)], and
// grad_input gets the same products scattered through w.
std::pair<Tensor, Tensor> ref_conv2d_backward(const Tensor& gy, const Tensor& x, const Tensor& w, const ConvGeom& c) {
  const ConvArgs& a = c.a;
  const int64_t Cg = c.C / a.groups, Og = c.O / a.groups, oH = c.oH(), oW = c.oW();
  Tensor dx = zeros({c.N, c.C, c.H, c.W}, kFloat64), dw = zeros({c.O, Cg, c.kH, c.kW}, kFloat64);
  const double *gp = gy.data_ptr<double>(), *xp = x.data_ptr<double>(), *wp = w.data_ptr<double>();
  double *dxp = dx.data_ptr<double>(), *dwp = dw.data_ptr<double>();
  for (int64_t n = 0; n < c.N; ++n)
    for (int64_t o = 0; o < c.O; ++o)
      for (int64_t y = 0; y < oH; ++y)
        for (int64_t z = 0; z < oW; ++z) {
          const double g = gp[((n * c.O + o) * oH + y) * oW + z];
          for (int64_t ci = 0; ci < Cg; ++ci)
            for (int64_t i = 0; i < c.kH; ++i)
              for (int64_t j = 0; j < c.kW; ++j) {
                const int64_t h = y * a.sH - a.pH + i * a.dH, ww = z * a.sW - a.pW + j * a.dW;
                if (h < 0 || h >= c.H || ww < 0 || ww >= c.W) continue;
                const int64_t xi = ((n * c.C + o / Og * Cg + ci) * c.H + h) * c.W + ww;
                const int64_t wi = ((o * Cg + ci) * c.kH + i) * c.kW + j;
                dwp[wi] += g * xp[xi];
                dxp[xi] += g * wp[wi];
              }
        }
  return {dx, dw};
}

// float32 (oneDNN, whose primitives choose blocked layouts the operands are reordered into and out
// of; the weight gradient with fewer than 8 channels per group by GEMM) and float64 (GEMM) backward
// kernels against the loops. The shapes include one input channel on 28x28 images (the case plain
// layouts made slow), channel counts that are and are not multiples of oneDNN's block, groups with
// stride and dilation, depthwise, and batches of 1 and 3 (the weight gradient's per-thread parts:
// one part, and parts of unequal size).
TEST(OpsConv, Conv2dBackwardKernels) {
  const std::vector<ConvGeom> geoms{
      {4, 1, 28, 28, 16, 5, 5, {.pH = 2, .pW = 2}},
      {4, 1, 28, 28, 16, 3, 3, {.pH = 1, .pW = 1}},
      {2, 16, 14, 14, 32, 3, 3, {.pH = 1, .pW = 1}},
      {2, 3, 11, 9, 5, 3, 2, {.sH = 2, .pH = 1}},
      {2, 6, 9, 8, 4, 3, 2, {.sH = 2, .sW = 1, .pH = 1, .pW = 1, .dH = 1, .dW = 2, .groups = 2}},
      {2, 16, 10, 10, 32, 3, 3, {.pH = 1, .pW = 1, .groups = 4}},
      {2, 8, 10, 10, 8, 3, 3, {.pH = 1, .pW = 1, .groups = 8}},
      {1, 2, 12, 12, 4, 3, 3, {.pH = 1, .pW = 1}},
      {3, 5, 9, 9, 6, 3, 3, {.sH = 2, .sW = 2, .pH = 1}},
  };
  uint64_t seed = 10;
  for (const ConvGeom& c : geoms) {
    SCOPED_TRACE(::testing::Message() << "N " << c.N << " C " << c.C << " " << c.H << "x" << c.W << " O " << c.O
                                      << " k " << c.kH << "x" << c.kW << " groups " << c.a.groups);
    const Shape xs{c.N, c.C, c.H, c.W}, ws{c.O, c.C / c.a.groups, c.kH, c.kW};
    Tensor x = optable::random_input(xs, kFloat32, {}, seed++), w = optable::random_input(ws, kFloat32, {}, seed++);
    Tensor gy = optable::random_input({c.N, c.O, c.oH(), c.oW()}, kFloat32, {}, seed++);
    auto [dx_ref, dw_ref] = ref_conv2d_backward(gy.to(kFloat64), x.to(kFloat64), w.to(kFloat64), c);
    const Shape s{c.a.sH, c.a.sW}, p{c.a.pH, c.a.pW}, d{c.a.dH, c.a.dW};
    for (DType dt : {kFloat32, kFloat64}) {
      SCOPED_TRACE(dt);
      const double rtol = dt == kFloat32 ? 1e-4 : 1e-12, atol = dt == kFloat32 ? 5e-4 : 1e-12;
      // Twice: the second call runs the cached primitive and reorders.
      for (int rep = 0; rep < 2; ++rep) {
        EXPECT_TRUE(kiln::testing::close(conv2d_backward_weight(gy.to(dt), x.to(dt), ws, s, p, d, c.a.groups), dw_ref,
                                         rtol, atol));
        EXPECT_TRUE(kiln::testing::close(conv2d_backward_input(gy.to(dt), w.to(dt), xs, s, p, d, c.a.groups), dx_ref,
                                         rtol, atol));
      }
    }
  }
}

TEST(OpsConv, Conv2dErrors) {
  Tensor x = ones({1, 4, 8, 8}), w = ones({8, 3, 3, 3});
  EXPECT_KILN_ERROR(conv2d(x, w), "[conv2d]",
                    "expected input with 3 channels (weight [8, 3, 3, 3], groups 1), but got input of shape [1, 4, 8, 8]");
  EXPECT_KILN_ERROR(conv2d(ones({1, 3, 8, 8}), ones({8, 1, 3, 3}), std::nullopt, {1}, {0}, {1}, 3), "[conv2d]",
                    "out_channels 8", "divisible by groups 3");
  EXPECT_KILN_ERROR(conv2d(ones({1, 3, 8, 8}), w, std::nullopt, {1}, {0}, {1}, 0), "[conv2d]", "groups", "0");
  EXPECT_KILN_ERROR(conv2d(ones({1, 3, 8, 8}), w, std::nullopt, {0, 1}), "[conv2d]", "stride", "[0, 1]");
  EXPECT_KILN_ERROR(conv2d(ones({1, 3, 8, 8}), w, std::nullopt, {1}, {0}, {1, -1}), "[conv2d]", "dilation", "[1, -1]");
  EXPECT_KILN_ERROR(conv2d(ones({1, 3, 8, 8}), w, std::nullopt, {1}, {-1}), "[conv2d]", "padding", "[-1, -1]");
  EXPECT_KILN_ERROR(conv2d(ones({1, 3, 2, 8}), w), "[conv2d]", "kernel size", "[3, 3]", "[2, 8]");
  EXPECT_KILN_ERROR(conv2d(ones({1, 3, 4, 4}), w, std::nullopt, {1}, {0}, {2}), "[conv2d]", "[5, 5]", "[4, 4]");
  EXPECT_KILN_ERROR(conv2d(ones({3, 8}), w), "[conv2d]", "3-D", "4-D", "[3, 8]");
  EXPECT_KILN_ERROR(conv2d(ones({1, 1, 3, 8, 8}), w), "[conv2d]", "[1, 1, 3, 8, 8]");
  EXPECT_KILN_ERROR(conv2d(ones({1, 3, 8, 8}), ones({8, 3, 3})), "[conv2d]", "weight", "4-D", "[8, 3, 3]");
  EXPECT_KILN_ERROR(conv2d(ones({1, 3, 8, 8}), ones({8, 3, 0, 3})), "[conv2d]", "non-empty kernel");
  EXPECT_KILN_ERROR(conv2d(ones({1, 3, 8, 8}), w, ones({7})), "[conv2d]", "bias", "[8]", "[7]");
  EXPECT_KILN_ERROR(conv2d(ones({1, 3, 8, 8}), w, ones({1, 8})), "[conv2d]", "bias", "[1, 8]");
  EXPECT_KILN_ERROR(conv2d(ones({1, 3, 8, 8}), w, ones({8}, kFloat64)), "[conv2d]", "input and bias", "float32 != float64");
  EXPECT_KILN_ERROR(conv2d(ones({1, 3, 8, 8}), w.to(kFloat64)), "[conv2d]", "input and weight", "float32 != float64");
  EXPECT_KILN_ERROR(conv2d(ones({1, 3, 8, 8}, kInt64), w.to(kInt64)), "[conv2d]", "floating point", "int64");
  EXPECT_KILN_ERROR(conv2d(ones({1, 3, 8, 8}), w, std::nullopt, {1, 1, 1}), "[conv2d]", "stride", "[1, 1, 1]");
  EXPECT_KILN_ERROR(conv2d(ones({1, 3, 8, 8}), w, std::nullopt, {1}, {}), "[conv2d]", "padding");
}

// --- pooling ----------------------------------------------------------------------------------

struct PoolArgs {
  int64_t kH, kW, sH, sW, pH = 0, pW = 0, dH = 1, dW = 1;
  bool ceil_mode = false, count_include_pad = true;
};

// Output length, written from PyTorch's documented rule: with ceil_mode the last window must
// start inside the input or the left padding.
int64_t ref_out_len(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode) {
  const double span = static_cast<double>(in + 2 * p - d * (k - 1) - 1) / static_cast<double>(s);
  int64_t out = static_cast<int64_t>(ceil_mode ? std::ceil(span) : std::floor(span)) + 1;
  if (ceil_mode && (out - 1) * s >= in + p) --out;
  return out;
}

// max (is_max) or average over each window with PyTorch's divisor rules.
Tensor ref_pool(const Tensor& x0, const PoolArgs& a, bool is_max) {
  const bool batched = x0.dim() == 4;
  const int64_t H = x0.size(-2), W = x0.size(-1), planes = x0.numel() / (H * W);
  const int64_t oH = ref_out_len(H, a.kH, a.sH, a.pH, a.dH, a.ceil_mode);
  const int64_t oW = ref_out_len(W, a.kW, a.sW, a.pW, a.dW, a.ceil_mode);
  Shape os = x0.sizes().vec();
  os[os.size() - 2] = oH;
  os[os.size() - 1] = oW;
  Tensor out = empty(os, kFloat64);
  const double* xp = x0.data_ptr<double>();
  double* op = out.data_ptr<double>();
  for (int64_t pl = 0; pl < planes; ++pl)
    for (int64_t y = 0; y < oH; ++y)
      for (int64_t z = 0; z < oW; ++z) {
        double best = -std::numeric_limits<double>::infinity(), sum = 0;
        int64_t inside = 0, in_padded = 0;
        for (int64_t i = 0; i < a.kH; ++i)
          for (int64_t j = 0; j < a.kW; ++j) {
            const int64_t h = y * a.sH - a.pH + i * a.dH, w = z * a.sW - a.pW + j * a.dW;
            if (h < H + a.pH && w < W + a.pW) ++in_padded;  // positions inside the padded input
            if (h < 0 || h >= H || w < 0 || w >= W) continue;
            const double v = xp[(pl * H + h) * W + w];
            ++inside;
            sum += v;
            if (v > best || std::isnan(v)) best = v;
          }
        op[(pl * oH + y) * oW + z] = is_max ? best : (inside ? sum / (a.count_include_pad ? in_padded : inside) : 0.0);
      }
  (void)batched;
  return out;
}

OpCase pool_case(std::string name, std::vector<std::vector<Shape>> shapes, PoolArgs a, bool is_max) {
  std::vector<DType> dts = optable::float_dtypes();
  if (is_max) dts.push_back(kInt64);
  return OpCase{.name = std::move(name),
                .shape_sets = std::move(shapes),
                .dtypes = dts,
                .run =
                    [a, is_max](const TensorList& in) {
                      return is_max ? max_pool2d(in[0], {a.kH, a.kW}, {a.sH, a.sW}, {a.pH, a.pW}, {a.dH, a.dW}, a.ceil_mode)
                                    : avg_pool2d(in[0], {a.kH, a.kW}, {a.sH, a.sW}, {a.pH, a.pW}, a.ceil_mode,
                                                 a.count_include_pad);
                    },
                .ref = [a, is_max](const TensorList& in) { return ref_pool(in[0], a, is_max); },
                .domain = is_max ? optable::Domain{-9, 9} : optable::Domain{}};
}

TEST(OpsConv, MaxPool2d) {
  const std::vector<std::vector<Shape>> shapes{{{2, 3, 7, 6}}, {{3, 5, 5}}, {{1, 1, 8, 9}}};
  check_case(pool_case("max_pool2d", shapes, {.kH = 2, .kW = 2, .sH = 2, .sW = 2}, true));
  check_case(pool_case("max_pool2d_pad", shapes, {.kH = 3, .kW = 2, .sH = 2, .sW = 1, .pH = 1, .pW = 1}, true));
  check_case(pool_case("max_pool2d_dilation", shapes, {.kH = 2, .kW = 3, .sH = 1, .sW = 2, .pH = 1, .pW = 1, .dH = 2, .dW = 2}, true));
  check_case(pool_case("max_pool2d_ceil", shapes, {.kH = 3, .kW = 2, .sH = 2, .sW = 2, .pH = 1, .ceil_mode = true}, true));
  check_case(pool_case("max_pool2d_ceil_dil", shapes,
                       {.kH = 3, .kW = 3, .sH = 3, .sW = 2, .pH = 1, .pW = 1, .dH = 1, .dW = 2, .ceil_mode = true}, true));
  check_case(pool_case("max_pool2d_empty_batch", {{{0, 2, 4, 4}}}, {.kH = 2, .kW = 2, .sH = 2, .sW = 2}, true));
  // Wide rows (the kernels run a window's taps over a whole output row at once, in vector lanes)
  // and a column stride other than 1 or 2 (the kernels' generic stride).
  const std::vector<std::vector<Shape>> wide{{{2, 2, 6, 37}}, {{1, 3, 9, 64}}};
  check_case(pool_case("max_pool2d_wide", wide, {.kH = 2, .kW = 2, .sH = 2, .sW = 2}, true));
  check_case(pool_case("max_pool2d_wide_pad", wide, {.kH = 3, .kW = 3, .sH = 1, .sW = 1, .pH = 1, .pW = 1}, true));
  check_case(pool_case("max_pool2d_stride3", wide, {.kH = 2, .kW = 4, .sH = 2, .sW = 3, .pH = 1, .pW = 2, .dW = 1}, true));
  check_case(pool_case("max_pool2d_stride3_dil", wide,
                       {.kH = 2, .kW = 3, .sH = 1, .sW = 3, .pW = 1, .dH = 2, .dW = 2, .ceil_mode = true}, true));
}

TEST(OpsConv, AvgPool2d) {
  const std::vector<std::vector<Shape>> shapes{{{2, 3, 7, 6}}, {{3, 5, 5}}, {{1, 1, 8, 9}}};
  for (bool include : {true, false}) {
    std::string suffix = include ? "" : "_exclude_pad";
    check_case(pool_case("avg_pool2d" + suffix, shapes, {.kH = 2, .kW = 2, .sH = 2, .sW = 2, .count_include_pad = include}, false));
    check_case(pool_case("avg_pool2d_pad" + suffix, shapes,
                         {.kH = 3, .kW = 2, .sH = 2, .sW = 1, .pH = 1, .pW = 1, .count_include_pad = include}, false));
    check_case(pool_case("avg_pool2d_ceil" + suffix, shapes,
                         {.kH = 3, .kW = 2, .sH = 2, .sW = 2, .pH = 1, .ceil_mode = true, .count_include_pad = include}, false));
    check_case(pool_case("avg_pool2d_ceil_stride3" + suffix, shapes,
                         {.kH = 3, .kW = 3, .sH = 3, .sW = 3, .pH = 1, .pW = 1, .ceil_mode = true, .count_include_pad = include},
                         false));
  }
}

TEST(OpsConv, PoolKnownValues) {
  // Values and shapes as torch.nn.functional gives them.
  Tensor row = tensor({1.0, 2.0, 3.0, 4.0, 5.0}).view({1, 1, 1, 5});
  EXPECT_TRUE(kiln::testing::close(avg_pool2d(row, {1, 2}, {1, 2}, {0, 0}, true), tensor({1.5, 3.5, 5.0}).view({1, 1, 1, 3})));
  EXPECT_TRUE(kiln::testing::close(avg_pool2d(row, {1, 2}, {1, 2}, {0, 1}), tensor({0.5, 2.5, 4.5}).view({1, 1, 1, 3})));
  EXPECT_TRUE(kiln::testing::close(avg_pool2d(row, {1, 2}, {1, 2}, {0, 1}, false, false), tensor({1.0, 2.5, 4.5}).view({1, 1, 1, 3})));
  EXPECT_TRUE(kiln::testing::close(max_pool2d(row, {1, 2}, {1, 2}, {0, 0}, {1}, true), tensor({2.0, 4.0, 5.0}).view({1, 1, 1, 3})));
  EXPECT_EQ(max_pool2d(ones({1, 1, 5, 5}), {2}, {}, {0}, {1}, true).sizes(), IntArrayRef({1, 1, 3, 3}));
  EXPECT_EQ(max_pool2d(ones({1, 1, 5, 5}), {2}).sizes(), IntArrayRef({1, 1, 2, 2}));
  EXPECT_EQ(max_pool2d(ones({1, 6, 6}), {3}, {2}, {1}, {1}, true).sizes(), IntArrayRef({1, 4, 4}));
  // The last window would start in the right padding: dropped.
  EXPECT_EQ(max_pool2d(ones({1, 5, 5}), {3}, {3}, {1}, {1}, true).sizes(), IntArrayRef({1, 2, 2}));
  // NaN propagates through max.
  Tensor n = tensor({1.0, std::nan(""), 3.0, 4.0}).view({1, 1, 2, 2});
  EXPECT_TRUE(std::isnan(max_pool2d(n, {2}).item<double>()));
  // Non-contiguous out= target.
  Tensor x = optable::random_input({2, 4, 4}, kFloat64, {}, 5);
  Tensor out = zeros({2, 2, 2}, kFloat64).transpose(1, 2);
  call_op_out(op_def("max_pool2d"), out, {x}, {Shape{2, 2}, Shape{2, 2}, Shape{0, 0}, Shape{1, 1}, false});
  EXPECT_TRUE(kiln::testing::close(out, ref_pool(x, {.kH = 2, .kW = 2, .sH = 2, .sW = 2}, true)));
}

TEST(OpsConv, PoolErrors) {
  Tensor x = ones({1, 2, 6, 6});
  for (const char* op : {"max_pool2d", "avg_pool2d"}) {
    const bool mx = std::string(op) == "max_pool2d";
    auto pool = [&](const Tensor& in, IntArrayRef k, IntArrayRef s, IntArrayRef p, bool ceil = false) {
      return mx ? max_pool2d(in, k, s, p, {1}, ceil) : avg_pool2d(in, k, s, p, ceil);
    };
    EXPECT_KILN_ERROR(pool(x, {0, 2}, {}, {0}), op, "kernel_size", "[0, 2]");
    EXPECT_KILN_ERROR(pool(x, {2}, {0}, {0}), op, "stride", "[0, 0]");
    EXPECT_KILN_ERROR(pool(x, {2}, {}, {-1}), op, "padding", "[-1, -1]");
    EXPECT_KILN_ERROR(pool(x, {3}, {}, {2}), op, "half of kernel size", "[2, 2]", "[3, 3]");
    EXPECT_KILN_ERROR(pool(ones({1, 2, 2, 6}), {3}, {}, {0}), op, "output size is too small", "[1, 2, 2, 6]");
    EXPECT_KILN_ERROR(pool(ones({6, 6}), {2}, {}, {0}), op, "3-D", "4-D", "[6, 6]");
    EXPECT_KILN_ERROR(pool(ones({1, 0, 6, 6}), {2}, {}, {0}), op, "non-zero", "[1, 0, 6, 6]");
    EXPECT_KILN_ERROR(pool(x, {2, 2, 2}, {}, {0}), op, "kernel_size", "single int", "[2, 2, 2]");
    EXPECT_KILN_ERROR(pool(x, {2}, {1, 1, 1}, {0}), op, "stride", "[1, 1, 1]");
    EXPECT_KILN_ERROR(pool(x, {2}, {}, {}), op, "padding");
    EXPECT_KILN_ERROR(pool(ones({1, 2, 6, 6}, kBool), {2}, {}, {0}), op, "bool");
  }
  EXPECT_KILN_ERROR(max_pool2d(x, {2}, {}, {0}, {0}), "[max_pool2d]", "dilation", "[0, 0]");
  EXPECT_KILN_ERROR(max_pool2d(x, {2}, {}, {0}, {1, 2, 3}), "[max_pool2d]", "dilation");
  EXPECT_KILN_ERROR(max_pool2d(ones({1, 1, 5, 5}), {3}, {1}, {0}, {3}), "[max_pool2d]", "output size is too small");
  EXPECT_KILN_ERROR(avg_pool2d(ones({1, 2, 6, 6}, kInt64), {2}), "[avg_pool2d]", "floating point", "int64");
}

}  // namespace
}  // namespace kiln
