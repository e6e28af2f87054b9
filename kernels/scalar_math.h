// Branch-free float math that GCC/Clang auto-vectorise (glibc's expf/logf/tanhf/erff are scalar calls).
// Accuracy (measured against float64 std:: results, see tests/ops_pointwise_test.cpp):
// - exp_f32 (degree-7 polynomial after Cody-Waite reduction) is within 2 ulp of the correctly rounded result on [-103, 88.7], returns
//   +inf above 88.72, 0 below -103.97 (with gradual underflow in between), NaN for NaN.
// - log_f32 (mantissa reduced to [sqrt(1/2), sqrt(2)), f - f^2/2 + f^3*P7(f)) is within 1 ulp over all positive floats,
//   subnormals included; log(+-0) = -inf, log(x < 0) = NaN, log(+inf) = +inf, NaN for NaN.
// - tanh_f32 (odd degree-17 polynomial for |x| < 0.9, else 1 - 2/(exp(2|x|)+1)) is within 2 ulp everywhere, saturates to
//   +-1, keeps the sign of +-0, NaN for NaN.
// - erf_f32 (odd degree-13 polynomial for |x| < 0.9, else 1 - exp(-x^2)*P10(|x|), 1 from |x| >= 3.92) is within 2 ulp
//   everywhere, saturates to +-1, keeps the sign of +-0, NaN for NaN.
#include <bit>
#include <cstddef>
#include <cstdint>

namespace kiln::math {

// Always inlined: an out-of-line call per element would block vectorisation.
// exp's reduction and polynomial: x = n ln2 + r (Cody-Waite), exp(x) = 2^n * p(r). Shared by
// exp_f32 and tanh's exp_f32_moderate, so both give the same bits.
struct ExpReducedF32 {
  float p;
  int32_t n;
};
[[gnu::always_inline]] inline ExpReducedF32 exp_reduce_f32(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693145751953125f;
  constexpr float kLn2Lo = 1.42860682030941723212e-6f;
  float n = __builtin_nearbyintf(x * kLog2e);
  // Explicit FMAs: -std=c++20 turns off FP contraction, and the polynomial needs them for speed
  // and accuracy.
  float r = __builtin_fmaf(-n, kLn2Hi, x);
  r = __builtin_fmaf(-n, kLn2Lo, r);
  float p = 1.0f / 5040.0f;
  p = __builtin_fmaf(p, r, 1.0f / 720.0f);
  p = __builtin_fmaf(p, r, 1.0f / 120.0f);
  p = __builtin_fmaf(p, r, 1.0f / 24.0f);
  p = __builtin_fmaf(p, r, 1.0f / 6.0f);
  p = __builtin_fmaf(p, r, 0.5f);
  p = __builtin_fmaf(p, r, 1.0f);
  p = __builtin_fmaf(p, r, 1.0f);
  return {p, static_cast<int32_t>(n)};
}

// Always inlined: an out-of-line call per element would block vectorisation.
[[gnu::always_inline]] inline float exp_f32(float x) {
  constexpr float kHi = 88.72283935546875f;
  constexpr float kLo = -104.0f;  // exp(-104) rounds to +0, so clamping there needs no select
  float xc = x > kHi ? kHi : (x < kLo ? kLo : x);
  auto [p, ni] = exp_reduce_f32(xc);
  // 2^n as two factors so that results in the subnormal range stay exact.
  int32_t n1 = ni >> 1;
  int32_t n2 = ni - n1;
  float s1 = std::bit_cast<float>((n1 + 127) << 23);
  float s2 = std::bit_cast<float>((n2 + 127) << 23);
  float y = p * s1 * s2;
  // NaN needs no select: it flows through the clamp and the polynomial.
  return x > kHi ? __builtin_inff() : y;
}

// Horner with explicit FMAs (-std=c++20 turns off FP contraction): c0 + t*(c1 + t*(c2 + ...)).
// Recursive rather than a loop, so that the vectoriser sees straight-line code.
template <class... C>
[[gnu::always_inline]] inline float horner_f32(float t, float c0, C... cs) {
  if constexpr (sizeof...(cs) == 0) return c0;
  else return __builtin_fmaf(horner_f32(t, cs...), t, c0);
}

[[gnu::always_inline]] inline float log_f32(float x) {
  constexpr float kLn2Hi = 0.693145751953125f;
  constexpr float kLn2Lo = 1.42860682030941723212e-6f;
  // Subnormals: scale by 2^23 first so that the mantissa is normalised.
  bool sub = x < 0x1p-126f;
  float xs = sub ? x * 0x1p23f : x;
  int32_t eadj = sub ? -23 : 0;
  // Split x = 2^e * m with m in [sqrt(1/2), sqrt(2)): subtracting the bits of sqrt(1/2) moves the
  // exponent boundary there.
  int32_t ix = std::bit_cast<int32_t>(xs) - 0x3f3504f3;
  int32_t e = (ix >> 23);  // arithmetic shift (C++20)
  float m = std::bit_cast<float>(std::bit_cast<int32_t>(xs) - (e << 23));
  float ef = static_cast<float>(e + eadj);
  float f = m - 1.0f;  // exact (Sterbenz), in [-0.293, 0.415)
  // log(1+f) = f - f^2/2 + f^3 * P(f); P is a weighted least-squares (Lawson) fit of degree 7.
  float f2 = f * f;
  float p = horner_f32(f,
      0.3333333134651184f, -0.250008225440979f, 0.20001226663589478f,
      -0.16623353958129883f, 0.14201776683330536f, -0.13160233199596405f,
      0.12761467695236206f, -0.07634225487709045f);
  float r = __builtin_fmaf(f2 * f, p, -0.5f * f2);
  r = __builtin_fmaf(ef, kLn2Lo, r);
  r = r + f;
  r = __builtin_fmaf(ef, kLn2Hi, r);
  r = x == __builtin_inff() ? x : r;
  r = x == 0.0f ? -__builtin_inff() : r;
  // Negative inputs and NaN (the comparison is false for NaN).
  return x >= 0.0f ? r : __builtin_nanf("");
}

// exp(x) for x in [0, 20] (and NaN), for tanh: exp_f32's reduction and polynomial (so its
// results) without the clamps and the two-factor scaling only overflow and subnormals need.
[[gnu::always_inline]] inline float exp_f32_moderate(float x) {
  auto [p, ni] = exp_reduce_f32(x);
  return p * std::bit_cast<float>((ni + 127) << 23);
}

[[gnu::always_inline]] inline float tanh_f32(float x) {
  uint32_t sign = std::bit_cast<uint32_t>(x) & 0x80000000u;
  float a = std::bit_cast<float>(std::bit_cast<uint32_t>(x) & 0x7fffffffu);
  // |x| < 0.9: tanh(a) = a + a^3 * P(a^2), P of degree 8.
  float t = a * a;
  float small = __builtin_fmaf(a * t, horner_f32(t,
      -0.3333333432674408f, 0.13333329558372498f, -0.05396750941872597f,
      0.021863101050257683f, -0.008831786923110485f, 0.003496782388538122f,
      -0.0012716158526018262f, 0.00036083211307413876f, -5.5626042012590915e-05f), a);
  // Otherwise 1 - 2/(e^(2a)+1): no cancellation there, and exp(2a) = inf gives exactly 1.
  // 2a is capped at 20 (NaN passes): from there on the result rounds to 1 anyway.
  float a2 = 2.0f * a;
  a2 = a2 > 20.0f ? 20.0f : a2;
  float big = 1.0f - 2.0f / (exp_f32_moderate(a2) + 1.0f);
  // NaN takes the second arm and stays NaN.
  float r = a < 0.9f ? small : big;
  return std::bit_cast<float>(std::bit_cast<uint32_t>(r) | sign);
}

[[gnu::always_inline]] inline float erf_f32(float x) {
  uint32_t sign = std::bit_cast<uint32_t>(x) & 0x80000000u;
  float a = std::bit_cast<float>(std::bit_cast<uint32_t>(x) & 0x7fffffffu);
  // |x| < 0.9: erf(a) = a + a * P(a^2), P(0) = 2/sqrt(pi) - 1, degree 6.
  float t = a * a;
  float small = __builtin_fmaf(a, horner_f32(t,
      0.12837916612625122f, -0.37612634897232056f, 0.11283715069293976f,
      -0.026860512793064117f, 0.005203866865485907f, -0.0008175717084668577f,
      8.513397915521637e-05f), a);
  // 0.9 <= |x| < 3.92: erf(a) = 1 - exp(-a^2) * Q(a), Q ~ erfc(a) e^(a^2), degree 10. a^2 is split
  // into t + tlo exactly so that exp sees no rounding error: exp(-a^2) ~ exp(-t) * (1 - tlo).
  constexpr float kMax = 3.92f;  // erf rounds to 1 from here on
  float ac = a < kMax ? a : kMax;
  float tc = ac * ac;
  float tlo = __builtin_fmaf(ac, ac, -tc);
  float ex = exp_f32(-tc);
  ex = __builtin_fmaf(-ex, tlo, ex);
  float big = __builtin_fmaf(-ex, horner_f32(ac,
      0.9983243346214294f, -1.115524411201477f, 0.9551112055778503f,
      -0.6573643684387207f, 0.3635011613368988f, -0.15796926617622375f,
      0.05217846855521202f, -0.012526504695415497f, 0.0020461149979382753f,
      -0.00020226107153575867f, 9.093016160477418e-06f), 1.0f);
  big = a < kMax ? big : 1.0f;
  // NaN: a < 0.9 is false, ac = kMax (comparison false), so NaN must be passed explicitly.
  float r = a < 0.9f ? small : big;
  r = a != a ? a : r;
  return std::bit_cast<float>(std::bit_cast<uint32_t>(r) | sign);
}

}  // namespace kiln::math
