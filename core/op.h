#pragma once
// The op registry: one OpDef row per op. A row states what the op is (name, kind), how its
// outputs look (infer), and how each device runs it (kernels[device]). Backends fill their
// column (CUDA later sets kernels[kCUDA] without touching the row); autograd adds vjps and the
// JIT records nodes from the same rows.
#include <array>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include "core/tensor.h"

namespace kiln {

namespace autograd {
class VjpContext;
}

enum class OpKind : uint8_t { Pointwise, Reduction, View, Matmul, Opaque, Factory };
std::string_view op_kind_name(OpKind k);

// How a pointwise op derives its result dtype from the promoted input dtype.
enum class PointwiseRule : uint8_t {
  Same,       // add, mul, abs, maximum ...: the promoted dtype
  FloatOut,   // exp, div, sigmoid ...: integers and bool promote to the default float dtype
  BoolOut,    // eq, lt, logical_and ...: computed in the promoted dtype, result bool
  FloatOnly,  // erf-like ops with no integer meaning are still FloatOut; kept for clarity
};

using Attr = std::variant<std::monostate, int64_t, double, bool, Shape, Scalar, DType, std::string>;

class Attrs {
 public:
  Attrs() = default;
  Attrs(std::initializer_list<Attr> l) : values_(l) {}
  size_t size() const { return values_.size(); }
  const Attr& operator[](size_t i) const { return values_.at(i); }
  void push(Attr a) { values_.push_back(std::move(a)); }
  bool is_none(size_t i) const { return std::holds_alternative<std::monostate>(values_.at(i)); }
  int64_t i(size_t k) const { return std::get<int64_t>(values_.at(k)); }
  double d(size_t k) const { return std::get<double>(values_.at(k)); }
  bool b(size_t k) const { return std::get<bool>(values_.at(k)); }
  const Shape& ints(size_t k) const { return std::get<Shape>(values_.at(k)); }
  const Scalar& scalar(size_t k) const { return std::get<Scalar>(values_.at(k)); }
  DType dtype(size_t k) const { return std::get<DType>(values_.at(k)); }
  const std::string& str(size_t k) const { return std::get<std::string>(values_.at(k)); }
  const std::vector<Attr>& values() const { return values_; }

 private:
  std::vector<Attr> values_;
};
std::ostream& operator<<(std::ostream& os, const Attr& a);

struct TensorMeta {
  Shape sizes;
  DType dtype;
  Device device;
};

struct OpDef;
// Checks arguments (raising kiln::Error naming the op) and returns output metadata.
using InferFn = std::vector<TensorMeta> (*)(const OpDef& op, const TensorList& inputs, const Attrs& attrs);
// Runs the op: `out` holds allocated outputs of the inferred metadata (or an in-place target).
using KernelFn = void (*)(const OpDef& op, const TensorList& inputs, TensorList& out, const Attrs& attrs);
// View ops compute new (sizes, strides, offset) over the input's storage; no data moves.
struct ViewGeometry {
  Shape sizes, strides;
  int64_t offset;
};
using ViewFn = ViewGeometry (*)(const OpDef& op, const Tensor& input, const Attrs& attrs);
// Reverse mode: gradients of the inputs from those of the outputs (autograd/vjp.h).
using VjpFn = TensorList (*)(const autograd::VjpContext& ctx, const TensorList& grad_outputs);

// What a vjp reads back from the forward pass; saving less frees activations sooner.
enum VjpSaves : uint8_t { kSaveNothing = 0, kSaveInputs = 1, kSaveOutputs = 2, kSaveAll = 3 };

struct OpDef {
  std::string name;
  OpKind kind = OpKind::Opaque;
  InferFn infer = nullptr;
  ViewFn view = nullptr;
  std::array<KernelFn, kNumDeviceTypes> kernels{};
  // Pointwise ops: number of tensor inputs and dtype rule (the scalar formula lives in
  // kernels/formulas.h and is instantiated by each backend).
  int arity = 0;
  PointwiseRule rule = PointwiseRule::Same;
  bool differentiable = true;
  // Filled by autograd/vjp_*.cpp; a differentiable row without one raises when recorded.
  VjpFn vjp = nullptr;
  uint8_t vjp_saves = kSaveAll;
  // Attribute names, for printing graphs and errors ("dim", "keepdim", ...).
  std::vector<std::string> attr_names;
};

class OpRegistry {
 public:
  static OpRegistry& instance();
  OpDef& add(OpDef def);  // raises on a duplicate name
  const OpDef* find(std::string_view name) const;
  const OpDef& get(std::string_view name) const;  // raises when unknown
  OpDef& mutable_get(std::string_view name);
  std::vector<const OpDef*> all() const;

 private:
  OpRegistry();
  std::unordered_map<std::string, std::unique_ptr<OpDef>> ops_;
  std::vector<const OpDef*> order_;
};

inline const OpDef& op_def(std::string_view name) { return OpRegistry::instance().get(name); }
// A front end's row, looked up once: `call_op1(KILN_ROW("exp"), {x})`.
#define KILN_ROW(NAME)                      \
  ([]() -> const ::kiln::OpDef& {           \
    static const ::kiln::OpDef& row = ::kiln::op_def(NAME); \
    return row;                             \
  }())

// Dispatch: infer outputs, allocate them on the inputs' device, run the device kernel.
TensorList call_op(const OpDef& op, const TensorList& inputs, const Attrs& attrs = {});
inline Tensor call_op1(const OpDef& op, const TensorList& inputs, const Attrs& attrs = {}) {
  return call_op(op, inputs, attrs)[0];
}
// In-place form: `inputs[0]` is written. The result must have its shape and be castable to its dtype.
Tensor& call_op_inplace(const OpDef& op, Tensor& self, const TensorList& inputs, const Attrs& attrs = {});
// Writes into a preallocated `out` (shape must match; dtype castable).
Tensor& call_op_out(const OpDef& op, Tensor& out, const TensorList& inputs, const Attrs& attrs = {});

// PyTorch's result_type: dim>0 tensors outrank 0-dim tensors, which outrank wrapped numbers,
// unless the lower-priority operand is of a higher category (bool < int < float).
DType result_type(const TensorList& inputs);
// The same from what promotion looks at (the JIT's codegen has graph values, not tensors).
struct PromotionOperand {
  DType dtype;
  bool zero_dim = false;
  bool wrapped = false;
};
DType result_type(const std::vector<PromotionOperand>& operands);
// Wraps a Python-style number as a 0-dim tensor that promotes like a scalar.
Tensor wrap_scalar(const Scalar& s, Device device = Device(kCPU));
// The device all inputs must share; 0-dim cpu tensors may accompany cuda tensors.
Device common_device(const OpDef& op, const TensorList& inputs);

// Registration entry points, one per family (kernels/*.cpp); called once by OpRegistry.
namespace ops_registration {
void register_copy_ops(OpRegistry& r);
void register_pointwise_ops(OpRegistry& r);
void register_view_ops(OpRegistry& r);
void register_reduction_ops(OpRegistry& r);
void register_linalg_ops(OpRegistry& r);
void register_index_ops(OpRegistry& r);
void register_nn_ops(OpRegistry& r);
void register_random_ops(OpRegistry& r);
void register_vjps(OpRegistry& r);  // autograd/vjp_registry.cpp
}  // namespace ops_registration

}  // namespace kiln
