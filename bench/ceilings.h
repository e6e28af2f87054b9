#pragma once
// The machine's ceilings, measured at start-up in each benchmark process, so that every workload
// can report the share of its ceiling it reaches, on the same machine and under the same load:
//   triad   STREAM triad a = b + s*c on 16M float32 through kiln's thread pool (12 bytes/element):
//           the memory-bandwidth ceiling of bandwidth-bound work (counters GBps, of_triad);
//   sgemm   oneDNN's dnnl_sgemm called directly on 1024x1024 float32 matrices: the compute
//           ceiling of GEMM-bound work (counters GFLOPs, of_sgemm).
// Both are the best of 10 runs; they appear in the JSON context as triad_GBps and sgemm_GFLOPs.
// Shares are fractions (of_triad 0.92: 92% of the triad's bandwidth).
#include <benchmark/benchmark.h>
#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace kiln::bench {

inline constexpr int64_t kTriadElems = int64_t(1) << 24;  // 3 x 64 MiB: far beyond the caches
inline constexpr int64_t kSgemmN = 1024;

struct Ceilings {
  double triad_gbps = 0;
  double sgemm_gflops = 0;
};
inline Ceilings& ceilings() {
  static Ceilings c;
  return c;
}

inline double seconds_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

struct TriadArrays {
  std::vector<float> a, b, c;
  TriadArrays() : a(kTriadElems, 0.0f), b(kTriadElems, 1.0f), c(kTriadElems, 2.0f) {}
  void run(float s) {
    float* __restrict pa = a.data();
    const float* __restrict pb = b.data();
    const float* __restrict pc = c.data();
    cpu::parallel_for(kTriadElems, cpu::kParallelGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) pa[i] = pb[i] + s * pc[i];
    });
  }
  static constexpr double bytes() { return 12.0 * static_cast<double>(kTriadElems); }
};

inline double measure_triad_gbps() {
  TriadArrays t;
  t.run(3.0f);  // first touch
  double best = 1e30;
  for (int rep = 0; rep < 10; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    t.run(3.0f);
    best = std::min(best, seconds_between(t0, std::chrono::steady_clock::now()));
  }
  benchmark::DoNotOptimize(t.a.data());
  return TriadArrays::bytes() / best / 1e9;
}

inline double measure_sgemm_gflops(int64_t n = kSgemmN) {
  std::vector<float> a(static_cast<size_t>(n * n), 1.0f), b(static_cast<size_t>(n * n), 0.5f), c(static_cast<size_t>(n * n));
  dnnl_sgemm('N', 'N', n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);  // oneDNN builds its kernel
  double best = 1e30;
  for (int rep = 0; rep < 10; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    dnnl_sgemm('N', 'N', n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    best = std::min(best, seconds_between(t0, std::chrono::steady_clock::now()));
  }
  benchmark::DoNotOptimize(c.data());
  const double d = static_cast<double>(n);
  return 2.0 * d * d * d / best / 1e9;
}

// Measures both ceilings and records them in the JSON context. Call after setting the thread count.
inline void measure_ceilings() {
  Ceilings& c = ceilings();
  c.triad_gbps = measure_triad_gbps();
  c.sgemm_gflops = measure_sgemm_gflops();
  benchmark::AddCustomContext("triad_GBps", std::to_string(c.triad_gbps));
  benchmark::AddCustomContext("sgemm_GFLOPs", std::to_string(c.sgemm_gflops));
}

// Counters of a call that moves `bytes` (its minimal traffic: inputs read once, outputs written
// once; 0 when not bandwidth-bound) and does `flops` GEMM flops (0 when not GEMM-bound) in `secs`.
inline void report_ceiling_share(benchmark::State& state, double bytes, double flops, double secs,
                                 const std::string& suffix = "") {
  if (secs <= 0) return;
  const Ceilings& c = ceilings();
  if (bytes > 0) {
    const double gbps = bytes / secs / 1e9;
    state.counters["GBps" + suffix] = gbps;
    if (c.triad_gbps > 0) state.counters["of_triad" + suffix] = gbps / c.triad_gbps;
  }
  if (flops > 0) {
    const double gflops = flops / secs / 1e9;
    state.counters["GFLOPs" + suffix] = gflops;
    if (c.sgemm_gflops > 0) state.counters["of_sgemm" + suffix] = gflops / c.sgemm_gflops;
  }
}

// FLOPs of a GEMM [m, k] x [k, n], and of its share of a training step: forward, weight gradient,
// and input gradient when the input needs one (2 or 3 GEMMs of the same size).
inline double gemm_flops(double m, double k, double n) { return 2 * m * k * n; }
inline double train_flops(double forward, bool input_grad) { return forward * (input_grad ? 3 : 2); }

}  // namespace kiln::bench
