#include "nn/activation.h"

namespace kiln::nn {

GELU::GELU(std::string approximate) : approximate(std::move(approximate)) {
  KILN_CHECK(this->approximate == "none" || this->approximate == "tanh",
             "[GELU] approximate must be 'none' or 'tanh', got '", this->approximate, "'");
}

}  // namespace kiln::nn
