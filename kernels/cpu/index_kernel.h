#pragma once
// CPU kernels of the structure and indexing rows (kernels/index.cpp). Pure data movement is
// dispatched on the element size, not the dtype; only scatter_add does arithmetic.
#include "core/op.h"

namespace kiln::cpu {

void cat_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& attrs);
void index_select_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& attrs);
void embedding_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& attrs);
void gather_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& attrs);
void scatter_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& attrs);
void scatter_add_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& attrs);
void one_hot_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& attrs);
void tril_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& attrs);
void triu_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& attrs);

// Whether `t` is a legacy 1-D empty tensor of shape [0], which cat skips.
inline bool cat_should_skip(const Tensor& t) { return t.dim() == 1 && t.size(0) == 0; }

}  // namespace kiln::cpu
