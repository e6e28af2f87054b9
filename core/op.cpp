#include "core/op.h"
#if KILN_HAS_CUDA_TOOLKIT
#include "kernels/cuda/cuda_kernels.h"
#endif

#include <mutex>

#include "autograd/grad_mode.h"
#include "autograd/record.h"
#include "core/ops.h"
#include "core/profiler.h"
#include "core/shape.h"
#include "core/trace_hook.h"

namespace kiln {

std::string_view op_kind_name(OpKind k) {
  switch (k) {
    case OpKind::Pointwise: return "pointwise";
    case OpKind::Reduction: return "reduction";
    case OpKind::View: return "view";
    case OpKind::Matmul: return "matmul";
    case OpKind::Opaque: return "opaque";
    case OpKind::Factory: return "factory";
  }
  return "?";
}

std::ostream& operator<<(std::ostream& os, const Attr& a) {
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::monostate>) os << "None";
        else if constexpr (std::is_same_v<T, bool>) os << (v ? "True" : "False");
        else if constexpr (std::is_same_v<T, Shape>) os << IntArrayRef(v);
        else os << v;
      },
      a);
  return os;
}

OpRegistry::OpRegistry() = default;

OpRegistry& OpRegistry::instance() {
  // Families register explicitly (not through static constructors) so that linking kiln as a
  // static library cannot silently drop ops.
  static OpRegistry* r = [] {
    auto* reg = new OpRegistry();
    ops_registration::register_copy_ops(*reg);
    ops_registration::register_pointwise_ops(*reg);
    ops_registration::register_view_ops(*reg);
    ops_registration::register_reduction_ops(*reg);
    ops_registration::register_linalg_ops(*reg);
    ops_registration::register_index_ops(*reg);
    ops_registration::register_nn_ops(*reg);
    ops_registration::register_random_ops(*reg);
#if KILN_HAS_CUDA_TOOLKIT
    ops_registration::register_cuda_kernels(*reg);  // kernels/cuda/cuda_kernels.h
#endif
    ops_registration::register_vjps(*reg);
    return reg;
  }();
  return *r;
}

OpDef& OpRegistry::add(OpDef def) {
  KILN_INTERNAL_ASSERT(!ops_.count(def.name), "op registered twice: ", def.name);
  KILN_INTERNAL_ASSERT(def.kind == OpKind::View ? def.view != nullptr : def.infer != nullptr,
                       "op without shape rule: ", def.name);
  auto p = std::make_unique<OpDef>(std::move(def));
  OpDef& ref = *p;
  order_.push_back(p.get());
  ops_.emplace(ref.name, std::move(p));
  return ref;
}

const OpDef* OpRegistry::find(std::string_view name) const {
  auto it = ops_.find(std::string(name));
  return it == ops_.end() ? nullptr : it->second.get();
}

const OpDef& OpRegistry::get(std::string_view name) const {
  const OpDef* d = find(name);
  KILN_INTERNAL_ASSERT(d != nullptr, "unknown op ", name);
  return *d;
}

OpDef& OpRegistry::mutable_get(std::string_view name) { return const_cast<OpDef&>(get(name)); }

std::vector<const OpDef*> OpRegistry::all() const { return order_; }

// ---------------------------------------------------------------------------------------------

namespace {
bool category_higher(DType a, DType b) {  // is a's category strictly higher than b's
  auto cat = [](DType t) { return t == DType::Bool ? 0 : is_integral(t) ? 1 : 2; };
  return cat(a) > cat(b);
}
}  // namespace

DType result_type(const std::vector<PromotionOperand>& operands) {
  std::optional<DType> dim_r, zero_r, wrapped_r;
  auto upd = [](std::optional<DType>& r, DType t) { r = r ? promote_types(*r, t) : t; };
  for (const PromotionOperand& t : operands) {
    // A wrapped float holds a double (so x * 0.1 is exact for float64 x) but promotes as the
    // default dtype, as PyTorch's wrapped numbers do.
    if (t.wrapped) upd(wrapped_r, is_floating_point(t.dtype) ? default_dtype() : t.dtype);
    else if (!t.zero_dim) upd(dim_r, t.dtype);
    else upd(zero_r, t.dtype);
  }
  // combine(higher, lower) as in PyTorch: a lower-priority operand only matters when its
  // category is higher (e.g. int tensor * 2.5 -> float).
  auto combine = [](std::optional<DType> hi, std::optional<DType> lo) -> std::optional<DType> {
    if (!hi) return lo;
    if (!lo) return hi;
    if (is_floating_point(*hi)) return hi;
    if (*hi == DType::Bool || category_higher(*lo, *hi)) return promote_types(*hi, *lo);
    return hi;
  };
  auto r = combine(dim_r, combine(zero_r, wrapped_r));
  KILN_INTERNAL_ASSERT(r.has_value(), "result_type of no tensors");
  return *r;
}

DType result_type(const TensorList& inputs) {
  std::vector<PromotionOperand> ops;
  ops.reserve(inputs.size());
  for (const Tensor& t : inputs)
    if (t.defined()) ops.push_back({t.dtype(), t.dim() == 0, t.impl()->is_wrapped_number()});
  return result_type(ops);
}

Tensor wrap_scalar(const Scalar& s, Device device) {
  Tensor t = full({}, s, s.is_floating_point() ? DType::Float64 : s.wrapped_dtype(), device);
  t.impl()->set_wrapped_number(true);
  return t;
}

Device common_device(const OpDef& op, const TensorList& inputs) {
  auto cpu_scalar = [](const Tensor& t) { return t.device().is_cpu() && t.dim() == 0; };
  std::optional<Device> dev;
  for (const Tensor& t : inputs)
    if (t.defined() && !cpu_scalar(t)) { dev = t.device(); break; }
  if (!dev)
    for (const Tensor& t : inputs)
      if (t.defined()) { dev = t.device(); break; }
  for (const Tensor& t : inputs)
    KILN_CHECK(!t.defined() || t.device() == *dev || cpu_scalar(t), "[", op.name,
               "] expected all tensors to be on the same device, but found ", *dev, " and ", t.device());
  return dev.value_or(Device(kCPU));
}

namespace {

KernelFn kernel_for(const OpDef& op, const Device& dev) {
  KernelFn k = op.kernels[static_cast<int>(dev.type())];
  KILN_CHECK(k != nullptr, "[", op.name, "] has no ", dev.is_cuda() ? "CUDA" : "CPU", " implementation");
  return k;
}

Tensor make_view(const OpDef& op, const Tensor& in, const Attrs& attrs) {
  ViewGeometry g = op.view(op, in, attrs);
  auto impl = std::make_shared<TensorImpl>(in.impl()->storage(), in.dtype(), std::move(g.sizes),
                                           std::move(g.strides), g.offset);
  Tensor view(std::move(impl));
  if (auto* hook = detail::trace_hook()) [[unlikely]]
    hook->record_view(op, in, attrs, view);
  if (GradMode::is_enabled()) autograd::record_view(op, in, attrs, view);
  return view;
}

}  // namespace

namespace {

// Inlined into call_op: the profiler costs the unprofiled path one branch, not also a call.
[[gnu::always_inline]] inline TensorList dispatch(const OpDef& op, const TensorList& inputs, const Attrs& attrs) {
  for (size_t i = 0; i < inputs.size(); ++i)
    KILN_CHECK(inputs[i].defined() || op.kind == OpKind::Opaque || op.kind == OpKind::Factory, "[", op.name,
               "] argument ", i, " is an undefined tensor");
  if (op.kind == OpKind::View) return {make_view(op, inputs.at(0), attrs)};
  auto* hook = detail::trace_hook();
  if (hook) [[unlikely]]
    hook->note_data_access(op.name.c_str());  // infer of a data-dependent op reads its input
  std::vector<TensorMeta> metas = op.infer(op, inputs, attrs);
  if (hook) [[unlikely]] {
    TensorList lazy = hook->record_op(op, inputs, attrs, metas);
    if (!lazy.empty()) {
      if (autograd::should_record(op, inputs)) autograd::record(op, inputs, attrs, lazy);
      return lazy;
    }
  }
  Device dev = inputs.empty() ? (metas.empty() ? Device(kCPU) : metas[0].device) : common_device(op, inputs);
  TensorList out;
  out.reserve(metas.size());
  for (const TensorMeta& m : metas) out.push_back(empty(m.sizes, m.dtype, m.device));
  kernel_for(op, dev)(op, inputs, out, attrs);
  if (autograd::should_record(op, inputs)) autograd::record(op, inputs, attrs, out);
  return out;
}

// An op event around dispatch (ops recorded into a capture run nothing: they are not events).
TensorList profiled_dispatch(const OpDef& op, const TensorList& inputs, const Attrs& attrs) {
  if (detail::trace_hook()) return dispatch(op, inputs, attrs);
  profiler::Scope scope(op.name, profiler::Category::Op);
  if (profiler::Event* e = scope.event()) {
    profiler::detail::describe_inputs(*e, inputs);
    if (op.kind == OpKind::View) e->bytes = 0;  // no data moves
  }
  TensorList out = dispatch(op, inputs, attrs);
  if (profiler::Event* e = scope.event(); e && op.kind != OpKind::View) profiler::detail::add_written(*e, out);
  return out;
}

}  // namespace

TensorList call_op(const OpDef& op, const TensorList& inputs, const Attrs& attrs) {
  if (profiler::enabled()) [[unlikely]]
    return profiled_dispatch(op, inputs, attrs);
  return dispatch(op, inputs, attrs);
}

namespace {
bool overlaps(const Tensor& a, const Tensor& b) {
  if (a.impl()->storage() != b.impl()->storage() || a.numel() == 0 || b.numel() == 0) return false;
  auto span = [](const Tensor& t) {
    int64_t lo = t.storage_offset(), hi = t.storage_offset();
    for (int64_t d = 0; d < t.dim(); ++d) {
      int64_t ext = (t.size(d) - 1) * t.stride(d);
      if (ext < 0) lo += ext; else hi += ext;
    }
    return std::pair{lo, hi};
  };
  auto [alo, ahi] = span(a);
  auto [blo, bhi] = span(b);
  return alo <= bhi && blo <= ahi;
}
bool same_geometry(const Tensor& a, const Tensor& b) {
  return a.impl()->storage() == b.impl()->storage() && a.storage_offset() == b.storage_offset() &&
         a.sizes() == b.sizes() && a.strides() == b.strides();
}
}  // namespace

namespace {

[[gnu::always_inline]] inline Tensor& dispatch_out(const OpDef& op, Tensor& out, const TensorList& inputs, const Attrs& attrs) {
  KILN_CHECK(out.defined(), "[", op.name, "] output tensor is undefined");
  std::vector<TensorMeta> metas = op.infer(op, inputs, attrs);
  KILN_INTERNAL_ASSERT(metas.size() == 1, "out= form of multi-output op ", op.name);
  const TensorMeta& m = metas[0];
  KILN_CHECK(IntArrayRef(m.sizes) == out.sizes(), "[", op.name, "] output with shape ", out.sizes(),
             " doesn't match the broadcast shape ", m.sizes);
  KILN_CHECK(can_cast(m.dtype, out.dtype()), "[", op.name, "] result type ", m.dtype,
             " can't be cast to the desired output type ", out.dtype());
  Device dev = common_device(op, inputs);
  KILN_CHECK(out.device() == dev, "[", op.name, "] output is on ", out.device(), " but inputs are on ", dev);
  // Write directly only when the output neither partially aliases an input nor needs a cast.
  bool direct = m.dtype == out.dtype();
  for (const Tensor& in : inputs)
    if (in.defined() && overlaps(in, out) && !same_geometry(in, out)) direct = false;
  if (op.kind != OpKind::Pointwise && out.numel() > 0) {
    for (const Tensor& in : inputs)
      if (in.defined() && overlaps(in, out)) direct = false;  // non-pointwise kernels read after write
  }
  auto rec = autograd::begin_inplace(op, out, inputs, attrs);
  {
    NoGradGuard no_grad;  // the copy below is part of this op, not a second recorded write
    auto* hook = detail::trace_hook();
    if (hook && hook->record_mutation(op, out, inputs, attrs, m.dtype)) {
      out.impl()->storage()->bump_version();
    } else if (direct) {
      TensorList outs{out};
      kernel_for(op, dev)(op, inputs, outs, attrs);
      out.impl()->storage()->bump_version();
    } else {
      Tensor tmp = empty(m.sizes, m.dtype, dev);
      TensorList outs{tmp};
      kernel_for(op, dev)(op, inputs, outs, attrs);
      out.copy_(tmp);  // bumps the version
    }
  }
  autograd::finish_inplace(rec.get(), out);
  return out;
}

Tensor& profiled_dispatch_out(const OpDef& op, Tensor& out, const TensorList& inputs, const Attrs& attrs) {
  if (detail::trace_hook()) return dispatch_out(op, out, inputs, attrs);
  profiler::Scope scope(op.name + "_", profiler::Category::Op);  // in place / out=, as PyTorch names add_
  if (profiler::Event* e = scope.event()) profiler::detail::describe_inputs(*e, inputs);
  dispatch_out(op, out, inputs, attrs);
  if (profiler::Event* e = scope.event()) profiler::detail::add_written(*e, out);
  return out;
}

}  // namespace

Tensor& call_op_out(const OpDef& op, Tensor& out, const TensorList& inputs, const Attrs& attrs) {
  if (profiler::enabled()) [[unlikely]]
    return profiled_dispatch_out(op, out, inputs, attrs);
  return dispatch_out(op, out, inputs, attrs);
}

Tensor& call_op_inplace(const OpDef& op, Tensor& self, const TensorList& inputs, const Attrs& attrs) {
  return call_op_out(op, self, inputs, attrs);
}

}  // namespace kiln
