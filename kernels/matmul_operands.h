#pragma once
// torch.matmul's 1-D operands as matrices, shared by the CPU and CUDA matmul kernels: a [K]
// becomes [1, K] and b [K] becomes [K, 1], and the output (allocated without those dims, as
// matmul_infer gives it) is viewed with them, so the kernels only see batched matrix products.
#include "core/tensor.h"

namespace kiln {

struct MatmulOperands {
  Tensor a, b, out;
};

inline MatmulOperands matmul_as_matrices(Tensor a, Tensor b, Tensor out) {
  if (b.dim() == 1) {
    b = b.unsqueeze(-1);
    out = out.unsqueeze(-1);
  }
  if (a.dim() == 1) {
    a = a.unsqueeze(0);
    out = out.unsqueeze(-2);
  }
  return {std::move(a), std::move(b), std::move(out)};
}

}  // namespace kiln
