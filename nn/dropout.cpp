#include "nn/dropout.h"

#include <sstream>

#include "core/ops.h"

namespace kiln::nn {

Dropout::Dropout(double p) : p(p) {
  KILN_CHECK(p >= 0.0 && p <= 1.0, "[Dropout] dropout probability has to be between 0 and 1, but got p=", p);
}

Tensor Dropout::forward(const Tensor& input) { return dropout(input, p, is_training()); }

std::string Dropout::extra_repr() const {
  std::ostringstream os;
  os << "p=" << p;
  return os.str();
}

}  // namespace kiln::nn
