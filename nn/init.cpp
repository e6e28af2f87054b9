#include "nn/init.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "core/error.h"

namespace kiln::nn::init {
namespace {

void check_defined(const char* fn, const Tensor& t) {
  KILN_CHECK(t.defined(), "[init::", fn, "] the tensor is undefined");
}

void check_floating(const char* fn, const Tensor& t) {
  check_defined(fn, t);
  KILN_CHECK(t.is_floating_point(), "[init::", fn, "] expected a floating point tensor, got dtype ", t.dtype());
}

int64_t fan_for(const char* fn, const Tensor& t, const std::string& mode) {
  KILN_CHECK(mode == "fan_in" || mode == "fan_out", "[init::", fn, "] mode '", mode,
             "' is not supported, use one of fan_in, fan_out");
  auto [fan_in, fan_out] = calculate_fan_in_and_fan_out(t);
  return mode == "fan_in" ? fan_in : fan_out;
}

}  // namespace

double calculate_gain(const std::string& nonlinearity, std::optional<double> param) {
  static const char* const kLinear[] = {"linear",           "conv1d",           "conv2d",          "conv3d",
                                        "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"};
  for (const char* n : kLinear)
    if (nonlinearity == n) return 1.0;
  if (nonlinearity == "sigmoid") return 1.0;
  if (nonlinearity == "tanh") return 5.0 / 3.0;
  if (nonlinearity == "relu") return std::sqrt(2.0);
  if (nonlinearity == "leaky_relu") {
    const double slope = param.value_or(0.01);
    return std::sqrt(2.0 / (1.0 + slope * slope));
  }
  if (nonlinearity == "selu") return 3.0 / 4.0;
  KILN_FAIL("[init::calculate_gain] unsupported nonlinearity '", nonlinearity, "'");
}

std::pair<int64_t, int64_t> calculate_fan_in_and_fan_out(const Tensor& t) {
  check_defined("calculate_fan_in_and_fan_out", t);
  KILN_CHECK(t.dim() >= 2,
             "[init::calculate_fan_in_and_fan_out] fan in and fan out can not be computed for a tensor "
             "with fewer than 2 dimensions, got shape ",
             t.sizes());
  int64_t receptive = 1;
  for (int64_t d = 2; d < t.dim(); ++d) receptive *= t.size(d);
  return {t.size(1) * receptive, t.size(0) * receptive};
}

Tensor uniform_(Tensor t, double a, double b) {
  check_floating("uniform_", t);
  NoGradGuard no_grad;
  t.uniform_(a, b);
  return t;
}

Tensor normal_(Tensor t, double mean, double std) {
  check_floating("normal_", t);
  KILN_CHECK(std >= 0.0, "[init::normal_] std must be non-negative, got ", std);
  NoGradGuard no_grad;
  t.normal_(mean, std);
  return t;
}

Tensor constant_(Tensor t, double value) {
  check_defined("constant_", t);
  NoGradGuard no_grad;
  t.fill_(value);
  return t;
}

Tensor zeros_(Tensor t) {
  check_defined("zeros_", t);
  NoGradGuard no_grad;
  t.zero_();
  return t;
}

Tensor ones_(Tensor t) {
  check_defined("ones_", t);
  NoGradGuard no_grad;
  t.fill_(1);
  return t;
}

// Zero-element tensors are left alone (PyTorch warns and returns), before the fan checks.
Tensor kaiming_uniform_(Tensor t, double a, const std::string& mode, const std::string& nonlinearity) {
  check_floating("kaiming_uniform_", t);
  if (t.numel() == 0) return t;
  const int64_t fan = fan_for("kaiming_uniform_", t, mode);
  const double gain = calculate_gain(nonlinearity, a);
  const double bound = std::sqrt(3.0) * gain / std::sqrt(static_cast<double>(fan));
  return uniform_(t, -bound, bound);
}

Tensor kaiming_normal_(Tensor t, double a, const std::string& mode, const std::string& nonlinearity) {
  check_floating("kaiming_normal_", t);
  if (t.numel() == 0) return t;
  const int64_t fan = fan_for("kaiming_normal_", t, mode);
  const double gain = calculate_gain(nonlinearity, a);
  return normal_(t, 0.0, gain / std::sqrt(static_cast<double>(fan)));
}

Tensor xavier_uniform_(Tensor t, double gain) {
  check_floating("xavier_uniform_", t);
  auto [fan_in, fan_out] = calculate_fan_in_and_fan_out(t);
  if (t.numel() == 0) return t;
  const double std = gain * std::sqrt(2.0 / static_cast<double>(fan_in + fan_out));
  const double bound = std::sqrt(3.0) * std;
  return uniform_(t, -bound, bound);
}

Tensor xavier_normal_(Tensor t, double gain) {
  check_floating("xavier_normal_", t);
  auto [fan_in, fan_out] = calculate_fan_in_and_fan_out(t);
  if (t.numel() == 0) return t;
  return normal_(t, 0.0, gain * std::sqrt(2.0 / static_cast<double>(fan_in + fan_out)));
}

}  // namespace kiln::nn::init
