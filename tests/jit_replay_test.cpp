// Replay (calls served without running f): results, in-place effects and versions as eager.
#include <gtest/gtest.h>

#include "kiln/kiln.h"
#include "test_util.h"

using namespace kiln;

namespace {

class JitReplay : public ::testing::Test {
 protected:
  void SetUp() override { jit::reset(); }
};

TEST_F(JitReplay, ReturnsAViewOfAnInput) {
  auto cf = jit::compile([](const Tensor& x) { return x.t(); });
  Tensor x = randn({3, 4});
  for (int i = 0; i < 4; ++i) {
    Tensor y = cf(x);
    EXPECT_EQ(y.sizes(), IntArrayRef({4, 3}));
    EXPECT_TRUE(allclose(y, x.t()));
    EXPECT_EQ(y.data_ptr(), x.data_ptr());  // a view, as eager
  }
  EXPECT_GE(jit::stats().replays, 1);
}

TEST_F(JitReplay, ReturnsAnInputAsIs) {
  auto cf = jit::compile([](const Tensor& x, const Tensor& y) { return std::make_tuple(x, x + y); });
  Tensor x = randn({5}), y = randn({5});
  for (int i = 0; i < 4; ++i) {
    auto [a, b] = cf(x, y);
    EXPECT_TRUE(a.is_same(x));
    EXPECT_TRUE(allclose(b, x + y));
  }
  EXPECT_GE(jit::stats().replays, 1);
}

TEST_F(JitReplay, InPlaceUpdateOfAnArgumentBumpsItsVersion) {
  auto cf = jit::compile([](Tensor& x) {
    x.mul_(2).add_(1);
    return x.sum();
  });
  Tensor x = ones({4});
  Tensor want = ones({4});
  for (int i = 0; i < 5; ++i) {
    uint32_t before = x._version();
    Tensor s = cf(x);
    want.mul_(2).add_(1);
    EXPECT_TRUE(allclose(x, want)) << i;
    EXPECT_DOUBLE_EQ(s.item<double>(), want.sum().item<double>());
    EXPECT_GT(x._version(), before) << "call " << i;
  }
  EXPECT_GE(jit::stats().replays, 1);
}

TEST_F(JitReplay, VectorResultsAndArguments) {
  auto cf = jit::compile([](const std::vector<Tensor>& xs, double scale) {
    std::vector<Tensor> out;
    for (const Tensor& x : xs) out.push_back(x * scale);
    return out;
  });
  std::vector<Tensor> xs{randn({2}), randn({3}), randn({4})};
  for (int i = 0; i < 4; ++i) {
    std::vector<Tensor> r = cf(xs, 0.5);
    ASSERT_EQ(r.size(), 3u);
    for (size_t k = 0; k < 3; ++k) EXPECT_TRUE(allclose(r[k], xs[k] * 0.5));
  }
  EXPECT_GE(jit::stats().replays, 1);
  std::vector<Tensor> r = cf(xs, 2.0);  // a new scalar argument: traced again, right answer
  for (size_t k = 0; k < 3; ++k) EXPECT_TRUE(allclose(r[k], xs[k] * 2.0));
}

TEST_F(JitReplay, DropoutDrawsFreshMasksLikeEager) {
  auto f = [](const Tensor& x) { return dropout(x, 0.5, true); };
  auto cf = jit::compile(f);
  Tensor x = ones({64});
  manual_seed(7);
  std::vector<Tensor> want;
  for (int i = 0; i < 5; ++i) want.push_back(f(x));
  manual_seed(7);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(equal(cf(x), want[static_cast<size_t>(i)])) << "call " << i;
  EXPECT_GE(jit::stats().replays, 1);
  EXPECT_FALSE(equal(want[3], want[4]));
}

TEST_F(JitReplay, LrChangeIsHonoured) {
  Tensor w = ones({3}).requires_grad_();
  optim::SGD opt({w}, {.lr = 0.1});
  auto step = jit::compile([&](const Tensor& x) {
    opt.zero_grad();
    Tensor loss = (w * x).sum();
    loss.backward();
    opt.step();
    return loss.detach();
  });
  Tensor x = full({3}, 2.0);
  for (int i = 0; i < 4; ++i) step(x);
  EXPECT_GE(jit::stats().replays, 1);
  EXPECT_TRUE(allclose(w, full({3}, 1.0 - 4 * 0.2)));
  opt.set_lr(0, 1.0);
  step(x);
  EXPECT_TRUE(allclose(w, full({3}, 1.0 - 4 * 0.2 - 2.0)));
  EXPECT_TRUE(allclose(w.grad(), x));
}

}  // namespace

namespace {

TEST_F(JitReplay, TransformerEncoderLayerInferenceReplaysWithoutBreaks) {
  manual_seed(0);
  auto layer = std::make_shared<nn::TransformerEncoderLayer>(
      nn::TransformerEncoderLayerOptions{.d_model = 16, .nhead = 4, .dim_feedforward = 32, .batch_first = true});
  layer->eval();
  auto cf = jit::compile(layer);
  Tensor x = randn({2, 5, 16});
  NoGradGuard no_grad;
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(allclose(cf(x), layer->forward(x), 1e-5, 1e-6)) << i;
  jit::Stats s = jit::stats();
  EXPECT_EQ(s.graph_breaks.size(), 0u) << s.str();
  EXPECT_GE(s.replays, 1) << s.str();
}

}  // namespace

namespace {

TEST_F(JitReplay, EmptyTensorsMadeInsideAreReadable) {
  auto cf = jit::compile([](const Tensor& x) { return std::make_tuple(empty({3}), x + 1); });
  Tensor x = zeros({2});
  for (int i = 0; i < 3; ++i) {
    auto [e, y] = cf(x);
    EXPECT_EQ(e.numel(), 3);
    EXPECT_NO_THROW(e.contiguous().data_ptr<float>()[0]);  // uninitialised, but memory exists
    EXPECT_TRUE(allclose(y, ones({2})));
  }
}

TEST_F(JitReplay, OptionalAbsentInputsSurviveThePasses) {
  // cross_entropy without class weights hands its kernel an undefined tensor: the graph records
  // it as None, and every pass must step over it.
  auto f = [](const Tensor& x, const Tensor& t) { return cross_entropy(x * 1.0 + 0.0, t); };
  auto cf = jit::compile(f);
  Tensor x = randn({4, 3}), w = tensor({0, 2, 1, 1});
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(allclose(cf(x, w), f(x, w)));
  auto ex = jit::explain(f, x, w);
  ASSERT_EQ(ex.graph_count(), 1);
  EXPECT_NE(ex.graphs[0].find("None"), std::string::npos) << ex.graphs[0];
}

}  // namespace
