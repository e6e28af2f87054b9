// Attaches each family's vjps to the registry rows (called once by OpRegistry).
#include "autograd/vjp_families.h"

namespace kiln::ops_registration {

void register_vjps(OpRegistry& r) {
  autograd::register_pointwise_vjps(r);
  autograd::register_view_vjps(r);
  autograd::register_reduction_vjps(r);
  autograd::register_linalg_vjps(r);
  autograd::register_conv_vjps(r);
  autograd::register_index_vjps(r);
  autograd::register_nn_vjps(r);
  // Every differentiable row gets its derivative here; a missing one is a kiln bug, caught at start-up.
  for (const OpDef* d : r.all())
    KILN_INTERNAL_ASSERT(!d->differentiable || d->vjp != nullptr, "differentiable row ", d->name, " has no vjp");
}

}  // namespace kiln::ops_registration
