// The native backend end to end: what the partitioner fuses (kernel counts), compiled == eager
// for fused graphs (forward, backward, optimizer steps, odd layouts), dynamic sizes without
// recompiling kernels, the fallback path, async compilation and the dumps.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "fusion/codegen.h"
#include "fusion/partition.h"
#include "kiln/kiln.h"
#include "test_util.h"

using namespace kiln;
using kiln::testing::close;

namespace {

// Compiled runs see a private kernel cache, so tests never depend on an earlier process.
class Fusion : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("kiln_fusion_test_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    ::setenv("KILN_CACHE_DIR", dir_.c_str(), 1);
    jit::reset();
    manual_seed(7);
  }
  void TearDown() override {
    ::unsetenv("KILN_CACHE_DIR");
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::filesystem::path dir_;
};

bool native() { return fusion::codegen_available(); }
#define REQUIRE_CODEGEN() \
  if (!native()) GTEST_SKIP() << "kiln was built without LLVM: no native backend to test"

// Calls the compiled function three times (capture, cached, replay when eligible) and checks
// each result against eager.
template <class F, class... A>
void expect_same(F f, double rtol, double atol, const A&... args) {
  Tensor want = f(args...);
  auto c = jit::compile(f);
  for (int i = 0; i < 3; ++i) {
    Tensor got = c(args...);
    ASSERT_TRUE(close(got, want, rtol, atol)) << "call " << i;
  }
}

// --- what gets fused -------------------------------------------------------------------------

TEST_F(Fusion, PointwiseChainIsOneKernel) {
  Tensor x = randn({16, 32}), y = randn({16, 32});
  auto f = [](const Tensor& x, const Tensor& y) {
    Tensor t = x * 1.5 + y;
    t = t.relu() * y - x;
    t = t.tanh().sigmoid() + 0.5;
    t = t.exp() / (y.abs() + 1.0);
    return t.sqrt();
  };
  jit::Explanation ex = jit::explain(f, x, y);
  EXPECT_GE(ex.op_count, 10);
  EXPECT_EQ(ex.kernel_count, 1) << ex.str();
  EXPECT_EQ(ex.extern_count, 0) << ex.str();
}

TEST_F(Fusion, WrittenOutSoftmaxIsOneKernel) {
  Tensor x = randn({8, 64});
  auto f = [](const Tensor& x) {
    Tensor e = (x - x.amax({-1}, true)).exp();
    return e / e.sum({-1}, true);
  };
  jit::Explanation ex = jit::explain(f, x);
  EXPECT_EQ(ex.kernel_count, 1) << ex.str();
  EXPECT_EQ(ex.extern_count, 0) << ex.str();
}

TEST_F(Fusion, LayerNormIsOneKernel) {
  Tensor x = randn({8, 64}), w = randn({64}), b = randn({64});
  auto builtin = [](const Tensor& x, const Tensor& w, const Tensor& b) { return layer_norm(x, {64}, w, b); };
  jit::Explanation ex = jit::explain(builtin, x, w, b);
  EXPECT_EQ(ex.kernel_count, 1) << ex.str();
  EXPECT_EQ(ex.extern_count, 0) << ex.str();
  auto written = [](const Tensor& x, const Tensor& w, const Tensor& b) {
    Tensor m = x.mean({-1}, true);
    Tensor v = x.var({-1}, 0, true);
    return (x - m) * (v + 1e-5).rsqrt() * w + b;
  };
  ex = jit::explain(written, x, w, b);
  EXPECT_EQ(ex.kernel_count, 1) << ex.str();
}

TEST_F(Fusion, GemmEpilogueIsOneKernel) {
  Tensor x = randn({8, 32}), w = randn({32, 16}), b = randn({16});
  auto f = [](const Tensor& x, const Tensor& w, const Tensor& b) { return gelu(matmul(x, w) + b); };
  jit::Explanation ex = jit::explain(f, x, w, b);
  EXPECT_EQ(ex.kernel_count, 1) << ex.str();
  EXPECT_EQ(ex.extern_count, 1) << ex.str();  // the GEMM
  auto lin = [](const Tensor& x, const Tensor& w, const Tensor& b) { return gelu(linear(x, w.t(), b)) + x.sum({-1}, true); };
  ex = jit::explain(lin, x, w, b);
  EXPECT_EQ(ex.extern_count, 1) << ex.str();
  EXPECT_LE(ex.kernel_count, 2) << ex.str();
}

TEST_F(Fusion, ReductionFusesWithProducersAndConsumers) {
  Tensor x = randn({6, 10});
  auto f = [](const Tensor& x) { return ((x * 2).exp().sum({1}) + 1).log(); };
  jit::Explanation ex = jit::explain(f, x);
  EXPECT_EQ(ex.kernel_count, 1) << ex.str();
}

TEST_F(Fusion, MovementOpsBecomeIndexArithmetic) {
  Tensor x = randn({12, 8}), y = randn({8, 12});
  auto f = [](const Tensor& x, const Tensor& y) {
    Tensor a = (x.t() * 2 + y).relu();                    // transposed read of an input
    Tensor b = a.unsqueeze(0).expand({3, 8, 12}).squeeze(0);  // expand of a fused value
    return b.narrow(1, 2, 5).select(0, 1) * 3;            // slice and select
  };
  jit::Explanation ex = jit::explain(f, x, y);
  EXPECT_EQ(ex.kernel_count, 1) << ex.str();
  EXPECT_EQ(ex.extern_count, 0) << ex.str();
}

TEST_F(Fusion, AdamUpdateIsOneKernelPerParameter) {
  auto mlp = std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(16, 32), std::make_shared<nn::ReLU>(),
                                              std::make_shared<nn::Linear>(32, 4));
  optim::Adam opt(mlp->parameters(), {.lr = 1e-3});
  Tensor x = randn({8, 16}), t = randn({8, 4});
  auto step = [&](const Tensor& x, const Tensor& t) {
    opt.zero_grad();
    Tensor l = mse_loss(mlp->forward(x), t);
    l.backward();
    opt.step();
    return l;
  };
  step(x, t);  // optimizer state exists from here on
  jit::Explanation ex = jit::explain(step, x, t);
  int updates = 0;
  std::istringstream lines(ex.fused_graphs.at(0));
  for (std::string line; std::getline(lines, line);)
    if (line.find("fused[") != std::string::npos && line.find("sqrt") != std::string::npos) ++updates;
  EXPECT_EQ(updates, 4) << ex.str();  // one kernel per parameter: moments, bias correction, update
}

// --- compiled == eager -----------------------------------------------------------------------

TEST_F(Fusion, ChainsMatchEagerForOddShapesAndLayouts) {
  REQUIRE_CODEGEN();
  for (Shape s : {Shape{33, 17}, Shape{1, 5}, Shape{0, 3}, Shape{7}, Shape{2, 3, 5, 7}}) {
    Tensor x = randn(s), y = randn(s);
    expect_same([](const Tensor& x, const Tensor& y) { return ((x * 1.5 + y).relu() * y).tanh() + x; }, 1e-5, 1e-6, x,
                y);
  }
  Tensor a = randn({9, 13}), b = randn({13, 9}), c = randn({13});
  expect_same([](const Tensor& a, const Tensor& b, const Tensor& c) { return (a.t() - b).exp() * c.unsqueeze(1); }, 1e-5,
              1e-6, a, b, c);
  Tensor big = randn({20, 30});
  Tensor sliced = big.slice(0, 1, 19, 2).slice(1, 3, 30, 3);  // non-contiguous input
  expect_same([](const Tensor& x) { return (x * x).sum({0}) + x.amax({0}); }, 1e-5, 1e-5, sliced);
  Tensor d = randn({6, 4}, kFloat64), e = randint(0, 5, {6, 4});
  expect_same([](const Tensor& d, const Tensor& e) { return (d * e + 2).to(kFloat32).sin() * (e > 2); }, 1e-5, 1e-6, d, e);
}

TEST_F(Fusion, EveryPointwiseOpMatchesEager) {
  REQUIRE_CODEGEN();
  Tensor x = randn({5, 37}), y = randn({5, 37}).abs() + 0.5;
  using F = Tensor (*)(const Tensor&, const Tensor&);
  const std::vector<std::pair<const char*, F>> ops = {
      {"neg", [](const Tensor& a, const Tensor&) { return -a; }},
      {"abs", [](const Tensor& a, const Tensor&) { return a.abs(); }},
      {"sign", [](const Tensor& a, const Tensor&) { return a.sign(); }},
      {"exp", [](const Tensor& a, const Tensor&) { return a.exp(); }},
      {"exp2", [](const Tensor& a, const Tensor&) { return exp2(a); }},
      {"log", [](const Tensor&, const Tensor& b) { return b.log(); }},
      {"log2", [](const Tensor&, const Tensor& b) { return log2(b); }},
      {"log10", [](const Tensor&, const Tensor& b) { return log10(b); }},
      {"log1p", [](const Tensor&, const Tensor& b) { return log1p(b); }},
      {"expm1", [](const Tensor& a, const Tensor&) { return expm1(a); }},
      {"sqrt", [](const Tensor&, const Tensor& b) { return b.sqrt(); }},
      {"rsqrt", [](const Tensor&, const Tensor& b) { return b.rsqrt(); }},
      {"reciprocal", [](const Tensor&, const Tensor& b) { return b.reciprocal(); }},
      {"square", [](const Tensor& a, const Tensor&) { return a.square(); }},
      {"sin", [](const Tensor& a, const Tensor&) { return a.sin(); }},
      {"cos", [](const Tensor& a, const Tensor&) { return a.cos(); }},
      {"tan", [](const Tensor& a, const Tensor&) { return tan(a); }},
      {"tanh", [](const Tensor& a, const Tensor&) { return a.tanh(); }},
      {"sigmoid", [](const Tensor& a, const Tensor&) { return a.sigmoid(); }},
      {"relu", [](const Tensor& a, const Tensor&) { return a.relu(); }},
      {"gelu", [](const Tensor& a, const Tensor&) { return gelu(a); }},
      {"gelu_tanh", [](const Tensor& a, const Tensor&) { return gelu(a, "tanh"); }},
      {"silu", [](const Tensor& a, const Tensor&) { return silu(a); }},
      {"softplus", [](const Tensor& a, const Tensor&) { return softplus(a, 2.0, 3.0); }},
      {"erf", [](const Tensor& a, const Tensor&) { return erf(a); }},
      {"floor", [](const Tensor& a, const Tensor&) { return (a * 3).floor(); }},
      {"ceil", [](const Tensor& a, const Tensor&) { return (a * 3).ceil(); }},
      {"round", [](const Tensor& a, const Tensor&) { return (a * 4).round(); }},
      {"trunc", [](const Tensor& a, const Tensor&) { return (a * 3).trunc(); }},
      {"add", [](const Tensor& a, const Tensor& b) { return a + b; }},
      {"sub", [](const Tensor& a, const Tensor& b) { return a - b; }},
      {"mul", [](const Tensor& a, const Tensor& b) { return a * b; }},
      {"div", [](const Tensor& a, const Tensor& b) { return a / b; }},
      {"pow", [](const Tensor& a, const Tensor& b) { return pow(b, a); }},
      {"fmod", [](const Tensor& a, const Tensor& b) { return fmod(a * 5, b); }},
      {"remainder", [](const Tensor& a, const Tensor& b) { return remainder(a * 5, b); }},
      {"maximum", [](const Tensor& a, const Tensor& b) { return maximum(a, b); }},
      {"minimum", [](const Tensor& a, const Tensor& b) { return minimum(a, b); }},
      {"compare", [](const Tensor& a, const Tensor& b) {
         return (a < b).to(kFloat32) + (a <= b) * 2 + (a > b) * 4 + (a >= b) * 8 + (a == a) * 16 + (a != b) * 32;
       }},
      {"logical", [](const Tensor& a, const Tensor& b) {
         return logical_and(a > 0, b > 1).to(kFloat32) + logical_or(a > 0, b > 1) * 2 + logical_not(a > 0) * 4;
       }},
      {"clamp", [](const Tensor& a, const Tensor&) { return clamp(a, Scalar(-0.5), Scalar(0.5)); }},
      {"where", [](const Tensor& a, const Tensor& b) { return where(a > 0, a, b); }},
  };
  for (const auto& [name, f] : ops) {
    SCOPED_TRACE(name);
    Tensor want = f(x, y);
    auto c = jit::compile(f);
    ASSERT_TRUE(close(c(x, y), want, 2e-6, 1e-6));
    ASSERT_TRUE(close(c(x.to(kFloat64), y.to(kFloat64)), f(x.to(kFloat64), y.to(kFloat64)), 1e-12, 1e-12));
  }
  EXPECT_GT(jit::stats().fused_kernels, 40);
}

TEST_F(Fusion, SpecialValuesPropagateAsInEager) {
  REQUIRE_CODEGEN();
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  Tensor x = tensor(std::vector<float>{0.f, -0.f, 1.f, -1.f, inf, -inf, nan, 1e-40f, 88.f, -104.f, 3.f});
  auto f = [](const Tensor& x) {
    return stack({x.exp(), x.log(), x.tanh(), erf(x), x.relu(), maximum(x, x * 0), x.sigmoid(), x.sqrt()});
  };
  expect_same(f, 1e-6, 0, x);
  auto r = [](const Tensor& x) { return stack({x.amax(), x.amin(), x.sum(), logsumexp(x, {0})}); };
  expect_same(r, 1e-6, 0, x);
}

// pow by 2, 1 and -1 is one rounded operation (a*a, a, 1/a) in both the eager kernel and the
// rendered kernel: the same bits, special values included, and in float16 through float32.
bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.sizes() != b.sizes() || a.dtype() != b.dtype()) return false;
  Tensor ac = a.contiguous(), bc = b.contiguous();
  return std::memcmp(ac.data_ptr(), bc.data_ptr(), static_cast<size_t>(ac.numel()) * itemsize(ac.dtype())) == 0;
}

TEST_F(Fusion, PowByConstantsIsExactAndMatchesEager) {
  REQUIRE_CODEGEN();
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  Tensor x = cat({tensor(std::vector<float>{0.f, -0.f, 1.f, -1.f, inf, -inf, nan, 1e-40f, 3e38f, -2.5f}), randn({37})});
  for (DType dt : {kFloat32, kFloat64, kFloat16}) {
    SCOPED_TRACE(dt);
    Tensor xd = x.to(dt);
    Tensor want = stack({xd * xd, xd, tensor(1.0).to(dt) / xd});
    auto f = [](const Tensor& a) { return stack({a.pow(2), a.pow(1), a.pow(-1)}); };
    EXPECT_TRUE(same_bits(f(xd), want)) << "eager";
    auto c = jit::compile(f);
    for (int i = 0; i < 2; ++i) EXPECT_TRUE(same_bits(c(xd), want)) << "compiled, call " << i;
  }
  // Other exponents stay pow (a libm call).
  expect_same([](const Tensor& a) { return a.abs().pow(3) + a.abs().pow(0.5); }, 1e-6, 1e-7, x);
}

TEST_F(Fusion, ReductionsMatchEager) {
  REQUIRE_CODEGEN();
  Tensor x = randn({6, 7, 9});
  for (std::vector<int64_t> dims : std::vector<std::vector<int64_t>>{{0}, {1}, {2}, {-1}, {0, 2}, {}}) {
    for (bool keep : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "dims " << dims.size() << " keepdim " << keep);
      IntArrayRef d(dims);
      expect_same([d, keep](const Tensor& x) { return x.sum(d, keep) * 2; }, 1e-5, 1e-5, x);
      expect_same([d, keep](const Tensor& x) { return x.mean(d, keep).exp(); }, 1e-5, 1e-6, x);
      expect_same([d, keep](const Tensor& x) { return x.amax(d, keep) - x.amin(d, keep); }, 1e-6, 1e-6, x);
      expect_same([d, keep](const Tensor& x) { return x.var(d, 1, keep) + x.std(d, 0, keep); }, 1e-4, 1e-5, x);
      expect_same([d, keep](const Tensor& x) { return logsumexp(x, d, keep); }, 1e-5, 1e-5, x);
      expect_same([d, keep](const Tensor& x) { return prod(x * 0.5 + 1, d, keep); }, 1e-4, 1e-6, x);
    }
  }
  Tensor i = randint(-5, 5, {4, 6});
  expect_same([](const Tensor& i) { return (i * 3).sum({1}); }, 0, 0, i);
}

TEST_F(Fusion, RowNormalisationsMatchEagerForwardAndBackward) {
  REQUIRE_CODEGEN();
  Tensor x = randn({5, 3, 33}), w = randn({33}), b = randn({33});
  expect_same([](const Tensor& x) { return softmax(x, -1) + log_softmax(x, 1).exp(); }, 1e-5, 1e-6, x);
  expect_same([](const Tensor& x, const Tensor& w, const Tensor& b) { return layer_norm(x, {33}, w, b, 1e-5); }, 1e-4,
              1e-5, x, w, b);
  expect_same([](const Tensor& x) { return layer_norm(x, {3, 33}); }, 1e-4, 1e-5, x);
  // Backward through the compiled graph: gradients of every input agree with eager.
  auto loss = [](const Tensor& x, const Tensor& w, const Tensor& b) {
    Tensor y = layer_norm(x, {33}, w, b) * softmax(x, -1);
    Tensor l = (y * y).sum();
    l.backward();
    return l;
  };
  Tensor xe = x.clone().requires_grad_(), we = w.clone().requires_grad_(), be = b.clone().requires_grad_();
  Tensor le = loss(xe, we, be);
  auto c = jit::compile(loss);
  for (int i = 0; i < 2; ++i) {
    Tensor xc = x.clone().requires_grad_(), wc = w.clone().requires_grad_(), bc = b.clone().requires_grad_();
    Tensor lc = c(xc, wc, bc);
    EXPECT_TRUE(close(lc, le, 1e-4, 1e-5));
    EXPECT_TRUE(close(xc.grad(), xe.grad(), 1e-3, 1e-5));
    EXPECT_TRUE(close(wc.grad(), we.grad(), 1e-3, 1e-5));
    EXPECT_TRUE(close(bc.grad(), be.grad(), 1e-3, 1e-5));
  }
}

TEST_F(Fusion, TrainingStepMatchesEager) {
  REQUIRE_CODEGEN();
  auto make = [] {
    manual_seed(3);
    return std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(12, 24), std::make_shared<nn::GELU>(),
                                            std::make_shared<nn::Linear>(24, 3));
  };
  auto me = make(), mc = make();
  optim::Adam oe(me->parameters(), {.lr = 1e-2, .weight_decay = 0.01});
  optim::Adam oc(mc->parameters(), {.lr = 1e-2, .weight_decay = 0.01});
  auto step_of = [](std::shared_ptr<nn::Sequential> m, optim::Adam& o) {
    return [m, &o](const Tensor& x, const Tensor& t) {
      o.zero_grad();
      Tensor l = mse_loss(m->forward(x), t);
      l.backward();
      o.step();
      return l;
    };
  };
  auto eager = step_of(me, oe);
  auto compiled = jit::compile(step_of(mc, oc));
  Tensor x = randn({10, 12}), t = randn({10, 3});
  for (int i = 0; i < 5; ++i) {
    Tensor le = eager(x, t), lc = compiled(x, t);
    ASSERT_TRUE(close(lc, le, 1e-4, 1e-6)) << "step " << i;
  }
  auto pe = me->parameters(), pc = mc->parameters();
  for (size_t i = 0; i < pe.size(); ++i) EXPECT_TRUE(close(pc[i], pe[i], 1e-4, 1e-6)) << "parameter " << i;
  EXPECT_GT(jit::stats().fused_kernels, 0);
  EXPECT_EQ(jit::stats().codegen_fallbacks, 0) << jit::stats().str();
}

TEST_F(Fusion, DynamicBatchReusesKernels) {
  REQUIRE_CODEGEN();
  auto f = [](const Tensor& x, const Tensor& w) { return softmax((x * w).tanh(), -1) + x.sum({-1}, true); };
  jit::CompileOptions o;
  o.dynamic = true;
  auto c = jit::compile(f, o);
  Tensor w = randn({24});
  int64_t compiled_after_first = -1;
  for (int64_t batch : {8, 16, 5, 33}) {
    Tensor x = randn({batch, 24});
    ASSERT_TRUE(close(c(x, w), f(x, w), 1e-5, 1e-6)) << "batch " << batch;
    if (compiled_after_first < 0) compiled_after_first = jit::stats().kernels_compiled;
  }
  EXPECT_EQ(jit::stats().kernels_compiled, compiled_after_first) << jit::stats().str();
  EXPECT_GT(jit::stats().kernel_cache_hits, 0);
}

TEST_F(Fusion, CodegenFailureFallsBackToTheInterpreter) {
  REQUIRE_CODEGEN();
  ::setenv("KILN_INJECT_CODEGEN_FAILURE", "1", 1);
  Tensor x = randn({4, 5});
  auto f = [](const Tensor& x) { return (x * 2).exp().sum({1}); };
  expect_same(f, 1e-5, 1e-6, x);
  ::unsetenv("KILN_INJECT_CODEGEN_FAILURE");
  jit::Stats s = jit::stats();
  EXPECT_GE(s.codegen_fallbacks, 1);
  ASSERT_FALSE(s.fallbacks.empty());
  EXPECT_NE(s.fallbacks.back().reason.find("KILN_INJECT_CODEGEN_FAILURE"), std::string::npos) << s.str();
  EXPECT_EQ(s.fused_kernels, 0);
}

TEST_F(Fusion, InterpreterBackendOption) {
  Tensor x = randn({4, 5});
  auto f = [](const Tensor& x) { return (x * 2).exp().sum({1}); };
  jit::CompileOptions o;
  o.backend = jit::Backend::Interpreter;
  auto c = jit::compile(f, o);
  EXPECT_TRUE(close(c(x), f(x), 1e-5, 1e-6));
  EXPECT_EQ(jit::stats().fused_kernels, 0);
}

TEST_F(Fusion, AsyncCompileServesEagerlyThenSwitches) {
  REQUIRE_CODEGEN();
  jit::CompileOptions o;
  o.async = true;
  auto f = [](const Tensor& x, const Tensor& y) { return ((x * 1.5 + y).relu() * y).tanh() + x; };
  auto c = jit::compile(f, o);
  Tensor x = randn({64, 33}), y = randn({64, 33});
  Tensor want = f(x, y);
  EXPECT_TRUE(close(c(x, y), want, 1e-5, 1e-6));  // served while the kernel compiles
  jit::wait_for_compiles();
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(close(c(x, y), want, 1e-5, 1e-6));
  jit::Stats s = jit::stats();
  EXPECT_GE(s.async_compiles, 1);
  EXPECT_GE(s.fused_kernels, 1);
}

// Kernels writing more than the threshold (normally the last-level cache) stream their stores;
// results must not change, also for outputs at odd offsets (an in-place update of a slice).
TEST_F(Fusion, StreamingStoresAboveTheThresholdGiveEagerResults) {
  REQUIRE_CODEGEN();
  const int64_t before = fusion::set_stream_store_bytes(1024);
  auto dump = dir_ / "stream_dump";
  ::setenv("KILN_DUMP_DIR", dump.c_str(), 1);
  jit::CompileOptions o;
  o.name = "streamed";
  auto chain = [](const Tensor& x, const Tensor& y, const Tensor& z) { return ((x * 1.5 + y).relu() * z).tanh() + x; };
  Tensor x = randn({37, 61}), y = randn({37, 61}), z = randn({61});
  auto c = jit::compile(chain, o);
  Tensor want = chain(x, y, z);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(close(c(x, y, z), want, 1e-5, 1e-6)) << "call " << i;
  auto update = [](Tensor& buf, const Tensor& d) {
    NoGradGuard ng;
    buf.slice(1, 3, 64).mul_(0.5).add_(d);
  };
  Tensor buf = randn({29, 67}), d = randn({29, 61}), buf_eager = buf.clone();
  auto cu = jit::compile(update);
  update(buf_eager, d);
  cu(buf, d);
  EXPECT_TRUE(close(buf, buf_eager, 1e-6, 1e-7));
  ::unsetenv("KILN_DUMP_DIR");
  fusion::set_stream_store_bytes(before);
  std::ifstream k(dump / "streamed.0.kernels.txt");
  std::stringstream ks;
  ks << k.rdbuf();
  EXPECT_NE(ks.str().find("streaming stores"), std::string::npos) << ks.str();
  EXPECT_NE(ks.str().find("!nontemporal"), std::string::npos) << ks.str();
}

// Reductions over outer dims (a bias gradient's column sum) render with the last kept dim
// innermost, in tiles of accumulators: the kernels' LLVM IR has the tile loop, and the results
// equal eager's for widths across a tile boundary, NaNs in max/min, a two-stage normalisation
// over dim 0, two reduced dims, and an in-place update fused after the sum (optimizer-style).
TEST_F(Fusion, ColumnReductionsInterchangeAndMatchEager) {
  REQUIRE_CODEGEN();
  auto dump = dir_ / "columns";
  ::setenv("KILN_DUMP_DIR", dump.c_str(), 1);
  for (int64_t width : {5, 64, 70, 131}) {
    SCOPED_TRACE(width);
    Tensor x = randn({37, width}), g = randn({37, width});
    x.select(0, 0).select(0, 2).fill_(std::numeric_limits<float>::quiet_NaN());
    auto bias_grad = [](const Tensor& x, const Tensor& g) {
      Tensor masked = where(x > 0, g, zeros({}));
      return stack({masked.sum({0}), x.amax({0}), x.amin({0}), (g * 2).mean({0})}).sum({0}) + masked.sum({0}) * 0 +
             softmax(g, 0).sum({0});
    };
    expect_same(bias_grad, 1e-5, 1e-5, x, g);
    auto two_dims = [](const Tensor& x) { return (x.view({x.size(0), 1, x.size(1)}) * 3).sum({0, 1}); };
    expect_same(two_dims, 1e-5, 1e-5, g);
  }
  // In place after the reduction: p -= 0.1 * g.sum(0), then p is returned (an optimizer step).
  Tensor p0 = randn({70});
  auto step = [](const Tensor& p, const Tensor& g) {
    NoGradGuard ng;
    Tensor q = p;
    q.sub_(g.relu().sum({0}) * 0.1);
    return q * 1;
  };
  Tensor g = randn({33, 70});
  Tensor pe = p0.clone(), pc = p0.clone();
  Tensor want = step(pe, g);
  auto c = jit::compile(step);
  Tensor got = c(pc, g);
  EXPECT_TRUE(close(got, want, 1e-5, 1e-6));
  EXPECT_TRUE(close(pc, pe, 1e-5, 1e-6));
  ::unsetenv("KILN_DUMP_DIR");
  size_t tiles = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dump)) {
    if (entry.path().string().find("kernels.txt") == std::string::npos) continue;
    std::ifstream k(entry.path());
    std::stringstream ks;
    ks << k.rdbuf();
    if (ks.str().find("tile.loop") != std::string::npos) ++tiles;
  }
  EXPECT_GE(tiles, 3u);
}

// The child half of ProcessExitsWhileCompilesRunInTheBackground (skipped when run on its own):
// queues background compiles, then exits while they run.
TEST(FusionExitChild, ExitsWithCompilesInFlight) {
  if (!std::getenv("KILN_EXIT_TEST_CHILD")) GTEST_SKIP() << "runs as the child process of Fusion.ProcessExitsWhileCompilesRunInTheBackground";
  jit::CompileOptions o;
  o.async = true;
  Tensor x = randn({64, 300}), y = randn({64, 300});
  std::vector<Tensor> keep;
  for (int i = 0; i < 6; ++i) {
    o.name = "exiting" + std::to_string(i);
    auto c = jit::compile([i](const Tensor& a, const Tensor& b) {
      return (softmax(a * (i + 1), -1) - b.sum({0}, true).tanh()).logsumexp({0}) + (a - b).abs().amax({1}).sum();
    }, o);
    keep.push_back(c(x, y));  // served eagerly; the compile is queued
  }
  std::printf("child: exiting with compiles queued\n");
  std::fflush(stdout);
  std::exit(0);  // static destruction while the background compiler works
}

TEST_F(Fusion, ProcessExitsWhileCompilesRunInTheBackground) {
  REQUIRE_CODEGEN();
  const std::string exe = std::filesystem::read_symlink("/proc/self/exe").string();
  for (int run = 0; run < 3; ++run) {
    const std::string cache = (dir_ / ("exit_cache" + std::to_string(run))).string();  // empty: real compiles
    const std::string log = (dir_ / "exit_child.log").string();
    const std::string cmd = "KILN_CACHE_DIR='" + cache + "' KILN_EXIT_TEST_CHILD=1 '" + exe +
                            "' --gtest_filter=FusionExitChild.ExitsWithCompilesInFlight > '" + log + "' 2>&1";
    const int rc = std::system(cmd.c_str());
    std::ifstream in(log);
    std::stringstream out;
    out << in.rdbuf();
    ASSERT_TRUE(WIFEXITED(rc)) << "run " << run << ": " << out.str();
    EXPECT_EQ(WEXITSTATUS(rc), 0) << "run " << run << ": " << out.str();
    EXPECT_NE(out.str().find("child: exiting with compiles queued"), std::string::npos) << out.str();
  }
}

TEST_F(Fusion, DumpsKernelIrLlvmIrAndColouredGraph) {
  REQUIRE_CODEGEN();
  auto dump = dir_ / "dump";
  ::setenv("KILN_DUMP_DIR", dump.c_str(), 1);
  jit::CompileOptions o;
  o.name = "dumped";
  auto c = jit::compile([](const Tensor& x) { return softmax(x * 2, -1); }, o);
  c(randn({4, 8}));
  ::unsetenv("KILN_DUMP_DIR");
  std::ifstream k(dump / "dumped.0.kernels.txt");
  std::stringstream ks;
  ks << k.rdbuf();
  EXPECT_NE(ks.str().find("--- kernel IR"), std::string::npos) << ks.str();
  EXPECT_NE(ks.str().find("stage 2"), std::string::npos) << ks.str();
  EXPECT_NE(ks.str().find("LLVM IR after optimisation"), std::string::npos) << ks.str();
  std::ifstream d(dump / "dumped.0.fusion.dot");
  std::stringstream ds;
  ds << d.rdbuf();
  EXPECT_NE(ds.str().find("fillcolor=\"#"), std::string::npos) << ds.str();
  std::ifstream gtxt(dump / "dumped.0.graph.txt");
  std::stringstream gs;
  gs << gtxt.rdbuf();
  EXPECT_NE(gs.str().find("# after fusion"), std::string::npos) << gs.str();
}

}  // namespace
