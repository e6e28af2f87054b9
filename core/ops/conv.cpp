// Front ends of conv2d and the 2-D pools: normalise 1-or-2-int arguments, dispatch the rows
// (kernels/conv.cpp), whose infer checks every value.
#include "core/op.h"
#include "core/ops.h"

namespace kiln {
namespace {

// PyTorch's _pair: one int applies to both spatial dims.
Shape pair(const char* op, const char* what, IntArrayRef v) {
  KILN_CHECK(v.size() == 1 || v.size() == 2, "[", op, "] ", what, " must either be a single int, or a tuple of two ints, but got ",
             v);
  return v.size() == 1 ? Shape{v[0], v[0]} : v.vec();
}

}  // namespace

Tensor conv2d(const Tensor& input, const Tensor& weight, const std::optional<Tensor>& bias, IntArrayRef stride,
              IntArrayRef padding, IntArrayRef dilation, int64_t groups) {
  Attrs attrs{pair("conv2d", "stride", stride), pair("conv2d", "padding", padding), pair("conv2d", "dilation", dilation),
              groups};
  if (bias && bias->defined()) return call_op1(KILN_ROW("conv2d"), {input, weight, *bias}, attrs);
  return call_op1(KILN_ROW("conv2d"), {input, weight}, attrs);
}

Tensor max_pool2d(const Tensor& input, IntArrayRef kernel_size, IntArrayRef stride, IntArrayRef padding,
                  IntArrayRef dilation, bool ceil_mode) {
  Shape k = pair("max_pool2d", "kernel_size", kernel_size);
  Shape s = stride.empty() ? k : pair("max_pool2d", "stride", stride);
  return call_op1(KILN_ROW("max_pool2d"), {input},
                  {k, s, pair("max_pool2d", "padding", padding), pair("max_pool2d", "dilation", dilation), ceil_mode});
}

Tensor avg_pool2d(const Tensor& input, IntArrayRef kernel_size, IntArrayRef stride, IntArrayRef padding, bool ceil_mode,
                  bool count_include_pad) {
  Shape k = pair("avg_pool2d", "kernel_size", kernel_size);
  Shape s = stride.empty() ? k : pair("avg_pool2d", "stride", stride);
  return call_op1(KILN_ROW("avg_pool2d"), {input}, {k, s, pair("avg_pool2d", "padding", padding), ceil_mode, count_include_pad});
}

// --- backward ops: attrs are the forward's plus the size of the produced tensor ------------------

namespace {
Attrs conv_attrs(const char* op, IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation, int64_t groups,
                 IntArrayRef size) {
  return Attrs{pair(op, "stride", stride), pair(op, "padding", padding), pair(op, "dilation", dilation), groups,
               size.vec()};
}
}  // namespace

Tensor conv2d_backward_input(const Tensor& grad_output, const Tensor& weight, IntArrayRef input_size,
                             IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation, int64_t groups) {
  return call_op1(KILN_ROW("conv2d_backward_input"), {grad_output, weight},
                  conv_attrs("conv2d_backward_input", stride, padding, dilation, groups, input_size));
}

Tensor conv2d_backward_weight(const Tensor& grad_output, const Tensor& input, IntArrayRef weight_size,
                              IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation, int64_t groups) {
  return call_op1(KILN_ROW("conv2d_backward_weight"), {grad_output, input},
                  conv_attrs("conv2d_backward_weight", stride, padding, dilation, groups, weight_size));
}

Tensor max_pool2d_indices(const Tensor& input, IntArrayRef kernel_size, IntArrayRef stride, IntArrayRef padding,
                          IntArrayRef dilation, bool ceil_mode) {
  const char* op = "max_pool2d_indices";
  Shape k = pair(op, "kernel_size", kernel_size);
  Shape s = stride.empty() ? k : pair(op, "stride", stride);
  return call_op1(KILN_ROW("max_pool2d_indices"), {input},
                  {k, s, pair(op, "padding", padding), pair(op, "dilation", dilation), ceil_mode});
}

Tensor max_pool2d_backward(const Tensor& grad_output, const Tensor& indices, IntArrayRef input_size) {
  return call_op1(KILN_ROW("max_pool2d_backward"), {grad_output, indices}, {input_size.vec()});
}

Tensor avg_pool2d_backward(const Tensor& grad_output, IntArrayRef input_size, IntArrayRef kernel_size,
                           IntArrayRef stride, IntArrayRef padding, bool ceil_mode, bool count_include_pad) {
  const char* op = "avg_pool2d_backward";
  Shape k = pair(op, "kernel_size", kernel_size);
  Shape s = stride.empty() ? k : pair(op, "stride", stride);
  return call_op1(KILN_ROW("avg_pool2d_backward"), {grad_output},
                  {k, s, pair(op, "padding", padding), ceil_mode, count_include_pad, input_size.vec()});
}

}  // namespace kiln
