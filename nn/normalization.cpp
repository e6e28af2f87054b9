#include "nn/normalization.h"

#include <sstream>

#include "autograd/grad_mode.h"
#include "core/ops.h"
#include "nn/functional.h"
#include "nn/init.h"

namespace kiln::nn {

template <class Derived>
BatchNormBase<Derived>::BatchNormBase(const BatchNormOptions& options) : options(options) {
  KILN_CHECK(options.num_features > 0, "[BatchNorm] num_features must be positive, got ", options.num_features);
  reset();
}

template <class Derived>
void BatchNormBase<Derived>::reset() {
  const auto& o = options;
  weight = this->register_parameter("weight", o.affine ? empty({o.num_features}) : Tensor());
  bias = this->register_parameter("bias", o.affine ? empty({o.num_features}) : Tensor());
  running_mean = this->register_buffer("running_mean", o.track_running_stats ? empty({o.num_features}) : Tensor());
  running_var = this->register_buffer("running_var", o.track_running_stats ? empty({o.num_features}) : Tensor());
  num_batches_tracked =
      this->register_buffer("num_batches_tracked", o.track_running_stats ? zeros({}, DType::Int64) : Tensor());
  reset_parameters();
}

template <class Derived>
void BatchNormBase<Derived>::reset_running_stats() {
  if (!options.track_running_stats) return;
  NoGradGuard no_grad;
  running_mean.zero_();
  running_var.fill_(1);
  num_batches_tracked.zero_();
}

template <class Derived>
void BatchNormBase<Derived>::reset_parameters() {
  reset_running_stats();
  if (options.affine) {
    init::ones_(weight);
    init::zeros_(bias);
  }
}

template <class Derived>
Tensor BatchNormBase<Derived>::forward(const Tensor& input) {
  KILN_CHECK(input.defined(), "[", this->name(), "] input is an undefined tensor");
  check_input_dim(input);
  KILN_CHECK(input.size(1) == options.num_features, "[", this->name(), "] expected input with ", options.num_features,
             " channels (num_features, dim 1), but got input of shape ", input.sizes());
  const bool training = this->is_training();
  // Batch statistics in training, and also in eval when no running statistics are kept.
  const bool use_batch_stats = training || !running_mean.defined();
  KILN_CHECK(!use_batch_stats || input.numel() / input.size(1) > 1, "[", this->name(),
             "] expected more than 1 value per channel when training, got input of shape ", input.sizes());
  double factor = options.momentum.value_or(0.0);
  if (training && options.track_running_stats) {
    NoGradGuard no_grad;
    num_batches_tracked.add_(1);
    if (!options.momentum) factor = 1.0 / static_cast<double>(num_batches_tracked.template item<int64_t>());
  }
  return functional::batch_norm(input, running_mean, running_var, weight, bias, use_batch_stats, factor, options.eps);
}

template <class Derived>
std::string BatchNormBase<Derived>::extra_repr() const {
  const auto& o = options;
  std::ostringstream os;
  os << o.num_features << ", eps=" << o.eps << ", momentum=";
  if (o.momentum)
    os << *o.momentum;
  else
    os << "None";
  os << ", affine=" << (o.affine ? "true" : "false")
     << ", track_running_stats=" << (o.track_running_stats ? "true" : "false");
  return os.str();
}

template class BatchNormBase<BatchNorm1d>;
template class BatchNormBase<BatchNorm2d>;

void BatchNorm1d::check_input_dim(const Tensor& input) const {
  KILN_CHECK(input.dim() == 2 || input.dim() == 3, "[BatchNorm1d] expected 2D or 3D input (got ", input.dim(),
             "D input of shape ", input.sizes(), ")");
}

void BatchNorm2d::check_input_dim(const Tensor& input) const {
  KILN_CHECK(input.dim() == 4, "[BatchNorm2d] expected 4D input (got ", input.dim(), "D input of shape ", input.sizes(),
             ")");
}

LayerNorm::LayerNorm(std::vector<int64_t> normalized_shape, double eps, bool elementwise_affine, bool bias)
    : normalized_shape(std::move(normalized_shape)), eps(eps), elementwise_affine(elementwise_affine), has_bias(bias) {
  for (int64_t s : this->normalized_shape)
    KILN_CHECK(s >= 0, "[LayerNorm] normalized_shape must be non-negative, got ", this->normalized_shape);
  reset();
}

void LayerNorm::reset() {
  weight = register_parameter("weight", elementwise_affine ? kiln::empty(normalized_shape) : Tensor());
  bias = register_parameter("bias", elementwise_affine && has_bias ? kiln::empty(normalized_shape) : Tensor());
  reset_parameters();
}

void LayerNorm::reset_parameters() {
  if (weight.defined()) init::ones_(weight);
  if (bias.defined()) init::zeros_(bias);
}

Tensor LayerNorm::forward(const Tensor& input) {
  KILN_CHECK(input.defined(), "[LayerNorm] input is an undefined tensor");
  const auto nd = static_cast<int64_t>(normalized_shape.size());
  bool ok = input.dim() >= nd;
  for (int64_t i = 0; ok && i < nd; ++i)
    ok = input.size(input.dim() - nd + i) == normalized_shape[static_cast<size_t>(i)];
  KILN_CHECK(ok, "[LayerNorm] expected input with trailing shape ", normalized_shape,
             " (normalized_shape), but got input of shape ", input.sizes());
  return layer_norm(input, normalized_shape, weight.defined() ? std::optional<Tensor>(weight) : std::nullopt,
                    bias.defined() ? std::optional<Tensor>(bias) : std::nullopt, eps);
}

std::string LayerNorm::extra_repr() const {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < normalized_shape.size(); ++i) os << (i ? ", " : "") << normalized_shape[i];
  os << (normalized_shape.size() == 1 ? ",)" : ")") << ", eps=" << eps
     << ", elementwise_affine=" << (elementwise_affine ? "true" : "false");
  return os.str();
}

}  // namespace kiln::nn
