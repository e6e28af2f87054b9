#include "nn/linear.h"

#include <cmath>
#include <sstream>

#include "core/ops.h"
#include "nn/init.h"

namespace kiln::nn {

Linear::Linear(int64_t in_features, int64_t out_features, bool bias)
    : in_features(in_features), out_features(out_features), has_bias(bias) {
  KILN_CHECK(in_features >= 0 && out_features >= 0, "[Linear] in_features and out_features must be non-negative, got ",
             in_features, " and ", out_features);
  reset();
}

void Linear::reset() {
  weight = register_parameter("weight", empty({out_features, in_features}));
  bias = register_parameter("bias", has_bias ? empty({out_features}) : Tensor());
  reset_parameters();
}

void Linear::reset_parameters() {
  init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias.defined()) {
    const double bound = in_features > 0 ? 1.0 / std::sqrt(static_cast<double>(in_features)) : 0.0;
    init::uniform_(bias, -bound, bound);
  }
}

Tensor Linear::forward(const Tensor& input) {
  KILN_CHECK(input.defined(), "[Linear] input is an undefined tensor");
  KILN_CHECK(input.dim() >= 1 && input.size(-1) == in_features, "[Linear] expected input with last dimension ",
             in_features, " (in_features), but got input of shape ", input.sizes());
  return linear(input, weight, bias.defined() ? std::optional<Tensor>(bias) : std::nullopt);
}

std::string Linear::extra_repr() const {
  std::ostringstream os;
  os << "in_features=" << in_features << ", out_features=" << out_features
     << ", bias=" << (has_bias ? "true" : "false");
  return os.str();
}

std::string Flatten::extra_repr() const {
  std::ostringstream os;
  os << "start_dim=" << start_dim << ", end_dim=" << end_dim;
  return os.str();
}

}  // namespace kiln::nn
