#pragma once
// In-place building blocks shared by the optimizers' update loops (internal).
//
// Hyperparameters enter as 0-dim tensors of the parameter's dtype instead of kiln::Scalar:
// a wrapped Scalar takes the default dtype (float32), which would round lr = 0.1 to 0.1f even
// for float64 parameters (PyTorch wraps Python floats as double).
#include "core/op.h"
#include "core/ops.h"
#include "core/tensor.h"

namespace kiln::optim::detail {

inline Tensor number(double v, const Tensor& like) {
  Tensor t = full({}, v, like.dtype(), Device(kCPU));
  t.impl()->set_wrapped_number(true);
  return t;
}

// out = op(inputs...), written into an existing tensor of the right shape (no allocation).
inline void assign_(Tensor& out, const OpDef& op, const TensorList& inputs) { call_op_out(op, out, inputs); }

inline void mul_(Tensor& y, double a) { assign_(y, KILN_ROW("mul"), {y, number(a, y)}); }
inline void div_(Tensor& y, double a) { assign_(y, KILN_ROW("div"), {y, number(a, y)}); }
inline void add_(Tensor& y, double a) { assign_(y, KILN_ROW("add"), {y, number(a, y)}); }
inline Tensor mul(const Tensor& x, double a) { return call_op1(KILN_ROW("mul"), {x, number(a, x)}); }

// y += a * x, without a temporary when a is +-1.
inline void axpy_(Tensor& y, const Tensor& x, double a) {
  if (a == 1.0)
    y.add_(x);
  else if (a == -1.0)
    y.sub_(x);
  else
    y.add_(mul(x, a));
}

}  // namespace kiln::optim::detail
