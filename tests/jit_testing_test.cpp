// jit/testing.h: CompileCounter and the EXPECT_/ASSERT_ compile-regression macros pass when the
// code behaves, and fail (with the JIT's reasons in the message) when it recompiles on a new shape
// or breaks its graph at item(); the ASSERT_ variants stop the test.
#include "jit/testing.h"

#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>
#include <kiln/kiln.h>

namespace {

using namespace kiln;

class JitTesting : public ::testing::Test {
 protected:
  void SetUp() override { jit::reset(); }
  void TearDown() override { jit::reset(); }
};

Tensor scale_sum(const Tensor& x) { return (x * 2).sum({1}); }

// item() needs a value on the host: a graph break on every call.
Tensor normalise(const Tensor& x) {
  Tensor y = x.relu() + 1;
  const double m = y.max().item<double>();
  return y / m;
}

TEST_F(JitTesting, CompileCounterCountsSinceItsStart) {
  auto f = jit::compile(scale_sum, {.name = "scale_sum"});
  const Tensor x = ones({4, 3});
  f(x);  // the first compile happens before the counter
  jit::CompileCounter c;
  for (int i = 0; i < 3; ++i) f(x);
  EXPECT_EQ(c.calls(), 3);
  EXPECT_EQ(c.compiles(), 0);
  EXPECT_EQ(c.captures() + c.replays(), 3);
  EXPECT_GE(c.replays(), 1);  // promoted after two identical traces
  f(ones({8, 3}));            // a new batch size: one recompile
  EXPECT_EQ(c.compiles(), 1);
  EXPECT_EQ(c.recompiles(), 1);
  ASSERT_EQ(c.recompile_events().size(), 1u);
  EXPECT_EQ(c.recompile_events()[0].function, "scale_sum");
  EXPECT_NE(c.recompile_events()[0].reason.find("input[0].sizes[0]: 4 -> 8"), std::string::npos)
      << c.recompile_events()[0].reason;
  EXPECT_NE(c.str().find("1 compile (1 recompile), 0 graph breaks"), std::string::npos) << c.str();
  EXPECT_EQ(c.graph_breaks(), 0);
  EXPECT_EQ(c.fallbacks(), 0);

  c.stop();  // frozen
  f(ones({8, 3, 2}).sum({2}));
  f(ones({8, 3}, TensorOptions(kFloat64)));
  EXPECT_EQ(c.compiles(), 1);
  c.restart();
  EXPECT_EQ(c.compiles(), 0);
  f(ones({8, 3}, TensorOptions(kInt64)));  // another dtype: recompiles
  EXPECT_EQ(c.compiles(), 1);
  EXPECT_NE(c.str().find("int64"), std::string::npos) << c.str();

  // jit::reset() while counting: the counts restart from zero instead of going negative
  for (int i = 0; i < 3; ++i) f(x);
  jit::CompileCounter r;
  jit::reset();
  f(x);
  EXPECT_EQ(r.calls(), 1);
  EXPECT_EQ(r.compiles(), 1);
}

TEST_F(JitTesting, CountsGraphBreaksWithReasons) {
  auto g = jit::compile(normalise, {.name = "normalise"});
  const Tensor x = arange(0, 6, 1, TensorOptions(kFloat32)).view({2, 3});
  jit::CompileCounter c;
  for (int i = 0; i < 2; ++i) g(x);
  EXPECT_EQ(c.graph_breaks(), 2);
  ASSERT_EQ(c.graph_break_events().size(), 2u);
  EXPECT_EQ(c.graph_break_events()[0].function, "normalise");
  EXPECT_EQ(c.graph_break_events()[0].reason, "item()");
  EXPECT_NE(c.str().find("break normalise: item() (x2)"), std::string::npos) << c.str();
}

TEST_F(JitTesting, MacrosPassWhenTheCodeBehaves) {
  auto f = jit::compile(scale_sum, {.name = "scale_sum"});
  const Tensor x = ones({4, 3});
  EXPECT_MAX_COMPILES(f(x), 1);                                   // an expression
  EXPECT_MAX_COMPILES([&] { for (int i = 0; i < 5; ++i) f(x); }, 0);  // a lambda, called
  EXPECT_NO_RECOMPILES(f(x), f(x), f(ones({4, 3})));               // commas need no wrapping
  EXPECT_NO_GRAPH_BREAKS(f(x));
  ASSERT_MAX_COMPILES(f(x), 0);
  ASSERT_NO_RECOMPILES(f(x));
  ASSERT_NO_GRAPH_BREAKS([&] { f(x); });
  // a compiled function of no arguments is called
  auto g = jit::compile([x] { return (x + 1).exp(); }, {.name = "nullary"});
  EXPECT_MAX_COMPILES(g, 1);
  EXPECT_EQ(jit::stats().compiles, 2);

  // a training step compiles once and never breaks (SGD without momentum: one entry)
  manual_seed(0);
  auto model = std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(4, 8), std::make_shared<nn::ReLU>(),
                                                std::make_shared<nn::Linear>(8, 2));
  optim::SGD opt(model->parameters(), {.lr = 0.1});
  auto step = jit::compile(
      [&](const Tensor& in, const Tensor& target) {
        opt.zero_grad();
        Tensor loss = mse_loss(model->forward(in), target);
        loss.backward();
        opt.step();
        return loss.detach();
      },
      {.name = "train_step"});
  const Tensor in = randn({16, 4}), target = randn({16, 2});
  EXPECT_MAX_COMPILES([&] { for (int i = 0; i < 6; ++i) step(in, target); }, 1);
  EXPECT_NO_GRAPH_BREAKS(step(in, target));
}

TEST_F(JitTesting, ExpectMacrosFailWithTheJitsReasons) {
  auto f = jit::compile(scale_sum, {.name = "scale_sum"});
  f(ones({4, 3}));
  // a new shape recompiles
  EXPECT_NONFATAL_FAILURE(EXPECT_NO_RECOMPILES(f(ones({8, 3}))), "recompile scale_sum: input[0].sizes[0]: 4 -> 8");
  EXPECT_NONFATAL_FAILURE(EXPECT_MAX_COMPILES(f(ones({8, 3}, TensorOptions(kFloat64))), 0),
                          "f(ones({8, 3}, TensorOptions(kFloat64))) compiled 1 time(s) (at most 0 expected)");
  EXPECT_NONFATAL_FAILURE(EXPECT_MAX_COMPILES([&] {
                            f(ones({5, 3}, TensorOptions(kInt32)));
                            f(ones({5, 3}, TensorOptions(kInt64)));
                          }, 1),
                          "compiled 2 time(s) (at most 1 expected)");
  // item() breaks the graph
  auto g = jit::compile(normalise, {.name = "normalise"});
  const Tensor x = ones({2, 3});
  EXPECT_NONFATAL_FAILURE(EXPECT_NO_GRAPH_BREAKS(g(x)), "hit 1 graph break(s) (none expected)");
  EXPECT_NONFATAL_FAILURE(EXPECT_NO_GRAPH_BREAKS(g(x)), "break normalise: item()");
  // the counted code ran exactly once per check
  EXPECT_EQ(jit::stats().graph_breaks.size(), 2u);
}

// EXPECT_FATAL_FAILURE's statement cannot use locals: these run whole scenarios, and record whether
// the line after the failing ASSERT_ ran.
bool g_after_assert = false;

void assert_no_recompiles_on_new_shape() {
  auto f = jit::compile(scale_sum, {.name = "reshaped"});
  f(ones({4, 3}));
  ASSERT_NO_RECOMPILES(f(ones({6, 3})));
  g_after_assert = true;
}

void assert_max_compiles_exceeded() {
  auto f = jit::compile(scale_sum, {.name = "twice"});
  ASSERT_MAX_COMPILES([&] {
    f(ones({4, 3}));
    f(ones({4, 3}, TensorOptions(kFloat64)));
  }, 1);
  g_after_assert = true;
}

void assert_no_graph_breaks_on_item() {
  auto g = jit::compile(normalise, {.name = "normalise_assert"});
  ASSERT_NO_GRAPH_BREAKS(g(ones({3})));
  g_after_assert = true;
}

TEST_F(JitTesting, AssertMacrosFailFatallyAndStopTheTest) {
  g_after_assert = false;
  EXPECT_FATAL_FAILURE(assert_no_recompiles_on_new_shape(), "recompile reshaped: input[0].sizes[0]: 4 -> 6");
  EXPECT_FATAL_FAILURE(assert_max_compiles_exceeded(), "compiled 2 time(s) (at most 1 expected)");
  EXPECT_FATAL_FAILURE(assert_no_graph_breaks_on_item(), "break normalise_assert: item()");
  EXPECT_FALSE(g_after_assert);
}

}  // namespace
