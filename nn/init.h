#pragma once
// Parameter initialisation (torch.nn.init): in place, under NoGradGuard, with PyTorch's fan and
// gain computations. Each function returns its argument.
#include <optional>
#include <string>

#include "core/tensor.h"

namespace kiln::nn::init {

// The recommended gain for a nonlinearity: "linear", "conv1d/2d/3d", "conv_transpose1d/2d/3d",
// "sigmoid" -> 1; "tanh" -> 5/3; "relu" -> sqrt(2); "leaky_relu" -> sqrt(2 / (1 + slope^2))
// (slope = param, default 0.01); "selu" -> 3/4.
double calculate_gain(const std::string& nonlinearity, std::optional<double> param = std::nullopt);

// fan_in = size(1) * receptive field, fan_out = size(0) * receptive field (receptive field = the
// product of dims 2...). Raises for tensors with fewer than 2 dims.
std::pair<int64_t, int64_t> calculate_fan_in_and_fan_out(const Tensor& t);

Tensor uniform_(Tensor t, double a = 0.0, double b = 1.0);
Tensor normal_(Tensor t, double mean = 0.0, double std = 1.0);
Tensor constant_(Tensor t, double value);
Tensor zeros_(Tensor t);
Tensor ones_(Tensor t);

// mode "fan_in" | "fan_out"; bound = gain * sqrt(3 / fan) with gain = calculate_gain(nonlinearity, a).
Tensor kaiming_uniform_(Tensor t, double a = 0.0, const std::string& mode = "fan_in",
                        const std::string& nonlinearity = "leaky_relu");
// std = gain / sqrt(fan).
Tensor kaiming_normal_(Tensor t, double a = 0.0, const std::string& mode = "fan_in",
                       const std::string& nonlinearity = "leaky_relu");
// bound = gain * sqrt(6 / (fan_in + fan_out)).
Tensor xavier_uniform_(Tensor t, double gain = 1.0);
// std = gain * sqrt(2 / (fan_in + fan_out)).
Tensor xavier_normal_(Tensor t, double gain = 1.0);

}  // namespace kiln::nn::init
