#include "fusion/llvm_math.h"

#include <llvm/IR/Constants.h>
#include <llvm/IR/DerivedTypes.h>
#include <llvm/IR/Intrinsics.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <tuple>

#include "core/error.h"

// Algorithms, coefficients and measured accuracy: docs/fusion_math.md. Every function is
// straight-line: special inputs are handled with selects, never branches.
// FMA: products written as fma() are llvm.fmuladd, fused where the target has FMA (then the
// f32 functions mirroring kernels/scalar_math.h give eager's bits) and a multiply and an add
// elsewhere; the documented bounds hold both ways (the test runs both). Where a result needs
// the exact error of a product, it comes from Dekker's split, never from fused rounding.

namespace kiln::fusion {
namespace {

using llvm::Value;

llvm::Type* same_shape(llvm::Type* like, llvm::Type* scalar) {
  if (auto* vt = llvm::dyn_cast<llvm::VectorType>(like)) return llvm::VectorType::get(scalar, vt->getElementCount());
  return scalar;
}

// Arithmetic on one floating type (float or double, scalar or vector) and the integer type of
// its bits.
class Em {
 public:
  Em(llvm::IRBuilderBase& b, llvm::Type* ft) : b_(b), ft_(ft) {
    f64_ = ft->getScalarType()->isDoubleTy();
    it_ = same_shape(ft, llvm::Type::getIntNTy(ft->getContext(), f64_ ? 64 : 32));
  }
  bool f64() const { return f64_; }
  llvm::Type* type() const { return ft_; }
  // Double arithmetic for a float32 result (rounded once at the end): ~2^-40 relative error
  // suffices, so the float64 algorithms drop their compensations and shorten polynomials.
  bool for_f32() const { return for_f32_; }
  void set_for_f32() { for_f32_ = true; }

  Value* c(double v) { return llvm::ConstantFP::get(ft_, v); }
  Value* inf(bool negative = false) { return llvm::ConstantFP::getInfinity(ft_, negative); }
  Value* nan() { return llvm::ConstantFP::getNaN(ft_); }
  Value* ci(int64_t v) { return llvm::ConstantInt::get(it_, static_cast<uint64_t>(v), true); }

  Value* add(Value* x, Value* y) { return b_.CreateFAdd(x, y); }
  Value* sub(Value* x, Value* y) { return b_.CreateFSub(x, y); }
  Value* mul(Value* x, Value* y) { return b_.CreateFMul(x, y); }
  Value* div(Value* x, Value* y) { return b_.CreateFDiv(x, y); }
  Value* neg(Value* x) { return b_.CreateFNeg(x); }
  Value* fma(Value* x, Value* y, Value* z) { return b_.CreateIntrinsic(llvm::Intrinsic::fmuladd, {ft_}, {x, y, z}); }
  // c0 + t*(c1 + t*(c2 + ...)), each step an fma.
  Value* horner(Value* t, std::initializer_list<double> cs) {
    Value* p = nullptr;
    for (auto it = cs.end(); it != cs.begin();) {
      --it;
      p = p ? fma(p, t, c(*it)) : c(*it);
    }
    return p;
  }

  Value* lt(Value* x, Value* y) { return b_.CreateFCmpOLT(x, y); }
  Value* le(Value* x, Value* y) { return b_.CreateFCmpOLE(x, y); }
  Value* gt(Value* x, Value* y) { return b_.CreateFCmpOGT(x, y); }
  Value* ge(Value* x, Value* y) { return b_.CreateFCmpOGE(x, y); }
  Value* eq(Value* x, Value* y) { return b_.CreateFCmpOEQ(x, y); }
  Value* is_nan(Value* x) { return b_.CreateFCmpUNO(x, x); }
  Value* sel(Value* cond, Value* x, Value* y) { return b_.CreateSelect(cond, x, y); }

  Value* bits(Value* x) { return b_.CreateBitCast(x, it_); }
  Value* from_bits(Value* i) { return b_.CreateBitCast(i, ft_); }
  Value* iadd(Value* x, Value* y) { return b_.CreateAdd(x, y); }
  Value* isub(Value* x, Value* y) { return b_.CreateSub(x, y); }
  Value* shl(Value* x, int n) { return b_.CreateShl(x, ci(n)); }
  Value* ashr(Value* x, int n) { return b_.CreateAShr(x, ci(n)); }
  Value* lshr(Value* x, int n) { return b_.CreateLShr(x, ci(n)); }
  Value* iand(Value* x, Value* y) { return b_.CreateAnd(x, y); }
  Value* ior(Value* x, Value* y) { return b_.CreateOr(x, y); }
  Value* ilt(Value* x, Value* y) { return b_.CreateICmpSLT(x, y); }
  Value* to_float(Value* i) { return b_.CreateSIToFP(i, ft_); }

  int64_t sign_mask() const { return f64_ ? INT64_MIN : INT64_C(0x80000000); }
  Value* sign_bit(Value* x) { return iand(bits(x), ci(sign_mask())); }
  Value* fabs(Value* x) { return from_bits(iand(bits(x), ci(~sign_mask()))); }
  // Sets the sign bit of a non-negative `x` (NaN included) from `sign` (a sign_bit()).
  Value* with_sign(Value* x, Value* sign) { return from_bits(ior(bits(x), sign)); }

  // Round to nearest, ties to even, for |v| < 2^22 (float) / 2^51 (double): adding 1.5*2^23
  // (2^52) leaves the integer in the low bits. Unlike llvm.rint, this needs no SSE4.1.
  // Returns {n as a float, n as an integer}.
  std::pair<Value*, Value*> round_int(Value* v) {
    double magic = f64_ ? 0x1.8p52 : 0x1.8p23;
    Value* t = add(v, c(magic));
    return {sub(t, c(magic)), isub(bits(t), bits(c(magic)))};
  }
  // 2^n for an integer n in [emin, emax] of the format (a normal number).
  Value* pow2(Value* n) { return from_bits(shl(iadd(n, ci(f64_ ? 1023 : 127)), f64_ ? 52 : 23)); }
  // Exact sum: x + y = hi + lo (Knuth's two-sum, any magnitudes).
  std::pair<Value*, Value*> two_sum(Value* x, Value* y) {
    Value* hi = add(x, y);
    Value* yy = sub(hi, x);
    return {hi, add(sub(x, sub(hi, yy)), sub(y, yy))};
  }
  // Exact product: x*y = hi + lo (Dekker; no overflow for the ranges used here).
  std::pair<Value*, Value*> two_prod(Value* x, Value* y) {
    Value* split = c(f64_ ? 134217729.0 : 4097.0);  // 2^27 + 1, 2^12 + 1
    auto halves = [&](Value* v) {
      Value* t = mul(v, split);
      Value* h = sub(t, sub(t, v));
      return std::pair{h, sub(v, h)};
    };
    auto [xh, xl] = halves(x);
    auto [yh, yl] = halves(y);
    Value* hi = mul(x, y);
    Value* lo = add(add(add(sub(mul(xh, yh), hi), mul(xh, yl)), mul(xl, yh)), mul(xl, yl));
    return {hi, lo};
  }

 private:
  llvm::IRBuilderBase& b_;
  llvm::Type* ft_;
  llvm::Type* it_;
  bool f64_ = false;
  bool for_f32_ = false;
};

// ---- Float32: the algorithms of kernels/scalar_math.h, operation for operation ------------

// exp's reduction and polynomial, as kernels/scalar_math.h's exp_reduce_f32: {p, n} with
// exp(x) = 2^n * p.
std::pair<Value*, Value*> exp_reduce_f32(Em& e, Value* x) {
  const double kLog2e = 1.44269504088896341f;
  const double kLn2Hi = 0.693145751953125f;
  const double kLn2Lo = 1.42860682030941723212e-6f;
  auto [n, ni] = e.round_int(e.mul(x, e.c(kLog2e)));
  Value* r = e.fma(e.neg(n), e.c(kLn2Hi), x);
  r = e.fma(e.neg(n), e.c(kLn2Lo), r);
  Value* p = e.horner(r, {1.0, 1.0, 0.5, 1.0f / 6.0f, 1.0f / 24.0f, 1.0f / 120.0f, 1.0f / 720.0f, 1.0f / 5040.0f});
  return {p, ni};
}

Value* exp_f32(Em& e, Value* x) {
  const double kHi = 88.72283935546875f;
  const double kLo = -104.0f;  // exp(-104) rounds to +0
  Value* xc = e.sel(e.gt(x, e.c(kHi)), e.c(kHi), e.sel(e.lt(x, e.c(kLo)), e.c(kLo), x));
  auto [p, ni] = exp_reduce_f32(e, xc);
  // 2^n as two factors so that subnormal results are rounded once.
  Value* n1 = e.ashr(ni, 1);
  Value* n2 = e.isub(ni, n1);
  Value* y = e.mul(e.mul(p, e.pow2(n1)), e.pow2(n2));
  return e.sel(e.gt(x, e.c(kHi)), e.inf(), y);  // NaN flows through the clamp and polynomial
}

Value* log_f32(Em& e, Value* x) {
  const double kLn2Hi = 0.693145751953125f;
  const double kLn2Lo = 1.42860682030941723212e-6f;
  Value* sub = e.lt(x, e.c(0x1p-126));  // subnormals: normalise the mantissa first
  Value* xs = e.sel(sub, e.mul(x, e.c(0x1p23)), x);
  Value* eadj = e.sel(sub, e.ci(-23), e.ci(0));
  // x = 2^k * m with m in [sqrt(1/2), sqrt(2)).
  Value* ix = e.isub(e.bits(xs), e.ci(0x3f3504f3));
  Value* k = e.ashr(ix, 23);
  Value* m = e.from_bits(e.isub(e.bits(xs), e.shl(k, 23)));
  Value* kf = e.to_float(e.iadd(k, eadj));
  Value* f = e.sub(m, e.c(1.0));
  Value* f2 = e.mul(f, f);
  Value* p = e.horner(f, {0.3333333134651184f, -0.250008225440979f, 0.20001226663589478f, -0.16623353958129883f,
                          0.14201776683330536f, -0.13160233199596405f, 0.12761467695236206f, -0.07634225487709045f});
  Value* r = e.fma(e.mul(f2, f), p, e.mul(e.c(-0.5), f2));
  r = e.fma(kf, e.c(kLn2Lo), r);
  r = e.add(r, f);
  r = e.fma(kf, e.c(kLn2Hi), r);
  r = e.sel(e.eq(x, e.inf()), x, r);
  r = e.sel(e.eq(x, e.c(0.0)), e.inf(true), r);
  return e.sel(e.ge(x, e.c(0.0)), r, e.nan());  // x < 0 and NaN
}

// exp(x) for x in [0, 20] (and NaN): tanh's large branch. The same reduction and polynomial as
// exp_f32, so the same results, without the clamps and the two-factor scaling that only the
// overflow and subnormal ranges need.
Value* exp_f32_moderate(Em& e, Value* x) {
  auto [p, ni] = exp_reduce_f32(e, x);
  return e.mul(p, e.pow2(ni));
}

Value* tanh_f32(Em& e, Value* x) {
  Value* sign = e.sign_bit(x);
  Value* a = e.fabs(x);
  // |x| < 0.9: tanh(a) = a + a^3 * P(a^2).
  Value* t = e.mul(a, a);
  Value* small = e.fma(e.mul(a, t),
                       e.horner(t, {-0.3333333432674408f, 0.13333329558372498f, -0.05396750941872597f,
                                    0.021863101050257683f, -0.008831786923110485f, 0.003496782388538122f,
                                    -0.0012716158526018262f, 0.00036083211307413876f, -5.5626042012590915e-05f}),
                       a);
  // Otherwise 1 - 2/(e^(2a)+1): no cancellation, and e^(2a) = inf gives exactly 1.
  // 2a is capped at 20 (NaN passes): from there on the result rounds to 1 anyway.
  Value* a2 = e.mul(e.c(2.0), a);
  a2 = e.sel(e.gt(a2, e.c(20.0)), e.c(20.0), a2);
  Value* big = e.sub(e.c(1.0), e.div(e.c(2.0), e.add(exp_f32_moderate(e, a2), e.c(1.0))));
  Value* r = e.sel(e.lt(a, e.c(0.9f)), small, big);  // NaN takes `big` and stays NaN
  return e.with_sign(r, sign);
}

Value* erf_f32(Em& e, Value* x) {
  Value* sign = e.sign_bit(x);
  Value* a = e.fabs(x);
  // |x| < 0.9: erf(a) = a + a * P(a^2).
  Value* t = e.mul(a, a);
  Value* small = e.fma(a,
                       e.horner(t, {0.12837916612625122f, -0.37612634897232056f, 0.11283715069293976f,
                                    -0.026860512793064117f, 0.005203866865485907f, -0.0008175717084668577f,
                                    8.513397915521637e-05f}),
                       a);
  // 0.9 <= |x| < 3.92: erf(a) = 1 - exp(-a^2) * Q(a), with a^2 = tc + tlo exactly and
  // exp(-a^2) ~ exp(-tc) * (1 - tlo).
  const double kMax = 3.92f;  // erf rounds to 1 from here on
  Value* ac = e.sel(e.lt(a, e.c(kMax)), a, e.c(kMax));
  auto [tc, tlo] = e.two_prod(ac, ac);
  Value* ex = exp_f32(e, e.neg(tc));
  ex = e.fma(e.neg(ex), tlo, ex);
  Value* big = e.fma(e.neg(ex),
                     e.horner(ac, {0.9983243346214294f, -1.115524411201477f, 0.9551112055778503f,
                                   -0.6573643684387207f, 0.3635011613368988f, -0.15796926617622375f,
                                   0.05217846855521202f, -0.012526504695415497f, 0.0020461149979382753f,
                                   -0.00020226107153575867f, 9.093016160477418e-06f}),
                     e.c(1.0));
  big = e.sel(e.lt(a, e.c(kMax)), big, e.c(1.0));
  Value* r = e.sel(e.lt(a, e.c(0.9f)), small, big);
  r = e.sel(e.is_nan(a), a, r);
  return e.with_sign(r, sign);
}


// ---- Float64 (and the float32 functions eager lacks, evaluated in double) ------------------

// ln 2 = kLn2Hi + kLn2Lo, kLn2Hi with 32 significant bits so that n * kLn2Hi is exact for
// |n| < 2^21.
constexpr double kLn2Hi = 0x1.62e42fee00000p-1;
constexpr double kLn2Lo = 0x1.a39ef35793c76p-33;
constexpr double kLog2e = 0x1.71547652b82fep+0;

// e^r - 1 = r + r^2/2 + r^3 * expm1_q1(r) on |r| <= ln2/2: minimax (for the relative error of
// (e^r - 1 - r)/r^2 = 1/2 + r q1(r); the fit's constant term rounds to exactly 1/2), degree 10.
Value* expm1_q1(Em& e, Value* r) {
  return e.horner(r, {0x1.5555555555557p-3, 0x1.555555555554ep-5, 0x1.11111111100eep-7, 0x1.6c16c16c1a073p-10,
                      0x1.a01a01abdf014p-13, 0x1.a01a019062673p-16, 0x1.71de024b41046p-19, 0x1.27e510da22774p-22,
                      0x1.af4db8a8c7d59p-26, 0x1.1f19f4d96d6b2p-29});
}

// 2^n for n in [-1076, 1025], as two normal factors so that a subnormal product is rounded once.
std::pair<Value*, Value*> pow2_split(Em& e, Value* n) {
  Value* q = e.lshr(e.iadd(n, e.ci(2048)), 1);  // floor(n/2) + 1024, without an i64 ashr (AVX2 has none)
  Value* s1 = e.from_bits(e.shl(e.isub(q, e.ci(1)), 52));
  Value* s2 = e.from_bits(e.shl(e.isub(e.iadd(n, e.ci(2047)), q), 52));
  return {s1, s2};
}

// e^(r + rlo) - 1 = hi + lo for |r| <= ln2/2 and |rlo| <= ulp(r): r + r^2/2 is summed exactly
// (r^2 from a two-product; fast two-sum, |r| >= r^2/2), so that only the small r^3 q1(r) + rlo
// carries rounding errors, ~2^-56 of the result. (e^x - 1 near ln2/2 has the result at a third
// of the terms, where a plain r + r^2 q(r) costs ~0.4 ulp.)
std::pair<Value*, Value*> expm1_reduced(Em& e, Value* r, Value* rlo) {
  if (e.for_f32()) {  // Taylor to r^9 (error 2^-37 of the result), plainly summed
    Value* w = e.mul(e.mul(r, r), e.horner(r, {1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040,
                                               1.0 / 40320, 1.0 / 362880}));
    return {e.add(r, e.add(w, rlo)), e.c(0.0)};
  }
  auto [sq, sq_lo] = e.two_prod(r, r);
  Value* s = e.add(r, e.mul(e.c(0.5), sq));
  Value* s_err = e.add(e.sub(r, s), e.mul(e.c(0.5), sq));
  Value* lo = e.add(s_err, e.add(e.add(e.mul(e.c(0.5), sq_lo), e.mul(e.mul(r, sq), expm1_q1(e, r))), rlo));
  Value* hi = e.add(s, lo);
  return {hi, e.add(e.sub(s, hi), lo)};
}

// x - n ln2 = r + rlo exactly enough (two-sum) for n = round(x / ln2); n < 2^21.
std::pair<Value*, Value*> reduce_ln2(Em& e, Value* x, Value* n) {
  Value* rhi = e.sub(x, e.mul(n, e.c(kLn2Hi)));  // exact
  if (e.for_f32()) return {e.sub(rhi, e.mul(n, e.c(kLn2Lo))), e.c(0.0)};
  return e.two_sum(rhi, e.neg(e.mul(n, e.c(kLn2Lo))));
}

// 1 + (hi + lo), rounded once (nearly): |hi| < 1.
Value* one_plus(Em& e, Value* hi, Value* lo) {
  if (e.for_f32()) return e.add(e.c(1.0), e.add(hi, lo));
  Value* s = e.add(e.c(1.0), hi);
  Value* err = e.add(e.sub(e.c(1.0), s), hi);
  return e.add(s, e.add(err, lo));
}

Value* exp_f64(Em& e, Value* x) {
  const double kHi = 709.79;  // above the overflow threshold 709.7827..., still n <= 1024
  const double kLo = -746.0;  // exp(-746) rounds to +0
  Value* xc = e.sel(e.gt(x, e.c(kHi)), e.c(kHi), e.sel(e.lt(x, e.c(kLo)), e.c(kLo), x));
  auto [n, ni] = e.round_int(e.mul(xc, e.c(kLog2e)));
  auto [r, rlo] = reduce_ln2(e, xc, n);
  auto [hi, lo] = expm1_reduced(e, r, rlo);
  auto [s1, s2] = pow2_split(e, ni);
  Value* y = e.mul(e.mul(one_plus(e, hi, lo), s1), s2);
  return e.sel(e.gt(x, e.c(kHi)), e.inf(), y);  // NaN flows through
}

Value* exp2_f64(Em& e, Value* x) {
  const double kHi = 1025, kLo = -1080;
  Value* xc = e.sel(e.gt(x, e.c(kHi)), e.c(kHi), e.sel(e.lt(x, e.c(kLo)), e.c(kLo), x));
  auto [n, ni] = e.round_int(xc);
  Value* r = e.sub(xc, n);  // exact, in [-1/2, 1/2]
  // r * ln2 = th + tl to ~2^-100 relative.
  Value* th = e.mul(r, e.c(0x1.62e42fefa39efp-1));
  Value* tl = e.c(0.0);
  if (!e.for_f32()) {
    std::tie(th, tl) = e.two_prod(r, e.c(0x1.62e42fefa39efp-1));
    tl = e.add(tl, e.mul(r, e.c(0x1.abc9e3b39803fp-56)));
  }
  auto [hi, lo] = expm1_reduced(e, th, tl);
  auto [s1, s2] = pow2_split(e, ni);
  Value* y = e.mul(e.mul(one_plus(e, hi, lo), s1), s2);
  return e.sel(e.gt(x, e.c(kHi)), e.inf(), y);
}

// e^x - 1 as hi + lo for x in [-40, 709.79] (n = round(x / ln2) in [-58, 1024]), hi + lo
// normalised: 2 * ((u - 1/2) + u * em) with u = 2^(n-1) (finite up to n = 1024) and
// em = e^r - 1; u - 1/2 is kept exactly (two-sum) and u * em is exact.
std::pair<Value*, Value*> expm1_dd(Em& e, Value* xc) {
  auto [n, ni] = e.round_int(e.mul(xc, e.c(kLog2e)));
  auto [r, rlo] = reduce_ln2(e, xc, n);
  auto [h, l] = expm1_reduced(e, r, rlo);
  Value* u = e.pow2(e.isub(ni, e.ci(1)));
  if (e.for_f32()) return {e.mul(e.c(2.0), e.add(e.add(e.sub(u, e.c(0.5)), e.mul(u, h)), e.mul(u, l))), e.c(0.0)};
  auto [a, aerr] = e.two_sum(u, e.c(-0.5));
  Value* b = e.mul(u, h);
  Value* hi = e.add(a, b);  // fast two-sum: |u - 1/2| >= |u * em| for every n
  Value* lo = e.add(e.add(e.sub(a, hi), b), e.add(aerr, e.mul(u, l)));
  Value* y = e.add(hi, lo);
  return {e.mul(e.c(2.0), y), e.mul(e.c(2.0), e.add(e.sub(hi, y), lo))};
}

Value* expm1_f64(Em& e, Value* x) {
  const double kHi = 709.79, kLo = -40.0;  // e^-40 - 1 rounds to -1
  Value* xc = e.sel(e.gt(x, e.c(kHi)), e.c(kHi), e.sel(e.lt(x, e.c(kLo)), e.c(kLo), x));
  Value* y = expm1_dd(e, xc).first;
  y = e.sel(e.gt(x, e.c(kHi)), e.inf(), y);
  // Tiny x (zeros and subnormals included): e^x - 1 rounds to x.
  return e.sel(e.lt(e.fabs(x), e.c(0x1p-54)), x, y);
}

// log(1 + f) = f - hfsq + s*(hfsq + R) with s = f/(2+f), hfsq = f^2/2, R = s^2 * P(s^2)
// (= 2 atanh(s) - 2s over s): x = 2^k * (1 + f), 1 + f in [sqrt(1/2), sqrt(2)).
struct LogParts {
  Value *k, *f, *hfsq, *s, *r;
};

// `x` positive and normal (others give garbage the callers select away).
LogParts log_parts(Em& e, Value* x) {
  Value* ix = e.iadd(e.bits(x), e.ci(0x3ff0000000000000 - 0x3fe6a09e667f3bcd));  // the exponent of x/sqrt(1/2), +1023
  Value* kb = e.lshr(ix, 52);
  Value* m = e.from_bits(e.isub(e.bits(x), e.shl(e.isub(kb, e.ci(1023)), 52)));
  // k as a double without an i64 -> f64 conversion (AVX2 has none): 2^52*1.5 + k - 2^52*1.5.
  Value* k = e.sub(e.from_bits(e.iadd(e.bits(e.c(0x1.8p52)), e.isub(kb, e.ci(1023)))), e.c(0x1.8p52));
  Value* f = e.sub(m, e.c(1.0));
  Value* s = e.div(f, e.add(e.c(2.0), f));
  Value* z = e.mul(s, s);
  Value* r = e.mul(z, e.for_f32() ? e.horner(z, {0x1.5555555564f97p-1, 0x1.999998ca73626p-2, 0x1.2493243fa4fdbp-2,
                                                  0x1.c67ab364be016p-3, 0x1.8c8ea26c1e05fp-3})  // degree 4: 2^-36
                                   : e.horner(z, {0x1.5555555555558p-1, 0x1.99999999952a7p-2, 0x1.2492492df7095p-2,
                                                  0x1.c71c62def9b30p-3, 0x1.7462b65730648p-3, 0x1.39fe2ddcc1703p-3,
                                                  0x1.2b5a875510317p-3}));
  Value* hfsq = e.mul(e.c(0.5), e.mul(f, f));
  return {k, f, hfsq, s, r};
}

// Subnormals scaled by 2^54 first; returns the parts with k adjusted.
LogParts log_parts_any(Em& e, Value* x) {
  Value* sub = e.lt(x, e.c(0x1p-1022));
  LogParts p = log_parts(e, e.sel(sub, e.mul(x, e.c(0x1p54)), x));
  p.k = e.sub(p.k, e.sel(sub, e.c(54.0), e.c(0.0)));
  return p;
}

// log(x) for x >= 0 from the result `r` for positive finite x: the special cases of log.
Value* log_specials(Em& e, Value* x, Value* r) {
  r = e.sel(e.eq(x, e.inf()), x, r);
  r = e.sel(e.eq(x, e.c(0.0)), e.inf(true), r);
  return e.sel(e.ge(x, e.c(0.0)), r, e.nan());  // x < 0 and NaN
}

Value* log_f64(Em& e, Value* x) {
  LogParts p = log_parts_any(e, x);
  // k*ln2hi is exact; the small terms are summed first.
  Value* lo = e.add(e.mul(p.s, e.add(p.hfsq, p.r)), e.mul(p.k, e.c(kLn2Lo)));
  Value* r = e.sub(e.mul(p.k, e.c(kLn2Hi)), e.sub(e.sub(p.hfsq, lo), p.f));
  return log_specials(e, x, r);
}

// log_b(x) = k * log_b(2) + log(1+f) * log_b(e), with log(1+f) as hi + lo (hi of 21 bits so that
// hi * chi is exact) and the sum with k * log_b(2) compensated (fast two-sum: |k part| >= |f part|
// whenever k != 0).
Value* log_base_f64(Em& e, Value* x, double chi, double clo, double k_hi, double k_lo) {
  LogParts p = log_parts_any(e, x);
  if (e.for_f32()) {
    Value* l = e.sub(p.f, e.sub(p.hfsq, e.mul(p.s, e.add(p.hfsq, p.r))));
    return log_specials(e, x, e.add(e.mul(p.k, e.c(k_hi + k_lo)), e.mul(l, e.c(chi + clo))));
  }
  Value* hi = e.sub(p.f, p.hfsq);
  hi = e.from_bits(e.iand(e.bits(hi), e.ci(static_cast<int64_t>(0xffffffff00000000))));
  Value* lo = e.add(e.sub(e.sub(p.f, hi), p.hfsq), e.mul(p.s, e.add(p.hfsq, p.r)));
  Value* val_hi = e.mul(hi, e.c(chi));
  Value* val_lo = e.add(e.mul(e.add(lo, hi), e.c(clo)), e.mul(lo, e.c(chi)));
  Value* y = k_hi == 1.0 ? p.k : e.mul(p.k, e.c(k_hi));
  if (k_lo != 0) val_lo = e.add(val_lo, e.mul(p.k, e.c(k_lo)));
  Value* w = e.add(y, val_hi);
  val_lo = e.add(val_lo, e.add(e.sub(y, w), val_hi));
  return log_specials(e, x, e.add(val_lo, w));
}

Value* log2_f64(Em& e, Value* x) {
  return log_base_f64(e, x, 0x1.7154765200000p+0, 0x1.705fc2eefa200p-33, 1.0, 0.0);
}

Value* log10_f64(Em& e, Value* x) {
  return log_base_f64(e, x, 0x1.bcb7b15200000p-2, 0x1.b9438ca9aadd5p-36, 0x1.3441350800000p-2,
                      0x1.f79fef311f12bp-34);
}

Value* log1p_f64(Em& e, Value* x) {
  // u = 1 + x + c exactly (two-sum); log1p(x) = log(u) + c/u.
  Value* one = e.c(1.0);
  Value* u = e.add(one, x);
  Value* bb = e.sub(u, one);
  Value* c = e.add(e.sub(one, e.sub(u, bb)), e.sub(x, bb));
  LogParts p = log_parts(e, u);  // u >= 2^-53 when x > -1: never subnormal
  Value* lo = e.add(e.mul(p.s, e.add(p.hfsq, p.r)), e.add(e.mul(p.k, e.c(kLn2Lo)), e.div(c, u)));
  Value* r = e.sub(e.mul(p.k, e.c(kLn2Hi)), e.sub(e.sub(p.hfsq, lo), p.f));
  r = e.sel(e.eq(x, e.inf()), x, r);
  r = e.sel(e.eq(x, e.c(-1.0)), e.inf(true), r);
  r = e.sel(e.ge(x, e.c(-1.0)), r, e.nan());  // x < -1 and NaN
  // Tiny x (zeros and subnormals included): log1p(x) rounds to x.
  return e.sel(e.lt(e.fabs(x), e.c(0x1p-54)), x, r);
}

Value* tanh_f64(Em& e, Value* x) {
  Value* sign = e.sign_bit(x);
  Value* a = e.fabs(x);
  // tanh(a) = em / (em + 2), em = e^(2a) - 1 in double-double: no cancellation anywhere, and
  // the quotient corrected by its residual (num - q*den)/den. 1 from a > 22 on.
  Value* ac = e.sel(e.gt(a, e.c(22.0)), e.c(22.0), a);
  auto [nh, nl] = expm1_dd(e, e.mul(e.c(2.0), ac));
  auto [dh, dl] = e.two_sum(nh, e.c(2.0));
  dl = e.add(dl, nl);
  Value* q = e.div(nh, dh);
  auto [ph, pl] = e.two_prod(q, dh);
  Value* resid = e.add(e.sub(e.sub(nh, ph), pl), e.sub(nl, e.mul(q, dl)));
  Value* t = e.add(q, e.div(resid, dh));
  t = e.sel(e.lt(a, e.c(0x1p-27)), a, t);  // tanh(a) rounds to a (zeros and subnormals too)
  Value* r = e.sel(e.gt(a, e.c(22.0)), e.c(1.0), t);  // NaN takes t and stays NaN
  return e.with_sign(r, sign);
}

Value* erf_f64(Em& e, Value* x) {
  Value* sign = e.sign_bit(x);
  Value* a = e.fabs(x);
  // |x| < 0.6: erf(a) = a + a * P(a^2), minimax for relative error, degree 9. a + a P(0) is
  // kept exact (two-product, fast two-sum) so that only the smaller a^3 P1(a^2) =
  // a (P(a^2) - P(0)) carries rounding errors.
  const double kP0 = 0x1.06eba8214db69p-3;
  Value* z = e.mul(a, a);
  Value* t = e.mul(e.mul(a, z), e.horner(z,
      {-0x1.812746b0379dep-2, 0x1.ce2f21a041ec2p-4, -0x1.b82ce3121484fp-6, 0x1.565bccedb7106p-8,
       -0x1.c02da968d6811p-11, 0x1.f9a10f1c5b6cdp-14, -0x1.f49096fae6630p-17, 0x1.b4fe1e2f79a8dp-20,
       -0x1.2abff3e0c6c60p-23}));
  auto [p0, p0_lo] = e.two_prod(a, e.c(kP0));
  Value* head = e.add(a, p0);
  Value* small = e.add(head, e.add(e.add(e.add(e.sub(a, head), p0), p0_lo), t));
  // Near the subnormals the two-product underflows: erf(a) = a 2/sqrt(pi) there, scaled up so
  // that the product is rounded once, in the subnormal range.
  Value* tiny = e.mul(e.mul(e.mul(a, e.c(0x1p64)), e.c(0x1.20dd750429b6dp+0)), e.c(0x1p-64));
  small = e.sel(e.lt(a, e.c(0x1p-1000)), tiny, small);
  // 0.6 <= |x| < 0.84375: erf(a) = erf(0.72) + R(a - 0.72), R of degree 11 (there a^3 P1(a^2)
  // would be a quarter of the result and its rounding errors would reach ~0.6 ulp).
  Value* mid = e.add(e.c(0x1.620385b681104p-1), e.horner(e.sub(a, e.c(0.72)),
      {-0x1.7fd5d5f567486p-56, 0x1.5805be0fb00afp-1, -0x1.ef646dd926784p-2, 0x1.0e149e7eb917ap-7,
       0x1.442f49eed1d39p-3, -0x1.89b782d88f1fcp-5, -0x1.f69c28c224e36p-6, 0x1.22e0d47f22473p-6,
       0x1.bac27917aec47p-9, -0x1.05a683de07ee4p-8, -0x1.e4d8ff1bed6c7p-16, 0x1.5567f00c703adp-11}));
  small = e.sel(e.lt(a, e.c(0.6)), small, mid);
  // 0.84375 <= |x| < 6: erf(a) = 1 - exp(-a^2) Q(a), Q(a) = erfc(a) e^(a^2) of degree 22 in
  // a - 1.5, minimax for the relative error of erf. a^2 = th + tl exactly; exp(-a^2) =
  // exp(-th) (1 - tl); 1 - E*Q with the product exact (two-product) and the difference two-summed.
  Value* ac = e.sel(e.gt(a, e.c(6.0)), e.c(6.0), a);
  auto [th, tl] = e.two_prod(ac, ac);
  auto [n, ni] = e.round_int(e.mul(th, e.c(-kLog2e)));
  auto [r, rlo] = reduce_ln2(e, e.neg(th), n);
  auto [h, l] = expm1_reduced(e, r, rlo);
  // exp(-a^2) = 2^n (1 + h + l)(1 - tl), rounded once: 1 + h + (l - tl (1 + h)).
  Value* ex = e.mul(one_plus(e, h, e.sub(l, e.mul(tl, e.add(e.c(1.0), h)))), e.pow2(ni));  // n in [-52, 0]
  Value* q = e.horner(e.sub(ac, e.c(1.5)),
      {0x1.494daffa2ad68p-2, -0x1.4f1988444caefp-3, 0x1.37ea271bc5613p-4, -0x1.0dc51d2942332p-5,
       0x1.b65944f337a0cp-7, -0x1.513ed75fef70bp-8, 0x1.ee705e7d0248dp-10, -0x1.5b0abff05f5cap-11,
       0x1.d4509b2e314b4p-13, -0x1.30c0e99fd950fp-14, 0x1.7f99a9de42ce0p-16, -0x1.d41657de66f68p-18,
       0x1.156a4fc857634p-19, -0x1.3ff27316cc88cp-21, 0x1.67cda9fcbc653p-23, -0x1.8c220934339bap-25,
       0x1.ab9809bb4bac3p-27, -0x1.bb31e92b4e5b6p-29, 0x1.9e44b67050fc0p-31, -0x1.3ce6455fee101p-33,
       0x1.61a67e983c174p-36, -0x1.ef83a6265d719p-40, 0x1.418adb0a29463p-44});
  auto [ph, pl] = e.two_prod(ex, q);
  Value* one = e.c(1.0);
  Value* s = e.sub(one, ph);
  Value* big = e.add(s, e.sub(e.sub(e.sub(one, s), ph), pl));
  Value* res = e.sel(e.lt(a, e.c(0.84375)), small, big);
  res = e.sel(e.is_nan(a), a, res);
  return e.with_sign(res, sign);
}

// float32 sin/cos, evaluated in double. Range reduction for every finite x (Payne-Hanek without a
// table): |x| * 2/pi mod 4 from five 24-bit chunks of 2/pi, the window chosen by the magnitude of
// x with selects (chunks j0..j0+4, j0 = floor((E-2)/24) for x = m 2^E, m < 2^24, so that the
// bit of weight 2 mod 4 is in). Each product
// |x| * chunk is exact (24 x 24 bits); the two leading ones are reduced mod 4 exactly, and the
// rest summed with two-sums, which leaves x mod pi/2 with an absolute error below 2^-70.
Value* sincos_f32(Em& e, llvm::IRBuilderBase& b, Value* x, bool is_cos) {
  Em d(b, same_shape(x->getType(), llvm::Type::getDoubleTy(x->getContext())));
  static constexpr double kChunks[9] = {
      0x1.45f3060000000p-1,   0x1.b939100000000p-26,  0x1.529fc00000000p-52,
      0x1.3abe880000000p-75,  0x1.ea69ba0000000p-97,  0x1.81b6c40000000p-121,
      0x1.2b32780000000p-145, 0x1.0e41040000000p-170, 0x1.fca2c60000000p-193};
  Value* a = e.fabs(x);
  Value* ad = b.CreateFPExt(a, d.type());
  Value* above[4];  // j0 >= 1 .. 4
  for (int i = 0; i < 4; ++i) above[i] = e.ge(a, e.c(std::ldexp(1.0, 49 + 24 * i)));
  Value* t[5];
  for (int i = 0; i < 5; ++i) {
    Value* chunk = d.c(kChunks[i]);
    for (int j = 0; j < 4; ++j) chunk = d.sel(above[j], d.c(kChunks[i + j + 1]), chunk);
    t[i] = d.mul(ad, chunk);  // exact
  }
  auto mod4 = [&](Value* v) { return d.sub(v, d.mul(d.c(4.0), d.round_int(d.mul(v, d.c(0.25))).first)); };
  auto [hi, hi_err] = d.two_sum(mod4(t[0]), mod4(t[1]));
  auto [q1, q1i] = d.round_int(hi);
  auto [f, f_err] = d.two_sum(d.sub(hi, q1), t[2]);
  Value* lo = d.add(d.add(d.add(f_err, hi_err), t[3]), t[4]);
  auto [q2, q2i] = d.round_int(f);  // f in [-3/4, 3/4]: centre it again
  Value* q = d.iadd(q1i, q2i);
  Value* r = d.mul(d.add(d.sub(f, q2), lo), d.c(0x1.921fb54442d18p+0));  // |r| <= pi/4
  Value* z = d.mul(r, r);
  Value* sin_r = d.add(r, d.mul(d.mul(r, z), d.horner(z, {-0x1.555555545ab2fp-3, 0x1.11110de91ab35p-7,
                                                              -0x1.a013a105d9ac7p-13, 0x1.6dbc436595cccp-19})));
  Value* cos_r = d.add(d.c(1.0), d.add(d.mul(d.c(-0.5), z),
                                       d.mul(d.mul(z, z), d.horner(z, {0x1.5555555502198p-5, -0x1.6c16bf5252191p-10,
                                                                       0x1.a015c1b43e57ep-16, -0x1.25238d93a7eaep-22}))));
  // x = (q + f) pi/2: sin takes cos_r in odd quadrants and is negative in quadrants 2, 3; cos is
  // sin shifted by one quadrant.
  Value* odd = b.CreateICmpNE(d.iand(q, d.ci(1)), d.ci(0));
  Value* v = is_cos ? d.sel(odd, sin_r, cos_r) : d.sel(odd, cos_r, sin_r);
  Value* neg = b.CreateICmpNE(d.iand(is_cos ? d.iadd(q, d.ci(1)) : q, d.ci(2)), d.ci(0));
  v = d.sel(neg, d.neg(v), v);
  Value* y = b.CreateFPTrunc(v, e.type());
  if (!is_cos) y = e.from_bits(b.CreateXor(e.bits(y), e.sign_bit(x)));  // sin is odd
  return e.sel(e.eq(a, e.inf()), e.nan(), y);  // NaN flows through
}

// A float32 function evaluated with the float64 algorithm: one rounding at the end.
Value* via_f64(Em& e, llvm::IRBuilderBase& b, Value* (*f)(Em&, Value*), Value* x) {
  Em d(b, same_shape(x->getType(), llvm::Type::getDoubleTy(x->getContext())));
  d.set_for_f32();
  return b.CreateFPTrunc(f(d, b.CreateFPExt(x, d.type())), e.type());
}

}  // namespace

bool has_inline_math(ExprOp op, DType dtype) {
  if (dtype != DType::Float32 && dtype != DType::Float64) return false;
  switch (op) {
    case ExprOp::Exp:
    case ExprOp::Exp2:
    case ExprOp::Expm1:
    case ExprOp::Log:
    case ExprOp::Log2:
    case ExprOp::Log10:
    case ExprOp::Log1p:
    case ExprOp::Tanh:
    case ExprOp::Erf:
      return true;
    case ExprOp::Sin:
    case ExprOp::Cos:
      return dtype == DType::Float32;  // float64 needs ~1100 bits of 2/pi: libm
    default:
      return false;
  }
}

llvm::Value* emit_math(llvm::IRBuilderBase& b, ExprOp op, llvm::Value* x) {
  llvm::Type* scalar = x->getType()->getScalarType();
  KILN_INTERNAL_ASSERT(scalar->isFloatTy() || scalar->isDoubleTy(), "emit_math: ", expr_op_name(op),
                       " on a value that is neither float nor double");
  DType dtype = scalar->isDoubleTy() ? DType::Float64 : DType::Float32;
  KILN_INTERNAL_ASSERT(has_inline_math(op, dtype), "emit_math: no inline implementation of ", expr_op_name(op),
                       " for ", dtype_name(dtype));
  // The caller's fast-math flags would license dropping the NaN/inf/sign-of-zero handling (and
  // `contract` would break the exact two-product); !fpmath would allow inexact division.
  llvm::IRBuilderBase::FastMathFlagGuard guard(b);
  b.clearFastMathFlags();
  b.setDefaultFPMathTag(nullptr);
  b.setIsFPConstrained(false);
  Em e(b, x->getType());
  if (!e.f64()) {
    switch (op) {
      case ExprOp::Exp: return exp_f32(e, x);
      case ExprOp::Exp2: return via_f64(e, b, exp2_f64, x);
      case ExprOp::Expm1: return via_f64(e, b, expm1_f64, x);
      case ExprOp::Log: return log_f32(e, x);
      case ExprOp::Log2: return via_f64(e, b, log2_f64, x);
      case ExprOp::Log10: return via_f64(e, b, log10_f64, x);
      case ExprOp::Log1p: return via_f64(e, b, log1p_f64, x);
      case ExprOp::Tanh: return tanh_f32(e, x);
      case ExprOp::Erf: return erf_f32(e, x);
      case ExprOp::Sin: return sincos_f32(e, b, x, false);
      case ExprOp::Cos: return sincos_f32(e, b, x, true);
      default: break;
    }
  } else {
    switch (op) {
      case ExprOp::Exp: return exp_f64(e, x);
      case ExprOp::Exp2: return exp2_f64(e, x);
      case ExprOp::Expm1: return expm1_f64(e, x);
      case ExprOp::Log: return log_f64(e, x);
      case ExprOp::Log2: return log2_f64(e, x);
      case ExprOp::Log10: return log10_f64(e, x);
      case ExprOp::Log1p: return log1p_f64(e, x);
      case ExprOp::Tanh: return tanh_f64(e, x);
      case ExprOp::Erf: return erf_f64(e, x);
      default: break;
    }
  }
  KILN_INTERNAL_ASSERT(false, "emit_math: unhandled ", expr_op_name(op));
  return nullptr;
}

}  // namespace kiln::fusion
