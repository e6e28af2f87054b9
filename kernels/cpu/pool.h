#pragma once
// CPU 2-D max and average pooling over [planes, H, W] (planes = N * C), parallel over planes.
#include <cstdint>

#include "core/op.h"

namespace kiln::cpu {

struct Pool2dParams {
  int64_t kH, kW, sH, sW, pH, pW, dH, dW;
  int64_t oH, oW;
  bool count_include_pad;  // avg_pool2d only
};

// input [P, H, W] and out [P, oH, oW] (any strides).
void max_pool2d(const Tensor& input, const Tensor& out, const Pool2dParams& p);
void avg_pool2d(const Tensor& input, const Tensor& out, const Pool2dParams& p);

// out[P, oH, oW] (int64) = the position h * W + w of each window's maximum within its plane: the
// first maximum on ties, a NaN if there is one (the element max_pool2d returns); -1 for a window
// with no element inside the input.
void max_pool2d_indices(const Tensor& input, const Tensor& out, const Pool2dParams& p);

// Backward of the pools. max: grad_input[P, HW] (any strides) = 0, then grad_input[p, indices[p, k]]
// += grad[p, k], indices range-checked (-1 skipped). avg: grad_input[P, H, W] receives each grad[P, oH, oW] value
// divided by its window's divisor, spread over the window.
void max_pool2d_backward(const OpDef& op, const Tensor& grad, const Tensor& indices, const Tensor& grad_input,
                         int64_t HW);
void avg_pool2d_backward(const Tensor& grad, const Tensor& grad_input, int64_t H, int64_t W, const Pool2dParams& p);

}  // namespace kiln::cpu
