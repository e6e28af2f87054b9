#pragma once
// CPU matrix multiplication: float32 through oneDNN's sgemm (transposed operands passed as
// 'T', never copied), float64 and integers through a cache-blocked C++ GEMM, float16/bfloat16
// computed in float32.
#include <cstdint>

#include "core/tensor.h"

namespace kiln::cpu {

// A strided matrix operand: element (i, j) lives at data + (i * rs + j * cs) elements.
struct MatRef {
  const void* data;
  int64_t rs, cs;
};

// C[M, N] = A[M, K] @ B[K, N], or C += A @ B when `accumulate`. C is row-major with leading
// dimension ldc. dtype: any numeric dtype except bool (checked by the callers' infer).
void gemm(DType dt, int64_t M, int64_t N, int64_t K, MatRef A, MatRef B, void* C, int64_t ldc, bool accumulate);

// out[..., M, N] = a[..., M, K] @ b[..., K, N] for every batch index. The batch dims of `a` and
// `b` (right-aligned, possibly fewer, size 1 broadcasting) broadcast to out's batch dims; no
// operand is expanded in memory. Batches sharing one `b` are folded into a single GEMM when a's
// layout allows. `out` may have any strides; a, b and out share out's dtype.
void matmul_batched(const Tensor& a, const Tensor& b, const Tensor& out, bool accumulate = false);

}  // namespace kiln::cpu
