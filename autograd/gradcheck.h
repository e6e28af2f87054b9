#pragma once
// Finite-difference gradient checking in float64 (as torch.autograd.gradcheck): compares the
// Jacobian autograd computes with central differences, element by element.
#include <functional>
#include <string>

#include "core/tensor.h"

namespace kiln::autograd {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-5;
  double rtol = 1e-3;
};

struct GradcheckResult {
  bool ok = true;
  std::string message;  // the first mismatch: output, input, element, numerical vs analytical
};

// `inputs` that require grad must be float64. `f` may return several outputs; non-floating
// outputs are ignored.
GradcheckResult gradcheck(const std::function<TensorList(const TensorList&)>& f, const TensorList& inputs,
                          const GradcheckOptions& options = {});

}  // namespace kiln::autograd
