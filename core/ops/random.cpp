// PENDING: placeholder until this family lands (owned by one helper).
#include "core/op.h"
#include "core/ops.h"

namespace kiln {

void manual_seed(uint64_t seed) { KILN_FAIL("[pending] ", __func__); }
Tensor rand(IntArrayRef sizes, const TensorOptions& opts) { KILN_FAIL("[pending] ", __func__); }
Tensor randn(IntArrayRef sizes, const TensorOptions& opts) { KILN_FAIL("[pending] ", __func__); }
Tensor randint(int64_t low, int64_t high, IntArrayRef sizes, const TensorOptions& opts) { KILN_FAIL("[pending] ", __func__); }
Tensor randint(int64_t high, IntArrayRef sizes, const TensorOptions& opts) { KILN_FAIL("[pending] ", __func__); }
Tensor randperm(int64_t n, const TensorOptions& opts) { KILN_FAIL("[pending] ", __func__); }
Tensor bernoulli(const Tensor& p) { KILN_FAIL("[pending] ", __func__); }
Tensor normal(double mean, double std, IntArrayRef sizes, const TensorOptions& opts) { KILN_FAIL("[pending] ", __func__); }

namespace ops_registration {
void register_random_ops(OpRegistry&) {}
}  // namespace ops_registration

}  // namespace kiln
