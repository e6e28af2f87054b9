#pragma once
// Linear, Identity and Flatten.
#include "nn/module.h"

namespace kiln::nn {

// y = x W^T + b. weight [out_features, in_features] ~ kaiming_uniform_(a = sqrt(5)) (i.e.
// U(-1/sqrt(in), 1/sqrt(in))), bias ~ U(-1/sqrt(in), 1/sqrt(in)), as in PyTorch.
class Linear : public Cloneable<Linear> {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true);
  Tensor forward(const Tensor& input) override;
  std::string extra_repr() const override;
  void reset_parameters();

  int64_t in_features;
  int64_t out_features;
  bool has_bias;
  Tensor weight;
  Tensor bias;  // undefined without bias

 protected:
  void reset() override;
};

class Identity : public Cloneable<Identity> {
 public:
  Identity() = default;
  Tensor forward(const Tensor& input) override { return input; }
};

// Flattens dims start_dim..end_dim (the batch dim is kept by default).
class Flatten : public Cloneable<Flatten> {
 public:
  explicit Flatten(int64_t start_dim = 1, int64_t end_dim = -1) : start_dim(start_dim), end_dim(end_dim) {}
  Tensor forward(const Tensor& input) override { return input.flatten(start_dim, end_dim); }
  std::string extra_repr() const override;

  int64_t start_dim;
  int64_t end_dim;
};

}  // namespace kiln::nn
