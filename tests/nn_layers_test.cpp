// nn layers and losses against float64 references computed by hand (loops or plain op
// formulas), train/eval behaviour, error messages, and gradients reaching every parameter.
#include <cmath>
#include <limits>

#include "autograd/autograd.h"
#include "autograd/gradcheck.h"
#include "kiln/kiln.h"
#include "test_util.h"

namespace kiln {
namespace {

using testing::close;
using testing::to_vec;
constexpr double kInf = std::numeric_limits<double>::infinity();

Tensor f64(const Tensor& t) { return t.detach().to(DType::Float64); }

// --- Linear, activations, Flatten, Dropout ------------------------------------------------------

TEST(NnLayers, LinearMatchesHandComputation) {
  auto lin = std::make_shared<nn::Linear>(3, 2);
  {
    NoGradGuard g;
    lin->weight.copy_(tensor({{1.0, -2.0, 0.5}, {0.0, 3.0, -1.0}}));
    lin->bias.copy_(tensor({0.25, -0.5}));
  }
  Tensor x = tensor({{1.0, 2.0, 3.0}, {-1.0, 0.0, 2.0}});
  // Row 0: 1 - 4 + 1.5 + 0.25 = -1.25; 0 + 6 - 3 - 0.5 = 2.5. Row 1: -1 + 0 + 1 + 0.25; 0 + 0 - 2 - 0.5.
  EXPECT_TRUE(close(lin->forward(x), tensor({{-1.25, 2.5}, {0.25, -2.5}})));
  EXPECT_TRUE(close((*lin)(tensor({1.0, 2.0, 3.0})), tensor({-1.25, 2.5})));  // unbatched
  auto nobias = std::make_shared<nn::Linear>(3, 2, false);
  EXPECT_FALSE(nobias->bias.defined());
  EXPECT_EQ(nobias->parameters().size(), 1u);
  EXPECT_KILN_ERROR(lin->forward(ones({2, 4})), "[Linear]", "last dimension 3", "in_features", "[2, 4]");
  EXPECT_KILN_ERROR(nn::Linear(-1, 2), "[Linear]", "non-negative");
}

TEST(NnLayers, Activations) {
  Tensor x = tensor({-2.0, -0.5, 0.0, 1.0, 3.0}, DType::Float64);
  std::vector<double> xs = to_vec(x);
  auto map = [&](double (*f)(double)) {
    std::vector<double> out;
    for (double v : xs) out.push_back(f(v));
    return tensor(out, DType::Float64);
  };
  EXPECT_TRUE(close(nn::ReLU()(x), map([](double v) { return v > 0 ? v : 0.0; })));
  EXPECT_TRUE(close(nn::Sigmoid()(x), map([](double v) { return 1 / (1 + std::exp(-v)); })));
  EXPECT_TRUE(close(nn::Tanh()(x), map([](double v) { return std::tanh(v); })));
  EXPECT_TRUE(close(nn::SiLU()(x), map([](double v) { return v / (1 + std::exp(-v)); })));
  EXPECT_TRUE(close(nn::GELU()(x), map([](double v) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); })));
  EXPECT_TRUE(close(nn::GELU("tanh")(x), map([](double v) {
                      return 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
                    })));
  EXPECT_KILN_ERROR(nn::GELU("fast"), "[GELU]", "'fast'");

  Tensor m = tensor({{1.0, 2.0, 3.0}, {0.0, 0.0, 0.0}}, DType::Float64);
  const double z = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  EXPECT_TRUE(close(nn::Softmax(1)(m),
                    tensor({{std::exp(1.0) / z, std::exp(2.0) / z, std::exp(3.0) / z}, {1.0 / 3, 1.0 / 3, 1.0 / 3}},
                           DType::Float64)));
  EXPECT_TRUE(close(nn::Softmax(0)(m).sum({0}), ones({3}, DType::Float64)));

  EXPECT_EQ(nn::Flatten()(zeros({2, 3, 4, 5})).sizes(), (Shape{2, 60}));
  EXPECT_EQ(nn::Flatten(0, 1)(zeros({2, 3, 4})).sizes(), (Shape{6, 4}));
  EXPECT_EQ(nn::Flatten(1, 2)(zeros({2, 3, 4, 5})).sizes(), (Shape{2, 12, 5}));
  nn::Identity id;
  Tensor t = ones({2});
  EXPECT_TRUE(id(t).is_same(t));
}

TEST(NnLayers, DropoutTrainAndEval) {
  manual_seed(7);
  auto drop = std::make_shared<nn::Dropout>(0.25);
  Tensor x = ones({4000});
  std::vector<double> y = to_vec(drop->forward(x));
  int zeros_n = 0;
  for (double v : y) {
    if (v == 0.0)
      ++zeros_n;
    else
      EXPECT_FLOAT_EQ(static_cast<float>(v), 1.0f / 0.75f);
  }
  EXPECT_NEAR(zeros_n / 4000.0, 0.25, 0.03);
  drop->eval();
  EXPECT_TRUE(close(drop->forward(x), x, 0, 0));
  EXPECT_TRUE(close(nn::Dropout(0.0)(x), x, 0, 0));
  EXPECT_TRUE(close(nn::Dropout(1.0)(x), zeros({4000}), 0, 0));
  EXPECT_KILN_ERROR(nn::Dropout(1.5), "[Dropout]", "between 0 and 1", "1.5");
}

// --- Conv2d and pools ----------------------------------------------------------------------------

// Direct loops in float64: out[n][o][y][x] = b[o] + sum w[o][c][i][j] * in[n][g*cin + c][y*s - p + i*d][...].
Tensor ref_conv2d(const Tensor& input, const Tensor& weight, const Tensor& bias, int64_t sh, int64_t sw, int64_t ph,
                  int64_t pw, int64_t dh, int64_t dw, int64_t groups) {
  const int64_t n = input.size(0), c = input.size(1), h = input.size(2), w = input.size(3);
  const int64_t o = weight.size(0), cg = weight.size(1), kh = weight.size(2), kw = weight.size(3);
  const int64_t oh = (h + 2 * ph - dh * (kh - 1) - 1) / sh + 1, ow = (w + 2 * pw - dw * (kw - 1) - 1) / sw + 1;
  std::vector<double> in = to_vec(input), wt = to_vec(weight),
                      b = bias.defined() ? to_vec(bias) : std::vector<double>();
  std::vector<double> out(static_cast<size_t>(n * o * oh * ow));
  const int64_t og = o / groups;
  for (int64_t ni = 0; ni < n; ++ni)
    for (int64_t oi = 0; oi < o; ++oi)
      for (int64_t y = 0; y < oh; ++y)
        for (int64_t x = 0; x < ow; ++x) {
          double acc = b.empty() ? 0.0 : b[static_cast<size_t>(oi)];
          const int64_t g = oi / og;
          for (int64_t ci = 0; ci < cg; ++ci)
            for (int64_t i = 0; i < kh; ++i)
              for (int64_t j = 0; j < kw; ++j) {
                const int64_t iy = y * sh - ph + i * dh, ix = x * sw - pw + j * dw;
                if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                acc += wt[static_cast<size_t>(((oi * cg + ci) * kh + i) * kw + j)] *
                       in[static_cast<size_t>(((ni * c + g * cg + ci) * h + iy) * w + ix)];
              }
          out[static_cast<size_t>(((ni * o + oi) * oh + y) * ow + x)] = acc;
        }
  return tensor(out, DType::Float64).view({n, o, oh, ow});
}

TEST(NnLayers, Conv2dMatchesDirectLoops) {
  manual_seed(11);
  struct Case {
    int64_t cin, cout, k, s, p, d, g;
    bool bias;
  };
  for (const Case& c : {Case{2, 3, 3, 1, 0, 1, 1, true}, Case{4, 4, 3, 2, 1, 1, 2, true},
                        Case{2, 2, 2, 1, 2, 2, 1, false}, Case{3, 6, 1, 1, 0, 1, 3, true}}) {
    auto conv = std::make_shared<nn::Conv2d>(c.cin, c.cout, c.k, c.s, c.p, c.d, c.g, c.bias);
    Tensor x = randn({2, c.cin, 6, 5});
    Tensor expected = ref_conv2d(x, conv->weight, conv->bias, c.s, c.s, c.p, c.p, c.d, c.d, c.g);
    EXPECT_TRUE(close(conv->forward(x), expected, 1e-4, 1e-5)) << "groups " << c.g << " stride " << c.s;
  }
  // Options struct with designated initialisers, non-square kernel, unbatched input.
  auto conv = std::make_shared<nn::Conv2d>(
      nn::Conv2dOptions{.in_channels = 2, .out_channels = 3, .kernel_size = {2, 3}, .padding = {1, 0}});
  EXPECT_EQ(conv->weight.sizes(), (Shape{3, 2, 2, 3}));
  Tensor x = randn({2, 4, 5});
  Tensor batched = ref_conv2d(x.unsqueeze(0), conv->weight, conv->bias, 1, 1, 1, 0, 1, 1, 1);
  EXPECT_TRUE(close(conv->forward(x), batched.squeeze(0), 1e-4, 1e-5));

  EXPECT_KILN_ERROR(conv->forward(randn({1, 3, 5, 5})), "[Conv2d]", "2 channels", "[1, 3, 5, 5]");
  EXPECT_KILN_ERROR(conv->forward(randn({5, 5})), "[Conv2d]", "3D (unbatched) or 4D", "[5, 5]");
  EXPECT_KILN_ERROR(nn::Conv2d(3, 4, 3, 1, 0, 1, 2), "[Conv2d]", "in_channels (3)", "divisible by groups (2)");
  EXPECT_KILN_ERROR(nn::Conv2d(4, 3, 3, 1, 0, 1, 2), "[Conv2d]", "out_channels (3)");
  EXPECT_KILN_ERROR(nn::Conv2d(2, 2, 0), "[Conv2d]", "kernel_size");
}

TEST(NnLayers, Pools) {
  Tensor x = arange(16, DType::Float32).view({1, 1, 4, 4});
  EXPECT_TRUE(close(nn::MaxPool2d(2)(x), tensor({{{{5.0, 7.0}, {13.0, 15.0}}}})));
  EXPECT_TRUE(close(nn::AvgPool2d(2)(x), tensor({{{{2.5, 4.5}, {10.5, 12.5}}}})));
  // stride 1, 3x3 window over 4x4 -> 2x2.
  EXPECT_TRUE(close(nn::MaxPool2d(3, 1)(x), tensor({{{{10.0, 11.0}, {14.0, 15.0}}}})));
  // padding 1 with count_include_pad: the corner window holds only x[0][0] = 0 and x[0][1] = 1, x[1][0] = 4,
  // x[1][1] = 5 -> 10 / 9; without it, 10 / 4.
  Tensor with_pad = nn::AvgPool2d(3, 2, 1)(x);
  Tensor without_pad =
      nn::AvgPool2d(nn::AvgPool2dOptions{.kernel_size = 3, .stride = 2, .padding = 1, .count_include_pad = false})(x);
  EXPECT_NEAR(to_vec(with_pad)[0], 10.0 / 9, 1e-6);
  EXPECT_NEAR(to_vec(without_pad)[0], 10.0 / 4, 1e-6);
  EXPECT_EQ(nn::MaxPool2d(2)(zeros({3, 4, 4})).sizes(), (Shape{3, 2, 2}));  // unbatched
  EXPECT_EQ(nn::MaxPool2d(nn::MaxPool2dOptions{.kernel_size = 2, .ceil_mode = true})(zeros({1, 1, 5, 5})).sizes(),
            (Shape{1, 1, 3, 3}));
  EXPECT_KILN_ERROR(nn::MaxPool2d(2)(zeros({4, 4})), "[MaxPool2d]", "[4, 4]");
  EXPECT_KILN_ERROR(nn::AvgPool2d(0), "[AvgPool2d]", "kernel_size");
}

// --- normalisation --------------------------------------------------------------------------------

struct ChannelStats {
  std::vector<double> mean, biased_var, unbiased_var;
};

// Per-channel statistics of an (N, C, ...) tensor by direct loops.
ChannelStats channel_stats(const Tensor& x) {
  const int64_t n = x.size(0), c = x.size(1), inner = x.numel() / (n * c);
  std::vector<double> v = to_vec(x);
  ChannelStats s;
  for (int64_t ci = 0; ci < c; ++ci) {
    double sum = 0, sq = 0;
    for (int64_t ni = 0; ni < n; ++ni)
      for (int64_t i = 0; i < inner; ++i) sum += v[static_cast<size_t>((ni * c + ci) * inner + i)];
    const double count = static_cast<double>(n * inner), mean = sum / count;
    for (int64_t ni = 0; ni < n; ++ni)
      for (int64_t i = 0; i < inner; ++i) {
        const double d = v[static_cast<size_t>((ni * c + ci) * inner + i)] - mean;
        sq += d * d;
      }
    s.mean.push_back(mean);
    s.biased_var.push_back(sq / count);
    s.unbiased_var.push_back(sq / (count - 1));
  }
  return s;
}

// (x - mean[c]) / sqrt(var[c] + eps) * w[c] + b[c] by loops.
Tensor ref_normalize(const Tensor& x, const std::vector<double>& mean, const std::vector<double>& var,
                     const std::vector<double>& w, const std::vector<double>& b, double eps) {
  const int64_t n = x.size(0), c = x.size(1), inner = x.numel() / (n * c);
  std::vector<double> v = to_vec(x);
  for (int64_t ni = 0; ni < n; ++ni)
    for (int64_t ci = 0; ci < c; ++ci)
      for (int64_t i = 0; i < inner; ++i) {
        double& e = v[static_cast<size_t>((ni * c + ci) * inner + i)];
        const auto k = static_cast<size_t>(ci);
        e = (e - mean[k]) / std::sqrt(var[k] + eps) * w[k] + b[k];
      }
  return tensor(v, DType::Float64).view(x.sizes());
}

TEST(NnLayers, BatchNorm2dTrainingAndRunningStats) {
  manual_seed(5);
  auto bn = std::make_shared<nn::BatchNorm2d>(3);
  {
    NoGradGuard g;
    bn->weight.copy_(tensor({1.0, 2.0, -1.0}));
    bn->bias.copy_(tensor({0.0, 0.5, 1.0}));
  }
  Tensor x1 = randn({2, 3, 2, 2}) * 2 + 1, x2 = randn({2, 3, 2, 2});
  ChannelStats s1 = channel_stats(x1), s2 = channel_stats(x2);
  const std::vector<double> w = {1.0, 2.0, -1.0}, b = {0.0, 0.5, 1.0};
  // Training: batch mean and biased variance.
  EXPECT_TRUE(close(bn->forward(x1), ref_normalize(x1, s1.mean, s1.biased_var, w, b, 1e-5), 1e-4, 1e-5));
  EXPECT_TRUE(close(bn->forward(x2), ref_normalize(x2, s2.mean, s2.biased_var, w, b, 1e-5), 1e-4, 1e-5));
  // Running stats: momentum 0.1 towards the batch mean and the unbiased variance, from 0 and 1.
  std::vector<double> rm(3), rv(3);
  for (size_t c = 0; c < 3; ++c) {
    rm[c] = 0.9 * (0.9 * 0.0 + 0.1 * s1.mean[c]) + 0.1 * s2.mean[c];
    rv[c] = 0.9 * (0.9 * 1.0 + 0.1 * s1.unbiased_var[c]) + 0.1 * s2.unbiased_var[c];
  }
  EXPECT_TRUE(close(bn->running_mean, tensor(rm, DType::Float64), 1e-5, 1e-6));
  EXPECT_TRUE(close(bn->running_var, tensor(rv, DType::Float64), 1e-5, 1e-6));
  EXPECT_EQ(bn->num_batches_tracked.item<int64_t>(), 2);
  // Eval: running statistics, and nothing is updated.
  bn->eval();
  Tensor x3 = randn({1, 3, 2, 2});
  EXPECT_TRUE(close(bn->forward(x3), ref_normalize(x3, rm, rv, w, b, 1e-5), 1e-4, 1e-5));
  EXPECT_EQ(bn->num_batches_tracked.item<int64_t>(), 2);
  EXPECT_TRUE(close(bn->running_mean, tensor(rm, DType::Float64), 1e-5, 1e-6));

  EXPECT_KILN_ERROR(bn->forward(randn({2, 3, 4})), "[BatchNorm2d]", "expected 4D input", "[2, 3, 4]");
  EXPECT_KILN_ERROR(bn->forward(randn({2, 4, 2, 2})), "[BatchNorm2d]", "3 channels", "[2, 4, 2, 2]");
  bn->train();
  EXPECT_KILN_ERROR(bn->forward(randn({1, 3, 1, 1})), "[BatchNorm2d]", "more than 1 value per channel");
}

TEST(NnLayers, BatchNorm1dVariants) {
  manual_seed(6);
  Tensor x = randn({4, 2}, DType::Float64);
  ChannelStats s = channel_stats(x);
  const std::vector<double> ones2 = {1.0, 1.0}, zeros2 = {0.0, 0.0};

  // Cumulative moving average (momentum = nullopt): after one batch the running stats equal it.
  auto cma = std::make_shared<nn::BatchNorm1d>(2, 1e-5, std::nullopt);
  cma->to(DType::Float64);
  cma->forward(x);
  EXPECT_TRUE(close(cma->running_mean, tensor(s.mean, DType::Float64), 1e-12, 1e-12));
  EXPECT_TRUE(close(cma->running_var, tensor(s.unbiased_var, DType::Float64), 1e-12, 1e-12));

  // No running stats: batch statistics in eval too; no buffers in the state dict.
  auto nostats = std::make_shared<nn::BatchNorm1d>(2, 1e-5, 0.1, /*affine=*/false, /*track_running_stats=*/false);
  EXPECT_EQ(nostats->parameters().size(), 0u);
  EXPECT_EQ(nostats->state_dict().size(), 0u);
  nostats->eval();
  EXPECT_TRUE(close(nostats->forward(x), ref_normalize(x, s.mean, s.biased_var, ones2, zeros2, 1e-5), 1e-6, 1e-7));

  // (N, C, L) input normalises over N and L.
  auto bn = std::make_shared<nn::BatchNorm1d>(2);
  Tensor x3 = randn({3, 2, 4});
  ChannelStats s3 = channel_stats(x3);
  EXPECT_TRUE(close(bn->forward(x3), ref_normalize(x3, s3.mean, s3.biased_var, ones2, zeros2, 1e-5), 1e-4, 1e-5));
  EXPECT_KILN_ERROR(bn->forward(randn({2, 2, 2, 2})), "[BatchNorm1d]", "expected 2D or 3D input", "4D");
  EXPECT_KILN_ERROR(bn->forward(randn({2, 5})), "[BatchNorm1d]", "2 channels", "[2, 5]");
}

TEST(NnLayers, LayerNormMatchesHand) {
  auto ln = std::make_shared<nn::LayerNorm>(3);
  {
    NoGradGuard g;
    ln->weight.copy_(tensor({1.0, 2.0, 3.0}));
    ln->bias.copy_(tensor({0.0, 1.0, -1.0}));
  }
  Tensor x = tensor({{1.0, 2.0, 6.0}, {0.0, 0.0, 3.0}});
  auto row = [](double a, double b, double c, double out[3]) {
    const double m = (a + b + c) / 3, v = ((a - m) * (a - m) + (b - m) * (b - m) + (c - m) * (c - m)) / 3;
    const double r = 1 / std::sqrt(v + 1e-5);
    out[0] = (a - m) * r * 1 + 0;
    out[1] = (b - m) * r * 2 + 1;
    out[2] = (c - m) * r * 3 - 1;
  };
  double r0[3], r1[3];
  row(1, 2, 6, r0);
  row(0, 0, 3, r1);
  EXPECT_TRUE(close(ln->forward(x), tensor({{r0[0], r0[1], r0[2]}, {r1[0], r1[1], r1[2]}}), 1e-5, 1e-5));
  auto ln2 = std::make_shared<nn::LayerNorm>(std::vector<int64_t>{2, 3}, 1e-5, /*elementwise_affine=*/false);
  EXPECT_EQ(ln2->parameters().size(), 0u);
  Tensor y = ln2->forward(randn({4, 2, 3}));
  EXPECT_TRUE(close(y.mean({1, 2}), zeros({4}), 0, 1e-5));
  EXPECT_KILN_ERROR(ln->forward(ones({2, 4})), "[LayerNorm]", "trailing shape [3]", "[2, 4]");
}

TEST(NnLayers, Embedding) {
  auto emb = std::make_shared<nn::Embedding>(5, 3, -1);  // padding_idx 4
  EXPECT_EQ(*emb->padding_idx, 4);
  EXPECT_TRUE(close(emb->weight[4], zeros({3}), 0, 0));
  Tensor idx = tensor({{0, 4}, {2, 2}});
  Tensor out = emb->forward(idx);
  EXPECT_EQ(out.sizes(), (Shape{2, 2, 3}));
  EXPECT_TRUE(close(out[0][0], emb->weight[0], 0, 0));
  EXPECT_TRUE(close(out[1][1], emb->weight[2], 0, 0));
  EXPECT_KILN_ERROR(emb->forward(tensor({0.5})), "[Embedding]", "integer indices");
  EXPECT_KILN_ERROR(nn::Embedding(5, 3, 5), "[Embedding]", "padding_idx 5", "num_embeddings (5)");
  auto pre = nn::Embedding::from_pretrained(tensor({{1.0, 2.0}, {3.0, 4.0}}));
  EXPECT_FALSE(pre->weight.requires_grad());
  EXPECT_TRUE(close(pre->forward(tensor({1})), tensor({{3.0, 4.0}})));
}

// --- losses ---------------------------------------------------------------------------------------

TEST(NnLosses, CrossEntropyAndNll) {
  Tensor logits = tensor({{1.0, 2.0, 0.5}, {0.0, -1.0, 3.0}}, DType::Float64);
  Tensor target = tensor({1, 2});
  auto lse = [](std::vector<double> r) {
    double s = 0;
    for (double v : r) s += std::exp(v);
    return std::log(s);
  };
  const double l0 = lse({1.0, 2.0, 0.5}) - 2.0, l1 = lse({0.0, -1.0, 3.0}) - 3.0;
  EXPECT_NEAR(nn::CrossEntropyLoss()(logits, target).item<double>(), (l0 + l1) / 2, 1e-12);
  EXPECT_NEAR(nn::CrossEntropyLoss({.reduction = Reduction::Sum})(logits, target).item<double>(), l0 + l1, 1e-12);
  EXPECT_TRUE(
      close(nn::CrossEntropyLoss({.reduction = Reduction::None})(logits, target), tensor({l0, l1}, DType::Float64)));
  // Class weights: weighted mean divides by the sum of the targets' weights.
  Tensor w = tensor({1.0, 2.0, 0.5}, DType::Float64);
  nn::CrossEntropyLoss weighted({.weight = w});
  EXPECT_NEAR(weighted(logits, target).item<double>(), (2.0 * l0 + 0.5 * l1) / 2.5, 1e-12);
  EXPECT_EQ(weighted.state_dict().keys(), (std::vector<std::string>{"weight"}));
  // ignore_index drops a row from the mean.
  EXPECT_NEAR(nn::CrossEntropyLoss({.ignore_index = 2})(logits, target).item<double>(), l0, 1e-12);
  // Label smoothing eps: (1 - eps) * nll + eps * mean over classes of -log p.
  const double eps = 0.2;
  auto smooth = [&](std::vector<double> r, int t) {
    const double z = lse(r);
    double all = 0;
    for (double v : r) all += z - v;
    return (1 - eps) * (z - r[static_cast<size_t>(t)]) + eps * all / 3;
  };
  EXPECT_NEAR(nn::CrossEntropyLoss({.label_smoothing = eps})(logits, target).item<double>(),
              (smooth({1.0, 2.0, 0.5}, 1) + smooth({0.0, -1.0, 3.0}, 2)) / 2, 1e-12);

  Tensor logp = log_softmax(logits, 1);
  EXPECT_NEAR(nn::NLLLoss()(logp, target).item<double>(), (l0 + l1) / 2, 1e-12);
  EXPECT_NEAR(nn::NLLLoss({.weight = w})(logp, target).item<double>(), (2.0 * l0 + 0.5 * l1) / 2.5, 1e-12);
  EXPECT_KILN_ERROR(nn::CrossEntropyLoss({.label_smoothing = 1.5}), "[CrossEntropyLoss]", "label_smoothing");
}

TEST(NnLosses, Mse) {
  Tensor a = tensor({1.0, 2.0, 4.0}, DType::Float64), b = tensor({0.0, 2.5, 1.0}, DType::Float64);
  EXPECT_NEAR(nn::MSELoss()(a, b).item<double>(), (1 + 0.25 + 9) / 3, 1e-12);
  EXPECT_NEAR(nn::MSELoss(Reduction::Sum)(a, b).item<double>(), 10.25, 1e-12);
  EXPECT_TRUE(close(nn::MSELoss(Reduction::None)(a, b), tensor({1.0, 0.25, 9.0}, DType::Float64)));
  nn::MSELoss mse;
  EXPECT_KILN_ERROR(mse.forward(a), "[MSELoss]", "no single-input forward");
}

TEST(NnLosses, BceWithLogitsIsStable) {
  Tensor x = tensor({-3.0, -0.5, 0.0, 2.0, 100.0, -100.0}, DType::Float64);
  Tensor y = tensor({0.0, 1.0, 0.5, 1.0, 0.0, 1.0}, DType::Float64);
  std::vector<double> xs = to_vec(x), ys = to_vec(y), ref;
  for (size_t i = 0; i < xs.size(); ++i) {
    // -[y log s + (1 - y) log(1 - s)] with log s = -log(1 + e^-x), log(1 - s) = -x - log(1 + e^-x),
    // evaluated with log1p on the side that cannot overflow.
    const double v = xs[i], sp = v > 0 ? std::log1p(std::exp(-v)) : -v + std::log1p(std::exp(v));
    ref.push_back(ys[i] * sp + (1 - ys[i]) * (v + sp));
  }
  Tensor none = nn::BCEWithLogitsLoss({.reduction = Reduction::None})(x, y);
  EXPECT_TRUE(close(none, tensor(ref, DType::Float64), 1e-12, 1e-12));
  EXPECT_DOUBLE_EQ(to_vec(none)[4], 100.0);  // no overflow to inf at |x| = 100
  EXPECT_DOUBLE_EQ(to_vec(none)[5], 100.0);
  double mean = 0;
  for (double v : ref) mean += v / static_cast<double>(ref.size());
  EXPECT_NEAR(nn::BCEWithLogitsLoss()(x, y).item<double>(), mean, 1e-12);

  // pos_weight multiplies the positive term, weight the whole loss; both broadcast.
  Tensor x2 = tensor({{0.3, -1.2}, {2.0, 0.1}}, DType::Float64), y2 = tensor({{1.0, 0.0}, {0.25, 1.0}}, DType::Float64);
  Tensor pw = tensor({3.0, 0.5}, DType::Float64), wt = tensor({2.0, 1.0}, DType::Float64);
  std::vector<double> xv = to_vec(x2), yv = to_vec(y2), r2;
  for (size_t i = 0; i < 4; ++i) {
    const double s = 1 / (1 + std::exp(-xv[i])), p = to_vec(pw)[i % 2], w = to_vec(wt)[i % 2];
    r2.push_back(-w * (p * yv[i] * std::log(s) + (1 - yv[i]) * std::log(1 - s)));
  }
  nn::BCEWithLogitsLoss weighted({.weight = wt, .reduction = Reduction::Sum, .pos_weight = pw});
  EXPECT_NEAR(weighted(x2, y2).item<double>(), r2[0] + r2[1] + r2[2] + r2[3], 1e-12);
  EXPECT_EQ(weighted.state_dict().keys(), (std::vector<std::string>{"weight", "pos_weight"}));
  EXPECT_KILN_ERROR(nn::BCEWithLogitsLoss()(x, zeros({2}, DType::Float64)), "[binary_cross_entropy_with_logits]",
                    "target size [2]", "input size [6]");
}

TEST(NnLosses, FunctionalGradcheck) {
  manual_seed(21);
  Tensor x = randn({3, 2}, DType::Float64).requires_grad_();
  Tensor y = rand({3, 2}, DType::Float64);
  Tensor pw = tensor({2.0, 0.5}, DType::Float64);
  auto bce = [&](const TensorList& in) {
    return TensorList{nn::functional::binary_cross_entropy_with_logits(in[0], y, {}, Reduction::Mean, pw)};
  };
  auto r = autograd::gradcheck(bce, {x});
  EXPECT_TRUE(r.ok) << r.message;

  // batch_norm in training mode, through input, weight and bias.
  Tensor bx = randn({4, 3, 2}, DType::Float64).requires_grad_();
  Tensor bw = randn({3}, DType::Float64).requires_grad_();
  Tensor bb = randn({3}, DType::Float64).requires_grad_();
  auto bn = [](const TensorList& in) {
    return TensorList{nn::functional::batch_norm(in[0], {}, {}, in[1], in[2], /*training=*/true)};
  };
  r = autograd::gradcheck(bn, {bx, bw, bb});
  EXPECT_TRUE(r.ok) << r.message;
}

// --- attention --------------------------------------------------------------------------------------

// Multi-head attention by per-batch, per-head loops in float64, with softmax as exp / sum.
// q (L, N, E), k/v (S, N, E); mask (L, S) additive float64 or undefined; kpm (N, S) bool or undefined.
// Returns the output (L, N, E) and the head-averaged weights (N, L, S).
std::pair<Tensor, Tensor> ref_mha(const Tensor& q, const Tensor& k, const Tensor& v, const nn::MultiheadAttention& m,
                                  const Tensor& mask, const Tensor& kpm) {
  const int64_t e = m.options.embed_dim, h = m.options.num_heads, hd = e / h;
  const int64_t l = q.size(0), n = q.size(1), s = k.size(0);
  Tensor w = f64(m.in_proj_weight), b = f64(m.in_proj_bias);
  Tensor wo = f64(m.out_proj->weight), bo = f64(m.out_proj->bias);
  TensorList outs, weights;
  for (int64_t bi = 0; bi < n; ++bi) {
    Tensor qb = f64(q.select(1, bi)).matmul(w.narrow(0, 0, e).t()) + b.narrow(0, 0, e);
    Tensor kb = f64(k.select(1, bi)).matmul(w.narrow(0, e, e).t()) + b.narrow(0, e, e);
    Tensor vb = f64(v.select(1, bi)).matmul(w.narrow(0, 2 * e, e).t()) + b.narrow(0, 2 * e, e);
    TensorList heads;
    Tensor avg = zeros({l, s}, DType::Float64);
    for (int64_t hi = 0; hi < h; ++hi) {
      Tensor scores = qb.narrow(1, hi * hd, hd).matmul(kb.narrow(1, hi * hd, hd).t()) / std::sqrt(double(hd));
      if (mask.defined()) scores = scores + mask;
      if (kpm.defined()) scores = scores.masked_fill(kpm.select(0, bi).unsqueeze(0).expand({l, s}), -kInf);
      Tensor ex = (scores - scores.amax({1}, true)).exp();
      Tensor p = ex / ex.sum({1}, true);
      avg = avg + p / double(h);
      heads.push_back(p.matmul(vb.narrow(1, hi * hd, hd)));
    }
    outs.push_back(cat(heads, 1).matmul(wo.t()) + bo);
    weights.push_back(avg);
  }
  return {stack(outs, 1), stack(weights, 0)};
}

TEST(NnAttention, MatchesManualComputation) {
  manual_seed(31);
  auto mha = std::make_shared<nn::MultiheadAttention>(6, 2);
  {
    NoGradGuard g;  // non-zero biases so that they are exercised
    mha->in_proj_bias.normal_(0, 0.5);
    mha->out_proj->bias.normal_(0, 0.5);
  }
  EXPECT_EQ(mha->named_parameters().keys(),
            (std::vector<std::string>{"in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"}));
  Tensor x = randn({4, 2, 6});  // (L, N, E)
  auto [out, w] = mha->forward(x, x, x);
  auto [ref_out, ref_w] = ref_mha(x, x, x, *mha, {}, {});
  EXPECT_TRUE(close(out, ref_out, 1e-4, 1e-5));
  EXPECT_TRUE(close(w, ref_w, 1e-4, 1e-5));
  EXPECT_EQ(w.sizes(), (Shape{2, 4, 4}));

  // Cross-attention (S != L), a float mask, and a bool key padding mask.
  Tensor q = randn({3, 2, 6}), kv = randn({5, 2, 6});
  Tensor fmask = randn({3, 5});
  Tensor kpm = tensor({{false, false, true, false, true}, {false, false, false, false, false}});
  auto [o2, w2] = (*mha)(q, kv, kv, kpm, true, fmask);
  auto [r2, rw2] = ref_mha(q, kv, kv, *mha, f64(fmask), kpm);
  EXPECT_TRUE(close(o2, r2, 1e-4, 1e-5));
  EXPECT_TRUE(close(w2, rw2, 1e-4, 1e-5));
  EXPECT_TRUE(close(w2.select(0, 0).select(1, 2), zeros({3}), 0, 0));  // padded keys get no weight

  // A bool attn_mask equals the float mask with -inf where true.
  Tensor bmask = tensor(
      {{false, true, false, false, false}, {false, false, false, true, true}, {true, false, false, false, false}});
  Tensor as_float = zeros({3, 5}).masked_fill(bmask, -kInf);
  auto [ob, wb] = mha->forward(q, kv, kv, {}, true, bmask);
  auto [of, wf] = mha->forward(q, kv, kv, {}, true, as_float);
  EXPECT_TRUE(close(ob, of, 0, 0));
  auto [rb, rwb] = ref_mha(q, kv, kv, *mha, f64(as_float), {});
  EXPECT_TRUE(close(ob, rb, 1e-4, 1e-5));

  // Per-head weights, no weights, a 3D mask.
  auto [o3, w3] = mha->forward(q, kv, kv, {}, true, {}, /*average_attn_weights=*/false);
  EXPECT_EQ(w3.sizes(), (Shape{2, 2, 3, 5}));
  EXPECT_TRUE(close(w3.mean({1}), std::get<1>(mha->forward(q, kv, kv)), 1e-6, 1e-7));
  EXPECT_FALSE(std::get<1>(mha->forward(q, kv, kv, {}, false)).defined());
  Tensor mask3 = fmask.unsqueeze(0).expand({4, 3, 5}).contiguous();
  EXPECT_TRUE(close(std::get<0>(mha->forward(q, kv, kv, {}, false, mask3)),
                    std::get<0>(mha->forward(q, kv, kv, {}, false, fmask)), 1e-6, 1e-6));
}

TEST(NnAttention, BatchFirstUnbatchedAndErrors) {
  manual_seed(32);
  auto seq_first = std::make_shared<nn::MultiheadAttention>(4, 2);
  auto batch_first = std::make_shared<nn::MultiheadAttention>(
      nn::MultiheadAttentionOptions{.embed_dim = 4, .num_heads = 2, .batch_first = true});
  batch_first->load_state_dict(seq_first->state_dict());
  Tensor x = randn({3, 2, 4});
  Tensor a = std::get<0>(seq_first->forward(x, x, x));
  Tensor xt = x.transpose(0, 1).contiguous();
  Tensor b = std::get<0>(batch_first->forward(xt, xt, xt));
  EXPECT_TRUE(close(b, a.transpose(0, 1), 1e-5, 1e-6));
  // Unbatched (L, E) equals batch element 0.
  Tensor x0 = x.select(1, 0).contiguous();
  auto [u, uw] = seq_first->forward(x0, x0, x0);
  EXPECT_TRUE(close(u, a.select(1, 0), 1e-5, 1e-6));
  EXPECT_EQ(uw.sizes(), (Shape{3, 3}));

  // Without biases: no in_proj_bias, an out_proj without bias, same computation otherwise.
  auto nobias = std::make_shared<nn::MultiheadAttention>(4, 2, 0.0, /*bias=*/false);
  EXPECT_EQ(nobias->named_parameters().keys(), (std::vector<std::string>{"in_proj_weight", "out_proj.weight"}));
  auto [nb, nbw] = nobias->forward(x, x, x);
  {
    NoGradGuard g;
    auto with_bias = std::make_shared<nn::MultiheadAttention>(4, 2);
    with_bias->in_proj_weight.copy_(nobias->in_proj_weight);
    with_bias->out_proj->weight.copy_(nobias->out_proj->weight);
    EXPECT_TRUE(close(std::get<0>(with_bias->forward(x, x, x)), nb, 1e-6, 1e-6));  // its biases start at zero
  }

  EXPECT_KILN_ERROR(seq_first->forward(randn({3, 2, 5}), x, x), "[MultiheadAttention]", "embedding dimension 4",
                    "[3, 2, 5]");
  EXPECT_KILN_ERROR(seq_first->forward(x, x, x, {}, true, zeros({3, 4})), "[MultiheadAttention]", "2D attn_mask",
                    "[3, 4]", "[3, 3]");
  EXPECT_KILN_ERROR(seq_first->forward(x, x, x, zeros({2, 2}, DType::Bool)), "[MultiheadAttention]", "key_padding_mask",
                    "[2, 3]", "[2, 2]");
  EXPECT_KILN_ERROR(seq_first->forward(x, x, x, {}, true, zeros({3, 3}, DType::Int64)), "[MultiheadAttention]",
                    "attn_mask", "int64");
  EXPECT_KILN_ERROR(seq_first->forward(x, randn({3, 1, 4}), randn({3, 1, 4})), "[MultiheadAttention]", "batch sizes");
  EXPECT_KILN_ERROR(seq_first->forward(x), "[MultiheadAttention]", "no single-input forward");
  EXPECT_KILN_ERROR(nn::MultiheadAttention(6, 4), "[MultiheadAttention]", "embed_dim (6)", "num_heads (4)");
}

TEST(NnAttention, CausalMask) {
  Tensor m = nn::generate_square_subsequent_mask(3);
  EXPECT_TRUE(close(m, tensor({{0.0, -kInf, -kInf}, {0.0, 0.0, -kInf}, {0.0, 0.0, 0.0}}), 0, 0));
  // With the causal mask, the first position's output only depends on itself.
  auto mha = std::make_shared<nn::MultiheadAttention>(4, 1);
  Tensor x = randn({3, 1, 4});
  Tensor y = x.clone();
  {
    NoGradGuard g;
    y.narrow(0, 1, 2).normal_();
  }
  auto [ox, wx] = mha->forward(x, x, x, {}, true, m);
  auto [oy, wy] = mha->forward(y, y, y, {}, true, m);
  EXPECT_TRUE(close(ox.select(0, 0), oy.select(0, 0), 1e-6, 1e-6));
  EXPECT_TRUE(close(wx.triu(1), zeros({1, 3, 3}), 0, 0));
}

// --- transformer ------------------------------------------------------------------------------------

Tensor ref_layer_norm(const Tensor& x, const nn::LayerNorm& ln) {
  Tensor m = x.mean({-1}, true), v = x.var({-1}, 0, true);
  return (x - m) / (v + ln.eps).sqrt() * f64(ln.weight) + f64(ln.bias);
}

Tensor ref_linear(const Tensor& x, const nn::Linear& lin) { return x.matmul(f64(lin.weight).t()) + f64(lin.bias); }

// One encoder layer in float64 from the layer's own weights (src (S, N, E), no masks, eval).
Tensor ref_encoder_layer(const Tensor& src, const nn::TransformerEncoderLayer& layer) {
  auto sa = [&](const Tensor& x) { return ref_mha(x, x, x, *layer.self_attn, {}, {}).first; };
  auto ff = [&](const Tensor& x) {
    Tensor hdn = ref_linear(x, *layer.linear1);
    hdn = layer.options.activation == "gelu" ? 0.5 * hdn * (1 + (hdn / std::sqrt(2.0)).erf()) : hdn.relu();
    return ref_linear(hdn, *layer.linear2);
  };
  Tensor x = f64(src);
  if (layer.options.norm_first) {
    x = x + sa(ref_layer_norm(x, *layer.norm1));
    return x + ff(ref_layer_norm(x, *layer.norm2));
  }
  x = ref_layer_norm(x + sa(x), *layer.norm1);
  return ref_layer_norm(x + ff(x), *layer.norm2);
}

TEST(NnTransformer, EncoderLayerMatchesReference) {
  manual_seed(41);
  for (bool norm_first : {false, true}) {
    for (const char* act : {"relu", "gelu"}) {
      auto layer = std::make_shared<nn::TransformerEncoderLayer>(nn::TransformerEncoderLayerOptions{
          .d_model = 8, .nhead = 2, .dim_feedforward = 16, .activation = act, .norm_first = norm_first});
      layer->eval();
      Tensor src = randn({5, 2, 8});
      Tensor a = layer->forward(src), b = (*layer)(src);
      EXPECT_EQ(a.sizes(), (Shape{5, 2, 8}));
      EXPECT_TRUE(close(a, b, 0, 0)) << "eval must be deterministic";
      EXPECT_TRUE(close(a, ref_encoder_layer(src, *layer), 1e-4, 1e-5)) << "norm_first " << norm_first << " " << act;
    }
  }
}

TEST(NnTransformer, EncoderLayerNamesMasksAndTraining) {
  manual_seed(42);
  auto layer = std::make_shared<nn::TransformerEncoderLayer>(8, 2, 16, 0.5);
  EXPECT_EQ(layer->named_parameters().keys(),
            (std::vector<std::string>{"self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight",
                                      "self_attn.out_proj.bias", "linear1.weight", "linear1.bias", "linear2.weight",
                                      "linear2.bias", "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"}));
  EXPECT_EQ(layer->named_children().keys(), (std::vector<std::string>{"self_attn", "linear1", "dropout", "linear2",
                                                                      "norm1", "norm2", "dropout1", "dropout2"}));
  Tensor src = randn({4, 3, 8});
  // Training applies dropout: two calls differ; eval does not.
  EXPECT_FALSE(close(layer->forward(src), layer->forward(src)));
  layer->eval();
  // A float mask and the equivalent bool mask, plus key padding.
  Tensor causal = nn::generate_square_subsequent_mask(4);
  Tensor causal_bool = causal.lt(0.0);
  Tensor kpm = tensor({{false, false, false, true}, {false, false, false, false}, {false, true, false, false}});
  EXPECT_TRUE(close((*layer)(src, causal, kpm), (*layer)(src, causal_bool, kpm), 0, 0));
  // batch_first with the same weights gives the transposed result.
  auto bf = std::make_shared<nn::TransformerEncoderLayer>(nn::TransformerEncoderLayerOptions{
      .d_model = 8, .nhead = 2, .dim_feedforward = 16, .dropout = 0.5, .batch_first = true});
  bf->load_state_dict(layer->state_dict());
  bf->eval();
  EXPECT_TRUE(close(bf->forward(src.transpose(0, 1)), layer->forward(src).transpose(0, 1), 1e-5, 1e-6));
  EXPECT_KILN_ERROR(layer->forward(randn({4, 3, 6})), "[TransformerEncoderLayer]", "[4, 3, 6]");
  EXPECT_KILN_ERROR(nn::TransformerEncoderLayer(8, 2, 16, 0.1, "tanh"), "[TransformerEncoderLayer]", "'tanh'");
}

TEST(NnTransformer, EncoderClonesLayers) {
  manual_seed(43);
  auto proto = std::make_shared<nn::TransformerEncoderLayer>(
      nn::TransformerEncoderLayerOptions{.d_model = 4, .nhead = 2, .dim_feedforward = 8, .dropout = 0.0});
  auto enc = std::make_shared<nn::TransformerEncoder>(proto, 2, std::make_shared<nn::LayerNorm>(4));
  auto keys = enc->named_parameters().keys();
  EXPECT_EQ(keys.size(), 2u * 12 + 2);
  EXPECT_EQ(keys.front(), "layers.0.self_attn.in_proj_weight");
  EXPECT_EQ(keys[12], "layers.1.self_attn.in_proj_weight");
  EXPECT_EQ(keys.back(), "norm.bias");
  auto l0 = enc->layers->at<nn::TransformerEncoderLayer>(0), l1 = enc->layers->at<nn::TransformerEncoderLayer>(1);
  // Deep copies of the prototype: equal values, separate storage.
  EXPECT_TRUE(close(l0->linear1->weight, proto->linear1->weight, 0, 0));
  EXPECT_TRUE(close(l1->self_attn->in_proj_weight, proto->self_attn->in_proj_weight, 0, 0));
  EXPECT_NE(l0->linear1->weight.data_ptr(), l1->linear1->weight.data_ptr());
  EXPECT_NE(l0->linear1->weight.data_ptr(), proto->linear1->weight.data_ptr());
  {
    NoGradGuard g;
    l1->linear2->weight.normal_();
  }
  enc->eval();
  Tensor src = randn({3, 2, 4});
  Tensor mask = nn::generate_square_subsequent_mask(3);
  Tensor expected = enc->norm->forward(l1->forward(l0->forward(src, mask), mask));
  EXPECT_TRUE(close((*enc)(src, mask), expected, 0, 0));
  // clone() of the whole encoder is deep and keeps the diverged layer values.
  auto copy = std::dynamic_pointer_cast<nn::TransformerEncoder>(enc->clone());
  ASSERT_TRUE(copy);
  EXPECT_FALSE(copy->is_training());
  EXPECT_TRUE(close(copy->forward(src, mask), expected, 0, 0));
  EXPECT_EQ(copy->state_dict().keys(), enc->state_dict().keys());
}

// --- gradients ----------------------------------------------------------------------------------------

void expect_all_grads(const nn::Module& m) {
  for (const auto& [name, p] : m.named_parameters()) {
    ASSERT_TRUE(p.grad().defined()) << name << " got no gradient";
    EXPECT_EQ(p.grad().sizes(), p.sizes()) << name;
    const std::vector<double> g = to_vec(p.grad());
    bool finite = true, nonzero = false;
    for (double v : g) finite = finite && std::isfinite(v), nonzero = nonzero || v != 0.0;
    EXPECT_TRUE(finite) << name;
    EXPECT_TRUE(nonzero) << name << " has an all-zero gradient";
  }
}

TEST(NnGradients, ConvNetReachesEveryParameter) {
  manual_seed(51);
  auto net = std::make_shared<nn::Sequential>(
      std::make_shared<nn::Conv2d>(2, 4, 3, 1, 1), std::make_shared<nn::BatchNorm2d>(4), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::MaxPool2d>(2), std::make_shared<nn::Conv2d>(4, 4, 3, 1, 1, 1, 2),
      std::make_shared<nn::AvgPool2d>(2), std::make_shared<nn::Flatten>(), std::make_shared<nn::Linear>(4, 6),
      std::make_shared<nn::BatchNorm1d>(6), std::make_shared<nn::GELU>(), std::make_shared<nn::Dropout>(0.1),
      std::make_shared<nn::LayerNorm>(6), std::make_shared<nn::Linear>(6, 3));
  Tensor x = randn({4, 2, 4, 4});
  Tensor target = tensor({0, 2, 1, 2});
  Tensor loss = nn::CrossEntropyLoss()(net->forward(x), target);
  loss.backward();
  expect_all_grads(*net);
}

TEST(NnGradients, TransformerReachesEveryParameter) {
  manual_seed(52);
  auto emb = std::make_shared<nn::Embedding>(10, 8, 0);
  auto enc = std::make_shared<nn::TransformerEncoder>(
      std::make_shared<nn::TransformerEncoderLayer>(nn::TransformerEncoderLayerOptions{.d_model = 8,
                                                                                       .nhead = 2,
                                                                                       .dim_feedforward = 16,
                                                                                       .dropout = 0.1,
                                                                                       .activation = "gelu",
                                                                                       .batch_first = true,
                                                                                       .norm_first = true}),
      2, std::make_shared<nn::LayerNorm>(8));
  auto head = std::make_shared<nn::Linear>(8, 1);
  Tensor tokens = tensor({{1, 2, 3, 0}, {4, 5, 0, 0}});
  Tensor pad = tokens.eq(0);
  Tensor h = enc->forward(emb->forward(tokens), nn::generate_square_subsequent_mask(4), pad);
  Tensor logits = head->forward(h).squeeze(-1);
  Tensor loss = nn::BCEWithLogitsLoss()(logits, tensor({{1.0, 0.0, 1.0, 0.0}, {0.0, 1.0, 1.0, 1.0}}));
  loss.backward();
  expect_all_grads(*enc);
  expect_all_grads(*head);
  ASSERT_TRUE(emb->weight.grad().defined());
  // padding_idx 0 gets no gradient; used rows do.
  EXPECT_TRUE(close(emb->weight.grad()[0], zeros({8}), 0, 0));
  EXPECT_GT(emb->weight.grad()[1].abs().sum().item<double>(), 0.0);
}

TEST(NnGradients, AttentionGradcheck) {
  manual_seed(53);
  auto mha = std::make_shared<nn::MultiheadAttention>(4, 2);
  mha->to(DType::Float64);
  Tensor q = randn({3, 2, 4}, DType::Float64).requires_grad_();
  Tensor kv = randn({2, 2, 4}, DType::Float64).requires_grad_();
  auto f = [&](const TensorList& in) {
    auto [o, w] = mha->forward(in[0], in[1], in[1]);
    return TensorList{o, w};
  };
  auto r = autograd::gradcheck(f, {q, kv});
  EXPECT_TRUE(r.ok) << r.message;
}

}  // namespace
}  // namespace kiln
