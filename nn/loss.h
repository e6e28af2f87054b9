#pragma once
// Loss modules: forward(input, target) -> loss. `reduction` is kiln::Reduction (Mean, Sum, None).
#include "core/ops.h"
#include "nn/module.h"

namespace kiln::nn {

// Base of the losses: the two-input call operator.
class Loss : public Module {
 public:
  using Module::Module;
  virtual Tensor forward(const Tensor& input, const Tensor& target) = 0;
  using Module::forward;
  Tensor operator()(const Tensor& input, const Tensor& target) { return forward(input, target); }
};

struct CrossEntropyLossOptions {
  Tensor weight = {};  // per-class weights [C]
  int64_t ignore_index = -100;
  Reduction reduction = Reduction::Mean;
  double label_smoothing = 0.0;
};

// input (N, C) / (C) / (N, C, d...) logits; target class indices (N) / () / (N, d...) or class
// probabilities of the input's shape. `weight` is registered as a buffer, as in PyTorch.
class CrossEntropyLoss : public Loss {
 public:
  explicit CrossEntropyLoss(const CrossEntropyLossOptions& options = {});
  Tensor forward(const Tensor& input, const Tensor& target) override;
  using Loss::forward;
  std::shared_ptr<Module> clone() const override;
  CrossEntropyLossOptions options;
  Tensor weight;
};

struct NLLLossOptions {
  Tensor weight = {};
  int64_t ignore_index = -100;
  Reduction reduction = Reduction::Mean;
};

// input log-probabilities (N, C) / (C) / (N, C, d...), target class indices.
class NLLLoss : public Loss {
 public:
  explicit NLLLoss(const NLLLossOptions& options = {});
  Tensor forward(const Tensor& input, const Tensor& target) override;
  using Loss::forward;
  std::shared_ptr<Module> clone() const override;
  NLLLossOptions options;
  Tensor weight;
};

class MSELoss : public Loss {
 public:
  explicit MSELoss(Reduction reduction = Reduction::Mean) : reduction(reduction) {}
  Tensor forward(const Tensor& input, const Tensor& target) override;
  using Loss::forward;
  std::shared_ptr<Module> clone() const override;
  Reduction reduction;
};

struct BCEWithLogitsLossOptions {
  Tensor weight = {};  // broadcast against the loss
  Reduction reduction = Reduction::Mean;
  Tensor pos_weight = {};  // weight of positive examples, broadcast along the last (class) dim
};

// Sigmoid + binary cross entropy in one numerically stable formula
// (functional::binary_cross_entropy_with_logits). weight and pos_weight are buffers.
class BCEWithLogitsLoss : public Loss {
 public:
  explicit BCEWithLogitsLoss(const BCEWithLogitsLossOptions& options = {});
  Tensor forward(const Tensor& input, const Tensor& target) override;
  using Loss::forward;
  std::shared_ptr<Module> clone() const override;
  BCEWithLogitsLossOptions options;
  Tensor weight;
  Tensor pos_weight;
};

}  // namespace kiln::nn
