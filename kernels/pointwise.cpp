// Registry rows of the pointwise ops, one per formula in kernels/formulas.h.
#include "core/op.h"
#include "core/shape.h"
#include "kernels/cpu/pointwise_kernel.h"
#include "kernels/formulas.h"

namespace kiln {
namespace {

template <class F>
std::vector<TensorMeta> pointwise_infer(const OpDef& op, const TensorList& in, const Attrs&) {
  KILN_INTERNAL_ASSERT(static_cast<int>(in.size()) == F::arity, op.name, " takes ", F::arity, " tensors");
  if constexpr (std::is_same_v<F, formulas::Where>)
    KILN_CHECK(in[0].dtype() == DType::Bool, "[where] expected condition to be a bool tensor, but got dtype ", in[0].dtype());
  Shape shape = in[0].sizes().vec();
  for (size_t i = 1; i < in.size(); ++i) shape = broadcast_shapes(op.name, shape, in[i].sizes());
  DType promoted = cpu::pointwise_promoted_dtype<F>(in);
  KILN_CHECK(F::bool_ok || promoted != DType::Bool, "[", op.name, "] is not supported for bool tensors",
             std::string_view(op.name) == "sub" ? " (use logical_xor or ~ instead)" : "");
  DType out = F::rule == PointwiseRule::BoolOut ? DType::Bool : cpu::pointwise_compute_dtype<F>(in);
  return {TensorMeta{std::move(shape), out, common_device(op, in)}};
}

template <class F>
void add_row(OpRegistry& r) {
  OpDef d;
  d.name = F::name;
  d.kind = OpKind::Pointwise;
  d.infer = &pointwise_infer<F>;
  d.kernels[static_cast<int>(DeviceType::CPU)] = &cpu::pointwise_kernel<F>;
  d.arity = F::arity;
  d.rule = F::rule;
  d.differentiable = F::rule != PointwiseRule::BoolOut;
  r.add(std::move(d));
}

template <class... F>
void add_rows(OpRegistry& r, formulas::List<F...>) {
  (add_row<F>(r), ...);
}

}  // namespace

namespace ops_registration {
void register_pointwise_ops(OpRegistry& r) { add_rows(r, formulas::AllPointwise{}); }
}  // namespace ops_registration

}  // namespace kiln
