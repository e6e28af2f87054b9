// vjps of layer_norm, dropout and the losses. All are compositions of public ops (so double
// backward and tracing come for free); float16/bfloat16 inputs are differentiated in float32.
#include "autograd/vjp_families.h"
#include "core/ops.h"

namespace kiln::autograd {

namespace {

using G = const TensorList&;
using C = const VjpContext&;

// The optional inputs of these rows (layer_norm's weight and bias, a loss's class weight) are
// never 0-dim, so the empty geometry an absent (undefined) input leaves marks it.
bool present(C c, size_t i) { return i < c.num_inputs() && !c.input_sizes(i).empty(); }

DType compute_dtype(DType dt) { return dt == DType::Float16 || dt == DType::BFloat16 ? DType::Float32 : dt; }

// --- layer_norm: inputs {input, weight?, bias?}; attrs normalized_shape, eps ------------------

TensorList vjp_layer_norm(C c, G g) {
  const int64_t k = static_cast<int64_t>(c.attrs().ints(0).size());
  const double eps = c.attrs().d(1);
  Tensor x = c.input(0);
  const DType dt = compute_dtype(x.dtype());
  Shape dims;
  for (int64_t d = x.dim() - k; d < x.dim(); ++d) dims.push_back(d);
  Tensor xf = x.to(dt), gy = g[0].to(dt);
  Tensor centred = xf - mean(xf, dims, true);
  Tensor rstd = rsqrt(mean(centred * centred, dims, true) + eps);
  Tensor xhat = centred * rstd;
  TensorList r(3);
  if (c.needs_grad(0)) {
    Tensor gxhat = present(c, 1) ? gy * c.input(1).to(dt) : gy;
    r[0] = rstd * (gxhat - mean(gxhat, dims, true) - xhat * mean(gxhat * xhat, dims, true));
  }
  if (c.needs_grad(1)) r[1] = gy * xhat;  // the node sums the leading dims
  if (c.needs_grad(2)) r[2] = gy;
  return r;
}

// --- dropout: the mask is a function of (seed, offset, element), so the same row masks and
// scales the gradient.
TensorList vjp_dropout(C c, G g) { return {call_op1(c.op(), {g[0]}, c.attrs())}; }

// --- losses: inputs {input [C] | [N, C, d...], target, weight?}; attrs reduction, ... ---------

enum Red : int64_t { kNone = 0, kMean = 1, kSum = 2 };

struct ClassGeom {
  int64_t cdim, classes;
  Shape weight_view;  // the class weight shaped to broadcast along the class dim
};
ClassGeom class_geom(const Tensor& x) {
  ClassGeom cg;
  cg.cdim = x.dim() == 1 ? 0 : 1;
  cg.classes = x.size(cg.cdim);
  cg.weight_view = Shape(static_cast<size_t>(x.dim() - cg.cdim), 1);
  cg.weight_view[0] = cg.classes;
  return cg;
}

// Class-index targets: which positions count, their (clamped) targets and weights.
struct Targets {
  Tensor valid;   // positions, compute dtype: 1 where target != ignore_index
  Tensor target;  // positions, integer, ignored positions pointing at class 0
  Tensor weight;  // positions: the target's class weight (0 where ignored)
};
Targets class_targets(C c, const Tensor& target, int64_t ignore, DType dt) {
  Targets t;
  Tensor keep = target != ignore;
  t.valid = keep.to(dt);
  t.target = where(keep, target, 0);
  if (!present(c, 2)) {
    t.weight = t.valid;
    return t;
  }
  Tensor picked = index_select(c.input(2).to(dt), 0, t.target.reshape({-1}));
  t.weight = picked.reshape(target.sizes()) * t.valid;
  return t;
}

// The upstream gradient per position, shaped to broadcast against the input (mean divides by
// `denom`, as the forward does).
Tensor position_scale(const Tensor& g, int64_t reduction, const Tensor& denom, int64_t cdim, DType dt) {
  Tensor s = g.to(dt);
  if (reduction == kNone) return s.unsqueeze(cdim);
  return reduction == kMean ? s / denom : s;
}

Tensor one_hot_like(const Tensor& x, const Tensor& target, int64_t cdim) {
  return scatter(zeros_like(x), cdim, target.unsqueeze(cdim), Scalar(1));
}

// loss = -(1 - ls) w_t log p_t - ls / C * sum_c w_c log p_c per position (p = softmax(x)).
TensorList cross_entropy_class(C c, G g, const Tensor& input, const Tensor& target) {
  const int64_t reduction = c.attrs().i(0), ignore = c.attrs().i(1);
  const double ls = c.attrs().d(2);
  const DType dt = compute_dtype(input.dtype());
  const ClassGeom cg = class_geom(input);
  Tensor x = input.to(dt);
  Targets t = class_targets(c, target, ignore, dt);
  Tensor p = softmax(x, cg.cdim);
  Tensor grad = (p - one_hot_like(x, t.target, cg.cdim)) * t.weight.unsqueeze(cg.cdim);
  if (ls > 0) {
    Tensor smooth;
    if (present(c, 2)) {
      Tensor w = c.input(2).to(dt);
      smooth = p * sum(w) - w.view(cg.weight_view);
    } else {
      smooth = p * static_cast<double>(cg.classes) - 1;
    }
    grad = grad * (1 - ls) + smooth * t.valid.unsqueeze(cg.cdim) * (ls / static_cast<double>(cg.classes));
  }
  return {grad * position_scale(g[0], reduction, sum(t.weight), cg.cdim, dt)};
}

// Probability targets: loss = -sum_c w_c t'_c log p_c with t' = (1 - ls) t + ls / C; the target
// gets a gradient too.
TensorList cross_entropy_probs(C c, G g, const Tensor& input, const Tensor& target) {
  const int64_t reduction = c.attrs().i(0);
  const double ls = c.attrs().d(2);
  const DType dt = compute_dtype(promote_types(input.dtype(), target.dtype()));
  const ClassGeom cg = class_geom(input);
  Tensor logp = log_softmax(input.to(dt), cg.cdim);
  Tensor w = present(c, 2) ? c.input(2).to(dt).view(cg.weight_view) : Tensor();
  Tensor tw = target.to(dt);
  if (ls > 0) tw = tw * (1 - ls) + ls / static_cast<double>(cg.classes);
  if (w.defined()) tw = tw * w;
  const double positions = static_cast<double>(input.numel() / std::max<int64_t>(cg.classes, 1));
  Tensor s = position_scale(g[0], reduction, scalar_tensor(positions, TensorOptions().dtype(dt)), cg.cdim, dt);
  TensorList r(3);
  if (c.needs_grad(0)) r[0] = (exp(logp) * sum(tw, {cg.cdim}, true) - tw) * s;
  if (c.needs_grad(1)) r[1] = (w.defined() ? logp * w : logp) * s * -(1 - ls);
  return r;
}

// As in PyTorch, the class weight gets no gradient; asking for one is an error, not a silent zero.
void check_no_weight_grad(C c) {
  KILN_CHECK(!c.needs_grad(2), "[", c.op().name,
             "] the class weights ('weight') are not differentiable (as in PyTorch); pass weight.detach()");
}

TensorList vjp_cross_entropy(C c, G g) {
  check_no_weight_grad(c);
  Tensor input = c.input(0), target = c.input(1);
  if (is_floating_point(target.dtype())) return cross_entropy_probs(c, g, input, target);
  return cross_entropy_class(c, g, input, target);
}

// input holds log-probabilities: loss = -w_t input_t per position.
TensorList vjp_nll_loss(C c, G g) {
  check_no_weight_grad(c);
  Tensor input = c.input(0);
  const DType dt = compute_dtype(input.dtype());
  const ClassGeom cg = class_geom(input);
  Targets t = class_targets(c, c.input(1), c.attrs().i(1), dt);
  Tensor s = position_scale(g[0], c.attrs().i(0), sum(t.weight), cg.cdim, dt);
  return {one_hot_like(input.to(dt), t.target, cg.cdim) * t.weight.unsqueeze(cg.cdim) * s * -1};
}

// inputs {input, target} (broadcast); attrs reduction.
TensorList vjp_mse_loss(C c, G g) {
  Tensor diff = c.input(0) - c.input(1);
  const int64_t reduction = c.attrs().i(0);
  Tensor s = reduction == kMean ? g[0] * (2.0 / static_cast<double>(diff.numel())) : g[0] * 2;
  Tensor gx = diff * s;
  return {gx, c.needs_grad(1) ? -gx : Tensor()};
}

}  // namespace

void register_nn_vjps(OpRegistry& r) {
  set_vjp(r, "layer_norm", vjp_layer_norm, kSaveInputs);
  set_vjp(r, "dropout", vjp_dropout, kSaveNothing);
  set_vjp(r, "cross_entropy", vjp_cross_entropy, kSaveInputs);
  set_vjp(r, "nll_loss", vjp_nll_loss, kSaveInputs);
  set_vjp(r, "mse_loss", vjp_mse_loss, kSaveInputs);
}

}  // namespace kiln::autograd
