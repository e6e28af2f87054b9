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
// The backward rows take the same four attrs plus the size of the tensor they produce.

// Shape-level checks and geometry of a convolution of an input of sizes `x` with a weight of
// sizes `w`, shared by conv2d and its backward rows.
cpu::Conv2dParams conv_geometry(const OpDef& op, IntArrayRef x, IntArrayRef w, const Attrs& a) {
  const char* n = op.name.c_str();
  KILN_CHECK(x.size() == 3 || x.size() == 4, "[", n,
             "] expected 3-D (unbatched) or 4-D (batched) input, but got input of shape ", x);
  KILN_CHECK(w.size() == 4, "[", n,
             "] expected weight to be 4-D [out_channels, in_channels / groups, kH, kW], but got weight of shape ", w);
  const Shape &stride = a.ints(0), &padding = a.ints(1), &dilation = a.ints(2);
  const int64_t groups = a.i(3);
  check_pair(op, "stride", stride);
  check_pair(op, "padding", padding);
  check_pair(op, "dilation", dilation);
  KILN_CHECK(stride[0] > 0 && stride[1] > 0, "[", n, "] expected stride to be positive, but got stride ", stride);
  KILN_CHECK(dilation[0] > 0 && dilation[1] > 0, "[", n, "] expected dilation to be positive, but got dilation ",
             dilation);
  KILN_CHECK(padding[0] >= 0 && padding[1] >= 0, "[", n, "] expected padding to be non-negative, but got padding ",
             padding);
  KILN_CHECK(groups > 0, "[", n, "] expected groups to be positive, but got groups ", groups);
  const bool batched = x.size() == 4;
  cpu::Conv2dParams p{};
  p.N = batched ? x[0] : 1;
  p.C = x[batched ? 1 : 0], p.H = x[batched ? 2 : 1], p.W = x[batched ? 3 : 2];
  p.O = w[0], p.kH = w[2], p.kW = w[3];
  p.sH = stride[0], p.sW = stride[1], p.pH = padding[0], p.pW = padding[1], p.dH = dilation[0], p.dW = dilation[1];
  p.groups = groups;
  KILN_CHECK(p.kH > 0 && p.kW > 0, "[", n, "] expected a non-empty kernel, but got weight of shape ", w);
  KILN_CHECK(p.O % groups == 0, "[", n, "] expected out_channels ", p.O, " (weight ", w,
             ") to be divisible by groups ", groups);
  KILN_CHECK(p.C == w[1] * groups, "[", n, "] expected input with ", w[1] * groups, " channels (weight ", w,
             ", groups ", groups, "), but got input of shape ", x);
  const int64_t ekH = p.dH * (p.kH - 1) + 1, ekW = p.dW * (p.kW - 1) + 1;
  const int64_t ph = p.H + 2 * p.pH, pw = p.W + 2 * p.pW;
  KILN_CHECK(ekH <= ph && ekW <= pw, "[", n, "] kernel size (with dilation) [", ekH, ", ", ekW,
             "] can't be greater than the padded input size [", ph, ", ", pw, "] (input of shape ", x, ")");
  p.oH = (ph - ekH) / p.sH + 1;
  p.oW = (pw - ekW) / p.sW + 1;
  return p;
}

Shape conv_out_shape(const cpu::Conv2dParams& p, bool batched) {
  return batched ? Shape{p.N, p.O, p.oH, p.oW} : Shape{p.O, p.oH, p.oW};
}

void check_float_pair(const OpDef& op, const Tensor& a, const char* a_name, const Tensor& b, const char* b_name) {
  KILN_CHECK(a.defined() && b.defined(), "[", op.name, "] ", a_name, " and ", b_name, " must be defined tensors");
  KILN_CHECK(is_floating_point(a.dtype()), "[", op.name, "] expected a floating point ", a_name, ", but got ",
             a.dtype());
  KILN_CHECK(a.dtype() == b.dtype(), "[", op.name, "] expected ", a_name, " and ", b_name,
             " to have the same dtype, but got: ", a.dtype(), " != ", b.dtype());
}

cpu::Conv2dParams conv_params(const OpDef& op, const TensorList& in, const Attrs& a) {
  KILN_INTERNAL_ASSERT(in.size() == 2 || in.size() == 3, "[conv2d] takes 2 or 3 tensors");
  const Tensor &x = in[0], &w = in[1];
  check_float_pair(op, x, "input", w, "weight");
  cpu::Conv2dParams p = conv_geometry(op, x.sizes(), w.sizes(), a);
  if (in.size() == 3) {
    const Tensor& b = in[2];
    KILN_CHECK(b.dtype() == x.dtype(), "[conv2d] expected input and bias to have the same dtype, but got: ", x.dtype(),
               " != ", b.dtype());
    KILN_CHECK(b.dim() == 1 && b.size(0) == p.O, "[conv2d] expected bias of shape [", p.O, "], but got bias of shape ",
               b.sizes());
  }
  return p;
}

std::vector<TensorMeta> conv2d_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  cpu::Conv2dParams p = conv_params(op, in, a);
  return {TensorMeta{conv_out_shape(p, in[0].dim() == 4), in[0].dtype(), common_device(op, in)}};
}

void conv2d_cpu(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  cpu::Conv2dParams p = conv_params(op, in, a);
  const bool batched = in[0].dim() == 4;
  Tensor x = batched ? in[0] : in[0].unsqueeze(0);
  Tensor o = batched ? out[0] : out[0].unsqueeze(0);
  cpu::conv2d(x, in[1], in.size() == 3 ? in[2] : Tensor(), o, p);
}

// conv2d_backward_input: inputs {grad_output, weight}; attrs conv2d's + input_size.
// conv2d_backward_weight: inputs {grad_output, input}; attrs conv2d's + weight_size.
cpu::Conv2dParams conv_backward_params(const OpDef& op, const TensorList& in, const Attrs& a, bool for_input) {
  KILN_INTERNAL_ASSERT(in.size() == 2 && a.size() == 5, op.name, " takes 2 tensors and 5 attrs");
  const Tensor &gy = in[0], &other = in[1];
  check_float_pair(op, gy, "grad_output", other, for_input ? "weight" : "input");
  const Shape& size = a.ints(4);
  for (int64_t v : size)
    KILN_CHECK(v >= 0, "[", op.name, "] expected ", for_input ? "input_size" : "weight_size",
               " to be non-negative, but got ", size);
  cpu::Conv2dParams p =
      for_input ? conv_geometry(op, size, other.sizes(), a) : conv_geometry(op, other.sizes(), size, a);
  const bool batched = (for_input ? IntArrayRef(size) : other.sizes()).size() == 4;
  const Shape expected = conv_out_shape(p, batched);
  KILN_CHECK(gy.sizes() == IntArrayRef(expected), "[", op.name, "] expected grad_output of shape ", expected,
             " (the conv2d output for input ", for_input ? IntArrayRef(size) : other.sizes(), " and weight ",
             for_input ? other.sizes() : IntArrayRef(size), "), but got grad_output of shape ", gy.sizes());
  return p;
}

std::vector<TensorMeta> conv2d_backward_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  conv_backward_params(op, in, a, op.name == "conv2d_backward_input");
  return {TensorMeta{a.ints(4), in[0].dtype(), common_device(op, in)}};
}

Tensor batched4(const Tensor& t) { return t.dim() == 4 ? t : t.unsqueeze(0); }

void conv2d_backward_input_cpu(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  cpu::Conv2dParams p = conv_backward_params(op, in, a, true);
  cpu::conv2d_backward_input(batched4(in[0]), in[1], batched4(out[0]), p);
}

void conv2d_backward_weight_cpu(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  cpu::Conv2dParams p = conv_backward_params(op, in, a, false);
  cpu::conv2d_backward_weight(batched4(in[0]), batched4(in[1]), out[0], p);
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

// `x`: the input's sizes (the pools' backward rows check against the input_size attribute).
cpu::Pool2dParams pool_params(const OpDef& op, IntArrayRef x, const Attrs& a, bool has_dilation) {
  const size_t nd = x.size();
  KILN_CHECK(nd == 3 || nd == 4, "[", op.name,
             "] expected a 3-D (unbatched) or 4-D (batched) input, but got input of shape ", x);
  for (size_t d = nd - 3; d < nd; ++d)
    KILN_CHECK(x[d] > 0, "[", op.name,
               "] expected input with non-zero channels, height and width, but got input of shape ", x);
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
  const int64_t H = x[nd - 2], W = x[nd - 1];
  cpu::Pool2dParams p{};
  p.kH = k[0], p.kW = k[1], p.sH = s[0], p.sW = s[1], p.pH = pad[0], p.pW = pad[1], p.dH = dil[0], p.dW = dil[1];
  p.oH = pool_out_size(H, p.kH, p.pH, p.sH, p.dH, ceil_mode);
  p.oW = pool_out_size(W, p.kW, p.pW, p.sW, p.dW, ceil_mode);
  KILN_CHECK(p.oH >= 1 && p.oW >= 1, "[", op.name, "] output size is too small: input of shape ", x,
             " gives output size [", p.oH, ", ", p.oW, "] (kernel_size ", k, ", stride ", s, ", padding ", pad,
             ", dilation ", dil, ")");
  p.count_include_pad = !has_dilation && a.b(4);
  return p;
}

Shape pool_out_shape(IntArrayRef x, const cpu::Pool2dParams& p) {
  Shape out = x.vec();
  out[out.size() - 2] = p.oH;
  out[out.size() - 1] = p.oW;
  return out;
}

std::vector<TensorMeta> max_pool2d_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  const Tensor& x = in.at(0);
  KILN_CHECK(x.dtype() != DType::Bool, "[max_pool2d] is not supported for bool tensors");
  return {TensorMeta{pool_out_shape(x.sizes(), pool_params(op, x.sizes(), a, true)), x.dtype(), x.device()}};
}

std::vector<TensorMeta> avg_pool2d_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  const Tensor& x = in.at(0);
  KILN_CHECK(is_floating_point(x.dtype()), "[avg_pool2d] expected a floating point input, but got ", x.dtype());
  return {TensorMeta{pool_out_shape(x.sizes(), pool_params(op, x.sizes(), a, false)), x.dtype(), x.device()}};
}

std::vector<TensorMeta> max_pool2d_indices_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  const Tensor& x = in.at(0);
  KILN_CHECK(x.dtype() != DType::Bool, "[", op.name, "] is not supported for bool tensors");
  return {TensorMeta{pool_out_shape(x.sizes(), pool_params(op, x.sizes(), a, true)), DType::Int64, x.device()}};
}

// --- pooling backward: the gradient (grad_output) and the forward input's size --------------------

// The sizes of `grad` and `input_size` as [planes, ...] must agree on every dim before H, W.
void check_pool_grad(const OpDef& op, const Tensor& grad, IntArrayRef input_size) {
  KILN_CHECK(grad.defined(), "[", op.name, "] grad_output is an undefined tensor");
  KILN_CHECK(is_floating_point(grad.dtype()), "[", op.name, "] expected a floating point grad_output, but got ",
             grad.dtype());
  KILN_CHECK(input_size.size() == 3 || input_size.size() == 4, "[", op.name,
             "] expected input_size to be 3-D (unbatched) or 4-D (batched), but got input_size ", input_size);
  KILN_CHECK(grad.dim() == static_cast<int64_t>(input_size.size()), "[", op.name, "] expected grad_output with ",
             input_size.size(), " dims for input_size ", input_size, ", but got grad_output of shape ", grad.sizes());
  for (size_t d = 0; d + 2 < input_size.size(); ++d)
    KILN_CHECK(grad.size(static_cast<int64_t>(d)) == input_size[d], "[", op.name, "] grad_output of shape ",
               grad.sizes(), " does not match input_size ", input_size, " in dimension ", d);
}

// inputs {grad_output, indices (max_pool2d_indices)}; attrs input_size.
std::vector<TensorMeta> max_pool2d_backward_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  const Tensor &g = in.at(0), &idx = in.at(1);
  const Shape& size = a.ints(0);
  check_pool_grad(op, g, size);
  KILN_CHECK(idx.defined(), "[", op.name, "] indices is an undefined tensor");
  KILN_CHECK(idx.dtype() == DType::Int64, "[", op.name, "] expected int64 indices, but got ", idx.dtype());
  KILN_CHECK(idx.sizes() == g.sizes(), "[", op.name, "] expected indices of the shape of grad_output ", g.sizes(),
             ", but got indices of shape ", idx.sizes());
  for (int64_t v : size)
    KILN_CHECK(v > 0, "[", op.name, "] expected input_size with positive entries, but got ", size);
  return {TensorMeta{size, g.dtype(), common_device(op, in)}};
}

void max_pool2d_backward_cpu(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  const Shape& size = a.ints(0);
  const int64_t HW = size[size.size() - 2] * size[size.size() - 1], P = shape_numel(size) / HW;
  const int64_t oHW = in[0].numel() / std::max<int64_t>(P, 1);
  cpu::max_pool2d_backward(op, in[0].reshape({P, oHW}), in[1].reshape({P, oHW}), out[0], HW);
}

// inputs {grad_output}; attrs avg_pool2d's + input_size.
std::vector<TensorMeta> avg_pool2d_backward_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  const Tensor& g = in.at(0);
  const Shape& size = a.ints(5);
  check_pool_grad(op, g, size);
  const Shape expected = pool_out_shape(size, pool_params(op, size, a, false));
  KILN_CHECK(g.sizes() == IntArrayRef(expected), "[", op.name, "] expected grad_output of shape ", expected,
             " (the avg_pool2d output for input_size ", size, "), but got grad_output of shape ", g.sizes());
  return {TensorMeta{size, g.dtype(), g.device()}};
}

void avg_pool2d_backward_cpu(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  const Shape& size = a.ints(5);
  cpu::Pool2dParams p = pool_params(op, size, a, false);
  const int64_t H = size[size.size() - 2], W = size[size.size() - 1], P = shape_numel(size) / (H * W);
  cpu::avg_pool2d_backward(in[0].reshape({P, p.oH, p.oW}), out[0], H, W, p);
}

// Views input and output as [planes, H, W].
template <void (*Kernel)(const Tensor&, const Tensor&, const cpu::Pool2dParams&), bool kDilation>
void pool_cpu(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  const Tensor& x = in[0];
  cpu::Pool2dParams p = pool_params(op, x.sizes(), a, kDilation);
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
  // Backward rows (the kernels behind the vjps in autograd/vjp_conv.cpp).
  r.add(row("conv2d_backward_input", &conv2d_backward_infer, &conv2d_backward_input_cpu,
            {"stride", "padding", "dilation", "groups", "input_size"}));
  r.add(row("conv2d_backward_weight", &conv2d_backward_infer, &conv2d_backward_weight_cpu,
            {"stride", "padding", "dilation", "groups", "weight_size"}));
  OpDef indices = row("max_pool2d_indices", &max_pool2d_indices_infer, &pool_cpu<&cpu::max_pool2d_indices, true>,
                      {"kernel_size", "stride", "padding", "dilation", "ceil_mode"});
  indices.differentiable = false;
  r.add(std::move(indices));
  r.add(row("max_pool2d_backward", &max_pool2d_backward_infer, &max_pool2d_backward_cpu, {"input_size"}));
  r.add(row("avg_pool2d_backward", &avg_pool2d_backward_infer, &avg_pool2d_backward_cpu,
            {"kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "input_size"}));
}
}  // namespace ops_registration

}  // namespace kiln
