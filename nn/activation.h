#pragma once
// Activation modules: ReLU, GELU, SiLU, Tanh, Sigmoid, Softmax.
#include <string>

#include "core/ops.h"
#include "nn/module.h"

namespace kiln::nn {

class ReLU : public Cloneable<ReLU> {
 public:
  Tensor forward(const Tensor& input) override { return relu(input); }
};

// approximate: "none" (exact, with erf) or "tanh".
class GELU : public Cloneable<GELU> {
 public:
  explicit GELU(std::string approximate = "none");
  Tensor forward(const Tensor& input) override { return gelu(input, approximate); }
  std::string extra_repr() const override { return "approximate='" + approximate + "'"; }

  std::string approximate;
};

class SiLU : public Cloneable<SiLU> {
 public:
  Tensor forward(const Tensor& input) override { return silu(input); }
};

class Tanh : public Cloneable<Tanh> {
 public:
  Tensor forward(const Tensor& input) override { return kiln::tanh(input); }
};

class Sigmoid : public Cloneable<Sigmoid> {
 public:
  Tensor forward(const Tensor& input) override { return sigmoid(input); }
};

class Softmax : public Cloneable<Softmax> {
 public:
  explicit Softmax(int64_t dim) : dim(dim) {}
  Tensor forward(const Tensor& input) override { return softmax(input, dim); }
  std::string extra_repr() const override { return "dim=" + std::to_string(dim); }

  int64_t dim;
};

}  // namespace kiln::nn
