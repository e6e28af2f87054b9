// PENDING: placeholder until this family lands (owned by one helper).
#include "core/op.h"
#include "core/ops.h"

namespace kiln {

Tensor sum(const Tensor& x, IntArrayRef dims, bool keepdim, std::optional<DType> dtype) { KILN_FAIL("[pending] ", __func__); }
Tensor mean(const Tensor& x, IntArrayRef dims, bool keepdim, std::optional<DType> dtype) { KILN_FAIL("[pending] ", __func__); }
Tensor prod(const Tensor& x, IntArrayRef dims, bool keepdim, std::optional<DType> dtype) { KILN_FAIL("[pending] ", __func__); }
Tensor amax(const Tensor& x, IntArrayRef dims, bool keepdim) { KILN_FAIL("[pending] ", __func__); }
Tensor amin(const Tensor& x, IntArrayRef dims, bool keepdim) { KILN_FAIL("[pending] ", __func__); }
Tensor max(const Tensor& x) { KILN_FAIL("[pending] ", __func__); }
Tensor min(const Tensor& x) { KILN_FAIL("[pending] ", __func__); }
std::tuple<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim) { KILN_FAIL("[pending] ", __func__); }
std::tuple<Tensor, Tensor> min(const Tensor& x, int64_t dim, bool keepdim) { KILN_FAIL("[pending] ", __func__); }
Tensor argmax(const Tensor& x, std::optional<int64_t> dim, bool keepdim) { KILN_FAIL("[pending] ", __func__); }
Tensor argmin(const Tensor& x, std::optional<int64_t> dim, bool keepdim) { KILN_FAIL("[pending] ", __func__); }
Tensor var(const Tensor& x, IntArrayRef dims, int64_t correction, bool keepdim) { KILN_FAIL("[pending] ", __func__); }
Tensor std(const Tensor& x, IntArrayRef dims, int64_t correction, bool keepdim) { KILN_FAIL("[pending] ", __func__); }
std::tuple<Tensor, Tensor> var_mean(const Tensor& x, IntArrayRef dims, int64_t correction, bool keepdim) { KILN_FAIL("[pending] ", __func__); }
Tensor logsumexp(const Tensor& x, IntArrayRef dims, bool keepdim) { KILN_FAIL("[pending] ", __func__); }
Tensor all(const Tensor& x, IntArrayRef dims, bool keepdim) { KILN_FAIL("[pending] ", __func__); }
Tensor any(const Tensor& x, IntArrayRef dims, bool keepdim) { KILN_FAIL("[pending] ", __func__); }
Tensor softmax(const Tensor& x, int64_t dim, std::optional<DType> dtype) { KILN_FAIL("[pending] ", __func__); }
Tensor log_softmax(const Tensor& x, int64_t dim, std::optional<DType> dtype) { KILN_FAIL("[pending] ", __func__); }
Tensor cumsum(const Tensor& x, int64_t dim, std::optional<DType> dtype) { KILN_FAIL("[pending] ", __func__); }
bool allclose(const Tensor& a, const Tensor& b, double rtol, double atol, bool equal_nan) { KILN_FAIL("[pending] ", __func__); }
bool equal(const Tensor& a, const Tensor& b) { KILN_FAIL("[pending] ", __func__); }

namespace ops_registration {
void register_reduction_ops(OpRegistry&) {}
}  // namespace ops_registration

}  // namespace kiln
