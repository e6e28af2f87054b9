// vjps of the view ops. A view's gradient is the incoming gradient placed back at the
// positions the view selected; views that may overlap themselves (unfold with step < size,
// as_strided) sum their contributions with scatter_add.
#include "autograd/vjp_families.h"
#include "core/ops.h"

namespace kiln::autograd {

namespace {

using G = const TensorList&;
using C = const VjpContext&;

TensorList vjp_reshape(C c, G g) { return {g[0].reshape(c.input_sizes(0))}; }
TensorList vjp_expand(C, G g) { return {g[0]}; }  // the node sums the broadcast dims
TensorList vjp_transpose(C c, G g) { return {g[0].transpose(c.attrs().i(0), c.attrs().i(1))}; }
TensorList vjp_permute(C c, G g) {
  const Shape& dims = c.attrs().ints(0);
  int64_t n = static_cast<int64_t>(dims.size());
  Shape inverse(dims.size());
  for (int64_t i = 0; i < n; ++i) inverse[static_cast<size_t>((dims[static_cast<size_t>(i)] % n + n) % n)] = i;
  return {g[0].permute(inverse)};
}

// Non-overlapping views: write the gradient into the same view of a zero tensor.
TensorList vjp_place(C c, G g) {
  Tensor z = zeros(c.input_sizes(0), TensorOptions().dtype(g[0].dtype()));
  call_op1(c.op(), {z}, c.attrs()).copy_(g[0]);
  return {z};
}

// Views that may overlap: scatter-add the gradient through the view of element indices.
TensorList vjp_scatter(C c, G g) {
  IntArrayRef sizes = c.input_sizes(0);
  int64_t n = 1;
  for (int64_t s : sizes) n *= s;
  Tensor index = call_op1(c.op(), {arange(n).view(sizes)}, c.attrs());
  Tensor flat = zeros({n}, TensorOptions().dtype(g[0].dtype()));
  return {flat.scatter_add(0, index.reshape({-1}), g[0].reshape({-1})).view(sizes)};
}

TensorList vjp_unfold(C c, G g) {
  return c.attrs().i(2) >= c.attrs().i(1) ? vjp_place(c, g) : vjp_scatter(c, g);
}

// as_strided addresses the storage, so its gradient is assembled in storage coordinates and
// read back through the input's own geometry (assumed not to overlap itself).
TensorList vjp_as_strided(C c, G g) {
  const InputGeometry& in = c.input_geometry(0);
  const Shape& sizes = c.attrs().ints(0);
  const Shape& strides = c.attrs().ints(1);
  int64_t offset = c.attrs().i(2);
  auto hi_of = [](IntArrayRef sz, IntArrayRef st, int64_t off) {
    int64_t hi = off;
    for (size_t d = 0; d < sz.size(); ++d) {
      if (sz[d] == 0) return off - 1;
      hi += (sz[d] - 1) * st[d];
    }
    return hi;
  };
  int64_t span = std::max(hi_of(sizes, strides, offset), hi_of(in.sizes, in.strides, in.offset)) + 1;
  Tensor index = arange(span).as_strided(sizes, strides, offset);
  Tensor flat = zeros({span}, TensorOptions().dtype(g[0].dtype()));
  flat = flat.scatter_add(0, index.reshape({-1}), g[0].reshape({-1}));
  return {flat.as_strided(in.sizes, in.strides, in.offset)};
}

}  // namespace

void register_view_vjps(OpRegistry& r) {
  for (const char* n : {"view", "alias", "squeeze", "unsqueeze"}) set_vjp(r, n, vjp_reshape, kSaveNothing);
  set_vjp(r, "expand", vjp_expand, kSaveNothing);
  set_vjp(r, "transpose", vjp_transpose, kSaveNothing);
  set_vjp(r, "permute", vjp_permute, kSaveNothing);
  for (const char* n : {"select", "slice", "narrow", "diagonal"}) set_vjp(r, n, vjp_place, kSaveNothing);
  set_vjp(r, "unfold", vjp_unfold, kSaveNothing);
  set_vjp(r, "as_strided", vjp_as_strided, kSaveNothing);
}

}  // namespace kiln::autograd
