#pragma once
// Registration of the convolution and pooling rows (kernels/conv.cpp); called from
// register_linalg_ops, which owns this family's hook in OpRegistry.
#include "core/op.h"

namespace kiln::ops_registration {
void register_conv_ops(OpRegistry& r);
}  // namespace kiln::ops_registration
