#pragma once
// The CPU kernel every pointwise row gets: cast inputs to the compute dtype, then run the
// formula over strided runs with contiguous and broadcast-scalar fast paths (which the
// compiler vectorises).
#include "core/op.h"
#include "kernels/cpu/loops.h"
#include "kernels/formulas.h"

namespace kiln::cpu {

template <class F>
DType pointwise_promoted_dtype(const TensorList& in) {
  if constexpr (std::is_same_v<F, formulas::Where>) return result_type({in[1], in[2]});
  else return result_type(in);
}

template <class F>
DType pointwise_compute_dtype(const TensorList& in) {
  DType p = pointwise_promoted_dtype<F>(in);
  if (F::rule == PointwiseRule::FloatOut && !is_floating_point(p)) return default_dtype();
  return p;
}

template <class F, class In, class Out>
void pointwise_run(char** p, const int64_t* s, int64_t n) {
  using C = opmath_t<In>;
  constexpr int64_t si = sizeof(In), so = sizeof(Out);
  Out* __restrict o = reinterpret_cast<Out*>(p[0]);
  if constexpr (F::arity == 1) {
    const In* __restrict a = reinterpret_cast<const In*>(p[1]);
    if (s[0] == so && s[1] == si) {
      for (int64_t i = 0; i < n; ++i) o[i] = Out(F::apply(C(a[i])));
      return;
    }
  } else if constexpr (F::arity == 2) {
    const In* __restrict a = reinterpret_cast<const In*>(p[1]);
    const In* __restrict b = reinterpret_cast<const In*>(p[2]);
    if (s[0] == so) {
      if (s[1] == si && s[2] == si) {
        for (int64_t i = 0; i < n; ++i) o[i] = Out(F::apply(C(a[i]), C(b[i])));
        return;
      }
      if (s[1] == si && s[2] == 0) {
        const C bv = C(b[0]);
        // pow by a constant exponent that fm::pow_shortcut names: a loop that vectorises instead
        // of a libm call per element (x.pow(2) on 1M floats: 1.35 ms).
        if constexpr (std::is_same_v<F, formulas::Pow> && std::is_floating_point_v<C>) {
          switch (fm::pow_shortcut(static_cast<double>(bv))) {
            case fm::PowShortcut::Square:
              for (int64_t i = 0; i < n; ++i) o[i] = Out(C(a[i]) * C(a[i]));
              return;
            case fm::PowShortcut::Identity:
              for (int64_t i = 0; i < n; ++i) o[i] = Out(C(a[i]));
              return;
            case fm::PowShortcut::Reciprocal:
              for (int64_t i = 0; i < n; ++i) o[i] = Out(C(1) / C(a[i]));
              return;
            case fm::PowShortcut::None: break;
          }
        }
        for (int64_t i = 0; i < n; ++i) o[i] = Out(F::apply(C(a[i]), bv));
        return;
      }
      if (s[1] == 0 && s[2] == si) {
        const C av = C(a[0]);
        for (int64_t i = 0; i < n; ++i) o[i] = Out(F::apply(av, C(b[i])));
        return;
      }
    }
  } else if constexpr (F::arity == 3) {
    const In* __restrict a = reinterpret_cast<const In*>(p[1]);
    const In* __restrict b = reinterpret_cast<const In*>(p[2]);
    const In* __restrict c = reinterpret_cast<const In*>(p[3]);
    if (s[0] == so && s[1] == si && s[2] == si && s[3] == si) {
      for (int64_t i = 0; i < n; ++i) o[i] = Out(F::apply(C(a[i]), C(b[i]), C(c[i])));
      return;
    }
    if (s[0] == so && (s[1] == si || s[1] == 0) && (s[2] == si || s[2] == 0) && (s[3] == si || s[3] == 0)) {
      const int64_t ka = s[1] / si, kb = s[2] / si, kc = s[3] / si;
      for (int64_t i = 0; i < n; ++i) o[i] = Out(F::apply(C(a[i * ka]), C(b[i * kb]), C(c[i * kc])));
      return;
    }
  }
  // General strides.
  auto at = [&](int k, int64_t i) { return C(*reinterpret_cast<const In*>(p[k] + i * s[k])); };
  for (int64_t i = 0; i < n; ++i) {
    Out* dst = reinterpret_cast<Out*>(p[0] + i * s[0]);
    if constexpr (F::arity == 1) *dst = Out(F::apply(at(1, i)));
    else if constexpr (F::arity == 2) *dst = Out(F::apply(at(1, i), at(2, i)));
    else *dst = Out(F::apply(at(1, i), at(2, i), at(3, i)));
  }
}

// where(cond, a, b) reads its bool condition as bytes (no cast to the value dtype: one pass, not
// two) and selects without branching (a random mask would mispredict every other element), with
// contiguous and broadcast-scalar fast paths for a and b (relu's backward is where(x > 0, g, 0)).
template <class T>
void where_run(char** p, const int64_t* s, int64_t n) {
  constexpr int64_t st = sizeof(T);
  T* __restrict o = reinterpret_cast<T*>(p[0]);
  const uint8_t* __restrict c = reinterpret_cast<const uint8_t*>(p[1]);
  const T* __restrict a = reinterpret_cast<const T*>(p[2]);
  const T* __restrict b = reinterpret_cast<const T*>(p[3]);
  if (s[0] == st && s[1] == 1) {
    // Both values loaded unconditionally so that the select is a blend, not a branch.
    auto loop = [&](auto get_a, auto get_b) {
      for (int64_t i = 0; i < n; ++i) {
        const T av = get_a(i), bv = get_b(i);
        o[i] = c[i] != 0 ? av : bv;
      }
    };
    auto vec = [](const T* x) { return [x](int64_t i) { return x[i]; }; };
    auto one = [](const T* x) { return [v = x[0]](int64_t) { return v; }; };
    if (s[2] == st && s[3] == st) return loop(vec(a), vec(b));
    if (s[2] == st && s[3] == 0) return loop(vec(a), one(b));
    if (s[2] == 0 && s[3] == st) return loop(one(a), vec(b));
    if (s[2] == 0 && s[3] == 0) return loop(one(a), one(b));
  }
  for (int64_t i = 0; i < n; ++i) {
    const T av = *reinterpret_cast<const T*>(p[2] + i * s[2]), bv = *reinterpret_cast<const T*>(p[3] + i * s[3]);
    *reinterpret_cast<T*>(p[0] + i * s[0]) = *reinterpret_cast<const uint8_t*>(p[1] + i * s[1]) != 0 ? av : bv;
  }
}

template <class F>
void pointwise_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs&) {
  const DType compute = pointwise_compute_dtype<F>(in);
  TensorList cast(in.size());
  constexpr size_t first_cast = std::is_same_v<F, formulas::Where> ? 1 : 0;  // where's bool condition stays as it is
  for (size_t i = 0; i < in.size(); ++i)
    cast[i] = i < first_cast || in[i].dtype() == compute ? in[i] : in[i].to(compute);
  if constexpr (std::is_same_v<F, formulas::Where>) {
    StridedIter it = make_iter(out[0], cast);
    auto run = [&]<class T>() {
      for_each_run(it, [](char** p, const int64_t* s, int64_t n) { where_run<T>(p, s, n); });
    };
    switch (itemsize(compute)) {  // a select moves bits: one loop per element size
      case 1: run.template operator()<uint8_t>(); return;
      case 2: run.template operator()<uint16_t>(); return;
      case 4: run.template operator()<uint32_t>(); return;
      case 8: run.template operator()<uint64_t>(); return;
      default: KILN_FAIL("[", op.name, "] is not supported for dtype ", compute);
    }
  }
  StridedIter it = make_iter(out[0], cast);
  auto run = [&]<class T>() {
    using Out = std::conditional_t<F::rule == PointwiseRule::BoolOut, bool, T>;
    KILN_INTERNAL_ASSERT(out[0].dtype() == dtype_of<Out>, "pointwise output dtype");
    for_each_run(it, [](char** p, const int64_t* s, int64_t n) { pointwise_run<F, T, Out>(p, s, n); });
  };
  switch (compute) {
    case DType::Float32: run.template operator()<float>(); break;
    case DType::Float64: run.template operator()<double>(); break;
    case DType::Float16: run.template operator()<Half>(); break;
    case DType::BFloat16: run.template operator()<BFloat16>(); break;
    default:
      if constexpr (F::rule != PointwiseRule::FloatOut) {
        switch (compute) {
          case DType::Int64: run.template operator()<int64_t>(); return;
          case DType::Int32: run.template operator()<int32_t>(); return;
          case DType::Int16: run.template operator()<int16_t>(); return;
          case DType::Int8: run.template operator()<int8_t>(); return;
          case DType::UInt8: run.template operator()<uint8_t>(); return;
          case DType::Bool:
            if constexpr (F::bool_ok) { run.template operator()<bool>(); return; }
            break;
          default: break;
        }
      }
      KILN_FAIL("[", op.name, "] is not supported for dtype ", compute);
  }
}

}  // namespace kiln::cpu
