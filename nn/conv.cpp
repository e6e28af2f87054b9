#include "nn/conv.h"

#include <cmath>
#include <sstream>

#include "core/ops.h"
#include "nn/init.h"

namespace kiln::nn {
namespace {

void check_positive(const char* module, const char* what, const ExpandingArray<2>& a, int64_t min) {
  KILN_CHECK(a[0] >= min && a[1] >= min, "[", module, "] ", what, " must be >= ", min, ", got ", a);
}

void check_spatial_input(const char* module, const Tensor& input) {
  KILN_CHECK(input.defined(), "[", module, "] input is an undefined tensor");
  KILN_CHECK(input.dim() == 3 || input.dim() == 4, "[", module,
             "] expected a 3D (unbatched) or 4D (batched) input, but got input of shape ", input.sizes());
}

}  // namespace

Conv2d::Conv2d(const Conv2dOptions& options) : options(options) {
  const auto& o = this->options;
  KILN_CHECK(o.in_channels > 0 && o.out_channels > 0, "[Conv2d] in_channels and out_channels must be positive, got ",
             o.in_channels, " and ", o.out_channels);
  KILN_CHECK(o.groups > 0, "[Conv2d] groups must be a positive integer, got ", o.groups);
  KILN_CHECK(o.in_channels % o.groups == 0, "[Conv2d] in_channels (", o.in_channels, ") must be divisible by groups (",
             o.groups, ")");
  KILN_CHECK(o.out_channels % o.groups == 0, "[Conv2d] out_channels (", o.out_channels,
             ") must be divisible by groups (", o.groups, ")");
  check_positive("Conv2d", "kernel_size", o.kernel_size, 1);
  check_positive("Conv2d", "stride", o.stride, 1);
  check_positive("Conv2d", "padding", o.padding, 0);
  check_positive("Conv2d", "dilation", o.dilation, 1);
  reset();
}

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, ExpandingArray<2> kernel_size, ExpandingArray<2> stride,
               ExpandingArray<2> padding, ExpandingArray<2> dilation, int64_t groups, bool bias)
    : Conv2d(Conv2dOptions{in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias}) {}

void Conv2d::reset() {
  const auto& o = options;
  weight = register_parameter("weight",
                              empty({o.out_channels, o.in_channels / o.groups, o.kernel_size[0], o.kernel_size[1]}));
  bias = register_parameter("bias", o.bias ? empty({o.out_channels}) : Tensor());
  reset_parameters();
}

void Conv2d::reset_parameters() {
  init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias.defined()) {
    const int64_t fan_in = init::calculate_fan_in_and_fan_out(weight).first;
    const double bound = fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
    init::uniform_(bias, -bound, bound);
  }
}

Tensor Conv2d::forward(const Tensor& input) {
  check_spatial_input("Conv2d", input);
  KILN_CHECK(input.size(-3) == options.in_channels, "[Conv2d] expected input with ", options.in_channels,
             " channels (in_channels), but got input of shape ", input.sizes());
  const bool batched = input.dim() == 4;
  Tensor x = batched ? input : input.unsqueeze(0);
  Tensor y = conv2d(x, weight, bias.defined() ? std::optional<Tensor>(bias) : std::nullopt, options.stride,
                    options.padding, options.dilation, options.groups);
  return batched ? y : y.squeeze(0);
}

std::string Conv2d::extra_repr() const {
  const auto& o = options;
  std::ostringstream os;
  os << o.in_channels << ", " << o.out_channels << ", kernel_size=" << o.kernel_size << ", stride=" << o.stride;
  if (!(o.padding == ExpandingArray<2>(0))) os << ", padding=" << o.padding;
  if (!(o.dilation == ExpandingArray<2>(1))) os << ", dilation=" << o.dilation;
  if (o.groups != 1) os << ", groups=" << o.groups;
  if (!o.bias) os << ", bias=false";
  return os.str();
}

MaxPool2d::MaxPool2d(const MaxPool2dOptions& options) : options(options) {
  const auto& o = this->options;
  check_positive("MaxPool2d", "kernel_size", o.kernel_size, 1);
  if (o.stride) check_positive("MaxPool2d", "stride", *o.stride, 1);
  check_positive("MaxPool2d", "padding", o.padding, 0);
  check_positive("MaxPool2d", "dilation", o.dilation, 1);
}

MaxPool2d::MaxPool2d(ExpandingArray<2> kernel_size, std::optional<ExpandingArray<2>> stride, ExpandingArray<2> padding,
                     ExpandingArray<2> dilation, bool ceil_mode)
    : MaxPool2d(MaxPool2dOptions{kernel_size, stride, padding, dilation, ceil_mode}) {}

Tensor MaxPool2d::forward(const Tensor& input) {
  check_spatial_input("MaxPool2d", input);
  const auto& o = options;
  return max_pool2d(input, o.kernel_size, o.stride.value_or(o.kernel_size), o.padding, o.dilation, o.ceil_mode);
}

std::string MaxPool2d::extra_repr() const {
  const auto& o = options;
  std::ostringstream os;
  os << "kernel_size=" << o.kernel_size << ", stride=" << o.stride.value_or(o.kernel_size) << ", padding=" << o.padding
     << ", dilation=" << o.dilation << ", ceil_mode=" << (o.ceil_mode ? "true" : "false");
  return os.str();
}

AvgPool2d::AvgPool2d(const AvgPool2dOptions& options) : options(options) {
  const auto& o = this->options;
  check_positive("AvgPool2d", "kernel_size", o.kernel_size, 1);
  if (o.stride) check_positive("AvgPool2d", "stride", *o.stride, 1);
  check_positive("AvgPool2d", "padding", o.padding, 0);
}

AvgPool2d::AvgPool2d(ExpandingArray<2> kernel_size, std::optional<ExpandingArray<2>> stride, ExpandingArray<2> padding,
                     bool ceil_mode, bool count_include_pad)
    : AvgPool2d(AvgPool2dOptions{kernel_size, stride, padding, ceil_mode, count_include_pad}) {}

Tensor AvgPool2d::forward(const Tensor& input) {
  check_spatial_input("AvgPool2d", input);
  const auto& o = options;
  return avg_pool2d(input, o.kernel_size, o.stride.value_or(o.kernel_size), o.padding, o.ceil_mode,
                    o.count_include_pad);
}

std::string AvgPool2d::extra_repr() const {
  const auto& o = options;
  std::ostringstream os;
  os << "kernel_size=" << o.kernel_size << ", stride=" << o.stride.value_or(o.kernel_size) << ", padding=" << o.padding;
  if (o.ceil_mode) os << ", ceil_mode=true";
  if (!o.count_include_pad) os << ", count_include_pad=false";
  return os.str();
}

}  // namespace kiln::nn
