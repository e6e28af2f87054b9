#pragma once
// CPU kernels of the reduction rows (kernels/reduce.cpp), and the dims rule they share with
// the rows' shape inference.
#include <string_view>
#include <vector>

#include "core/op.h"

namespace kiln {

// Which dims of `x` a reduction over `dims` (empty = all) reduces; raises "[op] dim ..." for an
// out-of-range or repeated dim. A 0-dim tensor accepts dim 0 / -1 and reduces nothing.
std::vector<bool> reduction_mask(std::string_view op, const Tensor& x, IntArrayRef dims);
// The result shape of reducing the masked dims (kept as size 1 with keepdim).
Shape reduced_shape(const Tensor& x, const std::vector<bool>& mask, bool keepdim);

namespace cpu {

#define KILN_REDUCE_KERNEL(NAME) void NAME(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a)
KILN_REDUCE_KERNEL(sum_kernel);
KILN_REDUCE_KERNEL(mean_kernel);
KILN_REDUCE_KERNEL(prod_kernel);
KILN_REDUCE_KERNEL(amax_kernel);
KILN_REDUCE_KERNEL(amin_kernel);
KILN_REDUCE_KERNEL(max_dim_kernel);
KILN_REDUCE_KERNEL(min_dim_kernel);
KILN_REDUCE_KERNEL(argmax_kernel);
KILN_REDUCE_KERNEL(argmin_kernel);
KILN_REDUCE_KERNEL(var_kernel);
KILN_REDUCE_KERNEL(std_kernel);
KILN_REDUCE_KERNEL(var_mean_kernel);
KILN_REDUCE_KERNEL(logsumexp_kernel);
KILN_REDUCE_KERNEL(all_kernel);
KILN_REDUCE_KERNEL(any_kernel);
KILN_REDUCE_KERNEL(softmax_kernel);
KILN_REDUCE_KERNEL(log_softmax_kernel);
KILN_REDUCE_KERNEL(cumsum_kernel);
KILN_REDUCE_KERNEL(allclose_kernel);
KILN_REDUCE_KERNEL(equal_kernel);
#undef KILN_REDUCE_KERNEL

}  // namespace cpu
}  // namespace kiln
