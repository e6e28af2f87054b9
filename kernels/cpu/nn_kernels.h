#pragma once
// CPU kernels of the nn rows (kernels/nn.cpp): layer_norm, dropout and the losses.
#include "core/op.h"
#include "core/ops.h"
#include "kernels/cpu/loops.h"

namespace kiln::cpu {

void layer_norm_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a);
void dropout_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a);
void cross_entropy_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a);
void nll_loss_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a);
void mse_loss_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a);


// Sum of n doubles in 8 interleaved lanes (vectorisable without reassociation flags), summed
// in a fixed order so that the result does not depend on the thread count.
inline double lane_sum(const double* p, int64_t n) {
  double acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += p[i + j];
  double tail = 0;
  for (; i < n; ++i) tail += p[i];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
}

}  // namespace kiln::cpu
