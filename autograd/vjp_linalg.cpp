#include "autograd/vjp_families.h"
#include "core/ops.h"

namespace kiln::autograd {

void register_linalg_vjps(OpRegistry&) {}

}  // namespace kiln::autograd
