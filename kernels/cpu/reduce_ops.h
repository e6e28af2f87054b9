#pragma once
// Reduction ops for the engine in reduce_kernel.h. Each op states its accumulator (acc_t),
// identity, combine(earlier, later), a run reduction row(p, n, stride, flat_index) and a column
// step cols(acc, p, nrows, row_stride, ncols, flat_index) that folds nrows rows of ncols
// contiguous values into acc[0..ncols). write(out_offset, acc) stores the result.
#include <cmath>
#include <limits>

#include "kernels/cpu/reduce_kernel.h"
#include "kernels/cpu/reduce_math.h"

namespace kiln::cpu {

inline constexpr int64_t kRowBlock = 2048;  // elements per block of a long row (cascaded)

// Sum / mean (the sum divided by `count`: one correctly rounded division, so the mean of equal
// values is exact, as a multiply by a rounded 1 / count would not be, and as the compiled kernels
// divide): T input, A accumulator, O output. Contiguous runs of a sum are summed in lanes of R
// (float for float32) per block, a mean's in A (row_in); blocks, runs and columns accumulate in A
// (double for float32, so that cancelling column sums stay accurate).
template <class T, class A, class O>
struct SumOp {
  using in_t = T;
  using acc_t = A;
  using R = std::conditional_t<std::is_integral_v<A>, A, opmath_t<T>>;
  O* out;
  A count = A(1);
  bool mean = false;
  A identity() const { return A(0); }
  A combine(A a, A b) const { return a + b; }
  // A mean's lanes accumulate in A (double for float32), as the compiled kernels' means do: a mean
  // is usually subtracted again (x - x.mean()), where the float lanes' error would show. Sums keep
  // the twice-as-wide float lanes (16M floats: 1.9 ms against 2.3 ms in double).
  A row(const T* p, int64_t n, int64_t s, int64_t) const { return mean ? row_in<A>(p, n, s) : row_in<R>(p, n, s); }
  template <class L>
  A row_in(const T* p, int64_t n, int64_t s) const {
    auto id = [](L x) { return x; };
    if (n <= kRowBlock) return A(lane_sum<L>(p, n, s, id));
    Cascade<SumOp> c(*this);
    for (int64_t b = 0; b < n; b += kRowBlock) c.add(A(lane_sum<L>(p + b * s, std::min(kRowBlock, n - b), s, id)));
    return c.result();
  }
  void cols(A* __restrict acc, const T* p, int64_t nrows, int64_t rs, int64_t ncols, int64_t) const {
    for (int64_t r = 0; r < nrows; ++r) {
      const T* __restrict q = p + r * rs;
      for (int64_t j = 0; j < ncols; ++j) acc[j] += A(load_as<R>(q[j]));
    }
  }
  void write(int64_t o, A a) const { out[o] = mean ? O(a / count) : O(a); }
};

template <class T, class A, class O>
struct ProdOp {
  using in_t = T;
  using acc_t = A;
  O* out;
  A identity() const { return A(1); }
  A combine(A a, A b) const { return a * b; }
  A row(const T* p, int64_t n, int64_t s, int64_t) const {
    constexpr int L = kLanes<A>;
    A acc[L];
    for (int k = 0; k < L; ++k) acc[k] = A(1);
    int64_t i = 0;
    if (s == 1)
      for (; i + L <= n; i += L)
        for (int k = 0; k < L; ++k) acc[k] *= load_as<A>(p[i + k]);
    A r = A(1);
    for (; i < n; ++i) r *= load_as<A>(p[i * s]);
    for (int k = 0; k < L; ++k) r *= acc[k];
    return r;
  }
  void cols(A* __restrict acc, const T* p, int64_t nrows, int64_t rs, int64_t ncols, int64_t) const {
    for (int64_t r = 0; r < nrows; ++r) {
      const T* __restrict q = p + r * rs;
      for (int64_t j = 0; j < ncols; ++j) acc[j] *= load_as<A>(q[j]);
    }
  }
  void write(int64_t o, A a) const { out[o] = O(a); }
};

// amax / amin: NaN propagates.
template <class T, bool IsMax>
struct ExtremeOp {
  using in_t = T;
  using acc_t = opmath_t<T>;
  using A = acc_t;
  T* out;
  A identity() const { return extreme_identity<IsMax, A>(); }
  A combine(A a, A b) const { return pick<IsMax>(a, b); }
  A row(const T* p, int64_t n, int64_t s, int64_t) const { return lane_extreme<IsMax, A>(p, n, s); }
  void cols(A* __restrict acc, const T* p, int64_t nrows, int64_t rs, int64_t ncols, int64_t) const {
    for (int64_t r = 0; r < nrows; ++r) {
      const T* __restrict q = p + r * rs;
      for (int64_t j = 0; j < ncols; ++j) acc[j] = pick<IsMax>(acc[j], load_as<A>(q[j]));
    }
  }
  void write(int64_t o, A a) const { out[o] = T(a); }
};

// argmax / argmin / max(dim) / min(dim): the first extreme wins; a NaN beats any number and
// the first NaN wins. `values` may be null (argmax/argmin).
template <class T, bool IsMax>
struct ArgOp {
  using in_t = T;
  using V = opmath_t<T>;
  struct acc_t {
    V v;
    int64_t i;
  };
  T* values = nullptr;
  int64_t* indices;
  static bool beats(V x, V a) {
    if constexpr (std::is_floating_point_v<V>) {
      if (x != x) return a == a;
    }
    return IsMax ? x > a : x < a;
  }
  acc_t identity() const { return {extreme_identity<IsMax, V>(), -1}; }
  acc_t combine(acc_t a, acc_t b) const {
    if (b.i < 0) return a;
    if (a.i < 0 || beats(b.v, a.v)) return b;
    return a;
  }
  acc_t row(const T* p, int64_t n, int64_t s, int64_t idx) const {
    if (s == 1) {
      // Find the extreme vectorised, then its first position.
      const V m = lane_extreme<IsMax, V>(p, n, 1);
      int64_t i = 0;
      if (m != m) {
        while (i < n && load_as<V>(p[i]) == load_as<V>(p[i])) ++i;
      } else {
        while (i < n && load_as<V>(p[i]) != m) ++i;
      }
      return {m, idx + i};
    }
    acc_t a{load_as<V>(p[0]), idx};
    for (int64_t i = 1; i < n; ++i) {
      const V x = load_as<V>(p[i * s]);
      if (beats(x, a.v)) a = {x, idx + i};
    }
    return a;
  }
  void cols(acc_t* acc, const T* p, int64_t nrows, int64_t rs, int64_t ncols, int64_t idx) const {
    for (int64_t r = 0; r < nrows; ++r) {
      const T* q = p + r * rs;
      for (int64_t j = 0; j < ncols; ++j) {
        const V x = load_as<V>(q[j]);
        if (acc[j].i < 0 || beats(x, acc[j].v)) acc[j] = {x, idx + r};
      }
    }
  }
  void write(int64_t o, acc_t a) const {
    if (values) values[o] = T(a.v);
    indices[o] = a.i;
  }
};

// all / any: the result is bool for every input dtype.
template <class T, bool IsAll>
struct AllAnyOp {
  using in_t = T;
  using acc_t = bool;
  bool* out;
  static bool truth(const T& x) { return load_as<opmath_t<T>>(x) != opmath_t<T>(0); }
  bool identity() const { return IsAll; }
  bool combine(bool a, bool b) const { return IsAll ? (a && b) : (a || b); }
  bool row(const T* p, int64_t n, int64_t s, int64_t) const {
    // Count the values that decide the answer, a block at a time so that we can stop early.
    for (int64_t b = 0; b < n; b += kRowBlock) {
      const int64_t e = std::min(n, b + kRowBlock);
      int hits = 0;
      if (s == 1) {
        for (int64_t i = b; i < e; ++i) hits |= (truth(p[i]) != IsAll);
      } else {
        for (int64_t i = b; i < e; ++i) hits |= (truth(p[i * s]) != IsAll);
      }
      if (hits) return !IsAll;
    }
    return IsAll;
  }
  void cols(bool* acc, const T* p, int64_t nrows, int64_t rs, int64_t ncols, int64_t) const {
    for (int64_t r = 0; r < nrows; ++r) {
      const T* q = p + r * rs;
      for (int64_t j = 0; j < ncols; ++j) acc[j] = IsAll ? (acc[j] && truth(q[j])) : (acc[j] || truth(q[j]));
    }
  }
  void write(int64_t o, bool a) const { out[o] = a; }
};

// var / std / var_mean: per block two-pass (mean, then squared deviations) in double, blocks
// merged with Chan's formula.
template <class T>
struct VarOp {
  using in_t = T;
  using A = double;
  struct acc_t {
    A n, mean, m2;
  };
  T* var_out = nullptr;
  T* mean_out = nullptr;
  int64_t correction = 1;
  bool take_sqrt = false;
  acc_t identity() const { return {0, 0, 0}; }
  acc_t combine(acc_t a, acc_t b) const {
    if (b.n == 0) return a;
    if (a.n == 0) return b;
    const A n = a.n + b.n, d = b.mean - a.mean;
    return {n, a.mean + d * (b.n / n), a.m2 + b.m2 + d * d * (a.n * b.n / n)};
  }
  static acc_t block(const T* p, int64_t n, int64_t s) {
    const A mean = lane_sum<A>(p, n, s, [](A x) { return x; }) / A(n);
    const A m2 = lane_sum<A>(p, n, s, [mean](A x) { return (x - mean) * (x - mean); });
    return {A(n), mean, m2};
  }
  acc_t row(const T* p, int64_t n, int64_t s, int64_t) const {
    acc_t a = identity();
    for (int64_t b = 0; b < n; b += kRowBlock) a = combine(a, block(p + b * s, std::min(kRowBlock, n - b), s));
    return a;
  }
  void cols(acc_t* acc, const T* p, int64_t nrows, int64_t rs, int64_t ncols, int64_t) const {
    A mean[kColTile], m2[kColTile];
    for (int64_t j = 0; j < ncols; ++j) mean[j] = m2[j] = 0;
    for (int64_t r = 0; r < nrows; ++r) {
      const T* __restrict q = p + r * rs;
      for (int64_t j = 0; j < ncols; ++j) mean[j] += load_as<A>(q[j]);
    }
    for (int64_t j = 0; j < ncols; ++j) mean[j] /= A(nrows);
    for (int64_t r = 0; r < nrows; ++r) {
      const T* __restrict q = p + r * rs;
      for (int64_t j = 0; j < ncols; ++j) {
        const A d = load_as<A>(q[j]) - mean[j];
        m2[j] += d * d;
      }
    }
    for (int64_t j = 0; j < ncols; ++j) acc[j] = combine(acc[j], {A(nrows), mean[j], m2[j]});
  }
  void write(int64_t o, acc_t a) const {
    const A nan = std::numeric_limits<A>::quiet_NaN();
    const A dof = std::max<A>(0, a.n - A(correction));
    A v = a.n == 0 ? nan : a.m2 / dof;
    if (take_sqrt) v = std::sqrt(v);
    if (var_out) var_out[o] = T(v);
    if (mean_out) mean_out[o] = T(a.n == 0 ? nan : a.mean);
  }
};

// logsumexp: (max, sum of exp(x - shift(max))) per block, merged by rescaling.
template <class T>
struct LogSumExpOp {
  using in_t = T;
  using A = opmath_t<T>;
  struct acc_t {
    A m, s;
  };
  T* out;
  acc_t identity() const { return {-std::numeric_limits<A>::infinity(), A(0)}; }
  acc_t combine(acc_t a, acc_t b) const {
    const A m = pick<true>(a.m, b.m), sh = lse_shift(m);
    A s = A(0);
    if (a.s != A(0)) s += a.s * exp_acc(lse_shift(a.m) - sh);
    if (b.s != A(0)) s += b.s * exp_acc(lse_shift(b.m) - sh);
    return {m, m != m ? m : s};
  }
  static acc_t block(const T* p, int64_t n, int64_t s) {
    const A m = lane_extreme<true, A>(p, n, s), sh = lse_shift(m);
    return {m, lane_sum<A>(p, n, s, [sh](A x) { return exp_acc(x - sh); })};
  }
  acc_t row(const T* p, int64_t n, int64_t s, int64_t) const {
    acc_t a = identity();
    for (int64_t b = 0; b < n; b += kRowBlock) a = combine(a, block(p + b * s, std::min(kRowBlock, n - b), s));
    return a;
  }
  void cols(acc_t* acc, const T* p, int64_t nrows, int64_t rs, int64_t ncols, int64_t) const {
    A m[kColTile], sh[kColTile], sum[kColTile];
    for (int64_t j = 0; j < ncols; ++j) {
      m[j] = -std::numeric_limits<A>::infinity();
      sum[j] = 0;
    }
    for (int64_t r = 0; r < nrows; ++r) {
      const T* __restrict q = p + r * rs;
      for (int64_t j = 0; j < ncols; ++j) m[j] = pick<true>(m[j], load_as<A>(q[j]));
    }
    for (int64_t j = 0; j < ncols; ++j) sh[j] = lse_shift(m[j]);
    for (int64_t r = 0; r < nrows; ++r) {
      const T* __restrict q = p + r * rs;
      for (int64_t j = 0; j < ncols; ++j) sum[j] += exp_acc(load_as<A>(q[j]) - sh[j]);
    }
    for (int64_t j = 0; j < ncols; ++j) acc[j] = combine(acc[j], {m[j], sum[j]});
  }
  void write(int64_t o, acc_t a) const { out[o] = T(std::log(a.s) + lse_shift(a.m)); }
};

}  // namespace kiln::cpu
