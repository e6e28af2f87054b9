#pragma once
// Counter-based random numbers (Philox4x32-10, Salmon et al. 2011). A value depends only on
// (seed, offset, element index), never on the thread that computes it, so results are the same
// for any thread count and a recorded (seed, offset) pair replays a call exactly.
#include <array>
#include <cstdint>
#include <mutex>

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
// structure-of-arrays (out[word][lane]) so that the compiler vectorises the rounds.
inline constexpr int kLanes = 16;
inline void blocks(const PhiloxKey& key, uint64_t first, uint32_t (&out)[4][kLanes]) {
  uint32_t c0[kLanes], c1[kLanes], c2[kLanes], c3[kLanes];
  const uint64_t base = key.offset + first;
  for (int j = 0; j < kLanes; ++j) {
    uint64_t c = base + uint64_t(j);
    c0[j] = uint32_t(c);
    c1[j] = uint32_t(c >> 32);
    c2[j] = 0;
    c3[j] = 0;
  }
  uint32_t k0 = uint32_t(key.seed), k1 = uint32_t(key.seed >> 32);
  for (int r = 0; r < kRounds; ++r) {
    for (int j = 0; j < kLanes; ++j) {
      uint64_t p0 = uint64_t(kM0) * c0[j], p1 = uint64_t(kM1) * c2[j];
      uint32_t n0 = uint32_t(p1 >> 32) ^ c1[j] ^ k0, n2 = uint32_t(p0 >> 32) ^ c3[j] ^ k1;
      c1[j] = uint32_t(p1);
      c3[j] = uint32_t(p0);
      c0[j] = n0;
      c2[j] = n2;
    }
    k0 += kW0;
    k1 += kW1;
  }
  for (int j = 0; j < kLanes; ++j) {
    out[0][j] = c0[j];
    out[1][j] = c1[j];
    out[2][j] = c2[j];
    out[3][j] = c3[j];
  }
}

// Bits to floating point in [0, 1) (or (0, 1] for the `_open0` forms), exactly representable.
inline float uniform_f32(uint32_t w) { return float(w >> 8) * 0x1.0p-24f; }
inline float uniform_f32_open0(uint32_t w) { return float((w >> 8) + 1u) * 0x1.0p-24f; }
inline double uniform_f64(uint32_t hi, uint32_t lo) {
  return double(((uint64_t(hi) << 32) | lo) >> 11) * 0x1.0p-53;
}
inline double uniform_f64_open0(uint32_t hi, uint32_t lo) {
  return double((((uint64_t(hi) << 32) | lo) >> 11) + 1u) * 0x1.0p-53;
}
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
