// Front ends of the matrix products; argument checks live in the rows' infer (kernels/linalg.cpp).
#include "core/op.h"
#include "core/ops.h"

namespace kiln {

Tensor mm(const Tensor& a, const Tensor& b) { return call_op1(KILN_ROW("mm"), {a, b}); }
Tensor bmm(const Tensor& a, const Tensor& b) { return call_op1(KILN_ROW("bmm"), {a, b}); }
Tensor matmul(const Tensor& a, const Tensor& b) { return call_op1(KILN_ROW("matmul"), {a, b}); }

Tensor linear(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias) {
  if (bias && bias->defined()) return call_op1(KILN_ROW("linear"), {x, weight, *bias});
  return call_op1(KILN_ROW("linear"), {x, weight});
}

}  // namespace kiln
