// kiln::jit::compile: capture, caches, guards, recompiles, breaks, replay, side effects.
#include <gtest/gtest.h>

#include "jit/compile.h"
#include "kiln/kiln.h"
#include "test_util.h"

using namespace kiln;

namespace {

class JitTest : public ::testing::Test {
 protected:
  void SetUp() override { jit::reset(); }
};

TEST_F(JitTest, PointwiseChainMatchesEager) {
  auto f = [](const Tensor& x, const Tensor& y) { return (x * y + 1).exp().sum(1); };
  auto cf = jit::compile(f);
  manual_seed(0);
  Tensor x = randn({4, 5}), y = randn({4, 5});
  for (int i = 0; i < 4; ++i) {
    Tensor got = cf(x, y);
    Tensor want = f(x, y);
    EXPECT_TRUE(allclose(got, want)) << i;
  }
  jit::Stats s = jit::stats();
  EXPECT_EQ(s.compiles, 1);
  EXPECT_GE(s.replays, 1);
}

}  // namespace

namespace {

TEST_F(JitTest, TrainingStepMatchesEager) {
  auto make = [] {
    manual_seed(3);
    return std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(6, 16), std::make_shared<nn::ReLU>(),
                                            std::make_shared<nn::Linear>(16, 3));
  };
  auto eager_model = make();
  auto jit_model = make();
  optim::SGD eager_opt(eager_model->parameters(), {.lr = 0.1, .momentum = 0.9});
  optim::SGD jit_opt(jit_model->parameters(), {.lr = 0.1, .momentum = 0.9});
  auto step = [](nn::Sequential& m, optim::Optimizer& opt, const Tensor& x, const Tensor& y) {
    opt.zero_grad();
    Tensor loss = mse_loss(m.forward(x), y);
    loss.backward();
    opt.step();
    return loss.detach();
  };
  auto compiled = jit::compile([&](const Tensor& x, const Tensor& y) { return step(*jit_model, jit_opt, x, y); }, {.optimize = getenv("NOOPT") == nullptr});
  manual_seed(1);
  Tensor x = randn({8, 6}), y = randn({8, 3});
  for (int i = 0; i < 20; ++i) {
    Tensor a = step(*eager_model, eager_opt, x, y);
    Tensor b = compiled(x, y);
    ASSERT_TRUE(allclose(a, b, 1e-5, 1e-6)) << "step " << i << ": " << a.item<double>() << " vs " << b.item<double>();
  }
  auto pe = eager_model->parameters(), pj = jit_model->parameters();
  for (size_t i = 0; i < pe.size(); ++i) {
    EXPECT_TRUE(allclose(pe[i], pj[i], 1e-5, 1e-6)) << i;
    EXPECT_TRUE(allclose(pe[i].grad(), pj[i].grad(), 1e-5, 1e-6)) << i;
  }
  std::cerr << jit::stats().str();
}

TEST_F(JitTest, ItemIsAGraphBreak) {
  auto f = [](const Tensor& x) {
    Tensor y = x * 2;
    double m = y.max().item<double>();
    return y / m;
  };
  auto cf = jit::compile(f);
  Tensor x = arange(1, 7, 1, TensorOptions(kFloat32)).view({2, 3});
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(allclose(cf(x), f(x)));
  jit::Stats s = jit::stats();
  EXPECT_EQ(s.graph_breaks.size(), 3u);
  EXPECT_EQ(s.replays, 0);
  std::cerr << s.str();
  auto full = jit::compile(f, {.fullgraph = true});
  EXPECT_KILN_ERROR(full(x), "item()");
}

}  // namespace
