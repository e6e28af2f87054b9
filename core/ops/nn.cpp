// PENDING: placeholder until this family lands (owned by one helper).
#include "core/op.h"
#include "core/ops.h"

namespace kiln {

Tensor layer_norm(const Tensor& input, IntArrayRef normalized_shape, const std::optional<Tensor>& weight, const std::optional<Tensor>& bias, double eps) { KILN_FAIL("[pending] ", __func__); }
Tensor dropout(const Tensor& input, double p, bool train) { KILN_FAIL("[pending] ", __func__); }
Tensor cross_entropy(const Tensor& input, const Tensor& target, const std::optional<Tensor>& weight, Reduction reduction, int64_t ignore_index, double label_smoothing) { KILN_FAIL("[pending] ", __func__); }
Tensor nll_loss(const Tensor& input, const Tensor& target, const std::optional<Tensor>& weight, Reduction reduction, int64_t ignore_index) { KILN_FAIL("[pending] ", __func__); }
Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction) { KILN_FAIL("[pending] ", __func__); }

namespace ops_registration {
void register_nn_ops(OpRegistry&) {}
}  // namespace ops_registration

}  // namespace kiln
