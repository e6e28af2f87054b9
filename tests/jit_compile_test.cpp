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

// --- side effects: compiled training steps leave parameters, grads and optimizer state as eager --

namespace {

using kiln::testing::close;
constexpr double kRtol = 1e-4, kAtol = 1e-5;

std::vector<std::pair<std::string, Tensor>> params_of(const nn::Module& m) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [name, p] : m.named_parameters()) out.emplace_back(name, p);
  return out;
}

// `noise_floor` > 0: parameter elements whose eager gradient is below it are not compared. Adam
// divides the gradient by its own magnitude, so a mathematically zero gradient (attention's key
// bias) that is rounding noise becomes an lr-sized step in a direction set by that noise; fused
// reductions round differently from eager's.
void expect_same_state(const nn::Module& eager, const nn::Module& jit_model, const optim::Optimizer& eo,
                       const optim::Optimizer& jo, double noise_floor) {
  auto pe = params_of(eager), pj = params_of(jit_model);
  ASSERT_EQ(pe.size(), pj.size());
  for (size_t i = 0; i < pe.size(); ++i) {
    ASSERT_EQ(pe[i].first, pj[i].first);
    Tensor got = pj[i].second;
    if (noise_floor > 0 && pe[i].second.grad().defined())
      got = where(pe[i].second.grad().abs() < noise_floor, pe[i].second, pj[i].second);
    EXPECT_TRUE(close(got, pe[i].second, kRtol, kAtol)) << "parameter " << pe[i].first;
    ASSERT_EQ(pj[i].second.grad().defined(), pe[i].second.grad().defined()) << pe[i].first;
    if (pe[i].second.grad().defined())
      EXPECT_TRUE(close(pj[i].second.grad(), pe[i].second.grad(), kRtol, kAtol)) << "grad of " << pe[i].first;
  }
  const optim::OptimizerStateDict se = eo.state_dict(), sj = jo.state_dict();
  ASSERT_EQ(se.state.size(), sj.state.size());
  ASSERT_FALSE(se.state.empty());
  for (const auto& [id, tensors] : se.state) {
    auto it = sj.state.find(id);
    ASSERT_NE(it, sj.state.end()) << "state of parameter " << id;
    ASSERT_EQ(it->second.size(), tensors.size()) << "state of parameter " << id;
    for (const auto& [name, t] : tensors) {
      auto jt = it->second.find(name);
      ASSERT_NE(jt, it->second.end()) << id << "." << name;
      EXPECT_TRUE(close(jt->second, t, kRtol, kAtol)) << "optimizer state " << id << "." << name;
    }
  }
  ASSERT_EQ(se.param_groups.size(), sj.param_groups.size());
  for (size_t g = 0; g < se.param_groups.size(); ++g) {
    EXPECT_EQ(sj.param_groups[g].options, se.param_groups[g].options) << "group " << g;
    EXPECT_EQ(sj.param_groups[g].params, se.param_groups[g].params) << "group " << g;
  }
}

struct TrainCase {
  std::function<std::shared_ptr<nn::Module>()> model;  // seeds itself: two calls give equal models
  std::function<std::unique_ptr<optim::Optimizer>(std::vector<Tensor>)> opt;
  Shape x_shape, y_shape;
  int lr_change_at = 10;  // both optimizers' lr is scaled by 0.3 before this step
  jit::Backend backend = jit::Backend::Native;
  double noise_floor = 0;  // see expect_same_state
};

// 20 steps eager and compiled, step by step under the same seed (dropout draws alike), with an
// lr change half way. Returns the stats of the compiled side.
jit::Stats check_training(const TrainCase& c) {
  auto em = c.model(), jm = c.model();
  auto eo = c.opt(em->parameters()), jo = c.opt(jm->parameters());
  auto step = [](nn::Module& m, optim::Optimizer& opt, const Tensor& x, const Tensor& y) {
    opt.zero_grad();
    Tensor loss = mse_loss(m.forward(x), y);
    loss.backward();
    opt.step();
    return loss.detach();
  };
  auto compiled = jit::compile([&](const Tensor& x, const Tensor& y) { return step(*jm, *jo, x, y); },
                               {.backend = c.backend});
  manual_seed(42);
  Tensor x = randn(c.x_shape), y = randn(c.y_shape);
  for (int i = 0; i < 20; ++i) {
    if (i == c.lr_change_at) {
      eo->set_lr(0, eo->lr(0) * 0.3);
      jo->set_lr(0, jo->lr(0) * 0.3);
    }
    manual_seed(1000 + static_cast<uint64_t>(i));
    Tensor want = step(*em, *eo, x, y);
    manual_seed(1000 + static_cast<uint64_t>(i));
    Tensor got = compiled(x, y);
    EXPECT_TRUE(close(got, want, kRtol, kAtol)) << "loss at step " << i;
    if (::testing::Test::HasFailure()) break;
  }
  expect_same_state(*em, *jm, *eo, *jo, c.noise_floor);
  return jit::stats();
}

std::shared_ptr<nn::Module> make_mlp() {
  manual_seed(3);
  return std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(6, 16), std::make_shared<nn::Tanh>(),
                                          std::make_shared<nn::Linear>(16, 3));
}

std::function<std::shared_ptr<nn::Module>()> make_transformer(double dropout) {
  return [dropout] {
    manual_seed(5);
    return std::make_shared<nn::TransformerEncoderLayer>(
        nn::TransformerEncoderLayerOptions{.d_model = 8, .nhead = 2, .dim_feedforward = 16, .dropout = dropout,
                                           .batch_first = true});
  };
}

TEST_F(JitTest, MlpTrainingWithAdamMatchesEager) {
  jit::Stats s = check_training({make_mlp,
                                 [](std::vector<Tensor> p) {
                                   return std::make_unique<optim::Adam>(std::move(p), optim::AdamOptions{.lr = 1e-2});
                                 },
                                 {8, 6},
                                 {8, 3}});
  // Adam's step count changes every call: trace mode throughout, few compiles.
  EXPECT_EQ(s.captures, 20) << s.str();
  EXPECT_LE(s.compiles, 4) << s.str();
  EXPECT_EQ(s.eager_fallbacks, 0) << s.str();
}

TEST_F(JitTest, MlpTrainingWithSgdMomentumMatchesEager) {
  jit::Stats s = check_training({make_mlp,
                                 [](std::vector<Tensor> p) {
                                   return std::make_unique<optim::SGD>(std::move(p),
                                                                       optim::SGDOptions{.lr = 0.05, .momentum = 0.9});
                                 },
                                 {8, 6},
                                 {8, 3}});
  // Promoted to replay once the momentum buffers exist; the lr change traces, then replays again.
  EXPECT_GT(s.replays, 0) << s.str();
  EXPECT_EQ(s.eager_fallbacks, 0) << s.str();
}

TEST_F(JitTest, TransformerTrainingWithAdamWMatchesEager) {
  auto adamw = [](std::vector<Tensor> p) {
    return std::make_unique<optim::AdamW>(std::move(p), optim::AdamWOptions{.lr = 5e-3});
  };
  // The interpreter runs eager's kernels: the state agrees to rounding everywhere.
  jit::Stats s = check_training({make_transformer(0.0), adamw, {2, 5, 8}, {2, 5, 8}, 10, jit::Backend::Interpreter});
  EXPECT_EQ(s.eager_fallbacks, 0) << s.str();
  jit::reset();
  s = check_training({make_transformer(0.0), adamw, {2, 5, 8}, {2, 5, 8}, 10, jit::Backend::Native, 1e-6});
  EXPECT_EQ(s.eager_fallbacks, 0) << s.str();
  EXPECT_EQ(s.codegen_fallbacks, 0) << s.str();
  EXPECT_GT(s.fused_kernels, 0) << s.str();
}

TEST_F(JitTest, TransformerTrainingWithDropoutMatchesEager) {
  auto adamw = [](std::vector<Tensor> p) {
    return std::make_unique<optim::AdamW>(std::move(p), optim::AdamWOptions{.lr = 5e-3});
  };
  jit::Stats s = check_training({make_transformer(0.1), adamw, {2, 5, 8}, {2, 5, 8}, 10, jit::Backend::Native, 1e-6});
  EXPECT_EQ(s.eager_fallbacks, 0) << s.str();
}

}  // namespace
