#include "nn/loss.h"

#include "nn/functional.h"

namespace kiln::nn {
namespace {

std::optional<Tensor> opt(const Tensor& t) { return t.defined() ? std::optional<Tensor>(t) : std::nullopt; }

Tensor cloned(const Tensor& t) { return t.defined() ? t.detach().clone() : Tensor(); }

void check_inputs(const Module& m, const Tensor& input, const Tensor& target) {
  KILN_CHECK(input.defined() && target.defined(), "[", m.name(), "] input and target must be defined tensors");
}

}  // namespace

CrossEntropyLoss::CrossEntropyLoss(const CrossEntropyLossOptions& options) : options(options) {
  KILN_CHECK(options.label_smoothing >= 0.0 && options.label_smoothing <= 1.0,
             "[CrossEntropyLoss] label_smoothing must be between 0.0 and 1.0, got ", options.label_smoothing);
  weight = register_buffer("weight", options.weight);
}

Tensor CrossEntropyLoss::forward(const Tensor& input, const Tensor& target) {
  check_inputs(*this, input, target);
  return cross_entropy(input, target, opt(weight), options.reduction, options.ignore_index, options.label_smoothing);
}

std::shared_ptr<Module> CrossEntropyLoss::clone() const {
  CrossEntropyLossOptions o = options;
  o.weight = cloned(weight);
  auto copy = std::make_shared<CrossEntropyLoss>(o);
  copy->train(is_training());
  return copy;
}

NLLLoss::NLLLoss(const NLLLossOptions& options) : options(options) {
  weight = register_buffer("weight", options.weight);
}

Tensor NLLLoss::forward(const Tensor& input, const Tensor& target) {
  check_inputs(*this, input, target);
  return nll_loss(input, target, opt(weight), options.reduction, options.ignore_index);
}

std::shared_ptr<Module> NLLLoss::clone() const {
  NLLLossOptions o = options;
  o.weight = cloned(weight);
  auto copy = std::make_shared<NLLLoss>(o);
  copy->train(is_training());
  return copy;
}

Tensor MSELoss::forward(const Tensor& input, const Tensor& target) {
  check_inputs(*this, input, target);
  return mse_loss(input, target, reduction);
}

std::shared_ptr<Module> MSELoss::clone() const {
  auto copy = std::make_shared<MSELoss>(reduction);
  copy->train(is_training());
  return copy;
}

BCEWithLogitsLoss::BCEWithLogitsLoss(const BCEWithLogitsLossOptions& options) : options(options) {
  weight = register_buffer("weight", options.weight);
  pos_weight = register_buffer("pos_weight", options.pos_weight);
}

Tensor BCEWithLogitsLoss::forward(const Tensor& input, const Tensor& target) {
  check_inputs(*this, input, target);
  return functional::binary_cross_entropy_with_logits(input, target, weight, options.reduction, pos_weight);
}

std::shared_ptr<Module> BCEWithLogitsLoss::clone() const {
  BCEWithLogitsLossOptions o = options;
  o.weight = cloned(weight);
  o.pos_weight = cloned(pos_weight);
  auto copy = std::make_shared<BCEWithLogitsLoss>(o);
  copy->train(is_training());
  return copy;
}

}  // namespace kiln::nn
