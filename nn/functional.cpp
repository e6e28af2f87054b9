#include "nn/functional.h"

#include "autograd/grad_mode.h"
#include "core/error.h"

namespace kiln::nn::functional {

Tensor reduce_loss(const Tensor& loss, Reduction reduction) {
  switch (reduction) {
    case Reduction::None:
      return loss;
    case Reduction::Mean:
      return loss.mean();
    case Reduction::Sum:
      return loss.sum();
  }
  KILN_FAIL("[reduce_loss] invalid reduction ", static_cast<int>(reduction));
}

Tensor batch_norm(const Tensor& input, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight,
                  const Tensor& bias, bool training, double momentum, double eps) {
  KILN_CHECK(input.defined(), "[batch_norm] input is an undefined tensor");
  KILN_CHECK(input.dim() >= 2, "[batch_norm] expected an input of shape (N, C, ...) with at least 2 dims, got shape ",
             input.sizes());
  KILN_CHECK(input.is_floating_point(), "[batch_norm] expected a floating point input, got dtype ", input.dtype());
  const int64_t channels = input.size(1);
  auto check_per_channel = [&](const char* what, const Tensor& t) {
    KILN_CHECK(!t.defined() || t.numel() == channels, "[batch_norm] ", what, " should contain ", channels,
               " elements (the input's dim 1), not ", t.numel(), "; input shape ", input.sizes());
  };
  check_per_channel("running_mean", running_mean);
  check_per_channel("running_var", running_var);
  check_per_channel("weight", weight);
  check_per_channel("bias", bias);
  KILN_CHECK(running_mean.defined() == running_var.defined(),
             "[batch_norm] running_mean and running_var must be both defined or both undefined");

  Shape per_channel(static_cast<size_t>(input.dim()), 1);
  per_channel[1] = channels;
  Shape reduce_dims;
  for (int64_t d = 0; d < input.dim(); ++d)
    if (d != 1) reduce_dims.push_back(d);

  Tensor y;
  if (training) {
    const int64_t n = channels == 0 ? 0 : input.numel() / channels;
    KILN_CHECK(n > 1, "[batch_norm] expected more than 1 value per channel when training, got input of shape ",
               input.sizes());
    Tensor mean = input.mean(reduce_dims, /*keepdim=*/true);
    Tensor var = input.var(reduce_dims, /*correction=*/0, /*keepdim=*/true);
    if (running_mean.defined()) {
      NoGradGuard no_grad;
      const double unbias = static_cast<double>(n) / static_cast<double>(n - 1);
      Tensor rm = running_mean, rv = running_var;  // handles: the updates land in the caller's buffers
      rm.mul_(1.0 - momentum).add_(mean.detach().reshape({channels}).to(rm.dtype()), momentum);
      rv.mul_(1.0 - momentum).add_(var.detach().reshape({channels}).to(rv.dtype()), momentum * unbias);
    }
    y = (input - mean) * (var + eps).rsqrt();
  } else {
    KILN_CHECK(running_mean.defined(), "[batch_norm] running_mean and running_var are required when not training");
    y = (input - running_mean.reshape(per_channel)) * (running_var.reshape(per_channel) + eps).rsqrt();
  }
  if (weight.defined()) y = y * weight.reshape(per_channel);
  if (bias.defined()) y = y + bias.reshape(per_channel);
  return y;
}

Tensor binary_cross_entropy_with_logits(const Tensor& input, const Tensor& target, const Tensor& weight,
                                        Reduction reduction, const Tensor& pos_weight) {
  KILN_CHECK(input.defined() && target.defined(),
             "[binary_cross_entropy_with_logits] input and target must be defined");
  KILN_CHECK(input.sizes() == target.sizes(), "[binary_cross_entropy_with_logits] target size ", target.sizes(),
             " must be the same as input size ", input.sizes());
  KILN_CHECK(input.is_floating_point(),
             "[binary_cross_entropy_with_logits] expected a floating point input, got dtype ", input.dtype());
  // log(1 + exp(-x)) without overflow for either sign of x.
  Tensor log1p_exp_neg = input.abs().neg().exp().log1p() + input.neg().clamp_min(0);
  Tensor loss;
  if (pos_weight.defined()) {
    Tensor log_weight = (pos_weight - 1) * target + 1;
    loss = (1 - target) * input + log_weight * log1p_exp_neg;
  } else {
    loss = (1 - target) * input + log1p_exp_neg;
  }
  if (weight.defined()) loss = loss * weight;
  return reduce_loss(loss, reduction);
}

}  // namespace kiln::nn::functional
