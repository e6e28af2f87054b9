// Gradients of conv2d with respect to its input and its weight. float32 runs oneDNN's
// backward-data and backward-weights primitives (kernels/cpu/onednn_conv.h); float16 and
// bfloat16 go through float32; float64 uses GEMM with col2im (input) or im2col (weight).
#include <algorithm>
#include <vector>

#include "core/ops.h"
#include "kernels/cpu/conv.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/im2col.h"
#include "kernels/cpu/onednn_conv.h"
#include "kernels/cpu/parallel.h"

namespace kiln::cpu {
namespace {

// --- float64: GEMM with im2col / col2im ---------------------------------------------------------

// grad_input of image n, group g: col = W_g^T @ gy_ng, then col2im. Threads take whole (image,
// group) pairs, which write disjoint channel planes.
template <class T>
void backward_input_gemm(const Tensor& gy, const Tensor& w, const Tensor& dx, const Conv2dParams& p) {
  const int64_t G = p.groups, Cg = p.C / G, Og = p.O / G, L = p.oH * p.oW, Kd = Cg * p.kH * p.kW;
  const T* gp = gy.data_ptr<T>();
  const T* wp = w.data_ptr<T>();
  T* xp = dx.data_ptr<T>();
  const int64_t per_item = std::max<int64_t>(1, Og * L * Kd);
  parallel_for(p.N * G, std::max<int64_t>(1, 65536 / per_item), [&](int64_t t0, int64_t t1) {
    std::vector<T> col(static_cast<size_t>(Kd * L));
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / G, g = t % G;
      T* x = xp + (n * p.C + g * Cg) * p.H * p.W;
      std::fill(x, x + Cg * p.H * p.W, T(0));
      gemm(dtype_of<T>, Kd, L, Og, MatRef{wp + g * Og * Kd, 1, Kd}, MatRef{gp + (n * p.O + g * Og) * L, L, 1},
           col.data(), L, false);
      col2im<T>(col.data(), Cg, p, x);
    }
  });
}

// grad_weight of group g: sum over images of gy_ng @ col_ng^T. Threads take whole groups; a
// single group leaves the threads to the GEMM.
template <class T>
void backward_weight_gemm(const Tensor& gy, const Tensor& x, const Tensor& dw, const Conv2dParams& p) {
  const int64_t G = p.groups, Cg = p.C / G, Og = p.O / G, L = p.oH * p.oW, Kd = Cg * p.kH * p.kW;
  const T* gp = gy.data_ptr<T>();
  const T* xp = x.data_ptr<T>();
  T* wp = dw.data_ptr<T>();
  const int64_t per_group = std::max<int64_t>(1, p.N * Og * L * Kd);
  parallel_for(G, std::max<int64_t>(1, 65536 / per_group), [&](int64_t g0, int64_t g1) {
    std::vector<T> col(static_cast<size_t>(Kd * L));
    for (int64_t g = g0; g < g1; ++g) {
      T* out = wp + g * Og * Kd;
      for (int64_t n = 0; n < p.N; ++n) {
        im2col<T>(xp + (n * p.C + g * Cg) * p.H * p.W, Cg, p, col.data());
        gemm(dtype_of<T>, Og, Kd, L, MatRef{gp + (n * p.O + g * Og) * L, L, 1}, MatRef{col.data(), 1, L}, out, Kd,
             n > 0);
      }
    }
  });
}

enum class Wrt { Input, Weight };

// Casts, contiguity and the empty cases shared by both gradients; `other` is the weight (Wrt::Input)
// or the input (Wrt::Weight).
void conv_backward(const Tensor& grad_output, const Tensor& other, const Tensor& out_t, const Conv2dParams& p,
                   Wrt wrt) {
  Tensor out = out_t;
  if (out.numel() == 0) return;
  if (grad_output.numel() == 0 || other.numel() == 0) {
    out.zero_();  // no output positions (or no channels): nothing flows back
    return;
  }
  const DType dt = out.dtype();
  if (dt == DType::Float16 || dt == DType::BFloat16) {
    Tensor o32 = empty(out.sizes(), kFloat32);
    conv_backward(grad_output.to(kFloat32), other.to(kFloat32), o32, p, wrt);
    out.copy_(o32);
    return;
  }
  Tensor o = out.is_contiguous() ? out : empty(out.sizes(), dt);
  Tensor gy = grad_output.contiguous(), b = other.contiguous();
  switch (dt) {
    case DType::Float32:
      onednn::run_conv(wrt == Wrt::Weight ? onednn::ConvPass::BackwardWeights : onednn::ConvPass::BackwardData, p,
                       b.data_ptr(), gy.data_ptr(), nullptr, o.data_ptr());
      break;
    case DType::Float64:
      if (wrt == Wrt::Input) backward_input_gemm<double>(gy, b, o, p);
      else backward_weight_gemm<double>(gy, b, o, p);
      break;
    default: KILN_FAIL("[conv2d_backward] expected a floating point grad_output, but got ", dt);
  }
  if (!o.is_same(out)) out.copy_(o);
}

}  // namespace

void conv2d_backward_input(const Tensor& grad_output, const Tensor& weight, const Tensor& grad_input,
                           const Conv2dParams& p) {
  conv_backward(grad_output, weight, grad_input, p, Wrt::Input);
}

void conv2d_backward_weight(const Tensor& grad_output, const Tensor& input, const Tensor& grad_weight,
                            const Conv2dParams& p) {
  conv_backward(grad_output, input, grad_weight, p, Wrt::Weight);
}

}  // namespace kiln::cpu
