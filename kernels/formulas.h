#pragma once
// Scalar formulas of the pointwise ops: the single definition of what each op computes.
// Each is a struct with the op's name, arity and dtype rule, and a generic `apply` that the
// CPU kernels instantiate with float/double/integers and the fused codegen instantiates with
// its symbolic expression type. Formulas call only the primitives of namespace kiln::fm
// (found by ADL for symbolic types) and never branch on values: use fm::select.
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "core/op.h"
#include "kernels/scalar_math.h"

// Every primitive and formula is force-inlined: the kernel TUs instantiate hundreds of loops, and
// GCC's unit-growth limit would otherwise leave per-element calls that block vectorisation.
#define KILN_FM_INLINE [[gnu::always_inline]] inline

namespace kiln::fm {

template <class T> inline constexpr bool is_int_v = std::is_integral_v<T>;

// --- primitives on plain numbers ---------------------------------------------------------------
template <class C, class T> KILN_FM_INLINE T select(C c, T a, T b) { return c ? a : b; }
template <class T> KILN_FM_INLINE T exp(T x) { return std::exp(x); }
KILN_FM_INLINE float exp(float x) { return math::exp_f32(x); }
template <class T> KILN_FM_INLINE T exp2(T x) { return std::exp2(x); }
template <class T> KILN_FM_INLINE T log(T x) { return std::log(x); }
KILN_FM_INLINE float log(float x) { return math::log_f32(x); }
template <class T> KILN_FM_INLINE T log2(T x) { return std::log2(x); }
template <class T> KILN_FM_INLINE T log10(T x) { return std::log10(x); }
template <class T> KILN_FM_INLINE T log1p(T x) { return std::log1p(x); }
template <class T> KILN_FM_INLINE T expm1(T x) { return std::expm1(x); }
template <class T> KILN_FM_INLINE T sqrt(T x) { return std::sqrt(x); }
template <class T> KILN_FM_INLINE T sin(T x) { return std::sin(x); }
template <class T> KILN_FM_INLINE T cos(T x) { return std::cos(x); }
template <class T> KILN_FM_INLINE T tan(T x) { return std::tan(x); }
template <class T> KILN_FM_INLINE T tanh(T x) { return std::tanh(x); }
KILN_FM_INLINE float tanh(float x) { return math::tanh_f32(x); }
template <class T> KILN_FM_INLINE T erf(T x) { return std::erf(x); }
KILN_FM_INLINE float erf(float x) { return math::erf_f32(x); }
template <class T> KILN_FM_INLINE T floor(T x) { if constexpr (is_int_v<T>) return x; else return std::floor(x); }
template <class T> KILN_FM_INLINE T ceil(T x) { if constexpr (is_int_v<T>) return x; else return std::ceil(x); }
// Half to even, as torch.round.
template <class T> KILN_FM_INLINE T round(T x) { if constexpr (is_int_v<T>) return x; else return std::nearbyint(x); }
template <class T> KILN_FM_INLINE T trunc(T x) { if constexpr (is_int_v<T>) return x; else return std::trunc(x); }
template <class T> KILN_FM_INLINE T abs(T x) {
  if constexpr (std::is_same_v<T, bool>) return x;
  else if constexpr (std::is_unsigned_v<T>) return x;
  else if constexpr (std::is_floating_point_v<T>) return std::fabs(x);  // clears the sign of -0 and NaN, as fabs in codegen
  else return x < T(0) ? T(-x) : x;  // -fwrapv: abs(INT_MIN) wraps as in PyTorch
}
template <class T> KILN_FM_INLINE bool isnan(T x) { if constexpr (is_int_v<T>) return false; else return x != x; }
// NaN-propagating max/min (torch.maximum semantics).
template <class T> KILN_FM_INLINE T max(T a, T b) { return select(isnan(a), a, select(a > b, a, b)); }
template <class T> KILN_FM_INLINE T min(T a, T b) { return select(isnan(a), a, select(a < b, a, b)); }
template <class T> KILN_FM_INLINE T fmod(T a, T b) {
  if constexpr (is_int_v<T>) return b == T(0) ? T(0) : (b == T(-1) ? T(0) : T(a % b));  // zero checked by the op
  else return std::fmod(a, b);
}
template <class T> KILN_FM_INLINE T pow(T a, T b) {
  if constexpr (is_int_v<T>) {
    if constexpr (std::is_same_v<T, bool>) return a || !b;
    else {
      if (b < T(0)) return a == T(1) ? T(1) : (a == T(-1) ? (b % 2 ? T(-1) : T(1)) : T(0));  // rejected by the op
      using U = std::make_unsigned_t<T>;
      U base = static_cast<U>(a), r = 1;
      for (auto e = b; e > 0; e >>= 1) {
        if (e & 1) r = static_cast<U>(r * base);
        base = static_cast<U>(base * base);
      }
      return static_cast<T>(r);
    }
  } else {
    return std::pow(a, b);
  }
}
template <class T> KILN_FM_INLINE T cast_bool(bool c) { return c ? T(1) : T(0); }

// pow(x, e) for the constant exponents where it is one correctly rounded operation, which the
// eager kernel (kernels/cpu/pointwise_kernel.h) and the LLVM renderer (fusion/llvm_render.cpp)
// both compute that way instead of calling libm: 2 -> x*x, 1 -> x, -1 -> 1/x.
enum class PowShortcut { None, Square, Identity, Reciprocal };
inline PowShortcut pow_shortcut(double e) {
  if (e == 2.0) return PowShortcut::Square;
  if (e == 1.0) return PowShortcut::Identity;
  if (e == -1.0) return PowShortcut::Reciprocal;
  return PowShortcut::None;
}

}  // namespace kiln::fm

namespace kiln::formulas {
using namespace kiln::fm;  // NOLINT: formulas read as math

// Every pointwise op is one struct. `bool_ok`: the op is defined on bool tensors.
#define KILN_POINTWISE(NAME, ARITY, RULE, BOOL_OK)                 \
  static constexpr const char* name = NAME;                        \
  static constexpr int arity = ARITY;                              \
  static constexpr PointwiseRule rule = PointwiseRule::RULE;       \
  static constexpr bool bool_ok = BOOL_OK;

// --- unary ---------------------------------------------------------------------------------
struct Neg { KILN_POINTWISE("neg", 1, Same, false) template <class T> [[gnu::always_inline]] static T apply(T x) { return T(0) - x; } };
struct Abs { KILN_POINTWISE("abs", 1, Same, true) template <class T> [[gnu::always_inline]] static T apply(T x) { return abs(x); } };
struct Sign {
  KILN_POINTWISE("sign", 1, Same, true)
  template <class T> [[gnu::always_inline]] static T apply(T x) {
    if constexpr (std::is_same_v<T, bool>) return x;
    else return T(cast_bool<T>(T(0) < x) - cast_bool<T>(x < T(0)));
  }
};
struct Exp { KILN_POINTWISE("exp", 1, FloatOut, false) template <class T> [[gnu::always_inline]] static T apply(T x) { return exp(x); } };
struct Exp2 { KILN_POINTWISE("exp2", 1, FloatOut, false) template <class T> [[gnu::always_inline]] static T apply(T x) { return exp2(x); } };
struct Log { KILN_POINTWISE("log", 1, FloatOut, false) template <class T> [[gnu::always_inline]] static T apply(T x) { return log(x); } };
struct Log2 { KILN_POINTWISE("log2", 1, FloatOut, false) template <class T> [[gnu::always_inline]] static T apply(T x) { return log2(x); } };
struct Log10 { KILN_POINTWISE("log10", 1, FloatOut, false) template <class T> [[gnu::always_inline]] static T apply(T x) { return log10(x); } };
struct Log1p { KILN_POINTWISE("log1p", 1, FloatOut, false) template <class T> [[gnu::always_inline]] static T apply(T x) { return log1p(x); } };
struct Expm1 { KILN_POINTWISE("expm1", 1, FloatOut, false) template <class T> [[gnu::always_inline]] static T apply(T x) { return expm1(x); } };
struct Sqrt { KILN_POINTWISE("sqrt", 1, FloatOut, false) template <class T> [[gnu::always_inline]] static T apply(T x) { return sqrt(x); } };
struct Rsqrt { KILN_POINTWISE("rsqrt", 1, FloatOut, false) template <class T> [[gnu::always_inline]] static T apply(T x) { return T(1) / sqrt(x); } };
struct Reciprocal { KILN_POINTWISE("reciprocal", 1, FloatOut, false) template <class T> [[gnu::always_inline]] static T apply(T x) { return T(1) / x; } };
struct Square { KILN_POINTWISE("square", 1, Same, false) template <class T> [[gnu::always_inline]] static T apply(T x) { return x * x; } };
struct Sin { KILN_POINTWISE("sin", 1, FloatOut, false) template <class T> [[gnu::always_inline]] static T apply(T x) { return sin(x); } };
struct Cos { KILN_POINTWISE("cos", 1, FloatOut, false) template <class T> [[gnu::always_inline]] static T apply(T x) { return cos(x); } };
struct Tan { KILN_POINTWISE("tan", 1, FloatOut, false) template <class T> [[gnu::always_inline]] static T apply(T x) { return tan(x); } };
struct Tanh { KILN_POINTWISE("tanh", 1, FloatOut, false) template <class T> [[gnu::always_inline]] static T apply(T x) { return tanh(x); } };
struct Sigmoid { KILN_POINTWISE("sigmoid", 1, FloatOut, false) template <class T> [[gnu::always_inline]] static T apply(T x) { return T(1) / (T(1) + exp(T(0) - x)); } };
// relu keeps NaN (x < 0 is false for NaN), as torch.relu.
struct Relu { KILN_POINTWISE("relu", 1, Same, false) template <class T> [[gnu::always_inline]] static T apply(T x) { return select(x < T(0), T(0), x); } };
struct Gelu {
  KILN_POINTWISE("gelu", 1, FloatOut, false)
  template <class T> [[gnu::always_inline]] static T apply(T x) { return T(0.5) * x * (T(1) + erf(x * T(0.70710678118654752440))); }
};
struct GeluTanh {
  KILN_POINTWISE("gelu_tanh", 1, FloatOut, false)
  template <class T> [[gnu::always_inline]] static T apply(T x) {
    return T(0.5) * x * (T(1) + tanh(T(0.79788456080286535588) * (x + T(0.044715) * x * x * x)));
  }
};
struct Silu { KILN_POINTWISE("silu", 1, FloatOut, false) template <class T> [[gnu::always_inline]] static T apply(T x) { return x / (T(1) + exp(T(0) - x)); } };
// softplus(x, beta, threshold): beta and threshold arrive as wrapped-scalar operands.
struct Softplus {
  KILN_POINTWISE("softplus", 3, FloatOut, false)
  template <class T> [[gnu::always_inline]] static T apply(T x, T beta, T threshold) {
    return select(x * beta > threshold, x, log1p(exp(x * beta)) / beta);
  }
};
struct Erf { KILN_POINTWISE("erf", 1, FloatOut, false) template <class T> [[gnu::always_inline]] static T apply(T x) { return erf(x); } };
struct Floor { KILN_POINTWISE("floor", 1, Same, false) template <class T> [[gnu::always_inline]] static T apply(T x) { return floor(x); } };
struct Ceil { KILN_POINTWISE("ceil", 1, Same, false) template <class T> [[gnu::always_inline]] static T apply(T x) { return ceil(x); } };
struct Round { KILN_POINTWISE("round", 1, Same, false) template <class T> [[gnu::always_inline]] static T apply(T x) { return round(x); } };
struct Trunc { KILN_POINTWISE("trunc", 1, Same, false) template <class T> [[gnu::always_inline]] static T apply(T x) { return trunc(x); } };
struct LogicalNot { KILN_POINTWISE("logical_not", 1, BoolOut, true) template <class T> [[gnu::always_inline]] static auto apply(T x) { return x == T(0); } };

// --- binary --------------------------------------------------------------------------------
struct Add { KILN_POINTWISE("add", 2, Same, true) template <class T> [[gnu::always_inline]] static T apply(T a, T b) { if constexpr (std::is_same_v<T, bool>) return a || b; else return a + b; } };
struct Sub { KILN_POINTWISE("sub", 2, Same, false) template <class T> [[gnu::always_inline]] static T apply(T a, T b) { return a - b; } };
struct Mul { KILN_POINTWISE("mul", 2, Same, true) template <class T> [[gnu::always_inline]] static T apply(T a, T b) { if constexpr (std::is_same_v<T, bool>) return a && b; else return a * b; } };
struct Div { KILN_POINTWISE("div", 2, FloatOut, false) template <class T> [[gnu::always_inline]] static T apply(T a, T b) { return a / b; } };
struct Pow { KILN_POINTWISE("pow", 2, Same, true) template <class T> [[gnu::always_inline]] static T apply(T a, T b) { return pow(a, b); } };
struct Fmod { KILN_POINTWISE("fmod", 2, Same, false) template <class T> [[gnu::always_inline]] static T apply(T a, T b) { return fmod(a, b); } };
// Python's modulo: the result takes the sign of the divisor.
struct Remainder {
  KILN_POINTWISE("remainder", 2, Same, false)
  template <class T> [[gnu::always_inline]] static T apply(T a, T b) {
    T m = fmod(a, b);
    return select((m != T(0)) && ((b < T(0)) != (m < T(0))), T(m + b), m);
  }
};
struct Maximum { KILN_POINTWISE("maximum", 2, Same, true) template <class T> [[gnu::always_inline]] static T apply(T a, T b) { return max(a, b); } };
struct Minimum { KILN_POINTWISE("minimum", 2, Same, true) template <class T> [[gnu::always_inline]] static T apply(T a, T b) { return min(a, b); } };
struct Eq { KILN_POINTWISE("eq", 2, BoolOut, true) template <class T> [[gnu::always_inline]] static auto apply(T a, T b) { return a == b; } };
struct Ne { KILN_POINTWISE("ne", 2, BoolOut, true) template <class T> [[gnu::always_inline]] static auto apply(T a, T b) { return a != b; } };
struct Lt { KILN_POINTWISE("lt", 2, BoolOut, true) template <class T> [[gnu::always_inline]] static auto apply(T a, T b) { return a < b; } };
struct Le { KILN_POINTWISE("le", 2, BoolOut, true) template <class T> [[gnu::always_inline]] static auto apply(T a, T b) { return a <= b; } };
struct Gt { KILN_POINTWISE("gt", 2, BoolOut, true) template <class T> [[gnu::always_inline]] static auto apply(T a, T b) { return a > b; } };
struct Ge { KILN_POINTWISE("ge", 2, BoolOut, true) template <class T> [[gnu::always_inline]] static auto apply(T a, T b) { return a >= b; } };
struct LogicalAnd { KILN_POINTWISE("logical_and", 2, BoolOut, true) template <class T> [[gnu::always_inline]] static auto apply(T a, T b) { return (a != T(0)) && (b != T(0)); } };
struct LogicalOr { KILN_POINTWISE("logical_or", 2, BoolOut, true) template <class T> [[gnu::always_inline]] static auto apply(T a, T b) { return (a != T(0)) || (b != T(0)); } };
struct ClampMin { KILN_POINTWISE("clamp_min", 2, Same, true) template <class T> [[gnu::always_inline]] static T apply(T x, T lo) { return max(x, lo); } };
struct ClampMax { KILN_POINTWISE("clamp_max", 2, Same, true) template <class T> [[gnu::always_inline]] static T apply(T x, T hi) { return min(x, hi); } };

// --- ternary -------------------------------------------------------------------------------
// where(cond, a, b): cond arrives cast to the promoted dtype of a and b.
struct Where { KILN_POINTWISE("where", 3, Same, true) template <class T> [[gnu::always_inline]] static T apply(T c, T a, T b) { return select(c != T(0), a, b); } };
struct Clamp { KILN_POINTWISE("clamp", 3, Same, true) template <class T> [[gnu::always_inline]] static T apply(T x, T lo, T hi) { return min(max(x, lo), hi); } };

#undef KILN_POINTWISE

// The one list of pointwise ops: rows, CPU kernels and (later) codegen all iterate it.
template <class... F> struct List {};
using AllPointwise =
    List<Neg, Abs, Sign, Exp, Exp2, Log, Log2, Log10, Log1p, Expm1, Sqrt, Rsqrt, Reciprocal, Square, Sin, Cos,
         Tan, Tanh, Sigmoid, Relu, Gelu, GeluTanh, Silu, Softplus, Erf, Floor, Ceil, Round, Trunc, LogicalNot,
         Add, Sub, Mul, Div, Pow, Fmod, Remainder, Maximum, Minimum, Eq, Ne, Lt, Le, Gt, Ge, LogicalAnd,
         LogicalOr, ClampMin, ClampMax, Where, Clamp>;

}  // namespace kiln::formulas
