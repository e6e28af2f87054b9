// Eager CPU op benchmarks. Bandwidth-bound ops are reported against a STREAM-style triad measured
// in the same process (counters `triad_GBps`, `of_triad`); mm against oneDNN's sgemm called
// directly (`dnnl_GFLOPs`, `of_sgemm`); the ceilings come from bench/ceilings.h.
// Run: ./build/bench/bench_eager --benchmark_out=eager.json --benchmark_out_format=json
#include <benchmark/benchmark.h>
#include <kiln/kiln.h>
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "bench/ceilings.h"

using namespace kiln;

namespace {

constexpr int64_t kN = bench::kTriadElems;  // 16M elements

// `t0`: taken just before the timed loop; the loop's wall time gives the shares of the ceilings.
double loop_seconds(benchmark::State& st, std::chrono::steady_clock::time_point t0) {
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return secs / static_cast<double>(std::max<int64_t>(st.iterations(), 1));
}

void report_bandwidth(benchmark::State& st, int64_t bytes_per_iter, std::chrono::steady_clock::time_point t0) {
  st.SetBytesProcessed(st.iterations() * bytes_per_iter);
  st.counters["triad_GBps"] = bench::ceilings().triad_gbps;
  bench::report_ceiling_share(st, double(bytes_per_iter), 0, loop_seconds(st, t0));
}

void BM_Triad(benchmark::State& st) {
  std::vector<float> a(kN), b(kN, 1.0f), c(kN, 2.0f);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : st) {
    float* __restrict pa = a.data();
    const float* __restrict pb = b.data();
    const float* __restrict pc = c.data();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < kN; ++i) pa[i] = pb[i] + 3.0f * pc[i];
    benchmark::ClobberMemory();
  }
  report_bandwidth(st, 3 * 4 * kN, t0);
}
BENCHMARK(BM_Triad)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_EagerAdd(benchmark::State& st) {
  Tensor x = linspace(0.0, 1.0, kN), y = linspace(0.0, 1.0, kN);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : st) benchmark::DoNotOptimize(add(x, y));
  report_bandwidth(st, 3 * 4 * kN, t0);
}
BENCHMARK(BM_EagerAdd)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_EagerMul(benchmark::State& st) {
  Tensor x = linspace(0.0, 1.0, kN), y = linspace(0.0, 1.0, kN);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : st) benchmark::DoNotOptimize(mul(x, y));
  report_bandwidth(st, 3 * 4 * kN, t0);
}
BENCHMARK(BM_EagerMul)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_EagerExp(benchmark::State& st) {
  Tensor x = linspace(0.0, 1.0, kN);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : st) benchmark::DoNotOptimize(exp(x));
  report_bandwidth(st, 2 * 4 * kN, t0);
}
BENCHMARK(BM_EagerExp)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_EagerLog(benchmark::State& st) {
  Tensor x = linspace(0.5, 4.0, kN);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : st) benchmark::DoNotOptimize(log(x));
  report_bandwidth(st, 2 * 4 * kN, t0);
}
BENCHMARK(BM_EagerLog)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_EagerTanh(benchmark::State& st) {
  Tensor x = linspace(-3.0, 3.0, kN);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : st) benchmark::DoNotOptimize(tanh(x));
  report_bandwidth(st, 2 * 4 * kN, t0);
}
BENCHMARK(BM_EagerTanh)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_EagerMulScalar(benchmark::State& st) {
  Tensor x = linspace(0.0, 1.0, kN);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : st) benchmark::DoNotOptimize(x * 1.5);
  report_bandwidth(st, 2 * 4 * kN, t0);
}
BENCHMARK(BM_EagerMulScalar)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_EagerSum(benchmark::State& st) {
  Tensor x = linspace(0.0, 1.0, kN);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : st) benchmark::DoNotOptimize(x.sum());
  report_bandwidth(st, 4 * kN, t0);
}
BENCHMARK(BM_EagerSum)->UseRealTime()->Unit(benchmark::kMillisecond);

// A chain of fresh 64 MiB temporaries: with the caching allocator (arg 1) vs without (arg 0).
void BM_EagerChainAllocator(benchmark::State& st) {
  set_cpu_cache_limit(st.range(0) ? (size_t(4) << 30) : 0);
  cpu_empty_cache();
  Tensor x = linspace(0.0, 1.0, kN);
  for (auto _ : st) benchmark::DoNotOptimize(((x * 1.5 + 1.0).relu() * x).tanh());
  set_cpu_cache_limit(size_t(4) << 30);
  st.SetLabel(st.range(0) ? "cached" : "uncached");
}
BENCHMARK(BM_EagerChainAllocator)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_Mm(benchmark::State& st) {
  const int64_t n = st.range(0);
  Tensor a = randn({n, n}), b = randn({n, n});
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : st) benchmark::DoNotOptimize(mm(a, b));
  double flops = 2.0 * double(n) * double(n) * double(n);
  st.counters["dnnl_GFLOPs"] = bench::ceilings().sgemm_gflops;
  bench::report_ceiling_share(st, 0, flops, loop_seconds(st, t0));
}
BENCHMARK(BM_Mm)->Arg(1024)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_DnnlSgemmDirect(benchmark::State& st) {
  const int64_t n = st.range(0);
  std::vector<float> a(n * n, 1.0f), b(n * n, 0.5f), c(n * n);
  for (auto _ : st) {
    dnnl_sgemm('N', 'N', n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    benchmark::ClobberMemory();
  }
  double flops = 2.0 * double(n) * double(n) * double(n);
  st.counters["GFLOPs"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_DnnlSgemmDirect)->Arg(1024)->UseRealTime()->Unit(benchmark::kMillisecond);

// Per-op overhead on tiny tensors (dispatch cost).
void BM_EagerAddSmall(benchmark::State& st) {
  Tensor x = randn({st.range(0)}), y = randn({st.range(0)});
  for (auto _ : st) benchmark::DoNotOptimize(add(x, y));
}
BENCHMARK(BM_EagerAddSmall)->Arg(1)->Arg(1024)->Unit(benchmark::kMicrosecond);

// The CNN training step's layer ops (bench/workloads.h, batch 32): relu's backward (a where with a
// random mask), 2x2 max pooling and the argmax its backward recomputes, and the two convolutions
// forward and backward. Arg 0: the first layer (1 -> 16 channels, 28x28), arg 1: the second
// (16 -> 32 channels, 14x14).
void BM_ReluBackwardWhere(benchmark::State& st) {
  manual_seed(0);
  Tensor x = randn({32, 16, 28, 28}), g = randn({32, 16, 28, 28}), zero = zeros({});
  Tensor mask = x > 0;
  for (auto _ : st) benchmark::DoNotOptimize(where(mask, g, zero));
}
BENCHMARK(BM_ReluBackwardWhere)->UseRealTime()->Unit(benchmark::kMicrosecond);

void BM_MaxPool2d(benchmark::State& st) {
  manual_seed(0);
  Tensor x = randn({32, 16, 28, 28});
  for (auto _ : st) {
    if (st.range(0)) benchmark::DoNotOptimize(max_pool2d_indices(x, {2, 2}, {2, 2}));
    else benchmark::DoNotOptimize(max_pool2d(x, {2, 2}));
  }
  st.SetLabel(st.range(0) ? "indices" : "values");
}
BENCHMARK(BM_MaxPool2d)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMicrosecond);

struct ConvLayer {
  Tensor x, w, gy;
};
ConvLayer conv_layer(int64_t which) {
  manual_seed(0);
  const int64_t c = which ? 16 : 1, o = which ? 32 : 16, hw = which ? 14 : 28;
  return {randn({32, c, hw, hw}), randn({o, c, 3, 3}), randn({32, o, hw, hw})};
}

void BM_Conv2d(benchmark::State& st) {
  ConvLayer l = conv_layer(st.range(0));
  for (auto _ : st) benchmark::DoNotOptimize(conv2d(l.x, l.w, std::nullopt, {1}, {1}));
}
BENCHMARK(BM_Conv2d)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMicrosecond);

void BM_Conv2dBackwardInput(benchmark::State& st) {
  ConvLayer l = conv_layer(st.range(0));
  for (auto _ : st) benchmark::DoNotOptimize(conv2d_backward_input(l.gy, l.w, l.x.sizes(), {1}, {1}));
}
BENCHMARK(BM_Conv2dBackwardInput)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMicrosecond);

void BM_Conv2dBackwardWeight(benchmark::State& st) {
  ConvLayer l = conv_layer(st.range(0));
  for (auto _ : st) benchmark::DoNotOptimize(conv2d_backward_weight(l.gy, l.x, l.w.sizes(), {1}, {1}));
}
BENCHMARK(BM_Conv2dBackwardWeight)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMicrosecond);

// pow by a constant exponent: 2 is a multiply, 3 a libm call per element.
void BM_PowScalar(benchmark::State& st) {
  manual_seed(0);
  Tensor x = randn({1024, 1024});
  for (auto _ : st) benchmark::DoNotOptimize(x.pow(static_cast<double>(st.range(0))));
}
BENCHMARK(BM_PowScalar)->Arg(2)->Arg(3)->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  bench::measure_ceilings();
  benchmark::AddCustomContext("threads", std::to_string(get_num_threads()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
