#pragma once
// In-place building blocks shared by the optimizers' update loops (internal).
#include <vector>

#include "core/op.h"
#include "core/ops.h"
#include "core/tensor.h"
#include "core/trace_hook.h"

namespace kiln::optim::detail {

// Inside jit::compile, a replayed step skips this C++ code: each hyperparameter (and step
// count) it reads becomes a guard, so changing lr between calls makes the next call trace.
template <class... T>
void guard_hyperparameters(const T&... fields) {
  (kiln::detail::guard_state(fields, "optimizer hyperparameter"), ...);
}

// The arithmetic of one step() call. Hyperparameters enter as 0-dim tensors of the parameter's
// dtype, not as kiln::Scalar: a wrapped Scalar takes the default dtype (float32), which would
// round lr = 0.1 to 0.1f even for float64 parameters (PyTorch wraps Python floats as double).
// They are made once per step and reused across parameters, saving a dispatch per op.
class StepOps {
 public:
  Tensor number(double v, const Tensor& like) {
    for (const Entry& e : numbers_)
      if (e.value == v && e.dtype == like.dtype()) return e.tensor;
    Tensor t = full({}, v, like.dtype(), Device(kCPU));
    t.impl()->set_wrapped_number(true);
    numbers_.push_back({v, like.dtype(), std::move(t)});
    return numbers_.back().tensor;
  }

  // out = op(inputs...), written into an existing tensor of the right shape (no allocation).
  static void assign_(Tensor& out, const OpDef& op, const TensorList& inputs) { call_op_out(op, out, inputs); }

  void mul_(Tensor& y, double a) { assign_(y, KILN_ROW("mul"), {y, number(a, y)}); }
  void div_(Tensor& y, double a) { assign_(y, KILN_ROW("div"), {y, number(a, y)}); }
  void add_(Tensor& y, double a) { assign_(y, KILN_ROW("add"), {y, number(a, y)}); }
  Tensor mul(const Tensor& x, double a) { return call_op1(KILN_ROW("mul"), {x, number(a, x)}); }

  // y += a * x, without a temporary when a is +-1.
  void axpy_(Tensor& y, const Tensor& x, double a) {
    if (a == 1.0)
      y.add_(x);
    else if (a == -1.0)
      y.sub_(x);
    else
      y.add_(mul(x, a));
  }

 private:
  struct Entry {
    double value;
    DType dtype;
    Tensor tensor;
  };
  std::vector<Entry> numbers_;  // a handful per step: linear search beats hashing
};

}  // namespace kiln::optim::detail
