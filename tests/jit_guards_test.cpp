// kiln::jit guards and caches: each guard kind causes exactly one recompile with a reason that
// names it; replay guards fall back to tracing; automatic dynamic; graph breaks; the recompile
// limit; failing captures; verify; explain; KILN_DUMP_DIR / KILN_LOG; shared compiled graphs.
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>

#include "core/logging.h"
#include "jit/compile.h"
#include "kiln/kiln.h"
#include "test_util.h"

using namespace kiln;
using kiln::testing::close;

namespace {

class JitGuards : public ::testing::Test {
 protected:
  void SetUp() override {
    jit::reset();
    manual_seed(0);
  }
};

#define EXPECT_HAS(text, fragment)                                                                      \
  do {                                                                                                  \
    const std::string text_ = (text);                                                                   \
    EXPECT_NE(text_.find(fragment), std::string::npos) << "'" << text_ << "' lacks '" << (fragment) << "'"; \
  } while (0)

std::string all_reasons(const std::vector<jit::RecompileEvent>& events) {
  std::string s;
  for (const auto& e : events) s += e.function + ": " + e.reason + "\n";
  return s;
}

// Calls `cf` three times with the same arguments (checking each result against `f`): the first
// compiles, the second hits, after it the function is promoted and the third replays.
template <class C, class F, class... A>
void warm_up(C& cf, F& f, const A&... args) {
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(close(cf(args...), f(args...))) << "call " << i;
  jit::Stats s = jit::stats();
  ASSERT_EQ(s.compiles, 1) << s.str();
  ASSERT_GE(s.replays, 1) << s.str();
}

// After warm_up, one changed call: it traces again (captures + 1), compiles exactly one new
// entry, and the recompile names the guard. Returns the reason.
std::string expect_one_recompile(int64_t captures_before) {
  jit::Stats s = jit::stats();
  EXPECT_EQ(s.captures, captures_before + 1) << s.str();
  EXPECT_EQ(s.compiles, 2) << s.str();
  EXPECT_EQ(s.recompiles.size(), 1u) << s.str();
  return s.recompiles.empty() ? "" : s.recompiles[0].reason;
}

// --- one recompile per guard kind -------------------------------------------------------------

TEST_F(JitGuards, DTypeChange) {
  auto f = [](const Tensor& x) { return (x * 2 + 1).sin().sum(0); };
  auto cf = jit::compile(f, {.name = "dtype_fn"});
  Tensor a = randn({4, 5});
  warm_up(cf, f, a);
  const int64_t captures = jit::stats().captures;
  Tensor b = a.to(kFloat64);
  Tensor got = cf(b);
  EXPECT_EQ(got.dtype(), kFloat64);
  EXPECT_TRUE(close(got, f(b), 1e-12, 1e-12));
  std::string reason = expect_one_recompile(captures);
  EXPECT_HAS(reason, "input[0].dtype: float32 -> float64");
  EXPECT_EQ(jit::stats().recompiles.at(0).function, "dtype_fn");
  // Both entries stay: float32 and float64 calls now hit without compiling.
  EXPECT_TRUE(close(cf(a), f(a)));
  EXPECT_TRUE(close(cf(b), f(b), 1e-12, 1e-12));
  EXPECT_EQ(jit::stats().compiles, 2);
}

TEST_F(JitGuards, RankChange) {
  auto f = [](const Tensor& x) { return (x * 2).exp().sum(); };
  auto cf = jit::compile(f);
  Tensor a = randn({4, 5});
  warm_up(cf, f, a);
  const int64_t captures = jit::stats().captures;
  Tensor b = randn({20});
  EXPECT_TRUE(close(cf(b), f(b)));
  EXPECT_HAS(expect_one_recompile(captures), "input[0].dim(): 2 -> 1");
}

TEST_F(JitGuards, SizeChangeMakesTheDimDynamic) {
  auto f = [](const Tensor& x) { return (x * 2).exp().sum(1); };
  auto cf = jit::compile(f);
  Tensor a = randn({4, 5});
  warm_up(cf, f, a);
  const int64_t captures = jit::stats().captures;
  Tensor b = randn({6, 5});
  EXPECT_TRUE(close(cf(b), f(b)));
  std::string reason = expect_one_recompile(captures);
  EXPECT_HAS(reason, "input[0].sizes[0]: 4 -> 6");
  EXPECT_HAS(reason, "now dynamic");
  // The dynamic entry serves other sizes of dim 0 without compiling.
  for (int64_t n : {9, 3, 12}) {
    Tensor c = randn({n, 5});
    EXPECT_TRUE(close(cf(c), f(c))) << n;
  }
  EXPECT_EQ(jit::stats().compiles, 2) << jit::stats().str();
}

TEST_F(JitGuards, StridesChange) {
  auto f = [](const Tensor& x) { return (x * 3 + 1).tanh(); };
  auto cf = jit::compile(f);
  Tensor a = randn({4, 5});
  warm_up(cf, f, a);
  const int64_t captures = jit::stats().captures;
  Tensor t = randn({5, 4}).t();  // same sizes, transposed strides
  ASSERT_FALSE(t.is_contiguous());
  Tensor got = cf(t);
  EXPECT_TRUE(close(got, f(t)));
  EXPECT_HAS(expect_one_recompile(captures), "input[0].strides: [5, 1] -> [1, 4]");
}

TEST_F(JitGuards, GradMode) {
  Tensor w = randn({5});
  auto f = [&w](const Tensor& x) { return (x * w).exp(); };
  auto cf = jit::compile(f);
  Tensor a = randn({4, 5});
  warm_up(cf, f, a);
  const int64_t captures = jit::stats().captures;
  {
    NoGradGuard no_grad;
    EXPECT_TRUE(close(cf(a), f(a)));
  }
  EXPECT_HAS(expect_one_recompile(captures), "grad_mode: true -> false");
}

TEST_F(JitGuards, ModuleTrainingFlag) {
  manual_seed(1);
  auto m = std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(5, 3), std::make_shared<nn::Dropout>(0.5));
  auto cm = jit::compile(m);
  Tensor x = randn({4, 5});
  // Training mode: dropout draws the same numbers as eager under the same seed.
  for (int i = 0; i < 2; ++i) {
    manual_seed(10 + i);
    Tensor got = cm(x);
    manual_seed(10 + i);
    Tensor want = m->forward(x);
    EXPECT_TRUE(close(got, want)) << i;
  }
  ASSERT_EQ(jit::stats().compiles, 1);
  const int64_t captures = jit::stats().captures;
  m->eval();
  Tensor got = cm(x);
  EXPECT_TRUE(close(got, m->forward(x)));
  EXPECT_HAS(expect_one_recompile(captures), ".training: true -> false");
  // Back to training: the first entry still serves it.
  m->train();
  cm(x);
  EXPECT_EQ(jit::stats().compiles, 2);
}

TEST_F(JitGuards, ScalarArgumentValue) {
  auto f = [](const Tensor& x, double s) { return x * s + 1; };
  auto cf = jit::compile(f);
  Tensor a = randn({4, 5});
  warm_up(cf, f, a, 2.0);
  const int64_t captures = jit::stats().captures;
  EXPECT_TRUE(close(cf(a, 3.0), f(a, 3.0)));
  std::string reason = expect_one_recompile(captures);
  EXPECT_HAS(reason, "arg[1] == 2");
  EXPECT_HAS(reason, "arg[1] == 3");
}

TEST_F(JitGuards, CapturedTensorIdentity) {
  Tensor w = randn({5});
  auto f = [&w](const Tensor& x) { return x * w + 1; };
  auto cf = jit::compile(f);
  Tensor a = randn({4, 5});
  warm_up(cf, f, a);
  const int64_t captures = jit::stats().captures;
  w = randn({5});  // the lambda now reads another tensor; the old one is gone
  Tensor got = cf(a);
  EXPECT_TRUE(close(got, a * w + 1));
  jit::Stats s = jit::stats();
  EXPECT_EQ(s.captures, captures + 1) << "the replay must notice the captured tensor changed\n" << s.str();
  // Captured tensors are graph inputs bound by reference: the same entry serves the new one.
  EXPECT_EQ(s.compiles, 1) << s.str();
  // ... and replays with it from now on.
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(close(cf(a), a * w + 1)) << i;
  EXPECT_GT(jit::stats().replays, s.replays);

  // A captured tensor of another dtype is another graph: one recompile naming it.
  w = randn({5}).to(kFloat64);
  EXPECT_TRUE(close(cf(a), a * w + 1, 1e-12, 1e-12));
  s = jit::stats();
  ASSERT_EQ(s.recompiles.size(), 1u) << s.str();
  EXPECT_HAS(s.recompiles[0].reason, ".dtype: float32 -> float64");
}

// Segmented mode always runs f: a captured tensor reassigned while the old one stays alive is
// still seen (replay could not tell, since f does not run).
TEST_F(JitGuards, SegmentedSeesReassignedCapture) {
  Tensor w = randn({5});
  auto f = [&w](const Tensor& x) { return x * w + 1; };
  auto cf = jit::compile(f, {.mode = jit::Mode::Segmented});
  Tensor a = randn({4, 5});
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(close(cf(a), f(a)));
  Tensor keep = w;
  w = randn({5});
  EXPECT_TRUE(close(cf(a), a * w + 1));
  EXPECT_FALSE(close(a * keep + 1, a * w + 1));
  jit::Stats s = jit::stats();
  EXPECT_EQ(s.replays, 0);
  EXPECT_EQ(s.compiles, 1) << s.str();
}

TEST_F(JitGuards, RequiresGradOfArgument) {
  auto f = [](const Tensor& x) { return (x * 2).exp().sum(); };
  auto cf = jit::compile(f);
  Tensor a = randn({4, 5});
  warm_up(cf, f, a);
  const int64_t captures = jit::stats().captures;
  Tensor b = a.clone().requires_grad_();
  Tensor got = cf(b);
  EXPECT_TRUE(close(got, f(a)));
  ASSERT_TRUE(got.requires_grad());
  got.backward();
  ASSERT_TRUE(b.grad().defined());
  EXPECT_TRUE(close(b.grad(), (a * 2).exp() * 2));
  EXPECT_HAS(expect_one_recompile(captures), "input[0].requires_grad: false -> true");
}

// --- replay guards ----------------------------------------------------------------------------

TEST_F(JitGuards, ReplayReadsArgumentsByReference) {
  auto f = [](const Tensor& x, const Tensor& y) { return (x + y) * y; };
  auto cf = jit::compile(f);
  Tensor a = randn({3, 4}), b = randn({3, 4});
  warm_up(cf, f, a, b);
  // New values in the same tensors (in place) and new tensors of the same geometry: replayed.
  a.mul_(3);
  const int64_t replays = jit::stats().replays;
  EXPECT_TRUE(close(cf(a, b), f(a, b)));
  Tensor c = randn({3, 4}), d = randn({3, 4});
  EXPECT_TRUE(close(cf(c, d), f(c, d)));
  jit::Stats s = jit::stats();
  EXPECT_EQ(s.replays, replays + 2) << s.str();
  EXPECT_EQ(s.compiles, 1);
}

TEST_F(JitGuards, ReplayGuardFailureTracesAgain) {
  auto f = [](const Tensor& x, int64_t k) { return x.pow(2) * static_cast<double>(k); };
  auto cf = jit::compile(f);
  Tensor a = randn({3, 4});
  warm_up(cf, f, a, int64_t{2});
  // Each change drops that call back to tracing and the result stays right.
  struct Case {
    const char* what;
    std::function<Tensor()> call, want;
  };
  Tensor a64 = a.to(kFloat64), wide = randn({3, 7}), tr = randn({4, 3}).t();
  std::vector<Case> cases = {
      {"dtype", [&] { return cf(a64, int64_t{2}); }, [&] { return f(a64, 2); }},
      {"sizes", [&] { return cf(wide, int64_t{2}); }, [&] { return f(wide, 2); }},
      {"strides", [&] { return cf(tr, int64_t{2}); }, [&] { return f(tr, 2); }},
      {"int argument", [&] { return cf(a, int64_t{5}); }, [&] { return f(a, 5); }},
      {"back to the original", [&] { return cf(a, int64_t{2}); }, [&] { return f(a, 2); }},
  };
  for (const Case& c : cases) {
    const jit::Stats before = jit::stats();
    EXPECT_TRUE(close(c.call(), c.want(), 1e-6, 1e-6)) << c.what;
    const jit::Stats after = jit::stats();
    if (std::string(c.what) == "back to the original") {
      EXPECT_EQ(after.replays, before.replays + 1) << c.what;
    } else {
      EXPECT_EQ(after.captures, before.captures + 1) << c.what;
      EXPECT_EQ(after.replays, before.replays) << c.what;
    }
  }
  {
    NoGradGuard no_grad;
    const int64_t captures = jit::stats().captures;
    EXPECT_TRUE(close(cf(a, int64_t{2}), f(a, 2)));
    EXPECT_EQ(jit::stats().captures, captures + 1);
  }
}

// A forward-only function replayed under NoGradGuard must leave parameters' .grad alone, also
// after gradients were computed eagerly between calls.
TEST_F(JitGuards, ReplayLeavesGradsItDoesNotWrite) {
  manual_seed(2);
  auto m = std::make_shared<nn::Linear>(5, 3);
  auto cm = jit::compile(m);
  Tensor x = randn({4, 5});
  Tensor want;
  {
    NoGradGuard no_grad;
    want = m->forward(x);
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(close(cm(x), want)) << i;
  }
  ASSERT_GE(jit::stats().replays, 1);
  m->forward(x).sum().backward();  // eager training work between inference calls
  ASSERT_TRUE(m->weight.grad().defined());
  const Tensor grad = m->weight.grad().clone();
  {
    NoGradGuard no_grad;
    for (int i = 0; i < 4; ++i) {
      EXPECT_TRUE(close(cm(x), want)) << i;
      ASSERT_TRUE(m->weight.grad().defined()) << "call " << i << " dropped the weight's grad";
      EXPECT_TRUE(close(m->weight.grad(), grad)) << i;
    }
  }
}

// --- automatic dynamic ------------------------------------------------------------------------

TEST_F(JitGuards, VaryingBatchCompilesAtMostTwice) {
  Tensor w = randn({8, 3});
  auto f = [&w](const Tensor& x) { return (x.matmul(w) + 1).relu().sum(1); };
  auto cf = jit::compile(f);
  for (int64_t b = 2; b < 52; ++b) {
    Tensor x = randn({b, 8});
    ASSERT_TRUE(close(cf(x), f(x), 1e-5, 1e-5)) << "batch " << b;
  }
  jit::Stats s = jit::stats();
  EXPECT_LE(s.compiles, 2) << s.str();
  ASSERT_EQ(s.recompiles.size(), 1u) << s.str();
  EXPECT_HAS(s.recompiles[0].reason, "input[0].sizes[0]: 2 -> 3 (now dynamic)");
}

TEST_F(JitGuards, DynamicOptionCompilesOnce) {
  Tensor w = randn({8, 3});
  auto f = [](const Tensor& x, const Tensor& w) { return (x.matmul(w) * 2).sigmoid(); };
  auto cf = jit::compile(f, {.dynamic = true});
  for (int64_t b = 2; b < 52; ++b) {
    Tensor x = randn({b, 8});
    ASSERT_TRUE(close(cf(x, w), f(x, w), 1e-5, 1e-5)) << "batch " << b;
  }
  jit::Stats s = jit::stats();
  EXPECT_EQ(s.compiles, 1) << s.str();
  EXPECT_TRUE(s.recompiles.empty()) << s.str();
}

TEST_F(JitGuards, MarkDynamicCompilesOnce) {
  auto f = [](const Tensor& x) { return (x - x.mean(0)).square().sum(0); };
  auto cf = jit::compile(f);
  Tensor first = randn({4, 6});
  jit::mark_dynamic(first, 0);
  EXPECT_TRUE(close(cf(first), f(first)));
  for (int64_t b = 2; b < 30; ++b) {
    Tensor x = randn({b, 6});
    ASSERT_TRUE(close(cf(x), f(x), 1e-5, 1e-5)) << "batch " << b;
  }
  jit::Stats s = jit::stats();
  EXPECT_EQ(s.compiles, 1) << s.str();
  EXPECT_TRUE(s.recompiles.empty()) << s.str();
  EXPECT_KILN_ERROR(jit::mark_dynamic(first, 2), "[mark_dynamic]", "dim 2", "rank 2");
}

// --- graph breaks -----------------------------------------------------------------------------

TEST_F(JitGuards, ItemBreak) {
  auto f = [](const Tensor& x) {
    Tensor y = x.abs() + 1;
    double m = y.max().item<double>();
    return y / m;
  };
  auto cf = jit::compile(f);
  Tensor x = randn({3, 4});
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(close(cf(x), f(x))) << i;
  jit::Stats s = jit::stats();
  ASSERT_EQ(s.graph_breaks.size(), 3u) << s.str();
  for (const auto& b : s.graph_breaks) EXPECT_EQ(b.reason, "item()");
  EXPECT_EQ(s.replays, 0);
  EXPECT_EQ(s.captures, 3);
  // Two segments per call, each compiled once.
  EXPECT_EQ(s.compiles, 2) << s.str();
  auto full = jit::compile(f, {.name = "full_item", .fullgraph = true});
  EXPECT_KILN_ERROR(full(x), "full_item", "fullgraph", "item()");
}

// The number read at the break differs with the data: the scalar becomes dynamic in the segment
// after the break, and the segment before it keeps its entry.
TEST_F(JitGuards, BreakWithVaryingScalar) {
  auto f = [](const Tensor& x) {
    Tensor y = (x * 2).exp();
    const double m = y.max().item<double>();
    return y / m + 1;
  };
  auto cf = jit::compile(f);
  for (int i = 0; i < 6; ++i) {
    Tensor x = randn({3, 4});
    EXPECT_TRUE(close(cf(x), f(x))) << i;
  }
  jit::Stats s = jit::stats();
  EXPECT_EQ(s.compiles, 3) << s.str();  // segment 0; segment 1 static, then with m dynamic
  ASSERT_EQ(s.recompiles.size(), 1u) << s.str();
  EXPECT_HAS(s.recompiles[0].reason, "(now dynamic)");
  EXPECT_EQ(s.graph_breaks.size(), 6u);
}

TEST_F(JitGuards, PrintingBreak) {
  auto f = [](const Tensor& x) {
    Tensor y = x * 2 + 1;
    std::ostringstream os;
    os << y;
    return std::make_pair(y.exp(), os.str());
  };
  // A result holding a string: f runs each call, its tensors still compiled.
  auto cf = jit::compile([&](const Tensor& x) { return f(x).first; });
  Tensor x = randn({2, 3});
  std::string printed;
  auto cf_text = jit::compile([&](const Tensor& x) {
    auto [t, s] = f(x);
    printed = s;
    return t;
  });
  for (int i = 0; i < 2; ++i) EXPECT_TRUE(close(cf(x), f(x).first));
  EXPECT_TRUE(close(cf_text(x), f(x).first));
  EXPECT_EQ(printed, f(x).second);
  jit::Stats s = jit::stats();
  ASSERT_EQ(s.graph_breaks.size(), 3u) << s.str();
  for (const auto& b : s.graph_breaks) EXPECT_HAS(b.reason, "operator<< (printing)");
  EXPECT_EQ(s.replays, 0);
  auto full = jit::compile([&](const Tensor& x) { return f(x).first; }, {.fullgraph = true});
  EXPECT_KILN_ERROR(full(x), "fullgraph", "operator<< (printing)");
}

TEST_F(JitGuards, DataPtrBreak) {
  auto f = [](const Tensor& x) {
    Tensor y = x * 3;
    const float first = y.data_ptr<float>()[0];
    return y + first;
  };
  auto cf = jit::compile(f);
  Tensor x = randn({2, 3});
  for (int i = 0; i < 2; ++i) EXPECT_TRUE(close(cf(x), f(x)));
  jit::Stats s = jit::stats();
  ASSERT_EQ(s.graph_breaks.size(), 2u) << s.str();
  for (const auto& b : s.graph_breaks) EXPECT_HAS(b.reason, "data_ptr()");
  auto full = jit::compile(f, {.fullgraph = true});
  EXPECT_KILN_ERROR(full(x), "fullgraph", "data_ptr()");
}

TEST_F(JitGuards, TwoBreaksInOneCall) {
  auto f = [](const Tensor& x) {
    Tensor y = x.sigmoid();
    const double a = y.sum().item<double>();
    Tensor z = y * a;
    const float z0 = z.data_ptr<float>()[0];
    return (z + z0).log();
  };
  auto cf = jit::compile(f);
  Tensor x = randn({3, 3});
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(close(cf(x), f(x))) << i;
  jit::Stats s = jit::stats();
  ASSERT_EQ(s.graph_breaks.size(), 6u) << s.str();
  for (size_t i = 0; i < s.graph_breaks.size(); ++i)
    EXPECT_EQ(s.graph_breaks[i].reason, i % 2 == 0 ? "item()" : "data_ptr()");
  EXPECT_EQ(s.compiles, 3) << s.str();  // three segments, each compiled once
  EXPECT_EQ(s.replays, 0);
}

// Mode::Segmented never replays; it stays correct for a function whose result depends on C++
// state the graph cannot see (default mode would replay the stale trace).
TEST_F(JitGuards, SegmentedModeHiddenState) {
  int counter = 0;
  auto f = [&counter](const Tensor& x) {
    ++counter;
    return counter > 3 ? x * 2 : x + 1;
  };
  auto cf = jit::compile(f, {.mode = jit::Mode::Segmented});
  Tensor x = randn({2, 5});
  for (int i = 1; i <= 8; ++i) {
    Tensor want = i > 3 ? x * 2 : x + 1;
    EXPECT_TRUE(close(cf(x), want)) << "call " << i;
  }
  EXPECT_EQ(counter, 8);
  jit::Stats s = jit::stats();
  EXPECT_EQ(s.replays, 0);
  EXPECT_EQ(s.captures, 8);
  EXPECT_EQ(s.compiles, 2) << s.str();

  // A counter that enters the graph as a number.
  int k = 0;
  auto g = jit::compile([&k](const Tensor& x) { return x * static_cast<double>(++k); },
                        {.mode = jit::Mode::Segmented});
  for (int i = 1; i <= 6; ++i) EXPECT_TRUE(close(g(x), x * static_cast<double>(i))) << i;
  EXPECT_EQ(jit::stats().replays, 0);
}

// --- recompile limit --------------------------------------------------------------------------

TEST_F(JitGuards, RecompileLimit) {
  std::ostringstream log;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(log);
  logging::logger().sinks().push_back(sink);
  auto f = [](const Tensor& x) { return (x * 2 + 1).sum(); };
  auto cf = jit::compile(f, {.name = "limited", .recompile_limit = 3});
  std::vector<Tensor> variants;
  for (DType dt : {kFloat32, kFloat64})
    for (int rank = 1; rank <= 5; ++rank) variants.push_back(randn(Shape(static_cast<size_t>(rank), 2)).to(dt));
  ASSERT_EQ(variants.size(), 10u);
  for (int round = 0; round < 2; ++round)
    for (size_t i = 0; i < variants.size(); ++i)
      EXPECT_TRUE(close(cf(variants[i]), f(variants[i]), 1e-6, 1e-6)) << "round " << round << " variant " << i;
  logging::logger().flush();
  auto& sinks = logging::logger().sinks();
  sinks.erase(std::remove(sinks.begin(), sinks.end(), sink), sinks.end());

  jit::Stats s = jit::stats();
  EXPECT_EQ(s.compiles, 3) << s.str();
  EXPECT_EQ(s.recompiles.size(), 2u) << s.str();
  EXPECT_EQ(s.eager_fallbacks, 14) << s.str();  // 7 variants past the limit, twice
  ASSERT_EQ(s.fallbacks.size(), 14u);
  for (const auto& fb : s.fallbacks) {
    EXPECT_EQ(fb.function, "limited");
    EXPECT_HAS(fb.reason, "recompile limit");
  }
  const std::string text = log.str();
  size_t warnings = 0;
  for (size_t p = text.find("hit its recompile limit"); p != std::string::npos;
       p = text.find("hit its recompile limit", p + 1))
    ++warnings;
  EXPECT_EQ(warnings, 1u) << text;
  EXPECT_HAS(text, "limited hit its recompile limit (3)");
}

// --- failures ---------------------------------------------------------------------------------

TEST_F(JitGuards, CaptureThatThrowsDoesNotPoisonTheCache) {
  // The reshape target comes from an argument: 5 does not divide 12 elements.
  auto f = [](const Tensor& x, int64_t rows) { return (x * 2).reshape({rows, -1}).sum(1) + 1; };
  auto cf = jit::compile(f);
  Tensor x = randn({3, 4});
  EXPECT_KILN_ERROR(cf(x, int64_t{5}), "reshape");
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(close(cf(x, int64_t{6}), f(x, 6))) << i;
  jit::Stats s = jit::stats();
  EXPECT_EQ(s.compiles, 1) << s.str();
  EXPECT_GE(s.replays, 1) << s.str();
  // Failing again after promotion changes nothing either.
  EXPECT_KILN_ERROR(cf(x, int64_t{5}), "reshape");
  EXPECT_TRUE(close(cf(x, int64_t{6}), f(x, 6)));
  EXPECT_TRUE(close(cf(x, int64_t{4}), f(x, 4)));

  // An error raised by f itself after some ops were captured, and one from an op whose inputs
  // do not fit (matmul), on the first call.
  auto g = [](const Tensor& a, const Tensor& b, bool fail) {
    Tensor y = a.exp();
    KILN_CHECK(!fail, "[user] asked to fail");
    return y.matmul(b);
  };
  auto cg = jit::compile(g);
  Tensor a = randn({2, 3}), b = randn({3, 4}), bad = randn({5, 4});
  EXPECT_KILN_ERROR(cg(a, b, true), "[user] asked to fail");
  EXPECT_KILN_ERROR(cg(a, bad, false), "matmul");
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(close(cg(a, b, false), g(a, b, false))) << i;
  EXPECT_KILN_ERROR(cg(a, bad, false), "matmul");
  EXPECT_TRUE(close(cg(a, b, false), g(a, b, false)));
}

// Work captured before an error runs, as it would eagerly: a tensor it made is readable.
TEST_F(JitGuards, WorkBeforeAnErrorStillRuns) {
  Tensor leaked;
  auto f = [&leaked](const Tensor& x) {
    leaked = x * 2;
    return x.view({7});
  };
  auto cf = jit::compile(f);
  Tensor x = randn({2, 3});
  EXPECT_KILN_ERROR(cf(x), "view");
  // Captured work before the error ran (as eager would have), so the tensor is readable.
  ASSERT_TRUE(leaked.defined());
  EXPECT_TRUE(close(leaked, x * 2));
}

// --- verify -----------------------------------------------------------------------------------

TEST_F(JitGuards, VerifyAgreesForOrdinaryOps) {
  Tensor w = randn({6, 4}), bias = randn({4});
  auto f = [&](const Tensor& x) {
    Tensor h = (x.matmul(w) + bias).relu();
    Tensor z = h * 1 + 0;  // simplified away by the passes
    return std::make_tuple(z.softmax(1), z.t().t().sum(0), (h - h.mean(1, true)).square());
  };
  auto cf = jit::compile(f, {.verify = true});
  Tensor x = randn({5, 6});
  for (int i = 0; i < 3; ++i) {
    auto [a, b, c] = cf(x);
    auto [ea, eb, ec] = f(x);
    EXPECT_TRUE(close(a, ea));
    EXPECT_TRUE(close(b, eb));
    EXPECT_TRUE(close(c, ec));
  }
  // In-place updates under verify happen once, not twice.
  Tensor acc = zeros({4});
  auto g = jit::compile([&acc](const Tensor& x) { acc.add_(x.sum(0)); return acc * 1; }, {.verify = true});
  Tensor y = randn({3, 4});
  for (int i = 0; i < 4; ++i) g(y);
  EXPECT_TRUE(close(acc, y.sum(0) * 4));
}

// --- explain ----------------------------------------------------------------------------------

TEST_F(JitGuards, ExplainOneBreak) {
  auto f = [](const Tensor& x) {
    Tensor y = (x * 2).exp();
    const double s = y.sum().item<double>();
    return y / s;
  };
  Tensor x = randn({3, 4});
  jit::Explanation ex = jit::explain(f, x);
  EXPECT_EQ(ex.graph_count(), 2);
  EXPECT_EQ(ex.break_count(), 1);
  ASSERT_EQ(ex.breaks.size(), 1u);
  EXPECT_EQ(ex.breaks[0], "item()");
  EXPECT_HAS(ex.graphs[0], "exp");
  EXPECT_HAS(ex.graphs[1], "div");
  EXPECT_GE(ex.op_count, 4);
  std::string guards;
  for (const auto& g : ex.guards) guards += g + "\n";
  EXPECT_HAS(guards, "input 0: dtype == float32, sizes == [3, 4], strides == [4, 1]");
  EXPECT_HAS(guards, "grad_mode == true");
  const std::string text = ex.str();
  EXPECT_HAS(text, "2 graph(s), 1 break(s)");
  EXPECT_HAS(text, "--- break: item()");
  // explain neither compiles nor counts.
  EXPECT_EQ(jit::stats().compiles, 0);
  EXPECT_EQ(jit::stats().calls, 0);
}

// --- observability ----------------------------------------------------------------------------

TEST_F(JitGuards, DumpDir) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("kiln_jit_dump_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  ::setenv("KILN_DUMP_DIR", dir.c_str(), 1);
  auto f = [](const Tensor& x) { return (x * 2).exp().sum(1); };
  auto cf = jit::compile(f, {.name = "dumped"});
  Tensor x = randn({4, 3});
  Tensor got = cf(x);
  ::unsetenv("KILN_DUMP_DIR");
  EXPECT_TRUE(close(got, f(x)));
  auto read = [](const fs::path& p) {
    std::ifstream in(p);
    EXPECT_TRUE(in.good()) << p;
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const std::string graph = read(dir / "dumped.0.graph.txt");
  EXPECT_HAS(graph, "# captured");
  EXPECT_HAS(graph, "# after passes");
  EXPECT_HAS(graph, "exp");
  EXPECT_HAS(graph, "sum");
  EXPECT_HAS(read(dir / "dumped.0.dot"), "digraph");
  const std::string guards = read(dir / "dumped.0.guards.txt");
  EXPECT_HAS(guards, "grad_mode == true");
  EXPECT_HAS(guards, "input[0].dtype == float32");
  EXPECT_HAS(guards, "input[0].sizes[0] == 4");
  EXPECT_HAS(guards, "input[0].sizes[1] == 3");
  // Unset: later compiles write nothing.
  Tensor y = randn({4, 3}).to(kFloat64);
  cf(y);
  EXPECT_FALSE(fs::exists(dir / "dumped.1.graph.txt"));
  fs::remove_all(dir);
}

TEST_F(JitGuards, LogCategories) {
  std::ostringstream log;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(log);
  logging::logger().sinks().push_back(sink);
  using C = logging::Category;
  for (C c : {C::graph, C::guards, C::recompiles, C::breaks}) logging::set_enabled(c, true);
  auto f = [](const Tensor& x) {
    Tensor y = x + 1;
    const double m = y.max().item<double>();
    return y * m;
  };
  auto cf = jit::compile(f, {.name = "logged"});
  auto g = jit::compile([](const Tensor& x) { return x.exp() * 2; }, {.name = "logged_clean"});
  Tensor a = randn({2, 3}), b = randn({3, 3});
  for (const Tensor& t : {a, a, b}) {
    EXPECT_TRUE(close(cf(t), f(t)));
    EXPECT_TRUE(close(g(t), t.exp() * 2));
  }
  g(a);
  g(a);
  for (C c : {C::graph, C::guards, C::recompiles, C::breaks}) logging::set_enabled(c, false);
  logging::logger().flush();
  auto& sinks = logging::logger().sinks();
  sinks.erase(std::remove(sinks.begin(), sinks.end(), sink), sinks.end());
  const std::string text = log.str();
  EXPECT_HAS(text, "[breaks] logged graph break: item()");
  EXPECT_HAS(text, "[recompiles] logged recompiling");
  EXPECT_HAS(text, "sizes[0]: 2 -> 3");
  EXPECT_HAS(text, "[guards] logged_clean entry 0 guards:");
  EXPECT_HAS(text, "[graph] logged_clean promoted to replay");
  // Disabled again: nothing more is logged.
  const size_t len = log.str().size();
  cf(a);
  EXPECT_EQ(log.str().size(), len);
}

// --- shared compiled graphs -------------------------------------------------------------------

TEST_F(JitGuards, IdenticalGraphsShareCompiledCode) {
  auto f1 = jit::compile([](const Tensor& x, const Tensor& y) { return (x * y).exp() + x; }, {.name = "first"});
  auto f2 = jit::compile([](const Tensor& a, const Tensor& b) { return (a * b).exp() + a; }, {.name = "second"});
  Tensor x = randn({4, 4}), y = randn({4, 4});
  Tensor r1 = f1(x, y);
  EXPECT_EQ(jit::stats().shared_graph_hits, 0);
  Tensor r2 = f2(x, y);
  EXPECT_TRUE(close(r1, (x * y).exp() + x));
  EXPECT_TRUE(close(r2, r1));
  jit::Stats s = jit::stats();
  EXPECT_GE(s.shared_graph_hits, 1) << s.str();
  EXPECT_EQ(s.compiles, 2);  // an entry per function, one plan between them
  // A different graph shares nothing.
  auto f3 = jit::compile([](const Tensor& a, const Tensor& b) { return (a + b).exp() + a; });
  f3(x, y);
  EXPECT_EQ(jit::stats().shared_graph_hits, s.shared_graph_hits);
}

}  // namespace
