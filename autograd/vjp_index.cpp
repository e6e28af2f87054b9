#include "autograd/vjp_families.h"
#include "core/ops.h"

namespace kiln::autograd {

void register_index_vjps(OpRegistry&) {}

}  // namespace kiln::autograd
