#pragma once
// One thread pool for the whole library: OpenMP (libgomp), shared with oneDNN's OMP runtime so
// two pools never fight over the two cores.
#include <cstdint>

namespace kiln::cpu {

// Elements below which a loop stays on one thread (thread wake-up costs ~ microseconds).
inline constexpr int64_t kParallelGrain = 32768;

int max_threads();
bool in_parallel_region();

// Calls fn(begin, end) over [0, n) split into contiguous pieces, one per thread, when n (in
// units of `cost_per_item`-weighted work) is large enough; otherwise runs inline.
template <class Fn>
void parallel_for(int64_t n, int64_t grain, Fn&& fn);

}  // namespace kiln::cpu

#include <omp.h>

namespace kiln::cpu {

template <class Fn>
void parallel_for(int64_t n, int64_t grain, Fn&& fn) {
  if (n <= 0) return;
  int nt = max_threads();
  if (nt <= 1 || n <= grain || in_parallel_region()) {
    fn(int64_t(0), n);
    return;
  }
  int64_t max_chunks = (n + grain - 1) / grain;
  int threads = static_cast<int>(max_chunks < nt ? max_chunks : nt);
#pragma omp parallel num_threads(threads)
  {
    int tid = omp_get_thread_num();
    int cnt = omp_get_num_threads();
    int64_t chunk = (n + cnt - 1) / cnt;
    int64_t b = tid * chunk;
    int64_t e = b + chunk < n ? b + chunk : n;
    if (b < e) fn(b, e);
  }
}

}  // namespace kiln::cpu
