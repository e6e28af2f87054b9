// vjps of the reductions, softmax family and cumsum. A reduced gradient is broadcast back over
// the reduced dims (re-inserted first when keepdim was false).
#include <algorithm>

#include "autograd/vjp_families.h"
#include "core/ops.h"

namespace kiln::autograd {

namespace {

using G = const TensorList&;
using C = const VjpContext&;

// The reduced dims, non-negative and sorted; empty attrs mean all dims.
Shape reduced_dims(const Shape& dims, int64_t ndim) {
  Shape out;
  if (ndim == 0) return out;  // a 0-dim input: dims {0} / {-1} name the tensor itself
  if (dims.empty()) {
    for (int64_t d = 0; d < ndim; ++d) out.push_back(d);
    return out;
  }
  for (int64_t d : dims) out.push_back((d % ndim + ndim) % ndim);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

// A reduced tensor (gradient or result) shaped to broadcast against the input.
Tensor keep(const Tensor& t, IntArrayRef input_sizes, const Shape& dims, bool keepdim) {
  if (keepdim || input_sizes.empty()) return t;
  Tensor r = t;
  for (int64_t d : dims) r = r.unsqueeze(d);
  return r;
}

int64_t count(IntArrayRef sizes, const Shape& dims) {
  int64_t n = 1;
  for (int64_t d : dims) n *= sizes[static_cast<size_t>(d)];
  return n;
}

struct Reduced {
  Shape dims;
  bool keepdim;
};
Reduced dims_keepdim(C c, size_t dims_attr, size_t keepdim_attr) {
  return {reduced_dims(c.attrs().ints(dims_attr), static_cast<int64_t>(c.input_sizes(0).size())),
          c.attrs().b(keepdim_attr)};
}

TensorList vjp_sum(C c, G g) {
  auto [dims, keepdim] = dims_keepdim(c, 0, 1);
  return {keep(g[0], c.input_sizes(0), dims, keepdim).expand(c.input_sizes(0))};
}

TensorList vjp_mean(C c, G g) {
  auto [dims, keepdim] = dims_keepdim(c, 0, 1);
  double n = static_cast<double>(count(c.input_sizes(0), dims));
  return {keep(g[0], c.input_sizes(0), dims, keepdim).expand(c.input_sizes(0)) / n};
}

TensorList vjp_prod(C c, G g) {
  // Zero-safe: where x != 0 the derivative is prod/x; at a single zero of its slice it is the
  // product of the others; with two or more zeros it is 0.
  auto [dims, keepdim] = dims_keepdim(c, 0, 1);
  Tensor x = c.input(0);
  IntArrayRef sz = c.input_sizes(0);
  Tensor gk = keep(g[0], sz, dims, keepdim);
  Tensor out = keep(c.output(0), sz, dims, keepdim);
  Tensor is_zero = x == 0;
  Tensor nonzero_prod = prod(where(is_zero, 1, x), dims, true);
  Tensor zeros_in_slice = sum(is_zero, dims, true);
  Tensor at_zero = where(zeros_in_slice == 1, gk * nonzero_prod, 0);
  return {where(is_zero, at_zero, gk * out / where(is_zero, 1, x))};
}

// amax/amin: the gradient is shared evenly among the tied extreme elements.
TensorList vjp_amax_amin(C c, G g) {
  auto [dims, keepdim] = dims_keepdim(c, 0, 1);
  IntArrayRef sz = c.input_sizes(0);
  Tensor x = c.input(0);
  Tensor mask = x == keep(c.output(0), sz, dims, keepdim);
  Tensor n = sum(mask, dims, true);
  return {where(mask, keep(g[0], sz, dims, keepdim) / n, 0)};
}

// max(dim)/min(dim): the gradient goes to the selected index.
TensorList vjp_max_min_dim(C c, G g) {
  if (!g[0].defined()) return {};
  IntArrayRef sz = c.input_sizes(0);
  if (sz.empty()) return {g[0]};
  Shape dims = reduced_dims({c.attrs().i(0)}, static_cast<int64_t>(sz.size()));
  bool keepdim = c.attrs().b(1);
  Tensor idx = keep(c.output(1), sz, dims, keepdim);
  Tensor gk = keep(g[0], sz, dims, keepdim);
  return {zeros(sz, TensorOptions().dtype(g[0].dtype())).scatter(dims[0], idx, gk)};
}

Tensor var_grad(C c, const Tensor& g, const Shape& dims, bool keepdim, int64_t correction) {
  IntArrayRef sz = c.input_sizes(0);
  Tensor x = c.input(0);
  double n = static_cast<double>(count(sz, dims) - correction);
  return keep(g, sz, dims, keepdim) * (x - mean(x, dims, true)) * (2.0 / n);
}

TensorList vjp_var(C c, G g) {
  Shape dims = reduced_dims(c.attrs().ints(0), static_cast<int64_t>(c.input_sizes(0).size()));
  return {var_grad(c, g[0], dims, c.attrs().b(2), c.attrs().i(1))};
}

TensorList vjp_std(C c, G g) {
  Shape dims = reduced_dims(c.attrs().ints(0), static_cast<int64_t>(c.input_sizes(0).size()));
  bool keepdim = c.attrs().b(2);
  Tensor s = keep(c.output(0), c.input_sizes(0), dims, keepdim);
  Tensor gs = keep(g[0], c.input_sizes(0), dims, keepdim);
  // d std = d var / (2 std); a zero std gives a zero gradient rather than nan.
  return {var_grad(c, where(s == 0, 0, gs / (s * 2)), dims, true, c.attrs().i(1))};
}

TensorList vjp_var_mean(C c, G g) {
  IntArrayRef sz = c.input_sizes(0);
  Shape dims = reduced_dims(c.attrs().ints(0), static_cast<int64_t>(sz.size()));
  bool keepdim = c.attrs().b(2);
  Tensor r;
  if (g[0].defined()) r = var_grad(c, g[0], dims, keepdim, c.attrs().i(1));
  if (g.size() > 1 && g[1].defined()) {
    Tensor gm = keep(g[1], sz, dims, keepdim).expand(sz) / static_cast<double>(count(sz, dims));
    r = r.defined() ? r + gm : gm;
  }
  return {r};
}

TensorList vjp_logsumexp(C c, G g) {
  auto [dims, keepdim] = dims_keepdim(c, 0, 1);
  IntArrayRef sz = c.input_sizes(0);
  return {keep(g[0], sz, dims, keepdim) * exp(c.input(0) - keep(c.output(0), sz, dims, keepdim))};
}

TensorList vjp_softmax(C c, G g) {
  int64_t dim = c.attrs().i(0);
  Tensor y = c.output(0);
  Tensor gy = g[0] * y;
  return {gy - y * sum(gy, {dim}, true)};
}

TensorList vjp_log_softmax(C c, G g) {
  int64_t dim = c.attrs().i(0);
  return {g[0] - exp(c.output(0)) * sum(g[0], {dim}, true)};
}

TensorList vjp_cumsum(C c, G g) {
  // The reversed cumulative sum of the gradient: total - cumsum + g.
  if (c.input_sizes(0).empty()) return {g[0]};
  int64_t dim = c.attrs().i(0);
  return {sum(g[0], {dim}, true) - cumsum(g[0], dim) + g[0]};
}

}  // namespace

void register_reduction_vjps(OpRegistry& r) {
  set_vjp(r, "sum", vjp_sum, kSaveNothing);
  set_vjp(r, "mean", vjp_mean, kSaveNothing);
  set_vjp(r, "prod", vjp_prod, kSaveAll);
  set_vjp(r, "amax", vjp_amax_amin, kSaveAll);
  set_vjp(r, "amin", vjp_amax_amin, kSaveAll);
  set_vjp(r, "max_dim", vjp_max_min_dim, kSaveOutputs);
  set_vjp(r, "min_dim", vjp_max_min_dim, kSaveOutputs);
  set_vjp(r, "var", vjp_var, kSaveInputs);
  set_vjp(r, "std", vjp_std, kSaveAll);
  set_vjp(r, "var_mean", vjp_var_mean, kSaveInputs);
  set_vjp(r, "logsumexp", vjp_logsumexp, kSaveAll);
  set_vjp(r, "softmax", vjp_softmax, kSaveOutputs);
  set_vjp(r, "log_softmax", vjp_log_softmax, kSaveOutputs);
  set_vjp(r, "cumsum", vjp_cumsum, kSaveNothing);
}

}  // namespace kiln::autograd
