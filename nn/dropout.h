#pragma once
// Dropout: zeroes each element with probability p and scales the rest by 1/(1-p) in training;
// the identity in eval mode.
#include "nn/module.h"

namespace kiln::nn {

class Dropout : public Cloneable<Dropout> {
 public:
  explicit Dropout(double p = 0.5);
  Tensor forward(const Tensor& input) override;
  std::string extra_repr() const override;

  double p;
};

}  // namespace kiln::nn
