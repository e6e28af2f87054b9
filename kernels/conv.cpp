// Registry rows of conv2d, max_pool2d and avg_pool2d (NCHW, or unbatched CHW). Argument checks
// follow PyTorch's (shape rules, pooling output size with ceil_mode); the front ends in
// core/ops/conv.cpp only normalise 1-or-2-int arguments to two ints.
#include "kernels/conv.h"

#include "core/ops.h"
#include "core/shape.h"
#include "kernels/cpu/conv.h"
#include "kernels/cpu/pool.h"

namespace kiln {
namespace {

constexpr int kCPUIdx = static_cast<int>(DeviceType::CPU);

void check_pair(const OpDef& op, const char* what, const Shape& v) {
  KILN_CHECK(v.size() == 2, "[", op.name, "] expected ", what, " to have 2 elements, but got ", IntArrayRef(v));
}

// --- conv2d: inputs {input, weight[, bias]}; attrs stride, padding, dilation, groups ------------

cpu::Conv2dParams conv_params(const OpDef& op, const TensorList& in, const Attrs& a) {
  KILN_INTERNAL_ASSERT(in.size() == 2 || in.size() == 3, "[conv2d] takes 2 or 3 tensors");
  const Tensor &x = in[0], &w = in[1];
  KILN_CHECK(x.dim() == 3 || x.dim() == 4, "[conv2d] expected 3-D (unbatched) or 4-D (batched) input, but got input of shape ",
             x.sizes());
  KILN_CHECK(w.dim() == 4, "[conv2d] expected weight to be 4-D [out_channels, in_channels / groups, kH, kW], but got weight of shape ",
             w.sizes());
  KILN_CHECK(is_floating_point(x.dtype()), "[conv2d] expected a floating point input, but got ", x.dtype());
  KILN_CHECK(x.dtype() == w.dtype(), "[conv2d] expected input and weight to have the same dtype, but got: ", x.dtype(),
             " != ", w.dtype());
  const Shape &stride = a.ints(0), &padding = a.ints(1), &dilation = a.ints(2);
  const int64_t groups = a.i(3);
  check_pair(op, "stride", stride);
  check_pair(op, "padding", padding);
  check_pair(op, "dilation", dilation);
  KILN_CHECK(stride[0] > 0 && stride[1] > 0, "[conv2d] expected stride to be positive, but got stride ", stride);
  KILN_CHECK(dilation[0] > 0 && dilation[1] > 0, "[conv2d] expected dilation to be positive, but got dilation ", dilation);
  KILN_CHECK(padding[0] >= 0 && padding[1] >= 0, "[conv2d] expected padding to be non-negative, but got padding ", padding);
  KILN_CHECK(groups > 0, "[conv2d] expected groups to be positive, but got groups ", groups);
  const bool batched = x.dim() == 4;
  cpu::Conv2dParams p{};
  p.N = batched ? x.size(0) : 1;
  p.C = x.size(batched ? 1 : 0), p.H = x.size(batched ? 2 : 1), p.W = x.size(batched ? 3 : 2);
  p.O = w.size(0), p.kH = w.size(2), p.kW = w.size(3);
  p.sH = stride[0], p.sW = stride[1], p.pH = padding[0], p.pW = padding[1], p.dH = dilation[0], p.dW = dilation[1];
  p.groups = groups;
  KILN_CHECK(p.kH > 0 && p.kW > 0, "[conv2d] expected a non-empty kernel, but got weight of shape ", w.sizes());
  KILN_CHECK(p.O % groups == 0, "[conv2d] expected out_channels ", p.O, " (weight ", w.sizes(),
             ") to be divisible by groups ", groups);
  KILN_CHECK(p.C == w.size(1) * groups, "[conv2d] expected input with ", w.size(1) * groups, " channels (weight ",
             w.sizes(), ", groups ", groups, "), but got input of shape ", x.sizes());
  if (in.size() == 3) {
    const Tensor& b = in[2];
    KILN_CHECK(b.dtype() == x.dtype(), "[conv2d] expected input and bias to have the same dtype, but got: ", x.dtype(),
               " != ", b.dtype());
    KILN_CHECK(b.dim() == 1 && b.size(0) == p.O, "[conv2d] expected bias of shape [", p.O, "], but got bias of shape ",
               b.sizes());
  }
  const int64_t ekH = p.dH * (p.kH - 1) + 1, ekW = p.dW * (p.kW - 1) + 1;
  const int64_t ph = p.H + 2 * p.pH, pw = p.W + 2 * p.pW;
  KILN_CHECK(ekH <= ph && ekW <= pw, "[conv2d] kernel size (with dilation) [", ekH, ", ", ekW,
             "] can't be greater than the padded input size [", ph, ", ", pw, "] (input of shape ", x.sizes(), ")");
  p.oH = (ph - ekH) / p.sH + 1;
  p.oW = (pw - ekW) / p.sW + 1;
  return p;
}

std::vector<TensorMeta> conv2d_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  cpu::Conv2dParams p = conv_params(op, in, a);
  Shape out = in[0].dim() == 4 ? Shape{p.N, p.O, p.oH, p.oW} : Shape{p.O, p.oH, p.oW};
  return {TensorMeta{std::move(out), in[0].dtype(), common_device(op, in)}};
}

void conv2d_cpu(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  cpu::Conv2dParams p = conv_params(op, in, a);
  const bool batched = in[0].dim() == 4;
  Tensor x = batched ? in[0] : in[0].unsqueeze(0);
  Tensor o = batched ? out[0] : out[0].unsqueeze(0);
  cpu::conv2d(x, in[1], in.size() == 3 ? in[2] : Tensor(), o, p);
}

// --- pooling: attrs kernel_size, stride, padding, dilation, ceil_mode[, count_include_pad] ------

int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

// PyTorch's pooling_output_shape: with ceil_mode the last window must start inside the input
// or the left padding.
int64_t pool_out_size(int64_t in, int64_t k, int64_t pad, int64_t stride, int64_t dil, bool ceil_mode) {
  int64_t out = floor_div(in + 2 * pad - dil * (k - 1) - 1 + (ceil_mode ? stride - 1 : 0), stride) + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

cpu::Pool2dParams pool_params(const OpDef& op, const Tensor& x, const Attrs& a, bool has_dilation) {
  KILN_CHECK(x.dim() == 3 || x.dim() == 4, "[", op.name,
             "] expected a 3-D (unbatched) or 4-D (batched) input, but got input of shape ", x.sizes());
  for (int64_t d = x.dim() - 3; d < x.dim(); ++d)
    KILN_CHECK(x.size(d) > 0, "[", op.name, "] expected input with non-zero channels, height and width, but got input of shape ",
               x.sizes());
  const Shape &k = a.ints(0), &s = a.ints(1), &pad = a.ints(2);
  const Shape dil = has_dilation ? a.ints(3) : Shape{1, 1};
  const bool ceil_mode = a.b(has_dilation ? 4 : 3);
  check_pair(op, "kernel_size", k);
  check_pair(op, "stride", s);
  check_pair(op, "padding", pad);
  check_pair(op, "dilation", dil);
  KILN_CHECK(k[0] > 0 && k[1] > 0, "[", op.name, "] expected kernel_size to be positive, but got kernel_size ", k);
  KILN_CHECK(s[0] > 0 && s[1] > 0, "[", op.name, "] expected stride to be positive, but got stride ", s);
  KILN_CHECK(dil[0] > 0 && dil[1] > 0, "[", op.name, "] expected dilation to be positive, but got dilation ", dil);
  KILN_CHECK(pad[0] >= 0 && pad[1] >= 0, "[", op.name, "] expected padding to be non-negative, but got padding ", pad);
  KILN_CHECK(pad[0] <= k[0] / 2 && pad[1] <= k[1] / 2, "[", op.name,
             "] pad should be at most half of kernel size, but got padding ", pad, " and kernel_size ", k);
  const int64_t H = x.size(-2), W = x.size(-1);
  cpu::Pool2dParams p{};
  p.kH = k[0], p.kW = k[1], p.sH = s[0], p.sW = s[1], p.pH = pad[0], p.pW = pad[1], p.dH = dil[0], p.dW = dil[1];
  p.oH = pool_out_size(H, p.kH, p.pH, p.sH, p.dH, ceil_mode);
  p.oW = pool_out_size(W, p.kW, p.pW, p.sW, p.dW, ceil_mode);
  KILN_CHECK(p.oH >= 1 && p.oW >= 1, "[", op.name, "] output size is too small: input of shape ", x.sizes(),
             " gives output size [", p.oH, ", ", p.oW, "] (kernel_size ", k, ", stride ", s, ", padding ", pad,
             ", dilation ", dil, ")");
  p.count_include_pad = !has_dilation && a.b(4);
  return p;
}

Shape pool_out_shape(const Tensor& x, const cpu::Pool2dParams& p) {
  Shape out = x.sizes().vec();
  out[out.size() - 2] = p.oH;
  out[out.size() - 1] = p.oW;
  return out;
}

std::vector<TensorMeta> max_pool2d_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  const Tensor& x = in.at(0);
  KILN_CHECK(x.dtype() != DType::Bool, "[max_pool2d] is not supported for bool tensors");
  return {TensorMeta{pool_out_shape(x, pool_params(op, x, a, true)), x.dtype(), x.device()}};
}

std::vector<TensorMeta> avg_pool2d_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  const Tensor& x = in.at(0);
  KILN_CHECK(is_floating_point(x.dtype()), "[avg_pool2d] expected a floating point input, but got ", x.dtype());
  return {TensorMeta{pool_out_shape(x, pool_params(op, x, a, false)), x.dtype(), x.device()}};
}

// Views input and output as [planes, H, W].
template <void (*Kernel)(const Tensor&, const Tensor&, const cpu::Pool2dParams&), bool kDilation>
void pool_cpu(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  const Tensor& x = in[0];
  cpu::Pool2dParams p = pool_params(op, x, a, kDilation);
  const int64_t planes = x.numel() / (x.size(-2) * x.size(-1));
  Tensor x3 = x.reshape({planes, x.size(-2), x.size(-1)});
  Tensor o = out[0];
  if (o.is_contiguous()) {
    Kernel(x3, o.view({planes, p.oH, p.oW}), p);
  } else {
    Tensor tmp = empty({planes, p.oH, p.oW}, o.dtype());
    Kernel(x3, tmp, p);
    o.copy_(tmp.view(o.sizes()));
  }
}

OpDef row(const char* name, InferFn infer, KernelFn kernel, std::vector<std::string> attrs) {
  OpDef d;
  d.name = name;
  d.kind = OpKind::Opaque;
  d.infer = infer;
  d.kernels[kCPUIdx] = kernel;
  d.attr_names = std::move(attrs);
  return d;
}

}  // namespace

namespace ops_registration {
void register_conv_ops(OpRegistry& r) {
  r.add(row("conv2d", &conv2d_infer, &conv2d_cpu, {"stride", "padding", "dilation", "groups"}));
  r.add(row("max_pool2d", &max_pool2d_infer, &pool_cpu<&cpu::max_pool2d, true>,
            {"kernel_size", "stride", "padding", "dilation", "ceil_mode"}));
  r.add(row("avg_pool2d", &avg_pool2d_infer, &pool_cpu<&cpu::avg_pool2d, false>,
            {"kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"}));
}
}  // namespace ops_registration

}  // namespace kiln
