// layer_norm: each row of the trailing N elements is normalised in two passes over registers
// and L1 (mean, then centred variance, both accumulated in double), then scaled and shifted.
// Half/bfloat16 rows are widened to a float buffer first.
#include <cmath>
#include <vector>

#include "core/shape.h"
#include "kernels/cpu/nn_kernels.h"
#include "kernels/cpu/parallel.h"

namespace kiln::cpu {
namespace {

template <class A>
double row_mean(const A* x, int64_t n) {
  double acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += static_cast<double>(x[i + j]);
  double s = 0;
  for (; i < n; ++i) s += static_cast<double>(x[i]);
  for (int j = 0; j < 8; ++j) s += acc[j];
  return s / static_cast<double>(n);
}

template <class A>
double row_var(const A* x, int64_t n, double mean) {
  double acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) {
      double d = static_cast<double>(x[i + j]) - mean;
      acc[j] += d * d;
    }
  double s = 0;
  for (; i < n; ++i) {
    double d = static_cast<double>(x[i]) - mean;
    s += d * d;
  }
  for (int j = 0; j < 8; ++j) s += acc[j];
  return s / static_cast<double>(n);
}

template <bool HasW, bool HasB, class T, class A>
void normalise_row(const A* __restrict x, T* __restrict y, int64_t n, A mean, A rstd, const A* __restrict w,
                   const A* __restrict b) {
  for (int64_t i = 0; i < n; ++i) {
    A v = (x[i] - mean) * rstd;
    if constexpr (HasW) v = v * w[i];
    if constexpr (HasB) v = v + b[i];
    y[i] = T(v);
  }
}

template <class T>
void layer_norm_typed(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& y, int64_t n, double eps) {
  using A = opmath_t<T>;
  const int64_t rows = x.numel() / n;
  auto as_acc = [n](const Tensor& t) {
    std::vector<A> v;
    if (!t.defined()) return v;
    Tensor c = t.to(dtype_of<A>).contiguous();
    v.assign(c.data_ptr<A>(), c.data_ptr<A>() + n);
    return v;
  };
  const std::vector<A> wv = as_acc(weight), bv = as_acc(bias);
  const A* w = wv.empty() ? nullptr : wv.data();
  const A* b = bv.empty() ? nullptr : bv.data();
  const T* xp = x.data_ptr<T>();
  T* yp = y.data_ptr<T>();
  const int64_t grain = std::max<int64_t>(1, kParallelGrain / n);
  parallel_for(rows, grain, [&](int64_t r0, int64_t r1) {
    std::vector<A> buf;
    if constexpr (!std::is_same_v<T, A>) buf.resize(static_cast<size_t>(n));
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = xp + r * n;
      const A* src;
      if constexpr (std::is_same_v<T, A>) {
        src = xr;
      } else {
        for (int64_t i = 0; i < n; ++i) buf[i] = static_cast<A>(xr[i]);
        src = buf.data();
      }
      const double mean = row_mean(src, n);
      const double var = row_var(src, n, mean);
      const A m = static_cast<A>(mean), rstd = static_cast<A>(1.0 / std::sqrt(var + eps));
      T* yr = yp + r * n;
      if (w && b) normalise_row<true, true>(src, yr, n, m, rstd, w, b);
      else if (w) normalise_row<true, false>(src, yr, n, m, rstd, w, b);
      else if (b) normalise_row<false, true>(src, yr, n, m, rstd, w, b);
      else normalise_row<false, false>(src, yr, n, m, rstd, w, b);
    }
  });
}

}  // namespace

// inputs {input, weight?, bias?}; attrs (normalized_shape, eps).
void layer_norm_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  const Tensor x = in[0].contiguous();
  const Tensor& weight = in.size() > 1 ? in[1] : Tensor();
  const Tensor& bias = in.size() > 2 ? in[2] : Tensor();
  const int64_t n = shape_numel(a.ints(0));
  const double eps = a.d(1);
  if (x.numel() == 0) return;
  with_contiguous_output(out[0], [&](Tensor& y) {
    KILN_DISPATCH_FLOATING_TYPES(x.dtype(), op.name, { layer_norm_typed<scalar_t>(x, weight, bias, y, n, eps); });
  });
}

}  // namespace kiln::cpu
