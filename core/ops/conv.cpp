// PENDING: placeholder until this family lands (owned by one helper).
#include "core/op.h"
#include "core/ops.h"

namespace kiln {

Tensor conv2d(const Tensor& input, const Tensor& weight, const std::optional<Tensor>& bias, IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation, int64_t groups) { KILN_FAIL("[pending] ", __func__); }
Tensor max_pool2d(const Tensor& input, IntArrayRef kernel_size, IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation, bool ceil_mode) { KILN_FAIL("[pending] ", __func__); }
Tensor avg_pool2d(const Tensor& input, IntArrayRef kernel_size, IntArrayRef stride, IntArrayRef padding, bool ceil_mode, bool count_include_pad) { KILN_FAIL("[pending] ", __func__); }

}  // namespace kiln
