#pragma once
// Small vectorisable building blocks shared by the reduction kernels: multi-accumulator sums
// and maxima over contiguous runs, and a branch-free float exp that GCC vectorises (glibc's
// vector expf is only declared under -ffast-math).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "core/dtype.h"

namespace kiln::cpu {

// Lanes for independent accumulators: four AVX2 registers' worth of A.
template <class A>
inline constexpr int kLanes = static_cast<int>(128 / sizeof(A)) < 4 ? 4 : static_cast<int>(128 / sizeof(A));

template <class A, class T>
inline A load_as(const T& v) {
  if constexpr (std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>) return static_cast<A>(static_cast<float>(v));
  else return static_cast<A>(v);
}

template <class A>
inline A tree_sum(A* acc, int n) {
  for (int w = n / 2; w > 0; w /= 2)
    for (int k = 0; k < w; ++k) acc[k] += acc[k + w];
  return acc[0];
}

// Sum of f(p[i * s]) for i in [0, n) with kLanes accumulators (vectorised when s == 1).
template <class A, class T, class F>
inline A lane_sum(const T* __restrict p, int64_t n, int64_t s, F f) {
  constexpr int L = kLanes<A>;
  A acc[L];
  for (int k = 0; k < L; ++k) acc[k] = A(0);
  int64_t i = 0;
  if (s == 1) {
    for (; i + L <= n; i += L)
      for (int k = 0; k < L; ++k) acc[k] += f(load_as<A>(p[i + k]));
  } else {
    for (; i + L <= n; i += L)
      for (int k = 0; k < L; ++k) acc[k] += f(load_as<A>(p[(i + k) * s]));
  }
  A tail = A(0);
  for (; i < n; ++i) tail += f(load_as<A>(p[i * s]));
  return tree_sum(acc, L) + tail;
}

// NaN-propagating max (IsMax) or min: a NaN, once seen, sticks.
template <bool IsMax, class A>
inline A pick(A acc, A x) {
  if constexpr (std::is_floating_point_v<A>) {
    if constexpr (IsMax) return (x > acc || x != x) ? x : acc;
    else return (x < acc || x != x) ? x : acc;
  } else {
    if constexpr (IsMax) return x > acc ? x : acc;
    else return x < acc ? x : acc;
  }
}

template <bool IsMax, class A>
inline constexpr A extreme_identity() {
  if constexpr (std::is_same_v<A, bool>) return !IsMax;
  else if constexpr (std::is_floating_point_v<A>)
    return IsMax ? -std::numeric_limits<A>::infinity() : std::numeric_limits<A>::infinity();
  else return IsMax ? std::numeric_limits<A>::lowest() : std::numeric_limits<A>::max();
}

template <bool IsMax, class A, class T>
inline A lane_extreme(const T* __restrict p, int64_t n, int64_t s) {
  constexpr int L = kLanes<A> < 8 ? 8 : kLanes<A>;
  A acc[L];
  for (int k = 0; k < L; ++k) acc[k] = extreme_identity<IsMax, A>();
  int64_t i = 0;
  if (s == 1) {
    for (; i + L <= n; i += L)
      for (int k = 0; k < L; ++k) acc[k] = pick<IsMax>(acc[k], load_as<A>(p[i + k]));
  }
  A r = extreme_identity<IsMax, A>();
  for (; i < n; ++i) r = pick<IsMax>(r, load_as<A>(p[i * s]));
  for (int k = 0; k < L; ++k) r = pick<IsMax>(r, acc[k]);
  return r;
}

// exp for float, branch free (Cephes polynomial, ~1 ulp, subnormal results included); exact
// at 0, inf, -inf and NaN. 2^n is applied as two factors so that n may reach -150..128.
inline float exp_f32(float x) {
  const float hi = 88.72283905f, lo = -103.972077f;
  float xc = x < hi ? x : hi;  // NaN lands on hi, so the int conversion below stays defined
  xc = xc > lo ? xc : lo;
  const float log2e = 1.44269504088896341f;
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  float n = (xc * log2e + magic) - magic;
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float r2 = r * r;
  float y = 1.9875691500E-4f;
  y = y * r + 1.3981999507E-3f;
  y = y * r + 8.3334519073E-3f;
  y = y * r + 4.1665795894E-2f;
  y = y * r + 1.6666665459E-1f;
  y = y * r + 5.0000001201E-1f;
  y = y * r2 + r + 1.0f;
  const int32_t ni = static_cast<int32_t>(n);
  const int32_t n1 = ni / 2, n2 = ni - n1;
  const uint32_t b1 = static_cast<uint32_t>(n1 + 127) << 23, b2 = static_cast<uint32_t>(n2 + 127) << 23;
  float s1, s2;
  std::memcpy(&s1, &b1, sizeof s1);
  std::memcpy(&s2, &b2, sizeof s2);
  float out = (y * s1) * s2;
  out = x > hi ? std::numeric_limits<float>::infinity() : out;
  out = x < lo ? 0.0f : out;
  return x != x ? x : out;
}

template <class A>
inline A exp_acc(A x) {
  if constexpr (std::is_same_v<A, float>) return exp_f32(x);
  else return std::exp(x);
}

// The shift logsumexp/softmax subtract: the max, or 0 when the max is infinite.
template <class A>
inline A lse_shift(A m) {
  return std::isinf(m) ? A(0) : m;
}

}  // namespace kiln::cpu
