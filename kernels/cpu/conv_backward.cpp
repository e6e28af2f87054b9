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

// grad_weight of group g: the sum over images of gy_ng @ col_ng^T. The images are split into one
// part per thread, each summing its images into its own [O, Kd] partial (GEMMs of one image are
// too small to split further), and the partials are added in part order, so the result does not
// depend on scheduling. A single image leaves the threads to its GEMMs.
template <class T>
void backward_weight_gemm(const Tensor& gy, const Tensor& x, const Tensor& dw, const Conv2dParams& p) {
  const int64_t G = p.groups, Cg = p.C / G, Og = p.O / G, L = p.oH * p.oW, Kd = Cg * p.kH * p.kW;
  const T* gp = gy.data_ptr<T>();
  const T* xp = x.data_ptr<T>();
  T* wp = dw.data_ptr<T>();
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(p.N, max_threads()));
  const int64_t wsize = p.O * Kd;
  std::vector<T> partial(static_cast<size_t>((parts - 1) * wsize));
  parallel_for(parts, 1, [&](int64_t q0, int64_t q1) {
    std::vector<T> col(static_cast<size_t>(Kd * L));
    for (int64_t q = q0; q < q1; ++q) {
      T* acc = q == 0 ? wp : partial.data() + (q - 1) * wsize;  // part 0 sums straight into dw
      const int64_t n0 = p.N * q / parts, n1 = p.N * (q + 1) / parts;
      for (int64_t n = n0; n < n1; ++n)
        for (int64_t g = 0; g < G; ++g) {
          im2col<T>(xp + (n * p.C + g * Cg) * p.H * p.W, Cg, p, col.data());
          gemm(dtype_of<T>, Og, Kd, L, MatRef{gp + (n * p.O + g * Og) * L, L, 1}, MatRef{col.data(), 1, L},
               acc + g * Og * Kd, Kd, n > n0);
        }
    }
  });
  for (int64_t q = 1; q < parts; ++q) {
    const T* part = partial.data() + (q - 1) * wsize;
    for (int64_t i = 0; i < wsize; ++i) wp[i] += part[i];
  }
}

// float32 weight gradients with fewer input channels per group than oneDNN's channel block (8
// with AVX2) take the GEMM path above: oneDNN's blocked kernel pads the channels up to the block
// and its plain-layout kernel stalls (kernels/cpu/onednn_conv.cpp). N=32, C=1, 28x28, 3x3, 16
// out channels: 0.73 ms through oneDNN.
bool weight_grad_by_gemm(const Conv2dParams& p) { return p.C / p.groups < 8; }

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
      if (wrt == Wrt::Weight && weight_grad_by_gemm(p)) backward_weight_gemm<float>(gy, b, o, p);
      else
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
