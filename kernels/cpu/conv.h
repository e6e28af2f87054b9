#pragma once
// CPU 2-D convolution (NCHW): float32 through a cached oneDNN convolution primitive, float16 and
// bfloat16 through float32, float64 through im2col + the blocked GEMM (kernels/cpu/gemm.h).
#include <cstdint>

#include "core/tensor.h"

namespace kiln::cpu {

struct Conv2dParams {
  int64_t N, C, H, W;       // input
  int64_t O, kH, kW;        // weight [O, C / groups, kH, kW]
  int64_t oH, oW;           // output spatial size
  int64_t sH, sW, pH, pW, dH, dW, groups;
};

// out[N, O, oH, oW] = conv(input[N, C, H, W], weight) + bias (bias may be undefined).
// Inputs may have any strides; out may have any strides.
void conv2d(const Tensor& input, const Tensor& weight, const Tensor& bias, const Tensor& out, const Conv2dParams& p);

// Gradients of conv2d (kernels/cpu/conv_backward.cpp), same dtype paths as the forward:
// grad_input[N, C, H, W] from grad_output[N, O, oH, oW] and weight, and
// grad_weight[O, C / groups, kH, kW] from grad_output and input. Operands may have any strides.
void conv2d_backward_input(const Tensor& grad_output, const Tensor& weight, const Tensor& grad_input,
                           const Conv2dParams& p);
void conv2d_backward_weight(const Tensor& grad_output, const Tensor& input, const Tensor& grad_weight,
                            const Conv2dParams& p);

}  // namespace kiln::cpu
