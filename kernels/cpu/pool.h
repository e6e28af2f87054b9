#pragma once
// CPU 2-D max and average pooling over [planes, H, W] (planes = N * C), parallel over planes.
#include <cstdint>

#include "core/tensor.h"

namespace kiln::cpu {

struct Pool2dParams {
  int64_t kH, kW, sH, sW, pH, pW, dH, dW;
  int64_t oH, oW;
  bool count_include_pad;  // avg_pool2d only
};

// input [P, H, W] and out [P, oH, oW] (any strides).
void max_pool2d(const Tensor& input, const Tensor& out, const Pool2dParams& p);
void avg_pool2d(const Tensor& input, const Tensor& out, const Pool2dParams& p);

}  // namespace kiln::cpu
