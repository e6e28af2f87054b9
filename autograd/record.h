#pragma once
// The autograd layer of dispatch (DESIGN §1): call_op and the in-place paths ask it whether to
// record, and it attaches grad_fn nodes to the outputs.
#include "core/op.h"

namespace kiln::autograd {

// True when grad mode is on, the op is differentiable and some input requires grad.
bool should_record(const OpDef& op, const TensorList& inputs);

// Out-of-place op: attaches one node to `outputs` (floating outputs then require grad).
void record(const OpDef& op, const TensorList& inputs, const Attrs& attrs, const TensorList& outputs);

// A view op: as record(), and marks `view` as a view of the input's base.
void record_view(const OpDef& op, const Tensor& input, const Attrs& attrs, const Tensor& view);

// In-place op writing `self`: begin before the kernel runs (checks leaves, saves what the
// write would destroy), finish after it (rebases self's history, and its base's for a view).
struct InplaceRecord;
std::unique_ptr<InplaceRecord, void (*)(InplaceRecord*)> begin_inplace(const OpDef& op, const Tensor& self,
                                                                        const TensorList& inputs,
                                                                        const Attrs& attrs);
void finish_inplace(InplaceRecord* rec, const Tensor& self);

}  // namespace kiln::autograd
