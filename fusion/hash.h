#pragma once
// Stable 64-bit hash for kernel-cache file names, symbols and checksums (the same in every
// process and build): FNV-1a with a splitmix64 finaliser, since FNV-1a alone mixes the last
// bytes poorly. Header-only so that the CPU (LLVM) and CUDA (NVRTC) caches share it whichever of
// them the build has.
#include <cstdint>
#include <string>
#include <string_view>

namespace kiln::fusion {

inline uint64_t hash64(std::string_view data, uint64_t seed = 0) {
  uint64_t h = 0xcbf29ce484222325ull ^ (seed * 0x9e3779b97f4a7c15ull);
  for (unsigned char c : data) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h;
}

// 16 lower-case hex digits.
inline std::string hex64(uint64_t v) {
  static const char* const kDigits = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i, v >>= 4) s[static_cast<size_t>(i)] = kDigits[v & 15];
  return s;
}

}  // namespace kiln::fusion
