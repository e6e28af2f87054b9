// kiln::jit::compile overheads and wins, each compiled figure next to its eager twin in one run:
//   (a) GuardTrivial / GuardSumFew: a replayed call (guards, binding, plan run) with 1, 10 and 100
//       tiny tensor arguments. Trivial runs a one-op graph (x[0].neg()), so what it costs beyond
//       its kernel is the replay machinery; SumFew adds up to four of the arguments (3 ops).
//   (b) Capture: a function of K pointwise ops in Mode::Segmented, so it is traced on every call;
//       the counters split the time per op into capture and plan run.
//   (c) Chain20: a 20-op pointwise chain on 1K and 1M float32 elements, eager vs replay.
//   (d) MLPStep: the bench_train MLP (784-512-512-10, batch 64) training step, eager vs compiled,
//       with SGD + momentum (it replays) and with Adam (its step counter keeps it in trace mode).
// Every workload is registered three times:
//   <workload>/eager, <workload>/compiled   the usual pair (python3 bench/ratio.py FILE eager compiled)
//   <workload>/paired                       eager and compiled alternate in blocks inside one
//       benchmark; counters eager_us, compiled_us (per call) and speedup. On a machine shared with
//       other work this ratio is the steady one: both sides see the same load.
// <workload>/kernels (Chain20, GuardTrivial) is a floor: the same row kernels called directly on
// preallocated outputs (no dispatch, no plan, no allocation) — what a perfect interpreter costs.
// Counters of compiled runs come from jit::stats() over the timed loop, per iteration: replays,
// captures, capture/passes/run time (which path the call took), and compiles (total).
// Ceilings (bench/ceilings.h, measured at start-up): Chain20_1M reports GBps and of_triad for its
// minimal traffic (x and y read, the result written: 12 bytes per element), MLPStep GFLOPs and
// of_sgemm for its GEMMs; the other workloads measure overheads, for which no ceiling applies.
//   ./build/bench/bench_jit --benchmark_out=bench/jit.json --benchmark_out_format=json
#include <benchmark/benchmark.h>
#include <kiln/kiln.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>

#include "bench/ceilings.h"
#include "core/op.h"  // the kernel floors call row kernels directly, as the interpreter does

namespace {

using namespace kiln;
using Clock = std::chrono::steady_clock;

int bench_threads() {
  const char* t = std::getenv("KILN_BENCH_THREADS");
  return t ? std::atoi(t) : 2;
}

// One workload: the eager call, the compiled call (set up, not yet called), and how much work a
// call is. `keep` owns whatever the calls refer to.
struct Workload {
  std::function<void()> eager, compiled;
  std::function<bool()> matches;  // compiled result == eager result (checked after warm-up)
  int64_t ops = 0;    // ops per call (0: not reported per op)
  int64_t items = 0;  // elements or samples per call (0: not reported)
  double bytes = 0;   // minimal bytes moved per call (bandwidth-bound workloads)
  double flops = 0;   // GEMM flops per call (GEMM-bound workloads)
  std::shared_ptr<void> keep;
};
using Factory = std::function<Workload()>;

// jit::stats() deltas over the timed loop, as per-iteration counters.
class StatsCounters {
 public:
  StatsCounters() : before_(jit::stats()) {}
  void report(benchmark::State& state, int64_t ops_per_call, double calls_per_iteration = 1) const {
    const jit::Stats after = jit::stats();
    const double n = static_cast<double>(state.iterations()) * calls_per_iteration;
    state.counters["replays/it"] = static_cast<double>(after.replays - before_.replays) / n;
    state.counters["captures/it"] = static_cast<double>(after.captures - before_.captures) / n;
    state.counters["compiles"] = static_cast<double>(after.compiles);
    state.counters["capture_us/it"] = (after.capture_ms - before_.capture_ms) * 1e3 / n;
    state.counters["passes_us/it"] = (after.passes_ms - before_.passes_ms) * 1e3 / n;
    state.counters["run_us/it"] = (after.run_ms - before_.run_ms) * 1e3 / n;
    if (ops_per_call > 0) {
      const double ops = n * static_cast<double>(ops_per_call);
      state.counters["capture_us/op"] = (after.capture_ms - before_.capture_ms) * 1e3 / ops;
      state.counters["run_us/op"] = (after.run_ms - before_.run_ms) * 1e3 / ops;
    }
  }

 private:
  jit::Stats before_;
};

// Calls the compiled function until it reaches its steady state (two identical traces promote
// it to replay on the third call; a first optimizer step adds one recompile).
Workload prepare(const Factory& make, benchmark::State& state) {
  jit::reset();
  Workload w = make();
  for (int i = 0; i < 5; ++i) w.compiled();
  if (!w.matches()) state.SkipWithError("compiled result differs from eager");
  return w;
}

void set_items(benchmark::State& state, const Workload& w, double calls_per_iteration = 1) {
  if (w.items > 0)
    state.SetItemsProcessed(static_cast<int64_t>(static_cast<double>(state.iterations()) * calls_per_iteration) * w.items);
}

// The whole timed loop's wall time per call (two clock reads per run, none per iteration).
void ceiling_share(benchmark::State& state, const Workload& w, double secs_per_call, const std::string& suffix = "") {
  bench::report_ceiling_share(state, w.bytes, w.flops, secs_per_call, suffix);
}

void run_eager(benchmark::State& state, const Factory& make) {
  Workload w = make();
  auto t0 = Clock::now();
  for (auto _ : state) w.eager();
  ceiling_share(state, w, std::chrono::duration<double>(Clock::now() - t0).count() / static_cast<double>(state.iterations()));
  set_items(state, w);
}

void run_compiled(benchmark::State& state, const Factory& make) {
  Workload w = prepare(make, state);
  StatsCounters c;
  auto t0 = Clock::now();
  for (auto _ : state) w.compiled();
  ceiling_share(state, w, std::chrono::duration<double>(Clock::now() - t0).count() / static_cast<double>(state.iterations()));
  c.report(state, w.ops);
  set_items(state, w);
}

// Blocks of `block` eager calls and `block` compiled calls, alternating; the iteration time is
// that of one eager plus one compiled call.
void run_paired(benchmark::State& state, const Factory& make, int block) {
  Workload w = prepare(make, state);
  StatsCounters c;
  double eager_s = 0, compiled_s = 0;
  int64_t calls = 0;
  for (auto _ : state) {
    auto t0 = Clock::now();
    for (int i = 0; i < block; ++i) w.eager();
    auto t1 = Clock::now();
    for (int i = 0; i < block; ++i) w.compiled();
    auto t2 = Clock::now();
    eager_s += std::chrono::duration<double>(t1 - t0).count();
    compiled_s += std::chrono::duration<double>(t2 - t1).count();
    calls += block;
  }
  c.report(state, w.ops, block);
  state.counters["eager_us"] = eager_s * 1e6 / static_cast<double>(calls);
  state.counters["compiled_us"] = compiled_s * 1e6 / static_cast<double>(calls);
  state.counters["speedup"] = eager_s / compiled_s;
  ceiling_share(state, w, eager_s / static_cast<double>(calls), "_eager");
  ceiling_share(state, w, compiled_s / static_cast<double>(calls), "_compiled");
}

bool close(const Tensor& a, const Tensor& b) { return allclose(a, b, 1e-4, 1e-5); }

// --- (a) guard evaluation and replay overhead -----------------------------------------------------

std::vector<Tensor> tiny_inputs(int64_t n) {
  std::vector<Tensor> xs;
  for (int64_t i = 0; i < n; ++i) xs.push_back(full({1}, static_cast<double>(i + 1)));
  return xs;
}

// Every input is an argument, so every input is guarded, used or not.
Tensor sum_few(const std::vector<Tensor>& xs) {
  if (xs.size() == 1) return xs[0] + xs[0];
  Tensor y = xs[0] + xs[1];
  for (size_t i = 2; i < xs.size() && i < 4; ++i) y = y + xs[i];
  return y;
}
Tensor trivial(const std::vector<Tensor>& xs) { return xs[0].neg(); }

template <class F>
Factory tiny_workload(int64_t n, F f, int64_t ops) {
  return [n, f, ops] {
    auto xs = std::make_shared<std::vector<Tensor>>(tiny_inputs(n));
    auto cf = std::make_shared<decltype(jit::compile(f))>(jit::compile(f));
    Workload w;
    w.eager = [xs, f] { benchmark::DoNotOptimize(f(*xs).impl()); };
    w.compiled = [xs, cf] { benchmark::DoNotOptimize((*cf)(*xs).impl()); };
    w.matches = [xs, cf, f] { return close((*cf)(*xs), f(*xs)); };
    w.ops = ops;
    w.keep = cf;
    return w;
  };
}

// The one kernel of `trivial`, called directly (the replay's floor).
void BM_GuardTrivial_kernels(benchmark::State& state) {
  auto xs = tiny_inputs(1);
  const OpDef& neg = KILN_ROW("neg");
  KernelFn k = neg.kernels[static_cast<int>(DeviceType::CPU)];
  TensorList in{xs[0]}, out{empty({1})};
  for (auto _ : state) {
    k(neg, in, out, Attrs{});
    benchmark::DoNotOptimize(out[0].impl());
  }
}

// --- (b) capture cost per op --------------------------------------------------------------------

// K unary pointwise ops, alternating so that no pass can fold them away.
Tensor unary_chain(const Tensor& x, int64_t k) {
  Tensor y = x;
  for (int64_t i = 0; i < k; ++i) y = (i % 2 == 0) ? y.sin() : y.neg();
  return y;
}

Factory capture_workload(int64_t k) {
  return [k] {
    auto x = std::make_shared<Tensor>(full({16}, 0.5));
    auto f = [k](const Tensor& t) { return unary_chain(t, k); };
    // Segmented: f runs under capture on every call (never promoted to replay).
    auto cf = std::make_shared<decltype(jit::compile(f))>(jit::compile(f, {.mode = jit::Mode::Segmented}));
    Workload w;
    w.eager = [x, f] { benchmark::DoNotOptimize(f(*x).impl()); };
    w.compiled = [x, cf] { benchmark::DoNotOptimize((*cf)(*x).impl()); };
    w.matches = [x, cf, f] { return close((*cf)(*x), f(*x)); };
    w.ops = k;
    w.keep = cf;
    return w;
  };
}

// --- (c) 20-op pointwise chain -------------------------------------------------------------------

// 4 rounds of (mul, add, tanh, mul by scalar, add scalar): 20 pointwise ops.
Tensor chain20(const Tensor& x, const Tensor& y) {
  Tensor z = x;
  for (int i = 0; i < 4; ++i) z = (z * y + x).tanh() * 0.5 + 0.25;
  return z;
}

Factory chain_workload(int64_t n) {
  return [n] {
    manual_seed(0);
    auto xy = std::make_shared<std::pair<Tensor, Tensor>>(randn({n}), randn({n}));
    auto cf = std::make_shared<decltype(jit::compile(chain20))>(jit::compile(chain20));
    Workload w;
    w.eager = [xy] { benchmark::DoNotOptimize(chain20(xy->first, xy->second).impl()); };
    w.compiled = [xy, cf] { benchmark::DoNotOptimize((*cf)(xy->first, xy->second).impl()); };
    w.matches = [xy, cf] { return close((*cf)(xy->first, xy->second), chain20(xy->first, xy->second)); };
    w.ops = 20;
    w.items = n;
    if (n >= (1 << 20)) w.bytes = 12.0 * static_cast<double>(n);
    w.keep = cf;
    return w;
  };
}

// The chain's 20 row kernels called directly on preallocated outputs. range(1) == 1 keeps the
// scalars as the graph holds them (wrapped float64 0-dim constants, which every binary kernel
// casts to float32 on each call); 0 passes them as float32 already.
void BM_Chain20_kernels(benchmark::State& state) {
  manual_seed(0);
  const int64_t n = state.range(0);
  Tensor x = randn({n}), y = randn({n});
  const DType scalar_dtype = state.range(1) ? kFloat64 : kFloat32;
  Tensor half = full({}, 0.5, scalar_dtype), quarter = full({}, 0.25, scalar_dtype);
  half.impl()->set_wrapped_number(true);
  quarter.impl()->set_wrapped_number(true);
  const OpDef &mul = KILN_ROW("mul"), &add = KILN_ROW("add"), &tanh_row = KILN_ROW("tanh");
  const int cpu = static_cast<int>(DeviceType::CPU);
  std::vector<Tensor> buf;
  for (int i = 0; i < 20; ++i) buf.push_back(empty({n}));
  const Attrs none;
  auto call = [&](const OpDef& op, const TensorList& in, size_t o) {
    TensorList out{buf[o]};
    op.kernels[cpu](op, in, out, none);
  };
  auto run = [&] {
    Tensor z = x;
    for (size_t r = 0; r < 4; ++r) {
      const size_t b = 5 * r;
      call(mul, {z, y}, b);
      call(add, {buf[b], x}, b + 1);
      call(tanh_row, {buf[b + 1]}, b + 2);
      call(mul, {buf[b + 2], half}, b + 3);
      call(add, {buf[b + 3], quarter}, b + 4);
      z = buf[b + 4];
    }
    return z;
  };
  if (!close(run(), chain20(x, y))) state.SkipWithError("kernel chain differs from eager");
  for (auto _ : state) benchmark::DoNotOptimize(run().impl());
  state.SetItemsProcessed(state.iterations() * n);
}

// --- (d) MLP training step -----------------------------------------------------------------------

enum class Opt { SGDMomentum, Adam };

struct MLPStep {
  std::shared_ptr<nn::Sequential> model;
  std::unique_ptr<optim::Optimizer> opt;
  Tensor x, y, w;
};

std::shared_ptr<MLPStep> make_mlp_step(Opt which) {
  auto s = std::make_shared<MLPStep>();
  manual_seed(0);
  s->model = std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(784, 512), std::make_shared<nn::ReLU>(),
                                              std::make_shared<nn::Linear>(512, 512), std::make_shared<nn::ReLU>(),
                                              std::make_shared<nn::Linear>(512, 10));
  if (which == Opt::SGDMomentum)
    s->opt = std::make_unique<optim::SGD>(s->model->parameters(), optim::SGDOptions{.lr = 0.01, .momentum = 0.9});
  else
    s->opt = std::make_unique<optim::Adam>(s->model->parameters(), optim::AdamOptions{.lr = 1e-3});
  s->x = randn({64, 784});
  s->y = randint(0, 10, {64});
  s->w = ones({10});
  return s;
}

// The class weight is passed explicitly (all ones: the same loss as none) because a capture of
// cross_entropy without a weight currently crashes the JIT's passes (an absent optional tensor
// input is value -1 in the graph; see bench/RESULTS.md).
Tensor train_step(MLPStep& s) {
  s.opt->zero_grad();
  Tensor loss = cross_entropy(s.model->forward(s.x), s.y, s.w);
  loss.backward();
  s.opt->step();
  return loss.detach();  // a result with autograd history would keep the function tracing
}

// Eager and compiled train twins (same initial weights), so each side's parameters follow its
// own eager or compiled trajectory; `matches` compares the twins after the same number of steps.
Factory mlp_workload(Opt which) {
  return [which] {
    auto eager = make_mlp_step(which);
    auto twin = make_mlp_step(which);
    auto step = [twin](const Tensor&) { return train_step(*twin); };
    auto cf = std::make_shared<decltype(jit::compile(step))>(jit::compile(step));
    auto calls = std::make_shared<std::pair<int64_t, int64_t>>(0, 0);
    Workload w;
    w.eager = [eager, calls] {
      benchmark::DoNotOptimize(train_step(*eager).impl());
      ++calls->first;
    };
    w.compiled = [twin, cf, calls] {
      benchmark::DoNotOptimize((*cf)(twin->x).impl());
      ++calls->second;
    };
    // Adam divides by gradient magnitudes: rounding differences of near-zero gradients grow by up
    // to lr per step (7e-6 on weights of 0.04 after 5 steps), so Adam compares more loosely.
    const double rtol = which == Opt::Adam ? 1e-3 : 1e-4, atol = which == Opt::Adam ? 1e-4 : 1e-6;
    w.matches = [eager, twin, calls, rtol, atol] {
      while (calls->first < calls->second) {
        train_step(*eager);
        ++calls->first;
      }
      auto pe = eager->model->parameters(), pc = twin->model->parameters();
      for (size_t i = 0; i < pe.size(); ++i)
        if (!allclose(pe[i], pc[i], rtol, atol)) return false;
      return true;
    };
    w.items = 64;
    // 784-512-512-10 at batch 64: forward, weight gradients, input gradients but the first layer's
    w.flops = bench::train_flops(bench::gemm_flops(64, 784, 512), false) +
              bench::train_flops(bench::gemm_flops(64, 512, 512), true) + bench::train_flops(bench::gemm_flops(64, 512, 10), true);
    w.keep = std::make_shared<std::pair<std::shared_ptr<void>, std::shared_ptr<void>>>(cf, twin);
    return w;
  };
}

void register_workload(const std::string& name, const Factory& make, benchmark::TimeUnit unit, int block) {
  benchmark::RegisterBenchmark((name + "/eager").c_str(), run_eager, make)->Unit(unit);
  benchmark::RegisterBenchmark((name + "/compiled").c_str(), run_compiled, make)->Unit(unit);
  benchmark::RegisterBenchmark((name + "/paired").c_str(), run_paired, make, block)->Unit(unit);
}

}  // namespace

int main(int argc, char** argv) {
  int threads = bench_threads();
  kiln::set_num_threads(threads);
  benchmark::AddCustomContext("threads", std::to_string(threads));
  bench::measure_ceilings();
  using benchmark::kMicrosecond;
  using benchmark::kMillisecond;
  for (int64_t n : {1, 10, 100})
    register_workload("GuardTrivial_n" + std::to_string(n), tiny_workload(n, trivial, 1), kMicrosecond, 64);
  benchmark::RegisterBenchmark("GuardTrivial_n1/kernels", BM_GuardTrivial_kernels)->Unit(kMicrosecond);
  for (int64_t n : {1, 10, 100})
    register_workload("GuardSumFew_n" + std::to_string(n), tiny_workload(n, sum_few, n == 1 ? 1 : 3), kMicrosecond, 64);
  for (int64_t k : {10, 100}) register_workload("Capture_k" + std::to_string(k), capture_workload(k), kMicrosecond, 8);
  register_workload("Chain20_1K", chain_workload(1024), kMicrosecond, 16);
  benchmark::RegisterBenchmark("Chain20_1K/kernels", BM_Chain20_kernels)->Args({1024, 1})->Unit(kMicrosecond);
  benchmark::RegisterBenchmark("Chain20_1K/kernels_f32_scalars", BM_Chain20_kernels)->Args({1024, 0})->Unit(kMicrosecond);
  register_workload("Chain20_1M", chain_workload(1 << 20), kMicrosecond, 1);
  benchmark::RegisterBenchmark("Chain20_1M/kernels", BM_Chain20_kernels)->Args({1 << 20, 1})->Unit(kMicrosecond);
  register_workload("MLPStep_SGDMomentum", mlp_workload(Opt::SGDMomentum), kMillisecond, 1);
  register_workload("MLPStep_Adam", mlp_workload(Opt::Adam), kMillisecond, 1);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
