#include "kernels/cpu/pool.h"

#include <cmath>
#include <limits>

#include "core/ops.h"
#include "kernels/cpu/loops.h"
#include "kernels/cpu/parallel.h"

namespace kiln::cpu {
namespace {

template <class T>
bool is_nan(T v) {
  if constexpr (std::is_integral_v<T>) return false;
  else return std::isnan(static_cast<opmath_t<T>>(v));
}

// Runs fn(in_plane, out_plane) over the contiguous [P, H, W] input and [P, oH, oW] output.
template <class T, class Fn>
void for_each_plane(const Tensor& input, const Tensor& out, const Pool2dParams& p, Fn&& fn) {
  Tensor x = input.contiguous();
  Tensor dst = out;
  with_contiguous_output(dst, [&](Tensor& o) {
    const int64_t P = x.size(0), HW = x.size(1) * x.size(2), OHW = p.oH * p.oW;
    const T* xp = x.data_ptr<T>();
    T* op = o.data_ptr<T>();
    const int64_t per_plane = std::max<int64_t>(1, OHW * p.kH * p.kW);
    parallel_for(P, std::max<int64_t>(1, kParallelGrain / per_plane), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) fn(xp + i * HW, op + i * OHW);
    });
  });
}

template <class T>
void max_pool_impl(const Tensor& input, const Tensor& out, const Pool2dParams& p) {
  using acc_t = opmath_t<T>;
  const int64_t H = input.size(1), W = input.size(2);
  for_each_plane<T>(input, out, p, [&](const T* x, T* o) {
    for (int64_t oh = 0; oh < p.oH; ++oh) {
      const int64_t h0 = oh * p.sH - p.pH;
      for (int64_t ow = 0; ow < p.oW; ++ow) {
        const int64_t w0 = ow * p.sW - p.pW;
        acc_t best = std::numeric_limits<acc_t>::has_infinity ? -std::numeric_limits<acc_t>::infinity()
                                                              : std::numeric_limits<acc_t>::lowest();
        for (int64_t i = 0; i < p.kH; ++i) {
          const int64_t h = h0 + i * p.dH;
          if (h < 0 || h >= H) continue;
          for (int64_t j = 0; j < p.kW; ++j) {
            const int64_t w = w0 + j * p.dW;
            if (w < 0 || w >= W) continue;
            const acc_t v = static_cast<acc_t>(x[h * W + w]);
            if (v > best || is_nan(v)) best = v;  // NaN propagates, as in PyTorch
          }
          if (is_nan(best)) break;
        }
        o[oh * p.oW + ow] = static_cast<T>(best);
      }
    }
  });
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

}  // namespace

void max_pool2d(const Tensor& input, const Tensor& out, const Pool2dParams& p) {
  if (out.numel() == 0) return;
  switch (out.dtype()) {
    case DType::Float32: return max_pool_impl<float>(input, out, p);
    case DType::Float64: return max_pool_impl<double>(input, out, p);
    case DType::Float16: return max_pool_impl<Half>(input, out, p);
    case DType::BFloat16: return max_pool_impl<BFloat16>(input, out, p);
    case DType::Int64: return max_pool_impl<int64_t>(input, out, p);
    case DType::Int32: return max_pool_impl<int32_t>(input, out, p);
    case DType::Int16: return max_pool_impl<int16_t>(input, out, p);
    case DType::Int8: return max_pool_impl<int8_t>(input, out, p);
    case DType::UInt8: return max_pool_impl<uint8_t>(input, out, p);
    default: KILN_FAIL("[max_pool2d] is not supported for dtype ", out.dtype());
  }
}

void avg_pool2d(const Tensor& input, const Tensor& out, const Pool2dParams& p) {
  if (out.numel() == 0) return;
  KILN_DISPATCH_FLOATING_TYPES(out.dtype(), "avg_pool2d", { avg_pool_impl<scalar_t>(input, out, p); });
}

}  // namespace kiln::cpu
