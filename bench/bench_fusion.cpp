// The fusion backend's benchmarks (issue 5), every ratio measured side by side in one run:
//   (1) Triad: STREAM triad a = b + s*c on 16M float32 through kiln::cpu::parallel_for (the
//       library's thread pool, KILN_BENCH_THREADS threads, default 2): the bandwidth ceiling.
//   (2) Chain: ((x*1.5 + y).relu() * z).tanh() + x, float32, 16M and 1K elements.
//   (3) SoftmaxWritten / LayerNormWritten over [4096, 1024] float32: softmax written out as
//       e = (x - x.amax(-1, true)).exp(); e / e.sum(-1, true), layer_norm as
//       (x - mean) / sqrt(var(correction 0) + eps) * w + b; against kiln's built-in kiln::softmax /
//       kiln::layer_norm called eagerly (variant `builtin`).
//   (4) MLPStep: 784-256-256-10 training step (cross_entropy, backward, optimizer step), batch 64
//       (SGD + momentum, and Adam) and 512 (Adam).
//   (5) EncoderLayer: nn::TransformerEncoderLayer (d_model 256, 4 heads, ff 1024, dropout 0.1,
//       seq 128, batch 8) forward + backward of out.pow(2).mean() (EncoderLayer_fwd_bwd), and
//       forward alone in eval mode under NoGradGuard (EncoderLayer_fwd).
//   (8) Chain_16M/bounds, SoftmaxWritten_4096x1024/bounds: the memory floor and the arithmetic
//       time of the chain and the written softmax, hence the best speedup any kernel can reach here.
//   (7) CNNStep: conv-ReLU-maxpool twice + linear on [32, 1, 28, 28], cross_entropy, SGD with
//       momentum (bench/workloads.h defines the MLP, CNN and encoder workloads).
// Variants of each workload (benchmark names <workload>/<variant>):
//   eager        the function called directly
//   compiled     jit::compile, Backend::Native (fused LLVM kernels; the interpreter until they land)
//   interpreter  jit::compile, Backend::Interpreter (every node through the eager kernels)
//   builtin      (3 only) kiln's own softmax / layer_norm, eager
// and <workload>/paired, which runs all variants in alternating blocks inside one benchmark (so they
// share the machine's load; at least 1 s, or $KILN_BENCH_PAIRED_MIN_TIME seconds) and reports
// per-variant times `<variant>_us` (median per call over the blocks) and ratios
// `speedup_<variant>` = eager time / variant time (> 1: faster than eager); for (3) also
// `compiled_vs_builtin` = builtin time / compiled time. Bandwidth-bound workloads report `GBps`
// (minimal traffic: every input read once and the output written once — 16 bytes per element for
// the 16M chain, 8 for softmax, 8 plus w and b for layer_norm, 12 for the triad) and `of_triad` =
// GBps / the triad's GB/s measured at start-up in the same process (best of 10). GEMM-bound
// workloads (MLP, CNN, encoder) report `GFLOPs` (their GEMMs' flops per call / time) and
// `of_sgemm` = GFLOPs / oneDNN sgemm's GFLOP/s measured at start-up (bench/ceilings.h).
// Counters `matches` = 1 when the variant's results equal eager's after warm-up (rtol 1e-4, atol
// 1e-5; the encoder layer's dropout draws the same numbers when the generator is re-seeded).
// Counters from jit::stats() over the timed loop: replays/it, captures/it, fused_kernels (plans).
// Paired rows count `shared_graph_hits`: compiled and interpreter trace identical graphs, so a
// non-zero count means one variant ran the other's plan (the JIT's shared graph cache must key on
// the backend); a warning is printed then.
//
//   ./build/bench/bench_fusion --benchmark_out=bench/fusion.json --benchmark_out_format=json
//   python3 bench/ratio.py bench/fusion.json eager compiled
//   scripts/bench_fusion.sh      (build, run, compile latency, summary against the targets)
//
// (6) Compile latency, in a fresh process: `bench_fusion --compile-latency` prints one JSON object
// with the wall time of the first call of a freshly compiled MLP training step (784-256-256-10,
// Adam, batch 64; jit::reset() first; eager steps first so oneDNN's own kernel JIT and the
// allocator are warm) and of the next calls (second, median of 10 more; eager median of 10), plus jit::stats()'s capture/passes/fusion/codegen
// times and kernel counts. The disk kernel cache is $KILN_CACHE_DIR: run it twice with the same
// empty directory for the cold and the warm-disk-cache figures (scripts/bench_fusion.sh does).
// The same figures in process, as benchmarks: CompileLatency/cold (empty memory kernel cache, a
// fresh empty KILN_CACHE_DIR per iteration), /warm_disk (empty memory cache, the disk cache holds
// every kernel), /warm_memory (the kernels in memory: capture, passes, fusion and plan building
// only); jit::reset() before each timed first call. Counters: kernels compiled and cache hits
// per first call, and `of_eager_step` = first call / an eager step.
#include <benchmark/benchmark.h>
#include <kiln/kiln.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <filesystem>
#include <tuple>
#include <vector>

#include <unistd.h>

#include "bench/ceilings.h"
#include "bench/workloads.h"
#include "fusion/codegen.h"  // clear_memory_cache: compile latency with a cold or disk-only kernel cache

namespace {

using namespace kiln;
using Clock = std::chrono::steady_clock;

int bench_threads() {
  const char* t = std::getenv("KILN_BENCH_THREADS");
  return t ? std::atoi(t) : 2;
}

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// --- (1) STREAM triad -------------------------------------------------------------------------

constexpr int64_t k16M = bench::kTriadElems;

void BM_Triad(benchmark::State& state) {
  bench::TriadArrays t;
  t.run(3.0f);
  double secs = 0;
  for (auto _ : state) {
    auto t0 = Clock::now();
    t.run(3.0f);
    benchmark::ClobberMemory();
    secs += seconds_since(t0);
  }
  const double gbps = 12.0 * static_cast<double>(k16M) * static_cast<double>(state.iterations()) / secs / 1e9;
  state.counters["GBps"] = gbps;
  state.counters["triad_GBps_at_start"] = bench::ceilings().triad_gbps;
}

// --- workloads ----------------------------------------------------------------------------------

struct Variant {
  std::string name;
  std::function<void()> run;
  std::function<bool()> matches;  // empty: the reference itself
};

struct Workload {
  std::vector<Variant> variants;  // [0]: eager, the reference
  double bytes = 0;               // minimal bytes moved per call (0: not bandwidth-bound)
  double flops = 0;               // GEMM flops per call (0: not GEMM-bound)
  int64_t items = 0;              // samples per call (0: not reported)
  std::shared_ptr<void> keep;
};
using Factory = std::function<Workload()>;

bool close(const Tensor& a, const Tensor& b) { return a.sizes() == b.sizes() && allclose(a, b, 1e-4, 1e-5, true); }

jit::CompileOptions native(const std::string& name) { return {.name = name, .backend = jit::Backend::Native}; }
jit::CompileOptions interp(const std::string& name) { return {.name = name, .backend = jit::Backend::Interpreter}; }

// A pure function of its tensor arguments (a tuple): eager, compiled and interpreter variants.
template <class F, class Args>
Workload pure_workload(const std::string& name, F f, std::shared_ptr<Args> args) {
  auto cn = std::make_shared<decltype(jit::compile(f))>(jit::compile(f, native(name)));
  auto ci = std::make_shared<decltype(jit::compile(f))>(jit::compile(f, interp(name + "_interp")));
  auto call = [args](auto& fn) { return std::apply(fn, *args); };
  Workload w;
  w.variants.push_back({"eager", [f, call] { benchmark::DoNotOptimize(call(f).impl()); }, {}});
  w.variants.push_back({"compiled", [cn, call] { benchmark::DoNotOptimize(call(*cn).impl()); },
                        [cn, f, call] { return close(call(*cn), call(f)); }});
  w.variants.push_back({"interpreter", [ci, call] { benchmark::DoNotOptimize(call(*ci).impl()); },
                        [ci, f, call] { return close(call(*ci), call(f)); }});
  w.keep = std::make_shared<std::tuple<decltype(cn), decltype(ci), decltype(args)>>(cn, ci, args);
  return w;
}

// (2) the pointwise chain
Tensor chain(const Tensor& x, const Tensor& y, const Tensor& z) { return ((x * 1.5 + y).relu() * z).tanh() + x; }

Factory chain_workload(int64_t n) {
  return [n] {
    manual_seed(0);
    auto args = std::make_shared<std::tuple<Tensor, Tensor, Tensor>>(randn({n}), randn({n}), randn({n}));
    Workload w = pure_workload("chain", chain, args);
    if (n >= (1 << 20)) w.bytes = 16.0 * static_cast<double>(n);  // x, y, z read, out written
    w.items = n;
    return w;
  };
}

// (3) written-out softmax and layer_norm, and the built-ins
constexpr int64_t kRows = 4096, kCols = 1024;

Tensor softmax_written(const Tensor& x) {
  Tensor e = (x - x.amax({-1}, true)).exp();
  return e / e.sum({-1}, true);
}

Tensor layer_norm_written(const Tensor& x, const Tensor& w, const Tensor& b) {
  Tensor mu = x.mean({-1}, true);
  Tensor var = x.var({-1}, 0, true);
  return (x - mu) / (var + 1e-5).sqrt() * w + b;
}

Factory softmax_workload() {
  return [] {
    manual_seed(0);
    auto args = std::make_shared<std::tuple<Tensor>>(randn({kRows, kCols}));
    Workload w = pure_workload("softmax_written", softmax_written, args);
    const Tensor x = std::get<0>(*args);
    w.variants.push_back({"builtin", [x] { benchmark::DoNotOptimize(softmax(x, -1).impl()); },
                          [x] { return close(softmax(x, -1), softmax_written(x)); }});
    w.bytes = 8.0 * kRows * kCols;
    w.items = kRows;
    return w;
  };
}

Factory layer_norm_workload() {
  return [] {
    manual_seed(0);
    auto args = std::make_shared<std::tuple<Tensor, Tensor, Tensor>>(randn({kRows, kCols}), rand({kCols}) + 0.5,
                                                                    randn({kCols}));
    Workload w = pure_workload("layer_norm_written", layer_norm_written, args);
    auto builtin = [args] {
      auto& [x, g, b] = *args;
      return layer_norm(x, {kCols}, g, b, 1e-5);
    };
    w.variants.push_back({"builtin", [builtin] { benchmark::DoNotOptimize(builtin().impl()); },
                          [args, builtin] { return close(builtin(), std::apply(layer_norm_written, *args)); }});
    w.bytes = 8.0 * kRows * kCols + 8.0 * kCols;
    w.items = kRows;
    return w;
  };
}

// (4) MLP and (7) CNN training steps
using bench::Classifier;
using bench::Opt;

// Each variant trains its own twin (same initial weights); `matches` brings an eager replica to
// the same step count and compares parameters.
Factory classifier_workload(std::function<std::shared_ptr<Classifier>()> make, Opt which, double flops, int64_t batch) {
  return [make, which, flops, batch] {
    auto eager = make();
    auto steps = std::make_shared<std::map<std::string, int64_t>>();
    Workload w;
    w.variants.push_back(
        {"eager", [eager, steps] { benchmark::DoNotOptimize(bench::classifier_step(*eager).impl()); ++(*steps)["eager"]; }, {}});
    std::vector<std::shared_ptr<void>> keep{eager, steps};
    for (const std::string v : {"compiled", "interpreter"}) {
      auto twin = make();
      auto f = [twin](const Tensor&) { return bench::classifier_step(*twin); };
      auto cf = std::make_shared<decltype(jit::compile(f))>(
          jit::compile(f, v == "compiled" ? native("train_step") : interp("train_step_interp")));
      auto matches = [make, twin, steps, v, which] {
        auto ref = make();  // an eager replica stepped as often as this twin
        for (int64_t k = 0; k < (*steps)[v]; ++k) bench::classifier_step(*ref);
        auto pr = ref->model->parameters(), pt = twin->model->parameters();
        for (size_t i = 0; i < pr.size(); ++i)
          // Adam divides by gradient magnitudes: over hundreds of steps rounding differences of
          // near-zero gradients grow (docs/fusion.md), so Adam runs compare more loosely.
          if (!allclose(pr[i], pt[i], which == Opt::Adam ? 1e-3 : 1e-4, which == Opt::Adam ? 1e-4 : 1e-6)) return false;
        return true;
      };
      w.variants.push_back({v, [twin, cf, steps, v] { benchmark::DoNotOptimize((*cf)(twin->x).impl()); ++(*steps)[v]; }, matches});
      keep.push_back(twin);
      keep.push_back(cf);
    }
    w.flops = flops;
    w.items = batch;
    w.keep = std::make_shared<std::vector<std::shared_ptr<void>>>(keep);
    return w;
  };
}

Factory mlp_workload(Opt which, int64_t batch) {
  return classifier_workload([which, batch] { return bench::make_mlp(256, which, batch); }, which,
                             bench::mlp_step_flops(256, batch), batch);
}

Factory cnn_workload(int64_t batch) {
  return classifier_workload([batch] { return bench::make_cnn(Opt::SGDMomentum, batch); }, Opt::SGDMomentum,
                             bench::cnn_step_flops(batch), batch);
}

// (5) TransformerEncoderLayer forward + backward, and forward alone
Factory encoder_workload() {
  return [] {
    auto eager = bench::make_encoder(false);
    Workload w;
    w.variants.push_back({"eager", [eager] { benchmark::DoNotOptimize(bench::encoder_train_step(*eager).impl()); }, {}});
    std::vector<std::shared_ptr<void>> keep{eager};
    for (const std::string v : {"compiled", "interpreter"}) {
      auto twin = bench::make_encoder(false);
      auto f = [twin](const Tensor&) { return bench::encoder_train_step(*twin); };
      auto cf = std::make_shared<decltype(jit::compile(f))>(
          jit::compile(f, v == "compiled" ? native("encoder_step") : interp("encoder_step_interp")));
      // Same seed before each side: dropout draws the same masks; the weights never change here.
      auto matches = [eager, twin, cf] {
        manual_seed(7);
        Tensor a = (*cf)(twin->src);
        std::vector<Tensor> ga;
        for (const Tensor& p : twin->layer->parameters()) ga.push_back(p.grad().clone());
        manual_seed(7);
        Tensor b = bench::encoder_train_step(*eager);
        auto pe = eager->layer->parameters();
        bool ok = close(a, b);
        for (size_t i = 0; i < pe.size() && ok; ++i) ok = close(ga[i], pe[i].grad());
        return ok;
      };
      w.variants.push_back({v, [twin, cf] { benchmark::DoNotOptimize((*cf)(twin->src).impl()); }, matches});
      keep.push_back(twin);
      keep.push_back(cf);
    }
    w.flops = bench::encoder_flops(true);
    w.items = bench::kEncBatch;
    w.keep = std::make_shared<std::vector<std::shared_ptr<void>>>(keep);
    return w;
  };
}

// Inference: eval mode (no dropout), no autograd; one layer serves every variant.
Factory encoder_forward_workload() {
  return [] {
    auto e = bench::make_encoder(true);
    auto f = [e](const Tensor&) { return bench::encoder_forward(*e); };
    auto cn = std::make_shared<decltype(jit::compile(f))>(jit::compile(f, native("encoder_fwd")));
    auto ci = std::make_shared<decltype(jit::compile(f))>(jit::compile(f, interp("encoder_fwd_interp")));
    auto run = [e](auto& fn) {
      NoGradGuard no_grad;
      return fn(e->src);
    };
    Workload w;
    w.variants.push_back({"eager", [f, run] { benchmark::DoNotOptimize(run(f).impl()); }, {}});
    w.variants.push_back({"compiled", [cn, run] { benchmark::DoNotOptimize(run(*cn).impl()); },
                          [cn, f, run] { return close(run(*cn), run(f)); }});
    w.variants.push_back({"interpreter", [ci, run] { benchmark::DoNotOptimize(run(*ci).impl()); },
                          [ci, f, run] { return close(run(*ci), run(f)); }});
    w.flops = bench::encoder_flops(false);
    w.items = bench::kEncBatch;
    w.keep = std::make_shared<std::tuple<decltype(e), decltype(cn), decltype(ci)>>(e, cn, ci);
    return w;
  };
}

// --- runners ------------------------------------------------------------------------------------

// Warm-up: compiled functions reach their steady state (two identical traces promote a function
// to replay on the third call; an optimizer's first step adds a recompile).
void warm(Workload& w, size_t only = SIZE_MAX) {
  for (size_t v = 0; v < w.variants.size(); ++v)
    if (only == SIZE_MAX || v == only || v == 0)
      for (int i = 0; i < 4; ++i) w.variants[v].run();
}

// Google Benchmark runs a benchmark function several times (to size its iteration count): each
// warning is printed once.
void warn_once(const std::string& msg) {
  static std::set<std::string> said;
  if (said.insert(msg).second) std::cerr << "bench_fusion: WARNING: " << msg << "\n";
}

// `matches` of a variant, warning on stderr when it does not.
double check(const std::string& workload, const Variant& v) {
  if (!v.matches) return 1;
  bool ok = false;
  try {
    ok = v.matches();
  } catch (const std::exception& e) {
    warn_once(workload + "/" + v.name + ": check raised: " + e.what());
  }
  if (!ok) warn_once(workload + "/" + v.name + " differs from eager");
  return ok ? 1 : 0;
}

class StatsDelta {
 public:
  StatsDelta() : before_(jit::stats()) {}
  void report(benchmark::State& state, double calls) const {
    const jit::Stats after = jit::stats();
    state.counters["replays/it"] = static_cast<double>(after.replays - before_.replays) / calls;
    state.counters["captures/it"] = static_cast<double>(after.captures - before_.captures) / calls;
    state.counters["fused_kernels"] = static_cast<double>(after.fused_kernels);
    state.counters["codegen_fallbacks"] = static_cast<double>(after.codegen_fallbacks);
  }

 private:
  jit::Stats before_;
};

void ceiling_share(benchmark::State& state, const Workload& w, double secs_per_call, const std::string& suffix = "") {
  bench::report_ceiling_share(state, w.bytes, w.flops, secs_per_call, suffix);
}

void run_variant(benchmark::State& state, const std::string& workload, const Factory& make, size_t which) {
  jit::reset();
  Workload w = make();
  warm(w, which);
  const Variant& v = w.variants[which];
  state.counters["matches"] = check(workload, v);
  StatsDelta stats;
  double secs = 0;
  for (auto _ : state) {
    auto t0 = Clock::now();
    v.run();
    secs += seconds_since(t0);
  }
  const double n = static_cast<double>(state.iterations());
  if (v.name == "compiled" || v.name == "interpreter") stats.report(state, n);
  ceiling_share(state, w, secs / n);
  if (w.items > 0) state.SetItemsProcessed(state.iterations() * w.items);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0 : n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// All variants in alternating blocks of `block` calls; an iteration is one block of each, in an
// order that rotates (no variant always runs right after the same other one). Per-call times are
// the median over the blocks, so a burst of load from elsewhere spoils one block, not the ratio.
void run_paired(benchmark::State& state, const std::string& workload, const Factory& make, int block) {
  jit::reset();
  Workload w = make();
  warm(w);
  for (const Variant& v : w.variants) state.counters["matches_" + v.name] = check(workload, v);
  const int64_t shared = jit::stats().shared_graph_hits;
  state.counters["shared_graph_hits"] = static_cast<double>(shared);
  if (shared > 0)
    warn_once(workload + ": " + std::to_string(shared) +
              " shared graph hit(s): compiled and interpreter may run one plan (the JIT's graph cache ignores the backend)");
  const size_t nv = w.variants.size();
  std::vector<std::vector<double>> per_call(nv);
  size_t rot = 0;
  for (auto _ : state) {
    for (size_t k = 0; k < nv; ++k) {
      const size_t v = (k + rot) % nv;
      auto t0 = Clock::now();
      for (int i = 0; i < block; ++i) w.variants[v].run();
      per_call[v].push_back(seconds_since(t0) / block);
    }
    ++rot;
  }
  std::vector<double> secs(nv);
  for (size_t v = 0; v < nv; ++v) secs[v] = median(per_call[v]);
  for (size_t v = 0; v < nv; ++v) {
    const std::string& name = w.variants[v].name;
    state.counters[name + "_us"] = secs[v] * 1e6;
    if (v > 0) state.counters["speedup_" + name] = secs[0] / secs[v];
    ceiling_share(state, w, secs[v], "_" + name);
  }
  size_t compiled = 0, builtin = 0;
  for (size_t v = 0; v < w.variants.size(); ++v) {
    if (w.variants[v].name == "compiled") compiled = v;
    if (w.variants[v].name == "builtin") builtin = v;
  }
  if (compiled && builtin) state.counters["compiled_vs_builtin"] = secs[builtin] / secs[compiled];
}

double paired_min_time() {
  const char* t = std::getenv("KILN_BENCH_PAIRED_MIN_TIME");
  return t && *t ? std::atof(t) : 1.0;
}

// `extra`: the variants the factory makes after eager, compiled and interpreter (in order).
void register_workload(const std::string& name, const Factory& make, benchmark::TimeUnit unit, int block,
                       const std::vector<std::string>& extra = {}) {
  std::vector<std::string> names = {"eager", "compiled", "interpreter"};
  names.insert(names.end(), extra.begin(), extra.end());
  for (size_t v = 0; v < names.size(); ++v)
    benchmark::RegisterBenchmark((name + "/" + names[v]).c_str(), run_variant, name, make, v)->Unit(unit)->UseRealTime();
  // At least a second ($KILN_BENCH_PAIRED_MIN_TIME): the big workloads then get several blocks to
  // take the median of.
  benchmark::RegisterBenchmark((name + "/paired").c_str(), run_paired, name, make, block)
      ->Unit(unit)
      ->UseRealTime()
      ->MinTime(paired_min_time());
}

// --- (8) bounds: the fastest the chain and the written softmax can be on this machine -----------
// The 5x (chain) and 4x (written softmax) targets against two limits measured in the same
// run, on the same compiled kernels:
//   floor    the workload with its transcendental removed (tanh / exp): the same loads, stores and
//            reductions, so the kernel's memory time;
//   compute  the compiled workload over 1/256 of the data (L2-resident), called 256 times on one
//            thread, less 256 calls on a tiny input (a call's fixed cost: guards, dispatch,
//            allocation), divided by the thread count (perfect scaling, so a lower bound): the
//            arithmetic time of the whole input with no memory traffic to wait for. One thread,
//            because waking the pool's passive workers costs more than a cache-sized call.
// A kernel overlaps the two at best, so compiled time >= max(floor, compute), and
// `best_speedup` = eager / max(floor, compute) is the most any kernel schedule can reach here.
// Counters (ms, medians over rotating blocks as in /paired): eager_ms, compiled_ms, floor_ms,
// compute_ms, speedup (eager / compiled), floor_speedup (eager / floor), best_speedup.
template <class Fn, class Floor, class Args>
void run_bounds(benchmark::State& state, const std::string& name, Fn fn, Floor floor_fn, std::shared_ptr<Args> big,
                std::shared_ptr<Args> small, std::shared_ptr<Args> tiny) {
  constexpr int kReps = 256;
  jit::reset();
  auto compiled = jit::compile(fn, native(name));
  auto compiled_small = jit::compile(fn, native(name + "_small"));
  auto compiled_tiny = jit::compile(fn, native(name + "_tiny"));
  auto floor_compiled = jit::compile(floor_fn, native(name + "_floor"));
  auto call = [](auto& f, auto& args) { benchmark::DoNotOptimize(std::apply(f, *args).impl()); };
  std::vector<std::function<void()>> runs = {
      [&] { call(fn, big); },
      [&] { call(compiled, big); },
      [&] { call(floor_compiled, big); },
      [&] {
        for (int i = 0; i < kReps; ++i) call(compiled_small, small);
      },
      [&] {
        for (int i = 0; i < kReps; ++i) call(compiled_tiny, tiny);
      },
  };
  for (int warm = 0; warm < 3; ++warm)
    for (auto& r : runs) r();
  if (!close(std::apply(compiled, *big), std::apply(fn, *big))) state.SkipWithError((name + ": compiled != eager").c_str());
  const int threads = get_num_threads();
  std::vector<std::vector<double>> per_call(runs.size());
  size_t rot = 0;
  for (auto _ : state) {
    for (size_t k = 0; k < runs.size(); ++k) {
      const size_t v = (k + rot) % runs.size();
      const bool single = v >= 3;  // the compute runs
      if (single) set_num_threads(1);
      auto t0 = Clock::now();
      runs[v]();
      per_call[v].push_back(seconds_since(t0) * 1e3);
      if (single) set_num_threads(threads);
    }
    ++rot;
  }
  const double eager = median(per_call[0]), comp = median(per_call[1]), floor_ms = median(per_call[2]),
               compute = std::max(median(per_call[3]) - median(per_call[4]), 0.0) / threads;
  state.counters["eager_ms"] = eager;
  state.counters["compiled_ms"] = comp;
  state.counters["floor_ms"] = floor_ms;
  state.counters["compute_ms"] = compute;
  state.counters["speedup"] = eager / comp;
  state.counters["floor_speedup"] = eager / floor_ms;
  state.counters["best_speedup"] = eager / std::max(floor_ms, compute);
}

Tensor chain_floor(const Tensor& x, const Tensor& y, const Tensor& z) { return ((x * 1.5 + y).relu() * z) + x; }

Tensor softmax_floor(const Tensor& x) {
  Tensor e = x - x.amax({-1}, true);
  return e / e.sum({-1}, true);
}

void BM_ChainBounds(benchmark::State& state) {
  manual_seed(0);
  auto big = std::make_shared<std::tuple<Tensor, Tensor, Tensor>>(randn({k16M}), randn({k16M}), randn({k16M}));
  const int64_t n = k16M / 256;
  auto small = std::make_shared<std::tuple<Tensor, Tensor, Tensor>>(randn({n}), randn({n}), randn({n}));
  auto tiny = std::make_shared<std::tuple<Tensor, Tensor, Tensor>>(randn({8}), randn({8}), randn({8}));
  run_bounds(state, "chain_bounds", chain, chain_floor, big, small, tiny);
}

void BM_SoftmaxBounds(benchmark::State& state) {
  manual_seed(0);
  auto big = std::make_shared<std::tuple<Tensor>>(randn({kRows, kCols}));
  auto small = std::make_shared<std::tuple<Tensor>>(randn({kRows / 256, kCols}));
  auto tiny = std::make_shared<std::tuple<Tensor>>(randn({2, 8}));
  run_bounds(state, "softmax_bounds", softmax_written, softmax_floor, big, small, tiny);
}

// --- (6) compile latency ------------------------------------------------------------------------

// Eager steps of the compile-latency workload: warms what is not the JIT's (oneDNN builds its GEMM
// kernels on first use, the allocator fills), then the median of 10 steps in ms.
double eager_step_ms(Classifier& eager) {
  for (int i = 0; i < 3; ++i) bench::classifier_step(eager);
  std::vector<double> ms;
  for (int i = 0; i < 10; ++i) {
    auto t0 = Clock::now();
    bench::classifier_step(eager);
    ms.push_back(seconds_since(t0) * 1e3);
  }
  return median(ms);
}

std::shared_ptr<Classifier> latency_workload() { return bench::make_mlp(256, Opt::Adam, 64); }

int compile_latency() {
  auto eager = latency_workload();
  auto twin = latency_workload();
  const double eager_ms = eager_step_ms(*eager);
  jit::reset();
  auto f = [twin](const Tensor&) { return bench::classifier_step(*twin); };
  auto step = jit::compile(f, native("mlp_step"));
  auto t0 = Clock::now();
  Tensor first = step(twin->x);
  const double first_ms = seconds_since(t0) * 1e3;
  const jit::Stats after_first = jit::stats();
  t0 = Clock::now();
  step(twin->x);
  const double second_ms = seconds_since(t0) * 1e3;
  std::vector<double> steady_ms;
  for (int i = 0; i < 10; ++i) {
    t0 = Clock::now();
    step(twin->x);
    steady_ms.push_back(seconds_since(t0) * 1e3);
  }
  const char* dir = std::getenv("KILN_CACHE_DIR");
  const jit::Stats& s = after_first;
  std::printf(
      "{\"workload\": \"MLP 784-256-256-10 Adam batch 64 training step\", \"cache_dir\": \"%s\", "
      "\"first_call_ms\": %.3f, \"second_call_ms\": %.3f, \"steady_call_ms\": %.3f, \"eager_step_ms\": %.3f, "
      "\"first_call\": {\"capture_ms\": %.3f, \"passes_ms\": %.3f, \"compile_ms\": %.3f, \"fusion_ms\": %.3f, "
      "\"codegen_ms\": %.3f, \"run_ms\": %.3f, \"fused_kernels\": %lld, \"kernels_compiled\": %lld, "
      "\"kernel_cache_hits\": %lld, \"codegen_fallbacks\": %lld, \"compiles\": %lld}}\n",
      dir ? dir : "", first_ms, second_ms, median(steady_ms), eager_ms, s.capture_ms, s.passes_ms, s.compile_ms,
      s.fusion_ms, s.codegen_ms, s.run_ms, static_cast<long long>(s.fused_kernels),
      static_cast<long long>(s.kernels_compiled), static_cast<long long>(s.kernel_cache_hits),
      static_cast<long long>(s.codegen_fallbacks), static_cast<long long>(s.compiles));
  benchmark::DoNotOptimize(first.impl());
  return 0;
}

enum class KernelCache { Cold, WarmDisk, WarmMemory };

// The first call of a freshly compiled training step (jit::reset() before each), with the kernel
// cache in the given state. KILN_CACHE_DIR points into a scratch directory meanwhile.
void BM_CompileLatency(benchmark::State& state, KernelCache cache) {
  namespace fs = std::filesystem;
  const char* env = std::getenv("KILN_CACHE_DIR");
  const std::string saved = env ? env : "";
  const fs::path root = fs::temp_directory_path() / ("kiln_bench_cache." + std::to_string(::getpid()));
  fs::create_directories(root);
  auto use_dir = [](const fs::path& dir) { ::setenv("KILN_CACHE_DIR", dir.c_str(), 1); };
  auto eager = latency_workload();
  const double eager_ms = eager_step_ms(*eager);
  auto first_call = [](const std::shared_ptr<Classifier>& twin) {
    auto step = jit::compile([twin](const Tensor&) { return bench::classifier_step(*twin); }, native("mlp_step"));
    auto t0 = Clock::now();
    benchmark::DoNotOptimize(step(twin->x).impl());
    return seconds_since(t0);
  };
  use_dir(root / "warm");
  if (cache != KernelCache::Cold) {  // fill the caches once (kernels already in memory would not be written to disk)
    jit::reset();
    fusion::clear_memory_cache();
    first_call(latency_workload());
  }
  jit::Stats sum;
  int64_t n = 0;
  double total_s = 0;
  for (auto _ : state) {
    auto twin = latency_workload();
    jit::reset();
    if (cache == KernelCache::Cold) use_dir(root / ("cold" + std::to_string(n)));
    if (cache != KernelCache::WarmMemory) fusion::clear_memory_cache();
    const double secs = first_call(twin);
    state.SetIterationTime(secs);
    total_s += secs;
    const jit::Stats s = jit::stats();
    sum.capture_ms += s.capture_ms;
    sum.passes_ms += s.passes_ms;
    sum.fusion_ms += s.fusion_ms;
    sum.codegen_ms += s.codegen_ms;
    sum.kernels_compiled += s.kernels_compiled;
    sum.kernel_cache_hits += s.kernel_cache_hits;
    ++n;
  }
  if (saved.empty()) ::unsetenv("KILN_CACHE_DIR");
  else ::setenv("KILN_CACHE_DIR", saved.c_str(), 1);
  std::error_code ec;
  fs::remove_all(root, ec);
  const double d = static_cast<double>(std::max<int64_t>(n, 1));
  state.counters["capture_ms"] = sum.capture_ms / d;
  state.counters["passes_ms"] = sum.passes_ms / d;
  state.counters["fusion_ms"] = sum.fusion_ms / d;
  state.counters["codegen_ms"] = sum.codegen_ms / d;
  state.counters["kernels_compiled"] = static_cast<double>(sum.kernels_compiled) / d;
  state.counters["kernel_cache_hits"] = static_cast<double>(sum.kernel_cache_hits) / d;
  state.counters["eager_step_ms"] = eager_ms;
  state.counters["of_eager_step"] = total_s * 1e3 / d / eager_ms;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = bench_threads();
  kiln::set_num_threads(threads);
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--compile-latency") == 0) return compile_latency();
  bench::measure_ceilings();
  benchmark::AddCustomContext("threads", std::to_string(threads));
  using benchmark::kMicrosecond;
  using benchmark::kMillisecond;
  benchmark::RegisterBenchmark("Triad_16M", BM_Triad)->Unit(kMillisecond)->UseRealTime();
  register_workload("Chain_16M", chain_workload(k16M), kMillisecond, 1);
  register_workload("Chain_1K", chain_workload(1024), kMicrosecond, 64);
  register_workload("SoftmaxWritten_4096x1024", softmax_workload(), kMillisecond, 1, {"builtin"});
  register_workload("LayerNormWritten_4096x1024", layer_norm_workload(), kMillisecond, 1, {"builtin"});
  benchmark::RegisterBenchmark("Chain_16M/bounds", BM_ChainBounds)->Unit(kMillisecond)->UseRealTime()->MinTime(paired_min_time());
  benchmark::RegisterBenchmark("SoftmaxWritten_4096x1024/bounds", BM_SoftmaxBounds)
      ->Unit(kMillisecond)
      ->UseRealTime()
      ->MinTime(paired_min_time());
  register_workload("MLPStep_SGDMomentum_b64", mlp_workload(Opt::SGDMomentum, 64), kMillisecond, 2);
  register_workload("MLPStep_Adam_b64", mlp_workload(Opt::Adam, 64), kMillisecond, 2);
  register_workload("MLPStep_Adam_b512", mlp_workload(Opt::Adam, 512), kMillisecond, 1);
  register_workload("EncoderLayer_fwd_bwd", encoder_workload(), kMillisecond, 1);
  register_workload("EncoderLayer_fwd", encoder_forward_workload(), kMillisecond, 1);
  register_workload("CNNStep_SGDMomentum_b32", cnn_workload(32), kMillisecond, 2);
  for (auto [name, cache] : {std::pair{"cold", KernelCache::Cold}, std::pair{"warm_disk", KernelCache::WarmDisk},
                             std::pair{"warm_memory", KernelCache::WarmMemory}})
    benchmark::RegisterBenchmark((std::string("CompileLatency_MLPStep_Adam_b64/") + name).c_str(), BM_CompileLatency, cache)
        ->UseManualTime()
        ->Unit(kMillisecond);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
