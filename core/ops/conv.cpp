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

}  // namespace kiln
