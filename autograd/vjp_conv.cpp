// vjps of conv2d and the 2-D pools, through the backward rows of kernels/conv.cpp. Those rows
// are linear in the gradient they take, so their own vjps (for double backward) are again
// conv2d, the other backward row, gather or avg_pool2d.
#include "autograd/vjp_families.h"
#include "core/ops.h"
#include "core/shape.h"

namespace kiln::autograd {

namespace {

using G = const TensorList&;
using C = const VjpContext&;

// conv2d's attrs (stride, padding, dilation, groups) followed by a size: a backward row's attrs.
Attrs with_size(const Attrs& a, size_t n, IntArrayRef size) {
  Attrs out;
  for (size_t i = 0; i < n; ++i) out.push(a[i]);
  out.push(size.vec());
  return out;
}
Attrs first(const Attrs& a, size_t n) {
  Attrs out;
  for (size_t i = 0; i < n; ++i) out.push(a[i]);
  return out;
}

Tensor backward_input(const Tensor& gy, const Tensor& w, IntArrayRef input_size, const Attrs& conv) {
  return call_op1(KILN_ROW("conv2d_backward_input"), {gy, w}, with_size(conv, 4, input_size));
}
Tensor backward_weight(const Tensor& gy, const Tensor& x, IntArrayRef weight_size, const Attrs& conv) {
  return call_op1(KILN_ROW("conv2d_backward_weight"), {gy, x}, with_size(conv, 4, weight_size));
}
Tensor conv(const Tensor& x, const Tensor& w, const Attrs& conv) {
  return call_op1(KILN_ROW("conv2d"), {x, w}, first(conv, 4));
}

// inputs {input, weight[, bias]}
TensorList vjp_conv2d(C c, G g) {
  const Tensor& gy = g[0];
  TensorList r(c.num_inputs());
  if (c.needs_grad(0)) r[0] = backward_input(gy, c.input(1), c.input_sizes(0), c.attrs());
  if (c.needs_grad(1)) r[1] = backward_weight(gy, c.input(0), c.input_sizes(1), c.attrs());
  if (c.num_inputs() == 3 && c.needs_grad(2)) r[2] = gy.dim() == 4 ? gy.sum({0, 2, 3}) : gy.sum({1, 2});
  return r;
}

// inputs {grad_output, weight}: the result is linear in each.
TensorList vjp_conv2d_backward_input(C c, G g) {
  const Tensor& gg = g[0];
  TensorList r(2);
  if (c.needs_grad(0)) r[0] = conv(gg, c.input(1), c.attrs());
  if (c.needs_grad(1)) r[1] = backward_weight(c.input(0), gg, c.input_sizes(1), c.attrs());
  return r;
}

// inputs {grad_output, input}
TensorList vjp_conv2d_backward_weight(C c, G g) {
  const Tensor& gg = g[0];
  TensorList r(2);
  if (c.needs_grad(0)) r[0] = conv(c.input(1), gg, c.attrs());
  if (c.needs_grad(1)) r[1] = backward_input(c.input(0), gg, c.input_sizes(1), c.attrs());
  return r;
}

// The gradient goes to each window's maximum, found again from the saved input.
TensorList vjp_max_pool2d(C c, G g) {
  Tensor indices = call_op1(KILN_ROW("max_pool2d_indices"), {c.input(0)}, c.attrs());
  return {max_pool2d_backward(g[0], indices, c.input_sizes(0))};
}

// inputs {grad_output, indices}: each output element reads one element of the upstream gradient.
TensorList vjp_max_pool2d_backward(C c, G g) {
  const Shape& size = c.attrs().ints(0);  // the pooled input's, all positive (checked by infer)
  const int64_t hw = size[size.size() - 2] * size[size.size() - 1], planes = shape_numel(size) / hw;
  Tensor indices = c.input(1).reshape({planes, -1});
  Tensor picked = gather(g[0].reshape({planes, hw}), 1, indices.clamp_min(0));
  return {where(indices >= 0, picked, 0).reshape(c.input_sizes(0))};  // -1: a window without input
}

TensorList vjp_avg_pool2d(C c, G g) {
  return {call_op1(KILN_ROW("avg_pool2d_backward"), {g[0]}, with_size(c.attrs(), 5, c.input_sizes(0)))};
}

TensorList vjp_avg_pool2d_backward(C c, G g) {
  return {call_op1(KILN_ROW("avg_pool2d"), {g[0]}, first(c.attrs(), 5))};
}

}  // namespace

void register_conv_vjps(OpRegistry& r) {
  set_vjp(r, "conv2d", vjp_conv2d, kSaveInputs);
  set_vjp(r, "conv2d_backward_input", vjp_conv2d_backward_input, kSaveInputs);
  set_vjp(r, "conv2d_backward_weight", vjp_conv2d_backward_weight, kSaveInputs);
  set_vjp(r, "max_pool2d", vjp_max_pool2d, kSaveInputs);
  set_vjp(r, "max_pool2d_backward", vjp_max_pool2d_backward, kSaveInputs);
  set_vjp(r, "avg_pool2d", vjp_avg_pool2d, kSaveNothing);
  set_vjp(r, "avg_pool2d_backward", vjp_avg_pool2d_backward, kSaveNothing);
}

}  // namespace kiln::autograd
