// Rows of the nn ops: layer_norm, dropout and the losses (cross_entropy, nll_loss, mse_loss).
// `infer` checks every argument (shapes, dtypes, attribute ranges); the kernels live in
// kernels/cpu/nn_*.cpp.
#include "core/op.h"
#include "core/shape.h"
#include "kernels/cpu/nn_kernels.h"

namespace kiln {
namespace {

constexpr int kCPU_ = static_cast<int>(DeviceType::CPU);

const Tensor& opt_input(const TensorList& in, size_t i) {
  static const Tensor none;
  return in.size() > i ? in[i] : none;
}

// --- layer_norm: inputs {input, weight?, bias?}; attrs (normalized_shape, eps) -------------

std::vector<TensorMeta> layer_norm_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  const Tensor& x = in.at(0);
  const Shape& ns = a.ints(0);
  KILN_CHECK(is_floating_point(x.dtype()), "[", op.name, "] expected a floating point input, but got dtype ", x.dtype());
  KILN_CHECK(!ns.empty(), "[", op.name,
             "] expected normalized_shape to be at least 1-dimensional, but got normalized_shape=[]");
  const int64_t k = static_cast<int64_t>(ns.size());
  bool match = x.dim() >= k;
  for (int64_t i = 0; match && i < k; ++i) match = x.size(x.dim() - k + i) == ns[i];
  if (!match) {
    std::string tail;
    for (int64_t v : ns) tail += ", " + std::to_string(v);
    KILN_FAIL("[", op.name, "] given normalized_shape=", ns, ", expected input with shape [*", tail,
              "], but got input of size ", x.sizes());
  }
  for (size_t i = 1; i <= 2; ++i) {
    const Tensor& t = opt_input(in, i);
    if (!t.defined()) continue;
    const char* what = i == 1 ? "weight" : "bias";
    KILN_CHECK(t.sizes() == IntArrayRef(ns), "[", op.name, "] expected ", what,
               " to be of same shape as normalized_shape, but got ", what, " of shape ", t.sizes(),
               " and normalized_shape=", ns);
    KILN_CHECK(is_floating_point(t.dtype()), "[", op.name, "] expected ", what,
               " to be a floating point tensor, but got dtype ", t.dtype());
  }
  return {TensorMeta{x.sizes().vec(), x.dtype(), common_device(op, in)}};
}

// --- dropout: inputs {input}; attrs (p, seed, offset) ---------------------------------------

std::vector<TensorMeta> dropout_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  const Tensor& x = in.at(0);
  const double p = a.d(0);
  KILN_CHECK(p >= 0.0 && p <= 1.0, "[", op.name, "] dropout probability has to be between 0 and 1, but got p=", p);
  KILN_CHECK(p < 1.0, "[", op.name, "] row requires p < 1 (the front end returns zeros for p=1)");
  KILN_CHECK(is_floating_point(x.dtype()), "[", op.name, "] expected a floating point input, but got dtype ",
             x.dtype());
  return {TensorMeta{x.sizes().vec(), x.dtype(), x.device()}};
}

// --- losses -----------------------------------------------------------------------------------

void check_reduction(const OpDef& op, int64_t r) {
  KILN_CHECK(r >= 0 && r <= 2, "[", op.name, "] invalid reduction ", r, " (expected 0=none, 1=mean, 2=sum)");
}

// Shape and dtype checks shared by cross_entropy and nll_loss; returns the output metadata.
TensorMeta class_loss_meta(const OpDef& op, const TensorList& in, int64_t reduction, int64_t ignore_index,
                           bool allow_probs) {
  const Tensor& x = in.at(0);
  const Tensor& target = in.at(1);
  const Tensor& weight = opt_input(in, 2);
  KILN_CHECK(x.defined() && target.defined(), "[", op.name, "] input and target must be defined tensors");
  check_reduction(op, reduction);
  KILN_CHECK(is_floating_point(x.dtype()), "[", op.name, "] expected input to be a floating point tensor, but got dtype ",
             x.dtype());
  KILN_CHECK(x.dim() >= 1, "[", op.name, "] expected input with at least 1 dimension ([C], [N, C] or [N, C, d1, ...]), "
             "but got a 0-dim tensor");
  const int64_t C = x.dim() == 1 ? x.size(0) : x.size(1);
  if (weight.defined()) {
    KILN_CHECK(weight.dim() == 1 && weight.numel() == C, "[", op.name,
               "] weight tensor should be defined either for all ", C,
               " classes or no classes but got weight tensor of shape: ", weight.sizes());
    KILN_CHECK(is_floating_point(weight.dtype()), "[", op.name,
               "] expected weight to be a floating point tensor, but got dtype ", weight.dtype());
  }
  // Positions: the input's shape without the class dim.
  Shape positions;
  for (int64_t d = 0; d < x.dim(); ++d)
    if (d != (x.dim() == 1 ? 0 : 1)) positions.push_back(x.size(d));
  const Device dev = common_device(op, in);
  const Shape out_shape = reduction == 0 ? positions : Shape{};
  if (allow_probs && target.sizes() == x.sizes()) {
    // As in PyTorch: a target of the input's shape holds class probabilities.
    KILN_CHECK(is_floating_point(target.dtype()), "[", op.name,
               "] expected a floating point target for class probabilities (target has the input's shape ",
               x.sizes(), "), but got dtype ", target.dtype());
    KILN_CHECK(ignore_index < 0, "[", op.name,
               "] ignore_index is not supported for floating point (class probability) targets, but got ignore_index=",
               ignore_index);
    return TensorMeta{out_shape, promote_types(x.dtype(), target.dtype()), dev};
  }
  if (allow_probs && is_floating_point(target.dtype()))
    KILN_FAIL("[", op.name, "] expected a floating point target (class probabilities) to have the input's shape ",
              x.sizes(), ", but got target of shape ", target.sizes(),
              " (class-index targets must be integer tensors of shape ", positions, ")");
  KILN_CHECK(is_integral(target.dtype()), "[", op.name, "] expected target to be an integer tensor of class indices",
             allow_probs ? " (or a floating point tensor of class probabilities)" : "", ", but got dtype ",
             target.dtype());
  KILN_CHECK(target.sizes() == IntArrayRef(positions), "[", op.name, "] expected target of shape ", positions,
             " for input of shape ", x.sizes(), ", but got target of shape ", target.sizes());
  return TensorMeta{out_shape, x.dtype(), dev};
}

// inputs {input, target, weight?}; attrs (reduction, ignore_index, label_smoothing).
std::vector<TensorMeta> cross_entropy_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  const double ls = a.d(2);
  KILN_CHECK(ls >= 0.0 && ls <= 1.0, "[", op.name, "] label_smoothing must be between 0.0 and 1.0, but got ", ls);
  return {class_loss_meta(op, in, a.i(0), a.i(1), true)};
}

// inputs {input (log-probabilities), target, weight?}; attrs (reduction, ignore_index).
std::vector<TensorMeta> nll_loss_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  return {class_loss_meta(op, in, a.i(0), a.i(1), false)};
}

// inputs {input, target}; attrs (reduction).
std::vector<TensorMeta> mse_loss_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  const Tensor& x = in.at(0);
  const Tensor& y = in.at(1);
  check_reduction(op, a.i(0));
  Shape shape = broadcast_shapes(op.name, x.sizes(), y.sizes());
  const DType dt = promote_types(x.dtype(), y.dtype());
  KILN_CHECK(is_floating_point(dt), "[", op.name, "] expected floating point input and target, but got dtypes ",
             x.dtype(), " and ", y.dtype());
  return {TensorMeta{a.i(0) == 0 ? shape : Shape{}, dt, common_device(op, in)}};
}

void add_row(OpRegistry& r, const char* name, InferFn infer, KernelFn kernel, std::vector<std::string> attrs,
             OpKind kind = OpKind::Opaque, bool differentiable = true) {
  OpDef d;
  d.name = name;
  d.kind = kind;
  d.infer = infer;
  d.kernels[kCPU_] = kernel;
  d.differentiable = differentiable;
  d.attr_names = std::move(attrs);
  r.add(std::move(d));
}

}  // namespace

namespace ops_registration {
void register_nn_ops(OpRegistry& r) {
  add_row(r, "layer_norm", &layer_norm_infer, &cpu::layer_norm_kernel, {"normalized_shape", "eps"});
  add_row(r, "dropout", &dropout_infer, &cpu::dropout_kernel, {"p", "seed", "offset"});
  add_row(r, "cross_entropy", &cross_entropy_infer, &cpu::cross_entropy_kernel,
          {"reduction", "ignore_index", "label_smoothing"});
  add_row(r, "nll_loss", &nll_loss_infer, &cpu::nll_loss_kernel, {"reduction", "ignore_index"});
  add_row(r, "mse_loss", &mse_loss_infer, &cpu::mse_loss_kernel, {"reduction"});
}
}  // namespace ops_registration

}  // namespace kiln
