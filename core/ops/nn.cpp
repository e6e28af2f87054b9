// Front ends of the nn ops (conv2d and the pools live in conv.cpp): argument checks, the RNG
// counters for dropout, and dispatch of the rows in kernels/nn.cpp.
#include "core/op.h"
#include "core/ops.h"
#include "core/random.h"

namespace kiln {
namespace {

int64_t reduction_attr(const char* op, Reduction r) {
  KILN_CHECK(r == Reduction::None || r == Reduction::Mean || r == Reduction::Sum, "[", op, "] invalid reduction ",
             static_cast<int>(r));
  return static_cast<int64_t>(r);
}

void check_defined(const char* op, const char* what, const Tensor& t) {
  KILN_CHECK(t.defined(), "[", op, "] ", what, " is an undefined tensor");
}

}  // namespace

Tensor layer_norm(const Tensor& input, IntArrayRef normalized_shape, const std::optional<Tensor>& weight,
                  const std::optional<Tensor>& bias, double eps) {
  check_defined("layer_norm", "input", input);
  return call_op1(KILN_ROW("layer_norm"), {input, weight.value_or(Tensor()), bias.value_or(Tensor())},
                  Attrs{Shape(normalized_shape.vec()), eps});
}

Tensor dropout(const Tensor& input, double p, bool train) {
  check_defined("dropout", "input", input);
  KILN_CHECK(p >= 0.0 && p <= 1.0, "[dropout] dropout probability has to be between 0 and 1, but got p=", p);
  if (!train || p == 0.0) return input;
  if (p == 1.0) return input * 0;  // zeros that stay in the graph (zero gradient), as PyTorch
  KILN_CHECK(input.is_floating_point(), "[dropout] expected a floating point input, but got dtype ", input.dtype());
  PhiloxKey k = default_generator().reserve(static_cast<uint64_t>(input.numel()));
  return call_op1(KILN_ROW("dropout"), {input}, Attrs{p, static_cast<int64_t>(k.seed), static_cast<int64_t>(k.offset)});
}

Tensor cross_entropy(const Tensor& input, const Tensor& target, const std::optional<Tensor>& weight,
                     Reduction reduction, int64_t ignore_index, double label_smoothing) {
  check_defined("cross_entropy", "input", input);
  check_defined("cross_entropy", "target", target);
  return call_op1(KILN_ROW("cross_entropy"), {input, target, weight.value_or(Tensor())},
                  Attrs{reduction_attr("cross_entropy", reduction), ignore_index, label_smoothing});
}

Tensor nll_loss(const Tensor& input, const Tensor& target, const std::optional<Tensor>& weight, Reduction reduction,
                int64_t ignore_index) {
  check_defined("nll_loss", "input", input);
  check_defined("nll_loss", "target", target);
  return call_op1(KILN_ROW("nll_loss"), {input, target, weight.value_or(Tensor())},
                  Attrs{reduction_attr("nll_loss", reduction), ignore_index});
}

Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction) {
  check_defined("mse_loss", "input", input);
  check_defined("mse_loss", "target", target);
  return call_op1(KILN_ROW("mse_loss"), {input, target}, Attrs{reduction_attr("mse_loss", reduction)});
}

}  // namespace kiln
