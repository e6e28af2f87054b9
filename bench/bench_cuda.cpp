// CUDA benchmarks (issue 7), for a GPU machine (scripts/gpu-check.sh runs them). Every benchmark
// synchronises the device at the end of each iteration, so times are wall times of finished work.
//   Copy_D2D_64M          device-to-device copy of 16M float32 (the bandwidth ceiling, read + write)
//   Chain_16M/...         ((x*1.5 + y).relu() * z).tanh() + x: eager CUDA ops vs jit::compile (one
//                         NVRTC kernel); GBps counts 16 bytes per element; of_copy = GBps / the copy's
//   Chain_1K/...          the same chain on 1K elements (launch-bound): eager, compiled, CUDA graph
//   SoftmaxWritten/...    max, sub, exp, sum, div over [4096, 1024]: eager, compiled, built-in softmax
//   LayerNormWritten/...  mean, var, rsqrt ... over [4096, 1024]: eager, compiled, built-in layer_norm
//   MLPStep_b64/...       784-512-512-10 MLP, cross_entropy, SGD momentum: eager vs compiled
// GBps counters are bytes/s (divide by 1e9). Without a GPU each benchmark reports an error saying
// why and the binary exits 0. Ratios (compiled vs eager, of the copy) are printed by scripts/gpu-check.sh.
#include <benchmark/benchmark.h>
#include <kiln/kiln.h>

#include "bench/workloads.h"

namespace kiln::bench {
namespace {

const Device kGpu(kCUDA, 0);

bool skip_without_gpu(benchmark::State& state) {
  if (cuda::is_available()) return false;
  state.SkipWithError(("no CUDA device: " + cuda::unavailable_reason()).c_str());
  return true;
}

void sync() { cuda::synchronize(0); }

void BM_Copy_D2D_64M(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  Tensor x = randn({1 << 24}).to(kGpu), y = empty({1 << 24}, TensorOptions(kFloat32).device(kGpu));
  for (auto _ : state) {
    y.copy_(x);
    sync();
  }
  const double bytes = 2.0 * 4 * (1 << 24);
  state.counters["GBps"] = benchmark::Counter(bytes * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

Tensor chain(const Tensor& x, const Tensor& y, const Tensor& z) { return ((x * 1.5 + y).relu() * z).tanh() + x; }

void BM_Chain_16M(benchmark::State& state, bool compiled) {
  if (skip_without_gpu(state)) return;
  manual_seed(0);
  Tensor x = randn({1 << 24}).to(kGpu), y = randn({1 << 24}).to(kGpu), z = randn({1 << 24}).to(kGpu);
  auto f = jit::compile(chain);
  Tensor out;
  for (int i = 0; i < 3; ++i) out = compiled ? f(x, y, z) : chain(x, y, z);
  sync();
  for (auto _ : state) {
    out = compiled ? f(x, y, z) : chain(x, y, z);
    sync();
  }
  state.counters["GBps"] =
      benchmark::Counter(16.0 * (1 << 24) * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

// Launch-overhead bound: 1K elements, eager (6 launches), compiled (1 fused kernel), and compiled
// as a CUDA graph (CompileOptions::cuda_graphs: one graph launch plus the input/output copies).
void BM_Chain_1K(benchmark::State& state, int mode) {
  if (skip_without_gpu(state)) return;
  manual_seed(0);
  Tensor x = randn({1024}).to(kGpu), y = randn({1024}).to(kGpu), z = randn({1024}).to(kGpu);
  jit::CompileOptions o;
  o.cuda_graphs = mode == 2;
  auto f = jit::compile(chain, o);
  Tensor out;
  for (int i = 0; i < 3; ++i) out = mode == 0 ? chain(x, y, z) : f(x, y, z);
  sync();
  for (auto _ : state) {
    out = mode == 0 ? chain(x, y, z) : f(x, y, z);
    sync();
  }
  state.counters["cuda_graph_plans"] = static_cast<double>(jit::stats().cuda_graph_plans);
}

Tensor softmax_written(const Tensor& x) {
  Tensor e = (x - x.amax({-1}, true)).exp();
  return e / e.sum({-1}, true);
}
Tensor layer_norm_written(const Tensor& x, const Tensor& w, const Tensor& b) {
  Tensor m = x.mean({-1}, true);
  Tensor v = x.var({-1}, 0, true);
  return (x - m) * (v + 1e-5).rsqrt() * w + b;
}

// Times run() (one [4096, 1024] float32 pass: 8 bytes per element moved at least).
template <class Run>
void time_row_pass(benchmark::State& state, Run&& run) {
  Tensor out = run();
  sync();
  for (auto _ : state) {
    out = run();
    sync();
  }
  state.counters["GBps"] = benchmark::Counter(8.0 * 4096 * 1024 * static_cast<double>(state.iterations()),
                                              benchmark::Counter::kIsRate);
}

void BM_SoftmaxWritten(benchmark::State& state, int mode) {  // 0 eager, 1 compiled, 2 built-in
  if (skip_without_gpu(state)) return;
  manual_seed(0);
  Tensor x = randn({4096, 1024}).to(kGpu);
  auto f = jit::compile(softmax_written);
  time_row_pass(state, [&] { return mode == 0 ? softmax_written(x) : mode == 1 ? f(x) : softmax(x, -1); });
}

void BM_LayerNormWritten(benchmark::State& state, int mode) {
  if (skip_without_gpu(state)) return;
  manual_seed(0);
  Tensor x = randn({4096, 1024}).to(kGpu), w = randn({1024}).to(kGpu), b = randn({1024}).to(kGpu);
  auto f = jit::compile(layer_norm_written);
  time_row_pass(state, [&] {
    return mode == 0 ? layer_norm_written(x, w, b) : mode == 1 ? f(x, w, b) : layer_norm(x, {1024}, w, b);
  });
}

void BM_MLPStep_b64(benchmark::State& state, bool compiled) {
  if (skip_without_gpu(state)) return;
  auto s = make_mlp(512, Opt::SGDMomentum, 64);
  s->model->to(kGpu);
  s->opt = make_optimizer(Opt::SGDMomentum, s->model->parameters());
  Tensor x = s->x.to(kGpu), y = s->y.to(kGpu);
  auto step = [s](const Tensor& xb, const Tensor& yb) {
    s->opt->zero_grad();
    Tensor loss = cross_entropy(s->model->forward(xb), yb);
    loss.backward();
    s->opt->step();
    return loss;
  };
  auto f = jit::compile(step);
  for (int i = 0; i < 3; ++i) compiled ? f(x, y) : step(x, y);
  sync();
  for (auto _ : state) {
    Tensor l = compiled ? f(x, y) : step(x, y);
    sync();
  }
  state.counters["host_fallbacks"] = static_cast<double>(cuda::host_fallback_counts().size());
}

BENCHMARK(BM_Copy_D2D_64M)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Chain_16M, eager, false)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Chain_16M, compiled, true)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Chain_1K, eager, 0)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Chain_1K, compiled, 1)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Chain_1K, cuda_graph, 2)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_SoftmaxWritten, eager, 0)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_SoftmaxWritten, compiled, 1)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_SoftmaxWritten, builtin, 2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_LayerNormWritten, eager, 0)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_LayerNormWritten, compiled, 1)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_LayerNormWritten, builtin, 2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_MLPStep_b64, eager, false)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_MLPStep_b64, compiled, true)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace kiln::bench

BENCHMARK_MAIN();
