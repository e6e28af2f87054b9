#pragma once
// Public autograd API (LibTorch naming): backward, grad, grad mode guards, the graph's Node.
#include <optional>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "core/tensor.h"

namespace kiln::autograd {

// Accumulates d(sum(outputs * grad_outputs))/d(leaf) into the .grad of every leaf reached.
void backward(const TensorList& outputs, const TensorList& grad_outputs = {},
              std::optional<bool> retain_graph = std::nullopt, bool create_graph = false);

// Returns d(sum(outputs * grad_outputs))/d(inputs) without touching any .grad. An input the
// outputs do not depend on raises, unless allow_unused (then its gradient is undefined).
TensorList grad(const TensorList& outputs, const TensorList& inputs, const TensorList& grad_outputs = {},
                std::optional<bool> retain_graph = std::nullopt, bool create_graph = false,
                bool allow_unused = false);

}  // namespace kiln::autograd
