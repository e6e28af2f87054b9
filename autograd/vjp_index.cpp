// vjps of the structure and indexing ops. What a gather-like op reads is summed back into zeros
// with scatter_add (duplicate indices accumulate); what a scatter-like op wrote is read back with
// gather.
#include "autograd/vjp_families.h"
#include "core/ops.h"
#include "core/shape.h"

namespace kiln::autograd {

namespace {

using G = const TensorList&;
using C = const VjpContext&;

Tensor zeros_of(IntArrayRef sizes, const Tensor& like) { return zeros(sizes, TensorOptions().dtype(like.dtype())); }

// cat skips legacy [0] tensors; the others are slices of the gradient along dim.
TensorList vjp_cat(C c, G g) {
  auto skipped = [&](size_t i) { return c.input_sizes(i).size() == 1 && c.input_sizes(i)[0] == 0; };
  TensorList r(c.num_inputs());
  int64_t dim = 0;
  for (size_t i = 0; i < c.num_inputs(); ++i)
    if (!skipped(i)) {
      dim = wrap_dim("cat", c.attrs().i(0), static_cast<int64_t>(c.input_sizes(i).size()));
      break;
    }
  int64_t offset = 0;
  for (size_t i = 0; i < c.num_inputs(); ++i) {
    if (skipped(i)) {
      if (c.needs_grad(i)) r[i] = zeros_of(c.input_sizes(i), g[0]);
      continue;
    }
    const int64_t len = c.input_sizes(i)[static_cast<size_t>(dim)];
    if (c.needs_grad(i)) r[i] = g[0].narrow(dim, offset, len);
    offset += len;
  }
  return r;
}

// inputs {self, index}; attrs dim
TensorList vjp_index_select(C c, G g) {
  IntArrayRef sizes = c.input_sizes(0);
  if (sizes.empty()) return {g[0].reshape({})};  // a 0-dim self: the one index is 0
  const int64_t dim = wrap_dim("index_select", c.attrs().i(0), static_cast<int64_t>(sizes.size()));
  Shape view(sizes.size(), 1);
  view[static_cast<size_t>(dim)] = -1;
  Tensor index = c.input(1).reshape(view).expand(g[0].sizes());
  return {zeros_of(sizes, g[0]).scatter_add(dim, index, g[0])};
}

// inputs {self, index}; attrs dim
TensorList vjp_gather(C c, G g) {
  return {zeros_of(c.input_sizes(0), g[0]).scatter_add(c.attrs().i(0), c.input(1), g[0])};
}

// gather(grad, dim, index) for src, which may be larger than index (those elements are unused).
Tensor src_grad(C c, const Tensor& grad) {
  IntArrayRef src_sizes = c.input_sizes(2);
  Tensor index = c.input(1);
  Tensor picked = index.numel() == 0 ? Tensor() : gather(grad, c.attrs().i(0), index);
  if (picked.defined() && picked.sizes() == src_sizes) return picked;
  Tensor z = zeros_of(src_sizes, grad);
  if (!picked.defined()) return z;
  Tensor region = z;
  for (int64_t d = 0; d < picked.dim(); ++d) region = region.narrow(d, 0, picked.size(d));
  region.copy_(picked);
  return z;
}

// inputs {self, index[, src]}; attrs dim, value. The scattered positions of self were overwritten.
TensorList vjp_scatter(C c, G g) {
  const int64_t dim = c.attrs().i(0);
  TensorList r(c.num_inputs());
  if (c.needs_grad(0)) r[0] = scatter(g[0], dim, c.input(1), Scalar(0));
  if (c.num_inputs() == 3 && c.needs_grad(2)) r[2] = src_grad(c, g[0]);
  return r;
}

// inputs {self, index, src}; attrs dim
TensorList vjp_scatter_add(C c, G g) {
  TensorList r(3);
  r[0] = g[0];
  if (c.needs_grad(2)) r[2] = src_grad(c, g[0]);
  return r;
}

// inputs {weight [V, D], indices}; attrs padding_idx. Rows looked up several times sum their
// gradients; the padding row gets none.
TensorList vjp_embedding(C c, G g) {
  IntArrayRef w = c.input_sizes(0);
  const int64_t V = w[0], D = w[1];
  Tensor idx = c.input(1).reshape({-1});
  const int64_t n = idx.numel();
  Tensor rows = g[0].reshape({n, D});
  if (!c.attrs().is_none(0)) {
    const int64_t pad = c.attrs().i(0) < 0 ? c.attrs().i(0) + V : c.attrs().i(0);
    rows = where((idx != pad).unsqueeze(1), rows, 0);
  }
  return {zeros_of(w, g[0]).scatter_add(0, idx.unsqueeze(1).expand({n, D}), rows)};
}

TensorList vjp_tril(C c, G g) { return {tril(g[0], c.attrs().i(0))}; }
TensorList vjp_triu(C c, G g) { return {triu(g[0], c.attrs().i(0))}; }

}  // namespace

void register_index_vjps(OpRegistry& r) {
  set_vjp(r, "cat", vjp_cat, kSaveNothing);
  set_vjp(r, "index_select", vjp_index_select, kSaveInputs);
  set_vjp(r, "gather", vjp_gather, kSaveInputs);
  set_vjp(r, "scatter", vjp_scatter, kSaveInputs);
  set_vjp(r, "scatter_add", vjp_scatter_add, kSaveInputs);
  set_vjp(r, "embedding", vjp_embedding, kSaveInputs);
  set_vjp(r, "tril", vjp_tril, kSaveNothing);
  set_vjp(r, "triu", vjp_triu, kSaveNothing);
}

}  // namespace kiln::autograd
