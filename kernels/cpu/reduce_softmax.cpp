// CPU kernels of the along-a-dim ops: softmax, log_softmax (max, exp-sum, normalise per row,
// the row kept in cache) and cumsum. Input is viewed as [outer, L, inner]; with inner == 1
// each thread takes whole rows, otherwise (outer, tile of inner) units vectorised over inner.
#include <cmath>

#include "core/ops.h"
#include "core/shape.h"
#include "kernels/cpu/reduce.h"
#include "kernels/cpu/reduce_kernel.h"
#include "kernels/cpu/reduce_math.h"

namespace kiln::cpu {
namespace {

struct DimSplit {
  int64_t outer = 1, len = 1, inner = 1;
};

DimSplit split_at(const Tensor& x, int64_t dim) {
  DimSplit s;
  if (x.dim() == 0) return s;
  for (int64_t d = 0; d < x.dim(); ++d) {
    if (d < dim) s.outer *= x.size(d);
    else if (d == dim) s.len = x.size(d);
    else s.inner *= x.size(d);
  }
  return s;
}

// Parallel over units of `unit_work` elements each.
template <class Fn>
void for_units(int64_t units, int64_t unit_work, Fn&& fn) {
  parallel_for(units, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(unit_work, 1)), fn);
}

template <class T, bool Log>
void softmax_rows(const T* x, T* y, const DimSplit& g) {
  using A = opmath_t<T>;
  constexpr int L = kLanes<A>;
  const int64_t n = g.len;
  for_units(g.outer, n, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const T* __restrict p = x + r * n;
      T* __restrict q = y + r * n;
      const A m = lane_extreme<true, A>(p, n, 1);
      if constexpr (Log) {
        const A ls = std::log(lane_sum<A>(p, n, 1, [m](A v) { return exp_acc(v - m); }));
        for (int64_t i = 0; i < n; ++i) q[i] = T(load_as<A>(p[i]) - m - ls);
      } else if constexpr (std::is_same_v<T, A>) {
        // Store the exponentials while summing them, then scale in place.
        A acc[L];
        for (int k = 0; k < L; ++k) acc[k] = 0;
        int64_t i = 0;
        for (; i + L <= n; i += L)
          for (int k = 0; k < L; ++k) {
            const A v = exp_acc(p[i + k] - m);
            q[i + k] = v;
            acc[k] += v;
          }
        A tail = 0;
        for (; i < n; ++i) {
          q[i] = exp_acc(p[i] - m);
          tail += q[i];
        }
        const A inv = A(1) / (tree_sum(acc, L) + tail);
        for (int64_t j = 0; j < n; ++j) q[j] *= inv;
      } else {
        const A inv = A(1) / lane_sum<A>(p, n, 1, [m](A v) { return exp_acc(v - m); });
        for (int64_t i = 0; i < n; ++i) q[i] = T(exp_acc(load_as<A>(p[i]) - m) * inv);
      }
    }
  });
}

template <class T, bool Log>
void softmax_cols(const T* x, T* y, const DimSplit& g) {
  using A = opmath_t<T>;
  const int64_t n = g.len, inner = g.inner, ntiles = (inner + kColTile - 1) / kColTile;
  for_units(g.outer * ntiles, n * std::min(inner, kColTile), [&](int64_t ub, int64_t ue) {
    A m[kColTile], s[kColTile];
    for (int64_t u = ub; u < ue; ++u) {
      const int64_t o = u / ntiles, c0 = (u % ntiles) * kColTile, nc = std::min(kColTile, inner - c0);
      const T* p = x + o * n * inner + c0;
      T* q = y + o * n * inner + c0;
      for (int64_t j = 0; j < nc; ++j) {
        m[j] = -std::numeric_limits<A>::infinity();
        s[j] = 0;
      }
      for (int64_t r = 0; r < n; ++r) {
        const T* __restrict pr = p + r * inner;
        for (int64_t j = 0; j < nc; ++j) m[j] = pick<true>(m[j], load_as<A>(pr[j]));
      }
      for (int64_t r = 0; r < n; ++r) {
        const T* __restrict pr = p + r * inner;
        T* __restrict qr = q + r * inner;
        for (int64_t j = 0; j < nc; ++j) {
          const A v = exp_acc(load_as<A>(pr[j]) - m[j]);
          if constexpr (!Log && std::is_same_v<T, A>) qr[j] = v;
          s[j] += v;
        }
      }
      if constexpr (Log) {
        for (int64_t j = 0; j < nc; ++j) s[j] = m[j] + std::log(s[j]);
      } else {
        for (int64_t j = 0; j < nc; ++j) s[j] = A(1) / s[j];
      }
      for (int64_t r = 0; r < n; ++r) {
        const T* __restrict pr = p + r * inner;
        T* __restrict qr = q + r * inner;
        for (int64_t j = 0; j < nc; ++j) {
          if constexpr (Log) qr[j] = T(load_as<A>(pr[j]) - s[j]);
          else if constexpr (std::is_same_v<T, A>) qr[j] *= s[j];
          else qr[j] = T(exp_acc(load_as<A>(pr[j]) - m[j]) * s[j]);
        }
      }
    }
  });
}

template <bool Log>
void softmax_impl(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  const Tensor x = in[0].to(out[0].dtype()).contiguous();
  const DimSplit g = split_at(x, wrap_dim(op.name, a.i(0), x.dim()));
  if (x.numel() == 0) return;
  with_contiguous_output(out[0], [&](Tensor& o) {
    KILN_DISPATCH_FLOATING_TYPES(x.dtype(), op.name, {
      if (g.inner == 1) softmax_rows<scalar_t, Log>(x.data_ptr<scalar_t>(), o.data_ptr<scalar_t>(), g);
      else softmax_cols<scalar_t, Log>(x.data_ptr<scalar_t>(), o.data_ptr<scalar_t>(), g);
    });
  });
}

// Floating sums run in double, integer sums in int64 (wrapping), as PyTorch's CPU cumsum.
template <class T, class O>
void cumsum_run(const T* x, O* y, const DimSplit& g) {
  using A = std::conditional_t<std::is_integral_v<T>, int64_t, double>;
  const int64_t n = g.len, inner = g.inner;
  if (inner == 1) {
    for_units(g.outer, n, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const T* __restrict p = x + r * n;
        O* __restrict q = y + r * n;
        A acc = 0;
        for (int64_t i = 0; i < n; ++i) {
          acc += load_as<A>(p[i]);
          q[i] = convert<O>(acc);
        }
      }
    });
    return;
  }
  const int64_t ntiles = (inner + kColTile - 1) / kColTile;
  for_units(g.outer * ntiles, n * std::min(inner, kColTile), [&](int64_t ub, int64_t ue) {
    A acc[kColTile];
    for (int64_t u = ub; u < ue; ++u) {
      const int64_t o = u / ntiles, c0 = (u % ntiles) * kColTile, nc = std::min(kColTile, inner - c0);
      for (int64_t j = 0; j < nc; ++j) acc[j] = 0;
      for (int64_t r = 0; r < n; ++r) {
        const T* __restrict p = x + (o * n + r) * inner + c0;
        O* __restrict q = y + (o * n + r) * inner + c0;
        for (int64_t j = 0; j < nc; ++j) {
          acc[j] += load_as<A>(p[j]);
          q[j] = convert<O>(acc[j]);
        }
      }
    }
  });
}

}  // namespace

void softmax_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  softmax_impl<false>(op, in, out, a);
}
void log_softmax_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  softmax_impl<true>(op, in, out, a);
}

void cumsum_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  // With a dtype the input is cast first; otherwise integers and bool accumulate into int64.
  const Tensor x = (a.is_none(1) ? in[0] : in[0].to(a.dtype(1))).contiguous();
  const DimSplit g = split_at(x, wrap_dim(op.name, a.i(0), x.dim()));
  if (x.numel() == 0) return;
  with_contiguous_output(out[0], [&](Tensor& o) {
    KILN_DISPATCH_ALL_TYPES(x.dtype(), op.name, {
      using T = scalar_t;
      if (o.dtype() == x.dtype()) {
        cumsum_run<T, T>(x.data_ptr<T>(), o.data_ptr<T>(), g);
      } else {
        KILN_INTERNAL_ASSERT(o.dtype() == kInt64, "cumsum output dtype");
        cumsum_run<T, int64_t>(x.data_ptr<T>(), o.data_ptr<int64_t>(), g);
      }
    });
  });
}

}  // namespace kiln::cpu
