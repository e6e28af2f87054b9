#pragma once
// Counter-based random numbers (Philox4x32-10, Salmon et al. 2011). A value depends only on
// (seed, offset, element index), never on the thread that computes it, so results are the same
// for any thread count and a recorded (seed, offset) pair replays a call exactly.
#include <array>
#include <cstdint>
#include <mutex>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace kiln {

// What one random op consumes: the key and the first counter of its reserved range.
struct PhiloxKey {
  uint64_t seed = 0;
  uint64_t offset = 0;
};

namespace philox {

inline constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
inline constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
inline constexpr int kRounds = 10;

// One Philox4x32-10 block: 128 random bits for a 128-bit counter and a 64-bit key.
inline std::array<uint32_t, 4> block(std::array<uint32_t, 4> c, std::array<uint32_t, 2> k) {
  for (int r = 0; r < kRounds; ++r) {
    uint64_t p0 = uint64_t(kM0) * c[0], p1 = uint64_t(kM1) * c[2];
    c = {uint32_t(p1 >> 32) ^ c[1] ^ k[0], uint32_t(p1), uint32_t(p0 >> 32) ^ c[3] ^ k[1], uint32_t(p0)};
    k[0] += kW0;
    k[1] += kW1;
  }
  return c;
}

// kLanes consecutive blocks, counters (key.offset + first .. + kLanes - 1), written
// structure-of-arrays (out[word][lane]). With AVX2 the rounds run 8 lanes per instruction
// (compilers do not vectorise the 32x32->64 multiplies of the scalar form).
inline constexpr int kLanes = 16;
inline void blocks(const PhiloxKey& key, uint64_t first, uint32_t (&out)[4][kLanes]) {
  const uint64_t base = key.offset + first;
#if defined(__AVX2__)
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(kM0)), m1 = _mm256_set1_epi32(static_cast<int>(kM1));
  // lo/hi 32-bit halves of a * m for 8 unsigned lanes.
  auto mulhilo = [](__m256i a, __m256i m, __m256i& lo, __m256i& hi) {
    __m256i even = _mm256_mul_epu32(a, m);
    __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
    lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
    hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  };
  for (int h = 0; h < kLanes; h += 8) {
    alignas(32) uint32_t lo32[8], hi32[8];
    for (int j = 0; j < 8; ++j) {
      uint64_t c = base + uint64_t(h + j);
      lo32[j] = uint32_t(c);
      hi32[j] = uint32_t(c >> 32);
    }
    __m256i c0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(lo32));
    __m256i c1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(hi32));
    __m256i c2 = _mm256_setzero_si256(), c3 = _mm256_setzero_si256();
    uint32_t k0 = uint32_t(key.seed), k1 = uint32_t(key.seed >> 32);
    for (int r = 0; r < kRounds; ++r) {
      __m256i lo0, hi0, lo1, hi1;
      mulhilo(c0, m0, lo0, hi0);
      mulhilo(c2, m1, lo1, hi1);
      c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(static_cast<int>(k0)));
      c1 = lo1;
      c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(static_cast<int>(k1)));
      c3 = lo0;
      k0 += kW0;
      k1 += kW1;
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[0] + h), c0);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[1] + h), c1);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[2] + h), c2);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[3] + h), c3);
  }
#else
  for (int j = 0; j < kLanes; ++j) {
    uint64_t c = base + uint64_t(j);
    auto b = block({uint32_t(c), uint32_t(c >> 32), 0, 0}, {uint32_t(key.seed), uint32_t(key.seed >> 32)});
    for (int w = 0; w < 4; ++w) out[w][j] = b[w];
  }
#endif
}

// Bits to floating point in [0, 1) (or (0, 1] for the `_open0` forms), exactly representable.
// (Signed conversions: AVX2 has no unsigned-to-float instruction.)
inline float uniform_f32(uint32_t w) { return float(static_cast<int32_t>(w >> 8)) * 0x1.0p-24f; }
inline float uniform_f32_open0(uint32_t w) { return float(static_cast<int32_t>((w >> 8) + 1u)) * 0x1.0p-24f; }
inline double uniform_f64(uint32_t hi, uint32_t lo) {
  return double(static_cast<int64_t>(((uint64_t(hi) << 32) | lo) >> 11)) * 0x1.0p-53;
}
inline double uniform_f64_open0(uint32_t hi, uint32_t lo) {
  return double(static_cast<int64_t>((((uint64_t(hi) << 32) | lo) >> 11) + 1u)) * 0x1.0p-53;
}
// An integer in [0, range) from random bits, by multiply-high (Lemire) instead of a division.
inline uint64_t below32(uint32_t w, uint64_t range) { return (uint64_t(w) * range) >> 32; }  // range <= 2^32
inline uint64_t below64(uint64_t r, uint64_t range) { return uint64_t((unsigned __int128)r * range >> 64); }
// Threshold t such that P(w < t) = p for a uniform 32-bit word w; exact for p = 0 and p = 1.
inline uint64_t bernoulli_threshold(double p) { return uint64_t(p * 4294967296.0); }

}  // namespace philox

// A seed and a running offset. Each random op reserves a range of counters atomically, so that
// concurrent callers never share counters.
class Generator {
 public:
  static constexpr uint64_t kDefaultSeed = 67280421310721ull;  // PyTorch's default seed
  explicit Generator(uint64_t seed = kDefaultSeed) : seed_(seed) {}

  void manual_seed(uint64_t seed);  // also rewinds the offset to 0
  uint64_t seed() const;
  uint64_t offset() const;
  void set_offset(uint64_t offset);
  // Returns the key for a call that uses `counters` Philox blocks and advances the offset.
  PhiloxKey reserve(uint64_t counters);

 private:
  mutable std::mutex mu_;
  uint64_t seed_;
  uint64_t offset_ = 0;
};

Generator& default_generator();

}  // namespace kiln
