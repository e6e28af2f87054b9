// PENDING: placeholder until this family lands (owned by one helper).
#include "core/op.h"
#include "core/ops.h"

namespace kiln {

Tensor cat(const TensorList& tensors, int64_t dim) { KILN_FAIL("[pending] ", __func__); }
Tensor stack(const TensorList& tensors, int64_t dim) { KILN_FAIL("[pending] ", __func__); }
std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim) { KILN_FAIL("[pending] ", __func__); }
std::vector<Tensor> split_with_sizes(const Tensor& x, IntArrayRef sizes, int64_t dim) { KILN_FAIL("[pending] ", __func__); }
std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim) { KILN_FAIL("[pending] ", __func__); }
std::vector<Tensor> unbind(const Tensor& x, int64_t dim) { KILN_FAIL("[pending] ", __func__); }
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) { KILN_FAIL("[pending] ", __func__); }
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) { KILN_FAIL("[pending] ", __func__); }
Tensor scatter(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src) { KILN_FAIL("[pending] ", __func__); }
Tensor scatter(const Tensor& x, int64_t dim, const Tensor& index, const Scalar& value) { KILN_FAIL("[pending] ", __func__); }
Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src) { KILN_FAIL("[pending] ", __func__); }
Tensor embedding(const Tensor& weight, const Tensor& indices, std::optional<int64_t> padding_idx) { KILN_FAIL("[pending] ", __func__); }
Tensor one_hot(const Tensor& indices, int64_t num_classes) { KILN_FAIL("[pending] ", __func__); }
Tensor tril(const Tensor& x, int64_t diagonal) { KILN_FAIL("[pending] ", __func__); }
Tensor triu(const Tensor& x, int64_t diagonal) { KILN_FAIL("[pending] ", __func__); }

namespace ops_registration {
void register_index_ops(OpRegistry&) {}
}  // namespace ops_registration

}  // namespace kiln
