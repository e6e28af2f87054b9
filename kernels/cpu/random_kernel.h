#pragma once
// The CPU loop every random kernel uses: element i takes its bits from Philox block
// (offset + i / PerBlock), so values depend on (seed, offset, i) only and threads may split the
// work anywhere.
#include <algorithm>

#include "core/random.h"
#include "kernels/cpu/parallel.h"

namespace kiln::cpu {

// Writes out[0, n). gen(e, w, dst, m) writes the m <= PerBlock values of elements e .. e+m-1
// to dst[0, m) from the four words w of block e / PerBlock.
template <int PerBlock, class T, class Gen>
void random_fill(T* out, int64_t n, const PhiloxKey& key, Gen&& gen) {
  static_assert(PerBlock >= 1 && PerBlock <= 4);
  constexpr int64_t kBatch = int64_t(philox::kLanes) * PerBlock;  // elements per batch of blocks
  const int64_t nbatches = (n + kBatch - 1) / kBatch;
  // Philox costs ~4x a simple pointwise op per element.
  const int64_t grain = std::max<int64_t>(1, kParallelGrain / 4 / kBatch);
  parallel_for(nbatches, grain, [&](int64_t b0, int64_t b1) {
    uint32_t r[4][philox::kLanes];
    for (int64_t b = b0; b < b1; ++b) {
      philox::blocks(key, uint64_t(b) * philox::kLanes, r);
      const int64_t first = b * kBatch;
      const int64_t lanes = std::min<int64_t>(philox::kLanes, (n - first + PerBlock - 1) / PerBlock);
      for (int64_t j = 0; j < lanes; ++j) {
        const uint32_t w[4] = {r[0][j], r[1][j], r[2][j], r[3][j]};
        const int64_t e = first + j * PerBlock;
        const int m = static_cast<int>(std::min<int64_t>(PerBlock, n - e));
        if (m == PerBlock) {
          gen(e, w, out + e, PerBlock);
        } else {
          gen(e, w, out + e, m);
        }
      }
    }
  });
}

}  // namespace kiln::cpu
