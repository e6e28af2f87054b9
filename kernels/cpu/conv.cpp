#include "kernels/cpu/conv.h"

#include <vector>

#include "core/ops.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/im2col.h"
#include "kernels/cpu/onednn_conv.h"
#include "kernels/cpu/parallel.h"

namespace kiln::cpu {
namespace {

// --- float64: im2col + GEMM ---------------------------------------------------------------------

// x, w, b contiguous; out contiguous.
template <class T>
void conv2d_im2col(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& out, const Conv2dParams& p) {
  const int64_t G = p.groups, Cg = p.C / G, Og = p.O / G, L = p.oH * p.oW, Kd = Cg * p.kH * p.kW;
  const T* xp = x.data_ptr<T>();
  const T* wp = w.data_ptr<T>();
  const T* bp = b.defined() ? b.data_ptr<T>() : nullptr;
  T* op = out.data_ptr<T>();
  // Threads take whole (image, group) pairs; a lone pair lets the GEMM split its rows instead.
  const int64_t per_item = std::max<int64_t>(1, Og * L * Kd);
  parallel_for(p.N * G, std::max<int64_t>(1, 65536 / per_item), [&](int64_t t0, int64_t t1) {
    std::vector<T> col(static_cast<size_t>(Kd * L));
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / G, g = t % G;
      T* o = op + (n * p.O + g * Og) * L;
      if (bp) {
        for (int64_t oc = 0; oc < Og; ++oc)
          for (int64_t l = 0; l < L; ++l) o[oc * L + l] = bp[g * Og + oc];
      }
      im2col<T>(xp + (n * p.C + g * Cg) * p.H * p.W, Cg, p, col.data());
      gemm(dtype_of<T>, Og, L, Kd, MatRef{wp + g * Og * Kd, Kd, 1}, MatRef{col.data(), L, 1}, o, L, bp != nullptr);
    }
  });
}

}  // namespace

void conv2d(const Tensor& input, const Tensor& weight, const Tensor& bias, const Tensor& out_t, const Conv2dParams& p) {
  Tensor out = out_t;
  if (out.numel() == 0) return;
  const DType dt = out.dtype();
  if (input.numel() == 0 || weight.numel() == 0) {
    // Every window lies in the padding (or has no channels): the result is the bias.
    if (bias.defined()) out.copy_(bias.view({1, p.O, 1, 1}).expand(out.sizes()));
    else out.zero_();
    return;
  }
  if (dt == DType::Float16 || dt == DType::BFloat16) {
    Tensor o32 = empty(out.sizes(), kFloat32);
    conv2d(input.to(kFloat32), weight.to(kFloat32), bias.defined() ? bias.to(kFloat32) : Tensor(), o32, p);
    out.copy_(o32);
    return;
  }
  Tensor o = out.is_contiguous() ? out : empty(out.sizes(), dt);
  Tensor x = input.contiguous(), w = weight.contiguous(), b = bias.defined() ? bias.contiguous() : Tensor();
  switch (dt) {
    case DType::Float32:
      onednn::run_conv(onednn::ConvPass::Forward, p, x.data_ptr(), w.data_ptr(), b.defined() ? b.data_ptr() : nullptr,
                       o.data_ptr());
      break;
    case DType::Float64: conv2d_im2col<double>(x, w, b, o, p); break;
    default: KILN_FAIL("[conv2d] expected a floating point input, but got ", dt);
  }
  if (!o.is_same(out)) out.copy_(o);
}

}  // namespace kiln::cpu
