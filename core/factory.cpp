// Tensor factories: empty/zeros/ones/full/arange/linspace/eye/from_blob/tensor(...).
#include <cmath>
#include <cstring>

#include "core/op.h"
#include "core/ops.h"
#include "core/shape.h"
#include "core/trace_hook.h"

namespace kiln {

Tensor empty(IntArrayRef sizes, DType dtype, Device device) {
  check_sizes_nonnegative("empty", sizes);
  const size_t nbytes = static_cast<size_t>(shape_numel(sizes)) * itemsize(dtype);
  Storage storage = detail::trace_hook() ? detail::trace_hook()->new_storage(nbytes, device)
                                         : std::make_shared<StorageImpl>(nbytes, device);
  return Tensor(std::make_shared<TensorImpl>(std::move(storage), dtype, sizes.vec(), contiguous_strides(sizes), 0));
}

Tensor empty(IntArrayRef sizes, const TensorOptions& o) {
  Tensor t = empty(sizes, o.dtype_or(default_dtype()), o.device_);
  if (o.requires_grad_) t.requires_grad_(true);
  return t;
}

Tensor empty_strided(IntArrayRef sizes, IntArrayRef strides, const TensorOptions& o) {
  KILN_CHECK(sizes.size() == strides.size(), "[empty_strided] sizes ", sizes, " and strides ", strides,
             " must have the same length");
  check_sizes_nonnegative("empty_strided", sizes);
  int64_t extent = 1;
  for (size_t i = 0; i < sizes.size(); ++i) {
    KILN_CHECK(strides[i] >= 0, "[empty_strided] negative stride ", strides[i]);
    if (sizes[i] == 0) { extent = 0; break; }
    extent += (sizes[i] - 1) * strides[i];
  }
  DType dt = o.dtype_or(default_dtype());
  const size_t nbytes = static_cast<size_t>(extent) * itemsize(dt);
  Storage storage = detail::trace_hook() ? detail::trace_hook()->new_storage(nbytes, o.device_)
                                         : std::make_shared<StorageImpl>(nbytes, o.device_);
  return Tensor(std::make_shared<TensorImpl>(std::move(storage), dt, sizes.vec(), strides.vec(), 0));
}

Tensor full(IntArrayRef sizes, const Scalar& value, DType dtype, Device device) {
  Tensor t = empty(sizes, dtype, device);
  t.fill_(value);
  return t;
}

Tensor full(IntArrayRef sizes, const Scalar& value, const TensorOptions& o) {
  // torch.full infers the dtype from the fill value when none is given.
  Tensor t = full(sizes, value, o.dtype_or(value.wrapped_dtype()), o.device_);
  if (o.requires_grad_) t.requires_grad_(true);
  return t;
}

Tensor zeros(IntArrayRef sizes, const TensorOptions& o) {
  Tensor t = empty(sizes, o.dtype_or(default_dtype()), o.device_);
  if (t.is_cpu() && !detail::trace_hook()) std::memset(t.data_ptr(), 0, t.nbytes());
  else t.zero_();
  if (o.requires_grad_) t.requires_grad_(true);
  return t;
}

Tensor ones(IntArrayRef sizes, const TensorOptions& o) {
  Tensor t = full(sizes, 1, o.dtype_or(default_dtype()), o.device_);
  if (o.requires_grad_) t.requires_grad_(true);
  return t;
}

Tensor empty_like(const Tensor& t, std::optional<DType> dt) { return empty(t.sizes(), dt.value_or(t.dtype()), t.device()); }
Tensor zeros_like(const Tensor& t, std::optional<DType> dt) { return zeros(t.sizes(), TensorOptions(dt.value_or(t.dtype())).device(t.device())); }
Tensor ones_like(const Tensor& t, std::optional<DType> dt) { return full(t.sizes(), 1, dt.value_or(t.dtype()), t.device()); }
Tensor full_like(const Tensor& t, const Scalar& v, std::optional<DType> dt) { return full(t.sizes(), v, dt.value_or(t.dtype()), t.device()); }
Tensor rand_like(const Tensor& t) { return rand(t.sizes(), TensorOptions(t.dtype()).device(t.device())); }
Tensor randn_like(const Tensor& t) { return randn(t.sizes(), TensorOptions(t.dtype()).device(t.device())); }

Tensor scalar_tensor(const Scalar& s, const TensorOptions& o) { return full({}, s, o.dtype_or(s.is_floating_point() ? default_dtype() : s.wrapped_dtype()), o.device_); }

Tensor arange(const Scalar& end, const TensorOptions& o) { return arange(0, end, 1, o); }

Tensor arange(const Scalar& start, const Scalar& end, const Scalar& step, const TensorOptions& o) {
  bool fp = start.is_floating_point() || end.is_floating_point() || step.is_floating_point();
  DType dt = o.dtype_or(fp ? default_dtype() : DType::Int64);
  double s = start.to_double(), e = end.to_double(), st = step.to_double();
  KILN_CHECK(st != 0, "[arange] step must be nonzero");
  KILN_CHECK(std::isfinite(s) && std::isfinite(e), "[arange] unsupported range: ", start, " -> ", end);
  KILN_CHECK((st > 0 && e >= s) || (st < 0 && e <= s), "[arange] upper bound and larger bound inconsistent with step sign: start=",
             start, ", end=", end, ", step=", step);
  int64_t n;
  if (!fp) {
    int64_t si = start.to_int(), ei = end.to_int(), sti = step.to_int();
    n = sti > 0 ? (ei - si + sti - 1) / sti : (si - ei + (-sti) - 1) / (-sti);
  } else {
    n = static_cast<int64_t>(std::ceil((e - s) / st));
  }
  KILN_CHECK(n >= 0 && n < (int64_t(1) << 40), "[arange] invalid number of elements ", n);
  Tensor cpu = empty({n}, DType::Float64);
  Tensor out;
  if (!fp) {
    Tensor ints = empty({n}, DType::Int64);
    int64_t* p = ints.data_ptr<int64_t>();
    for (int64_t i = 0; i < n; ++i) p[i] = start.to_int() + i * step.to_int();
    out = ints;
  } else {
    double* p = cpu.data_ptr<double>();
    for (int64_t i = 0; i < n; ++i) p[i] = s + static_cast<double>(i) * st;
    out = cpu;
  }
  Tensor r = out.to(o.device_, dt);
  if (o.requires_grad_) r.requires_grad_(true);
  return r;
}

Tensor linspace(double start, double end, int64_t steps, const TensorOptions& o) {
  KILN_CHECK(steps >= 0, "[linspace] number of steps must be non-negative, got ", steps);
  Tensor cpu = empty({steps}, DType::Float64);
  double* p = cpu.data_ptr<double>();
  double step = steps > 1 ? (end - start) / static_cast<double>(steps - 1) : 0.0;
  int64_t half = steps / 2;
  // Fill from both ends, so that both endpoints are exact (as PyTorch does).
  for (int64_t i = 0; i < steps; ++i)
    p[i] = i < half ? start + step * static_cast<double>(i) : end - step * static_cast<double>(steps - 1 - i);
  return cpu.to(o.device_, o.dtype_or(default_dtype()));
}

Tensor eye(int64_t n, std::optional<int64_t> m, const TensorOptions& o) {
  int64_t cols = m.value_or(n);
  KILN_CHECK(n >= 0, "[eye] n must be greater or equal to 0, got ", n);
  KILN_CHECK(cols >= 0, "[eye] m must be greater or equal to 0, got ", cols);
  Tensor t = zeros({n, cols}, TensorOptions(o.dtype_or(default_dtype())));
  if (std::min(n, cols) > 0) t.diagonal().fill_(1);
  return t.to(o.device_);
}

Tensor from_blob(void* data, IntArrayRef sizes, DType dtype, std::function<void(void*)> deleter) {
  return from_blob(data, sizes, contiguous_strides(sizes), dtype, std::move(deleter));
}

Tensor from_blob(void* data, IntArrayRef sizes, IntArrayRef strides, DType dtype, std::function<void(void*)> deleter) {
  KILN_CHECK(sizes.size() == strides.size(), "[from_blob] sizes ", sizes, " and strides ", strides,
             " must have the same length");
  check_sizes_nonnegative("from_blob", sizes);
  int64_t extent = 1;
  for (size_t i = 0; i < sizes.size(); ++i) {
    KILN_CHECK(strides[i] >= 0, "[from_blob] negative stride ", strides[i]);
    if (sizes[i] == 0) { extent = 0; break; }
    extent += (sizes[i] - 1) * strides[i];
  }
  KILN_CHECK(data != nullptr || extent == 0, "[from_blob] data pointer is null");
  auto storage = std::make_shared<StorageImpl>(data, static_cast<size_t>(extent) * itemsize(dtype), Device(kCPU),
                                               std::move(deleter));
  return Tensor(std::make_shared<TensorImpl>(std::move(storage), dtype, sizes.vec(), strides.vec(), 0));
}

namespace {
void nested_shape(const NestedList& l, size_t depth, Shape& shape, Scalar::Kind& kind, bool& any_scalar) {
  if (!l.is_list()) {
    KILN_CHECK(depth == shape.size(), "[tensor] ragged nested list: found a number at depth ", depth,
               " where a list of length ", depth < shape.size() ? shape[depth] : 0, " was expected");
    any_scalar = true;
    if (l.kind() == Scalar::Kind::Float) kind = Scalar::Kind::Float;
    else if (l.kind() == Scalar::Kind::Int && kind == Scalar::Kind::Bool) kind = Scalar::Kind::Int;
    return;
  }
  int64_t n = static_cast<int64_t>(l.children().size());
  if (depth == shape.size()) {
    KILN_CHECK(!any_scalar, "[tensor] ragged nested list: found a list at depth ", depth, " where numbers were expected");
    shape.push_back(n);
  } else {
    KILN_CHECK(shape[depth] == n, "[tensor] expected sequence of length ", shape[depth], " at dim ", depth, " (got ", n, ")");
  }
  for (const NestedList& c : l.children()) nested_shape(c, depth + 1, shape, kind, any_scalar);
}

void nested_fill(const NestedList& l, std::vector<Scalar>& out) {
  if (!l.is_list()) { out.push_back(l.scalar()); return; }
  for (const NestedList& c : l.children()) nested_fill(c, out);
}
}  // namespace

Tensor tensor(const NestedList& values, const TensorOptions& o) {
  Shape shape;
  Scalar::Kind kind = Scalar::Kind::Bool;
  bool any_scalar = false;
  nested_shape(values, 0, shape, kind, any_scalar);
  if (!any_scalar && shape_numel(shape) == 0) kind = Scalar::Kind::Float;  // tensor({}) is float like torch
  std::vector<Scalar> flat;
  nested_fill(values, flat);
  DType dt = o.dtype_or(kind == Scalar::Kind::Float ? default_dtype() : kind == Scalar::Kind::Int ? DType::Int64 : DType::Bool);
  Tensor cpu = empty(shape, dt);
  KILN_DISPATCH_ALL_TYPES(dt, "tensor", {
    scalar_t* p = cpu.data_ptr<scalar_t>();
    for (size_t i = 0; i < flat.size(); ++i) p[i] = flat[i].to<scalar_t>();
  });
  Tensor r = cpu.to(o.device_);
  if (o.requires_grad_) r.requires_grad_(true);
  return r;
}

}  // namespace kiln
