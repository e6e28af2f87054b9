// PENDING: placeholder until this family lands (owned by one helper).
#include "core/op.h"
#include "core/ops.h"

namespace kiln {

Tensor mm(const Tensor& a, const Tensor& b) { KILN_FAIL("[pending] ", __func__); }
Tensor bmm(const Tensor& a, const Tensor& b) { KILN_FAIL("[pending] ", __func__); }
Tensor matmul(const Tensor& a, const Tensor& b) { KILN_FAIL("[pending] ", __func__); }
Tensor linear(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias) { KILN_FAIL("[pending] ", __func__); }

namespace ops_registration {
void register_linalg_ops(OpRegistry&) {}
}  // namespace ops_registration

}  // namespace kiln
