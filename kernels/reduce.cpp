// Registry rows of the reductions. One row per op kind (mean, var, logsumexp, softmax ... are
// rows of their own, so fusion sees each as a single op). Attributes:
//   sum, mean, prod:              dims (empty = all), keepdim, dtype (or None)
//   amax, amin, all, any,
//   logsumexp:                    dims, keepdim
//   max_dim, min_dim:             dim, keepdim          -> (values, indices)
//   argmax, argmin:               dim (or None = flattened), keepdim
//   var, std, var_mean:           dims, correction, keepdim  (var_mean -> (var, mean))
//   softmax, log_softmax, cumsum: dim, dtype (or None)
//   allclose:                     rtol, atol, equal_nan  -> 0-dim bool
//   equal:                        (none)                 -> 0-dim bool
#include "core/op.h"
#include "core/shape.h"
#include "kernels/cpu/reduce.h"

namespace kiln {
namespace {

constexpr int kCpu = static_cast<int>(DeviceType::CPU);
constexpr int64_t kMaxDims = 64;

std::optional<DType> opt_dtype(const Attrs& a, size_t i) {
  return a.is_none(i) ? std::nullopt : std::optional<DType>(a.dtype(i));
}

// The name users call: the dim overloads of max/min are rows of their own.
std::string_view user_name(const OpDef& op) {
  if (op.name == "max_dim") return "max";
  if (op.name == "min_dim") return "min";
  return op.name;
}

const Tensor& input(const OpDef& op, const TensorList& in) {
  KILN_INTERNAL_ASSERT(in.size() == 1, op.name, " takes one tensor");
  KILN_CHECK(in[0].dim() <= kMaxDims, "[", user_name(op), "] tensors with more than ", kMaxDims,
             " dims are not supported (got ", in[0].dim(), ")");
  return in[0];
}

// max/min/argmax/...: an empty reduced dim has no answer.
void check_nonempty(const OpDef& op, const Tensor& x, const std::vector<bool>& mask) {
  if (x.numel() != 0) return;
  for (int64_t d = 0; d < x.dim(); ++d)
    KILN_CHECK(!mask[d] || x.size(d) != 0, "[", user_name(op), "] Expected reduction dim ", d,
               " to have non-zero size (input shape ", x.sizes(), ")");
}

void check_floating(const OpDef& op, const Tensor& x) {
  KILN_CHECK(is_floating_point(x.dtype()), "[", op.name, "] expected a floating point tensor (", op.name,
             " only supports floating point dtypes), but got ", x.dtype());
}

TensorMeta meta(Shape s, DType dt, const Tensor& x) { return {std::move(s), dt, x.device()}; }

// sum, prod: integers and bool accumulate into int64 unless a dtype is given.
std::vector<TensorMeta> sum_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  const Tensor& x = input(op, in);
  auto mask = reduction_mask(op.name, x, a.ints(0));
  auto dt = opt_dtype(a, 2);
  DType out = dt ? *dt : is_integral(x.dtype(), true) ? kInt64 : x.dtype();
  return {meta(reduced_shape(x, mask, a.b(1)), out, x)};
}

std::vector<TensorMeta> mean_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  const Tensor& x = input(op, in);
  auto mask = reduction_mask(op.name, x, a.ints(0));
  auto dt = opt_dtype(a, 2);
  if (dt)
    KILN_CHECK(is_floating_point(*dt), "[mean] could not infer output dtype. Optional dtype must be either a "
               "floating point or complex dtype. Got: ", *dt);
  else
    KILN_CHECK(is_floating_point(x.dtype()), "[mean] could not infer output dtype. Input dtype must be either a "
               "floating point or complex dtype. Got: ", x.dtype());
  return {meta(reduced_shape(x, mask, a.b(1)), dt.value_or(x.dtype()), x)};
}

std::vector<TensorMeta> extreme_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  const Tensor& x = input(op, in);
  auto mask = reduction_mask(op.name, x, a.ints(0));
  check_nonempty(op, x, mask);
  return {meta(reduced_shape(x, mask, a.b(1)), x.dtype(), x)};
}

std::vector<TensorMeta> max_dim_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  const Tensor& x = input(op, in);
  auto mask = reduction_mask(user_name(op), x, a.i(0));
  check_nonempty(op, x, mask);
  Shape s = reduced_shape(x, mask, a.b(1));
  return {meta(s, x.dtype(), x), meta(s, kInt64, x)};
}

std::vector<TensorMeta> arg_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  const Tensor& x = input(op, in);
  KILN_CHECK(x.dtype() != kBool, "[", op.name, "] is not supported for dtype bool");
  if (a.is_none(0)) {
    KILN_CHECK(x.numel() > 0, "[", op.name, "] Expected reduction dim to be specified for input.numel() == 0 "
               "(input shape ", x.sizes(), ")");
    return {meta(a.b(1) ? Shape(static_cast<size_t>(x.dim()), 1) : Shape{}, kInt64, x)};
  }
  auto mask = reduction_mask(op.name, x, a.i(0));
  check_nonempty(op, x, mask);
  return {meta(reduced_shape(x, mask, a.b(1)), kInt64, x)};
}

std::vector<TensorMeta> var_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  const Tensor& x = input(op, in);
  auto mask = reduction_mask(op.name, x, a.ints(0));
  check_floating(op, x);
  Shape s = reduced_shape(x, mask, a.b(2));
  if (op.name == "var_mean") return {meta(s, x.dtype(), x), meta(s, x.dtype(), x)};
  return {meta(s, x.dtype(), x)};
}

// Integers and bool promote to the default float dtype.
std::vector<TensorMeta> logsumexp_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  const Tensor& x = input(op, in);
  auto mask = reduction_mask(op.name, x, a.ints(0));
  return {meta(reduced_shape(x, mask, a.b(1)), is_floating_point(x.dtype()) ? x.dtype() : default_dtype(), x)};
}

std::vector<TensorMeta> all_any_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  const Tensor& x = input(op, in);
  auto mask = reduction_mask(op.name, x, a.ints(0));
  return {meta(reduced_shape(x, mask, a.b(1)), kBool, x)};
}

std::vector<TensorMeta> softmax_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  const Tensor& x = input(op, in);
  wrap_dim(op.name, a.i(0), x.dim());
  auto dt = opt_dtype(a, 1);
  if (dt)
    KILN_CHECK(is_floating_point(*dt), "[", op.name, "] expected a floating point dtype argument, but got ", *dt);
  else
    KILN_CHECK(is_floating_point(x.dtype()), "[", op.name,
               "] expected a floating point tensor (or a floating point dtype argument), but got ", x.dtype());
  return {meta(x.sizes().vec(), dt.value_or(x.dtype()), x)};
}

std::vector<TensorMeta> cumsum_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  const Tensor& x = input(op, in);
  wrap_dim(op.name, a.i(0), x.dim());
  auto dt = opt_dtype(a, 1);
  DType out = dt ? *dt : is_integral(x.dtype(), true) ? kInt64 : x.dtype();
  return {meta(x.sizes().vec(), out, x)};
}

void check_pair(const OpDef& op, const TensorList& in) {
  KILN_INTERNAL_ASSERT(in.size() == 2, op.name, " takes two tensors");
  KILN_CHECK(in[0].dtype() == in[1].dtype(), "[", op.name, "] expected both tensors to have the same dtype, but got ",
             in[0].dtype(), " and ", in[1].dtype());
}

std::vector<TensorMeta> allclose_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  check_pair(op, in);
  KILN_CHECK(a.d(0) >= 0, "[allclose] rtol must be greater than or equal to zero, but got ", a.d(0));
  KILN_CHECK(a.d(1) >= 0, "[allclose] atol must be greater than or equal to zero, but got ", a.d(1));
  broadcast_shapes(op.name, in[0].sizes(), in[1].sizes());
  return {TensorMeta{{}, kBool, common_device(op, in)}};
}

std::vector<TensorMeta> equal_infer(const OpDef& op, const TensorList& in, const Attrs&) {
  check_pair(op, in);
  return {TensorMeta{{}, kBool, common_device(op, in)}};
}

OpDef& add(OpRegistry& r, const char* name, OpKind kind, InferFn infer, KernelFn cpu, std::vector<std::string> attrs,
         bool differentiable = true) {
  OpDef d;
  d.name = name;
  d.kind = kind;
  d.infer = infer;
  d.kernels[kCpu] = cpu;
  d.arity = 1;
  d.differentiable = differentiable;
  d.attr_names = std::move(attrs);
  return r.add(std::move(d));
}

}  // namespace

namespace ops_registration {
void register_reduction_ops(OpRegistry& r) {
  using K = OpKind;
  const std::vector<std::string> dims_keep{"dims", "keepdim"}, dims_keep_dtype{"dims", "keepdim", "dtype"};
  const std::vector<std::string> dim_keep{"dim", "keepdim"}, var_attrs{"dims", "correction", "keepdim"};
  const std::vector<std::string> dim_dtype{"dim", "dtype"};
  add(r, "sum", K::Reduction, &sum_infer, &cpu::sum_kernel, dims_keep_dtype);
  add(r, "mean", K::Reduction, &mean_infer, &cpu::mean_kernel, dims_keep_dtype);
  add(r, "prod", K::Reduction, &sum_infer, &cpu::prod_kernel, dims_keep_dtype);
  add(r, "amax", K::Reduction, &extreme_infer, &cpu::amax_kernel, dims_keep);
  add(r, "amin", K::Reduction, &extreme_infer, &cpu::amin_kernel, dims_keep);
  add(r, "max_dim", K::Reduction, &max_dim_infer, &cpu::max_dim_kernel, dim_keep);
  add(r, "min_dim", K::Reduction, &max_dim_infer, &cpu::min_dim_kernel, dim_keep);
  add(r, "argmax", K::Reduction, &arg_infer, &cpu::argmax_kernel, dim_keep, false);
  add(r, "argmin", K::Reduction, &arg_infer, &cpu::argmin_kernel, dim_keep, false);
  add(r, "var", K::Reduction, &var_infer, &cpu::var_kernel, var_attrs);
  add(r, "std", K::Reduction, &var_infer, &cpu::std_kernel, var_attrs);
  add(r, "var_mean", K::Reduction, &var_infer, &cpu::var_mean_kernel, var_attrs);
  add(r, "logsumexp", K::Reduction, &logsumexp_infer, &cpu::logsumexp_kernel, dims_keep);
  add(r, "all", K::Reduction, &all_any_infer, &cpu::all_kernel, dims_keep, false);
  add(r, "any", K::Reduction, &all_any_infer, &cpu::any_kernel, dims_keep, false);
  add(r, "softmax", K::Reduction, &softmax_infer, &cpu::softmax_kernel, dim_dtype);
  add(r, "log_softmax", K::Reduction, &softmax_infer, &cpu::log_softmax_kernel, dim_dtype);
  add(r, "cumsum", K::Opaque, &cumsum_infer, &cpu::cumsum_kernel, dim_dtype);
  add(r, "allclose", K::Reduction, &allclose_infer, &cpu::allclose_kernel, {"rtol", "atol", "equal_nan"}, false).arity = 2;
  add(r, "equal", K::Reduction, &equal_infer, &cpu::equal_kernel, {}, false).arity = 2;
}
}  // namespace ops_registration

}  // namespace kiln
