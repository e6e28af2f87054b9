#include "kernels/cpu/pool.h"

#include <cmath>
#include <atomic>
#include <limits>
#include <vector>

#include "core/ops.h"
#include "kernels/cpu/loops.h"
#include "kernels/cpu/parallel.h"

namespace kiln::cpu {
namespace {

// Runs fn(in_plane, out_plane) over the contiguous [P, H, W] input and [P, oH, oW] output.
template <class T, class TOut = T, class Fn>
void for_each_plane(const Tensor& input, const Tensor& out, const Pool2dParams& p, Fn&& fn) {
  Tensor x = input.contiguous();
  Tensor dst = out;
  with_contiguous_output(dst, [&](Tensor& o) {
    const int64_t P = x.size(0), HW = x.size(1) * x.size(2), OHW = p.oH * p.oW;
    const T* xp = x.data_ptr<T>();
    TOut* op = o.data_ptr<TOut>();
    const int64_t per_plane = std::max<int64_t>(1, OHW * p.kH * p.kW);
    parallel_for(P, std::max<int64_t>(1, kParallelGrain / per_plane), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) fn(xp + i * HW, op + i * OHW);
    });
  });
}

// Each window's in-bounds rows (h = begin, begin + dH, ... < end) and likewise columns, computed
// once per call so that the per-plane loops carry no bounds checks. A window that misses the
// input has begin >= end.
struct WindowBounds {
  std::vector<int64_t> h_begin, h_end, w_begin, w_end;
};

WindowBounds window_bounds(int64_t H, int64_t W, const Pool2dParams& p) {
  auto axis = [](int64_t n_out, int64_t stride, int64_t pad, int64_t dil, int64_t k, int64_t size,
                 std::vector<int64_t>& begin, std::vector<int64_t>& end) {
    begin.resize(static_cast<size_t>(n_out));
    end.resize(static_cast<size_t>(n_out));
    for (int64_t o = 0; o < n_out; ++o) {
      const int64_t first = o * stride - pad;
      // The first tap at or after 0: first + ceil(-first / dil) * dil.
      const int64_t b = first >= 0 ? first : first + (-first + dil - 1) / dil * dil;
      begin[static_cast<size_t>(o)] = b;
      end[static_cast<size_t>(o)] = std::min(first + (k - 1) * dil + 1, size);
    }
  };
  WindowBounds wb;
  axis(p.oH, p.sH, p.pH, p.dH, p.kH, H, wb.h_begin, wb.h_end);
  axis(p.oW, p.sW, p.pW, p.dW, p.kW, W, wb.w_begin, wb.w_end);
  return wb;
}

// PyTorch's max_pool2d_with_indices rule, for the values and the indices alike: visit the window in
// row-major order from its first in-bounds element and move on a strictly greater value or a NaN
// (so a NaN wins, and among NaNs the last). Per output row, the taps are applied to all the row's
// windows at once (loop over ow innermost, windows' running maxima in a buffer): the select then
// vectorises into blends instead of branches that a random input would mispredict. Each window
// still sees its taps in row-major order. kSW: the column stride when it is 1 or 2 (constant
// strides let the loads vectorise), else 0. Arg: the running indices' type, int32 when the plane
// allows (lanes as wide as float32's, so that the index select vectorises with the value's).
template <class T, bool kIndices, class Out, int kSW, class Arg = int64_t>
void max_pool_planes(const Tensor& input, const Tensor& out, const Pool2dParams& p) {
  using acc_t = opmath_t<T>;
  const int64_t H = input.size(1), W = input.size(2);
  const WindowBounds wb = window_bounds(H, W, p);
  const int64_t oW = p.oW, kW = p.kW, dH = p.dH, dW = p.dW, pW = p.pW;
  const int64_t sW = kSW > 0 ? kSW : p.sW;
  const acc_t lowest = std::numeric_limits<acc_t>::has_infinity ? -std::numeric_limits<acc_t>::infinity()
                                                                : std::numeric_limits<acc_t>::lowest();
  // For column tap j, the outputs whose tap lands inside the input: w = ow*sW - pW + j*dW in [0, W).
  std::vector<int64_t> ow_lo(static_cast<size_t>(kW)), ow_hi(static_cast<size_t>(kW));
  for (int64_t j = 0; j < kW; ++j) {
    const int64_t off = j * dW - pW;  // w = ow*sW + off
    const int64_t lo = off >= 0 ? 0 : (-off + sW - 1) / sW;
    const int64_t hi = W - 1 - off < 0 ? 0 : (W - 1 - off) / sW + 1;
    ow_lo[static_cast<size_t>(j)] = std::min(lo, oW);
    ow_hi[static_cast<size_t>(j)] = std::max(std::min(hi, oW), ow_lo[static_cast<size_t>(j)]);
  }
  for_each_plane<T, Out>(input, out, p, [&](const T* x, Out* o) {
    thread_local std::vector<acc_t> best_buf;
    thread_local std::vector<Arg> arg_buf;
    best_buf.resize(static_cast<size_t>(oW));
    if (kIndices) arg_buf.resize(static_cast<size_t>(oW));
    acc_t* __restrict best = best_buf.data();
    Arg* __restrict arg = arg_buf.data();
    for (int64_t oh = 0; oh < p.oH; ++oh) {
      const int64_t hb = wb.h_begin[static_cast<size_t>(oh)], he = wb.h_end[static_cast<size_t>(oh)];
      for (int64_t ow = 0; ow < oW; ++ow) {
        best[ow] = lowest;
        if constexpr (kIndices) {
          const int64_t wbeg = wb.w_begin[static_cast<size_t>(ow)], wend = wb.w_end[static_cast<size_t>(ow)];
          arg[ow] = static_cast<Arg>(hb < he && wbeg < wend ? hb * W + wbeg : -1);  // -1: the window misses the input
        }
      }
      for (int64_t h = hb; h < he; h += dH) {
        const T* __restrict row = x + h * W;
        const Arg row_start = static_cast<Arg>(h * W);
        for (int64_t j = 0; j < kW; ++j) {
          const int64_t off = j * dW - pW, lo = ow_lo[static_cast<size_t>(j)], hi = ow_hi[static_cast<size_t>(j)];
          for (int64_t ow = lo; ow < hi; ++ow) {
            const int64_t w = ow * sW + off;
            const acc_t v = static_cast<acc_t>(row[w]);
            const bool take = v > best[ow] || v != v;
            best[ow] = take ? v : best[ow];
            if constexpr (kIndices) arg[ow] = take ? row_start + static_cast<Arg>(w) : arg[ow];
          }
        }
      }
      Out* orow = o + oh * oW;
      for (int64_t ow = 0; ow < oW; ++ow) {
        if constexpr (kIndices) orow[ow] = arg[ow];
        else orow[ow] = static_cast<T>(best[ow]);
      }
    }
  });
}

template <class T, bool kIndices, class Out, class Arg = int64_t>
void max_pool_dispatch_stride(const Tensor& input, const Tensor& out, const Pool2dParams& p) {
  if (p.sW == 1) return max_pool_planes<T, kIndices, Out, 1, Arg>(input, out, p);
  if (p.sW == 2) return max_pool_planes<T, kIndices, Out, 2, Arg>(input, out, p);
  max_pool_planes<T, kIndices, Out, 0, Arg>(input, out, p);
}

template <class T>
void max_pool_impl(const Tensor& input, const Tensor& out, const Pool2dParams& p) {
  max_pool_dispatch_stride<T, false, T>(input, out, p);
}

// A dilated window can miss the input entirely (its max is -inf); it gets -1, where PyTorch
// would name an element past the plane.
template <class T>
void max_pool_indices_impl(const Tensor& input, const Tensor& out, const Pool2dParams& p) {
  if (input.size(1) * input.size(2) <= std::numeric_limits<int32_t>::max())
    return max_pool_dispatch_stride<T, true, int64_t, int32_t>(input, out, p);
  max_pool_dispatch_stride<T, true, int64_t, int64_t>(input, out, p);
}

// PyTorch's divisor: the window clipped to the padded input (count_include_pad) or to the input.
template <class T>
void avg_pool_impl(const Tensor& input, const Tensor& out, const Pool2dParams& p) {
  using acc_t = opmath_t<T>;
  const int64_t H = input.size(1), W = input.size(2);
  for_each_plane<T>(input, out, p, [&](const T* x, T* o) {
    for (int64_t oh = 0; oh < p.oH; ++oh) {
      for (int64_t ow = 0; ow < p.oW; ++ow) {
        int64_t h0 = oh * p.sH - p.pH, w0 = ow * p.sW - p.pW;
        int64_t h1 = std::min(h0 + p.kH, H + p.pH), w1 = std::min(w0 + p.kW, W + p.pW);
        const int64_t pool_size = (h1 - h0) * (w1 - w0);
        h0 = std::max<int64_t>(h0, 0), w0 = std::max<int64_t>(w0, 0);
        h1 = std::min(h1, H), w1 = std::min(w1, W);
        if (h0 >= h1 || w0 >= w1) {
          o[oh * p.oW + ow] = T(0);
          continue;
        }
        acc_t sum = 0;
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) sum += static_cast<acc_t>(x[h * W + w]);
        const int64_t divisor = p.count_include_pad ? pool_size : (h1 - h0) * (w1 - w0);
        o[oh * p.oW + ow] = static_cast<T>(sum / static_cast<acc_t>(divisor));
      }
    }
  });
}

// Each plane of grad_input is written by one thread, so the scatter needs no atomics.
template <class T>
void max_pool_backward_impl(const OpDef& op, const Tensor& grad, const Tensor& indices, Tensor& o, int64_t HW) {
  using acc_t = opmath_t<T>;
  const Tensor g = grad.contiguous(), idx = indices.contiguous();
  const int64_t P = g.size(0), K = g.size(1);
  const T* gp = g.data_ptr<T>();
  const int64_t* ip = idx.data_ptr<int64_t>();
  T* op_ = o.data_ptr<T>();
  std::atomic<bool> bad{false};
  std::atomic<int64_t> bad_value{0};
  parallel_for(P, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, K + HW)), [&](int64_t b, int64_t e) {
    for (int64_t pl = b; pl < e; ++pl) {
      T* dst = op_ + pl * HW;
      std::fill(dst, dst + HW, T(0));
      for (int64_t k = 0; k < K; ++k) {
        const int64_t v = ip[pl * K + k];
        if (v == -1) continue;  // a window without input elements
        if (v < 0 || v >= HW) {
          bad_value.store(v);
          bad.store(true);
          return;
        }
        dst[v] = static_cast<T>(static_cast<acc_t>(dst[v]) + static_cast<acc_t>(gp[pl * K + k]));
      }
    }
  });
  KILN_CHECK(!bad.load(), "[", op.name, "] index ", bad_value.load(), " is out of range for an input plane of ", HW,
             " elements");
}

// The divisor of each window is the forward's (avg_pool_impl).
template <class T>
void avg_pool_backward_impl(const Tensor& grad, Tensor& o, int64_t H, int64_t W, const Pool2dParams& p) {
  using acc_t = opmath_t<T>;
  const Tensor g = grad.contiguous();
  const int64_t P = g.size(0), OHW = p.oH * p.oW;
  const T* gp = g.data_ptr<T>();
  T* op_ = o.data_ptr<T>();
  const int64_t per_plane = std::max<int64_t>(1, OHW * p.kH * p.kW + H * W);
  parallel_for(P, std::max<int64_t>(1, kParallelGrain / per_plane), [&](int64_t b, int64_t e) {
    std::vector<acc_t> acc(static_cast<size_t>(H * W));
    for (int64_t pl = b; pl < e; ++pl) {
      std::fill(acc.begin(), acc.end(), acc_t(0));
      const T* gplane = gp + pl * OHW;
      for (int64_t oh = 0; oh < p.oH; ++oh) {
        for (int64_t ow = 0; ow < p.oW; ++ow) {
          int64_t h0 = oh * p.sH - p.pH, w0 = ow * p.sW - p.pW;
          int64_t h1 = std::min(h0 + p.kH, H + p.pH), w1 = std::min(w0 + p.kW, W + p.pW);
          const int64_t pool_size = (h1 - h0) * (w1 - w0);
          h0 = std::max<int64_t>(h0, 0), w0 = std::max<int64_t>(w0, 0);
          h1 = std::min(h1, H), w1 = std::min(w1, W);
          if (h0 >= h1 || w0 >= w1) continue;
          const int64_t divisor = p.count_include_pad ? pool_size : (h1 - h0) * (w1 - w0);
          const acc_t v = static_cast<acc_t>(gplane[oh * p.oW + ow]) / static_cast<acc_t>(divisor);
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t w = w0; w < w1; ++w) acc[static_cast<size_t>(h * W + w)] += v;
        }
      }
      T* dst = op_ + pl * H * W;
      for (int64_t i = 0; i < H * W; ++i) dst[i] = static_cast<T>(acc[static_cast<size_t>(i)]);
    }
  });
}

// Max pooling runs on every dtype but bool: one switch for the forward and the indices kernel.
template <class F>
void dispatch_max_pool_dtype(const char* op, DType dt, F&& f) {
  switch (dt) {
    case DType::Float32: return f(float{});
    case DType::Float64: return f(double{});
    case DType::Float16: return f(Half{});
    case DType::BFloat16: return f(BFloat16{});
    case DType::Int64: return f(int64_t{});
    case DType::Int32: return f(int32_t{});
    case DType::Int16: return f(int16_t{});
    case DType::Int8: return f(int8_t{});
    case DType::UInt8: return f(uint8_t{});
    default: KILN_FAIL("[", op, "] is not supported for dtype ", dt);
  }
}

}  // namespace

void max_pool2d(const Tensor& input, const Tensor& out, const Pool2dParams& p) {
  if (out.numel() == 0) return;
  dispatch_max_pool_dtype("max_pool2d", out.dtype(), [&](auto tag) { max_pool_impl<decltype(tag)>(input, out, p); });
}

void avg_pool2d(const Tensor& input, const Tensor& out, const Pool2dParams& p) {
  if (out.numel() == 0) return;
  KILN_DISPATCH_FLOATING_TYPES(out.dtype(), "avg_pool2d", { avg_pool_impl<scalar_t>(input, out, p); });
}


void max_pool2d_indices(const Tensor& input, const Tensor& out, const Pool2dParams& p) {
  if (out.numel() == 0) return;
  dispatch_max_pool_dtype("max_pool2d_indices", input.dtype(),
                          [&](auto tag) { max_pool_indices_impl<decltype(tag)>(input, out, p); });
}

void max_pool2d_backward(const OpDef& op, const Tensor& grad, const Tensor& indices, const Tensor& grad_input,
                         int64_t HW) {
  Tensor dst = grad_input;
  with_contiguous_output(dst, [&](Tensor& o) {
    if (o.numel() == 0) return;
    KILN_DISPATCH_FLOATING_TYPES(o.dtype(), op.name, { max_pool_backward_impl<scalar_t>(op, grad, indices, o, HW); });
  });
}

void avg_pool2d_backward(const Tensor& grad, const Tensor& grad_input, int64_t H, int64_t W, const Pool2dParams& p) {
  Tensor dst = grad_input;
  with_contiguous_output(dst, [&](Tensor& o) {
    if (o.numel() == 0) return;
    KILN_DISPATCH_FLOATING_TYPES(o.dtype(), "avg_pool2d_backward",
                                 { avg_pool_backward_impl<scalar_t>(grad, o, H, W, p); });
  });
}

}  // namespace kiln::cpu
