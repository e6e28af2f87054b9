#pragma once
// nn::functional (torch.nn.functional): stateless forms of the layers. The tensor ops kiln
// already has are re-exported, so `namespace F = kiln::nn::functional;` gives one place for all.
#include "core/ops.h"

namespace kiln::nn::functional {

using kiln::avg_pool2d;
using kiln::conv2d;
using kiln::cross_entropy;
using kiln::dropout;
using kiln::embedding;
using kiln::gelu;
using kiln::layer_norm;
using kiln::linear;
using kiln::log_softmax;
using kiln::max_pool2d;
using kiln::mse_loss;
using kiln::nll_loss;
using kiln::relu;
using kiln::sigmoid;
using kiln::silu;
using kiln::softmax;
using kiln::softplus;
using kiln::tanh;

// Normalises over every dim but 1 (channels). Training: batch mean and biased variance, and the
// running statistics (when defined) move by `momentum` towards the batch mean and the unbiased
// variance. Otherwise the running statistics are used. Composed of public ops, so autograd
// differentiates it.
Tensor batch_norm(const Tensor& input, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight = {},
                  const Tensor& bias = {}, bool training = false, double momentum = 0.1, double eps = 1e-5);

// -[pos_weight * y * log(sigmoid(x)) + (1 - y) * log(1 - sigmoid(x))], computed stably as
// (1 - y) * x + (1 + (pos_weight - 1) * y) * (log1p(exp(-|x|)) + max(-x, 0)), times `weight`.
Tensor binary_cross_entropy_with_logits(const Tensor& input, const Tensor& target, const Tensor& weight = {},
                                        Reduction reduction = Reduction::Mean, const Tensor& pos_weight = {});

// Applies a loss reduction to elementwise losses.
Tensor reduce_loss(const Tensor& loss, Reduction reduction);

}  // namespace kiln::nn::functional
