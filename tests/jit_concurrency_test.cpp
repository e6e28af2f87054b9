// Many threads calling one compiled function at once: every result equals eager, the caches
// stay consistent and a compile in progress is shared. Kept short: CI runs it under
// ThreadSanitizer (scripts/test.sh).
#include <gtest/gtest.h>

#include <atomic>
#include <latch>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "jit/compile.h"
#include "kiln/kiln.h"
#include "test_util.h"

using namespace kiln;
using kiln::testing::close;

namespace {

constexpr int kThreads = 6;
constexpr int kCalls = 200;

// Failures seen by worker threads, reported on the main thread.
struct Failures {
  std::mutex mu;
  std::vector<std::string> messages;
  void add(std::string m) {
    std::lock_guard<std::mutex> lock(mu);
    if (messages.size() < 10) messages.push_back(std::move(m));
  }
  // Call `call` of thread `t` returned `got`; eager gave `want`.
  void check(int t, int call, const Tensor& got, const Tensor& want) {
    if (got.dtype() != want.dtype() || !close(got, want))
      add("thread " + std::to_string(t) + " call " + std::to_string(call) + ": " + close(got, want).message());
  }
};

// Runs body(thread) on `n` threads released together, so their first calls race for the compile.
template <class Body>
void run_threads(int n, Body body) {
  std::latch start(n);
  std::vector<std::thread> threads;
  for (int t = 0; t < n; ++t)
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      body(t);
    });
  for (auto& th : threads) th.join();
}

class JitConcurrency : public ::testing::Test {
 protected:
  void SetUp() override {
    jit::reset();
    manual_seed(0);
  }
};

TEST_F(JitConcurrency, SameShapes) {
  Tensor w = randn({8, 5}), b = randn({5});
  auto f = [&w, &b](const Tensor& x) { return ((x.matmul(w) + b).relu() * 2 - x.sum(1, true)).tanh(); };
  auto cf = jit::compile(f, {.name = "same_shapes"});
  // Inputs and eager results are made up front: the global generator is not for concurrent use.
  std::vector<Tensor> xs, want;
  for (int t = 0; t < kThreads; ++t) {
    xs.push_back(randn({4, 8}));
    want.push_back(f(xs.back()));
  }
  Failures failures;
  run_threads(kThreads, [&](int t) {
    for (int i = 0; i < kCalls; ++i) {
      Tensor got = cf(xs[static_cast<size_t>(t)]);
      failures.check(t, i, got, want[static_cast<size_t>(t)]);
    }
  });
  EXPECT_TRUE(failures.messages.empty()) << failures.messages.front();
  jit::Stats s = jit::stats();
  EXPECT_EQ(s.calls, kThreads * kCalls) << s.str();
  EXPECT_EQ(s.captures + s.replays, s.calls) << s.str();
  EXPECT_GT(s.replays, 0) << s.str();
  // Every thread traced the same graph: one entry, compiled once, the others waited for it.
  EXPECT_EQ(s.compiles, 1) << s.str();
  EXPECT_EQ(s.eager_fallbacks, 0) << s.str();
}

TEST_F(JitConcurrency, DifferentShapesAndDTypes) {
  Tensor w = randn({8, 3});
  auto f = [](const Tensor& x, const Tensor& w) { return (x.matmul(w.to(x.dtype())).sigmoid() + x.mean(1, true)) * 3; };
  auto cf = jit::compile(f, {.name = "mixed_shapes"});
  // Thread t: batch 2 + t; the last thread uses float64.
  std::vector<Tensor> xs, want;
  for (int t = 0; t < kThreads; ++t) {
    Tensor x = randn({2 + t, 8});
    if (t == kThreads - 1) x = x.to(kFloat64);
    xs.push_back(x);
    want.push_back(f(x, w));
  }
  Failures failures;
  run_threads(kThreads, [&](int t) {
    const Tensor& x = xs[static_cast<size_t>(t)];
    const Tensor& expected = want[static_cast<size_t>(t)];
    for (int i = 0; i < kCalls; ++i) {
      Tensor got = cf(x, w);
      failures.check(t, i, got, expected);
    }
  });
  EXPECT_TRUE(failures.messages.empty()) << failures.messages.front();
  jit::Stats s = jit::stats();
  EXPECT_EQ(s.calls, kThreads * kCalls) << s.str();
  // Batch sizes share one dynamic entry; float64 has its own (static, then dynamic when the batch
  // dim became dynamic under it): at most 4 entries whatever the interleaving.
  EXPECT_LE(s.compiles, 4) << s.str();
  EXPECT_EQ(s.eager_fallbacks, 0) << s.str();
}

// One module compiled and called from every thread under NoGradGuard (its parameters require
// grad, as in training): half the threads replay one shape while the others trace other batch
// sizes. Replays must not write the shared parameters (their .grad).
TEST_F(JitConcurrency, ModuleForwardNoGrad) {
  manual_seed(1);
  auto m = std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(6, 10), std::make_shared<nn::ReLU>(),
                                            std::make_shared<nn::Linear>(10, 2));
  auto cm = jit::compile(m, {.name = "module_threads"});
  std::vector<Tensor> xs, want;
  for (int t = 0; t < kThreads; ++t) {
    xs.push_back(randn({t % 2 == 0 ? 3 : 4 + t, 6}));
    NoGradGuard no_grad;
    want.push_back(m->forward(xs.back()));
  }
  Failures failures;
  run_threads(kThreads, [&](int t) {
    NoGradGuard no_grad;  // grad mode is per thread
    for (int i = 0; i < kCalls / 2; ++i) {
      Tensor got = cm(xs[static_cast<size_t>(t)]);
      if (got.requires_grad()) failures.add("thread " + std::to_string(t) + ": result requires grad");
      failures.check(t, i, got, want[static_cast<size_t>(t)]);
    }
  });
  EXPECT_TRUE(failures.messages.empty()) << failures.messages.front();
  for (const Tensor& p : m->parameters()) EXPECT_FALSE(p.grad().defined());
  jit::Stats s = jit::stats();
  EXPECT_EQ(s.calls, kThreads * (kCalls / 2)) << s.str();
  EXPECT_LE(s.compiles, 2) << s.str();  // batch 3, then batch dynamic
}

// Threads in different grad modes (thread-local) calling one compiled inference module (its
// parameters do not require grad): each grad mode has its own entry, each thread gets its own.
TEST_F(JitConcurrency, PerThreadGradMode) {
  manual_seed(1);
  auto m = std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(6, 10), std::make_shared<nn::Tanh>(),
                                            std::make_shared<nn::Linear>(10, 2));
  for (Tensor& p : m->parameters()) p.requires_grad_(false);
  auto cm = jit::compile(m, {.name = "grad_modes"});
  std::vector<Tensor> xs, want;
  for (int t = 0; t < kThreads; ++t) {
    xs.push_back(randn({3, 6}));
    want.push_back(m->forward(xs.back()));
  }
  Failures failures;
  run_threads(kThreads, [&](int t) {
    std::optional<NoGradGuard> no_grad;
    if (t % 2 == 0) no_grad.emplace();
    for (int i = 0; i < kCalls / 2; ++i) {
      Tensor got = cm(xs[static_cast<size_t>(t)]);
      failures.check(t, i, got, want[static_cast<size_t>(t)]);
    }
  });
  EXPECT_TRUE(failures.messages.empty()) << failures.messages.front();
  jit::Stats s = jit::stats();
  EXPECT_EQ(s.calls, kThreads * (kCalls / 2)) << s.str();
  EXPECT_EQ(s.compiles, 2) << s.str();  // one entry per grad mode
  EXPECT_EQ(s.captures + s.replays, s.calls) << s.str();
}

// A function with a graph break (item()) runs segmented on every call, from every thread.
TEST_F(JitConcurrency, GraphBreaks) {
  auto f = [](const Tensor& x) {
    Tensor y = (x * 2).exp();
    const double m = y.max().item<double>();
    return y / m + 1;
  };
  auto cf = jit::compile(f, {.name = "breaking"});
  std::vector<Tensor> xs, want;
  for (int t = 0; t < kThreads; ++t) {
    xs.push_back(randn({3, 4}));
    want.push_back(f(xs.back()));
  }
  Failures failures;
  constexpr int kBreakCalls = kCalls / 4;
  run_threads(kThreads, [&](int t) {
    for (int i = 0; i < kBreakCalls; ++i) {
      Tensor got = cf(xs[static_cast<size_t>(t)]);
      failures.check(t, i, got, want[static_cast<size_t>(t)]);
    }
  });
  EXPECT_TRUE(failures.messages.empty()) << failures.messages.front();
  jit::Stats s = jit::stats();
  EXPECT_EQ(s.calls, kThreads * kBreakCalls) << s.str();
  EXPECT_EQ(s.replays, 0) << s.str();
  EXPECT_EQ(s.graph_breaks.size(), static_cast<size_t>(kThreads * kBreakCalls));
  // The segment before the break; the one after it, static, then with the number read dynamic.
  EXPECT_EQ(s.compiles, 3) << s.str();
}

}  // namespace
