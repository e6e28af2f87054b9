#pragma once
// Branch-free float math that GCC/Clang auto-vectorise (glibc's expf is a scalar call).
// Accuracy: exp_f32 (degree-7 polynomial after Cody-Waite reduction) is within 2 ulp of the correctly rounded result on [-103, 88.7], returns
// +inf above 88.72, 0 below -103.97 (with gradual underflow in between), NaN for NaN.
#include <bit>
#include <cstdint>

namespace kiln::math {

// Always inlined: an out-of-line call per element would block vectorisation.
[[gnu::always_inline]] inline float exp_f32(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693145751953125f;
  constexpr float kLn2Lo = 1.42860682030941723212e-6f;
  constexpr float kHi = 88.72283935546875f;
  constexpr float kLo = -104.0f;  // exp(-104) rounds to +0, so clamping there needs no select
  float xc = x > kHi ? kHi : (x < kLo ? kLo : x);
  float n = __builtin_nearbyintf(xc * kLog2e);
  // Explicit FMAs: -std=c++20 turns off FP contraction, and the polynomial needs them for speed
  // and accuracy.
  float r = __builtin_fmaf(-n, kLn2Hi, xc);
  r = __builtin_fmaf(-n, kLn2Lo, r);
  float p = 1.0f / 5040.0f;
  p = __builtin_fmaf(p, r, 1.0f / 720.0f);
  p = __builtin_fmaf(p, r, 1.0f / 120.0f);
  p = __builtin_fmaf(p, r, 1.0f / 24.0f);
  p = __builtin_fmaf(p, r, 1.0f / 6.0f);
  p = __builtin_fmaf(p, r, 0.5f);
  p = __builtin_fmaf(p, r, 1.0f);
  p = __builtin_fmaf(p, r, 1.0f);
  // 2^n as two factors so that results in the subnormal range stay exact.
  int32_t ni = static_cast<int32_t>(n);
  int32_t n1 = ni >> 1;
  int32_t n2 = ni - n1;
  float s1 = std::bit_cast<float>((n1 + 127) << 23);
  float s2 = std::bit_cast<float>((n2 + 127) << 23);
  float y = p * s1 * s2;
  // NaN needs no select: it flows through the clamp and the polynomial.
  return x > kHi ? __builtin_inff() : y;
}

}  // namespace kiln::math
