#pragma once
// The CPU loop every random kernel uses. Work goes in batches of philox::kLanes blocks (64
// words): batch b takes the counters offset + 16 b .. offset + 16 b + 15, and its element k
// (of ValuesPerBatch) reads words k, k + ValuesPerBatch, ... of the batch's words laid out
// word-major (words[w * 16 + lane]). Values thus depend on (seed, offset, index) only, threads
// may split the work anywhere, and the per-batch transforms are flat loops the compiler
// vectorises.
#include <algorithm>

#include "core/random.h"
#include "kernels/cpu/parallel.h"

namespace kiln::cpu {

inline constexpr int kBatchWords = 4 * philox::kLanes;  // 64 random 32-bit words per batch

// Writes out[0, n). gen(first, words, dst, m) writes the m <= ValuesPerBatch values of elements
// first .. first + m - 1 to dst[0, m), from the batch's 64 words.
template <int ValuesPerBatch, class T, class Gen>
void random_fill(T* out, int64_t n, const PhiloxKey& key, Gen&& gen) {
  static_assert(ValuesPerBatch == kBatchWords || ValuesPerBatch == kBatchWords / 2);
  const int64_t nbatches = (n + ValuesPerBatch - 1) / ValuesPerBatch;
  // Philox costs a few times a simple pointwise op per element.
  const int64_t grain = std::max<int64_t>(1, kParallelGrain / 4 / ValuesPerBatch);
  parallel_for(nbatches, grain, [&](int64_t b0, int64_t b1) {
    alignas(32) uint32_t r[4][philox::kLanes];
    for (int64_t b = b0; b < b1; ++b) {
      philox::blocks(key, uint64_t(b) * philox::kLanes, r);
      const int64_t first = b * ValuesPerBatch;
      const int m = static_cast<int>(std::min<int64_t>(ValuesPerBatch, n - first));
      if (m == ValuesPerBatch) gen(first, &r[0][0], out + first, ValuesPerBatch);
      else gen(first, &r[0][0], out + first, m);
    }
  });
}

}  // namespace kiln::cpu
