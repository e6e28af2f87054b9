// Front ends of the pointwise ops: wrap Python-style scalars, apply op-specific argument checks,
// dispatch the registry row.
#include "core/op.h"
#include "core/ops.h"
#include "core/shape.h"

namespace kiln {
namespace {

Tensor scalar_like(const Scalar& s, const Tensor& like) { return wrap_scalar(s, like.dim() == 0 ? like.device() : Device(kCPU)); }

void check_int_divisor(const char* op, const Tensor& a, const Tensor& b) {
  DType t = result_type({a, b});
  if (is_integral(t, true) && any(eq(b, wrap_scalar(0))).item<bool>())
    KILN_FAIL("[", op, "] ZeroDivisionError: integer division by zero");
}

void check_int_pow(const Tensor& a, const Tensor& b) {
  DType t = result_type({a, b});
  if (is_integral(t) && any(lt(b, wrap_scalar(0))).item<bool>())
    KILN_FAIL("[pow] integers to negative integer powers are not allowed");
}

}  // namespace

Tensor pointwise(const std::string& op_name, const TensorList& inputs) {
  const OpDef* d = OpRegistry::instance().find(op_name);
  KILN_CHECK(d && d->kind == OpKind::Pointwise, "[pointwise] unknown pointwise op '", op_name, "'");
  KILN_CHECK(static_cast<int>(inputs.size()) == d->arity, "[", op_name, "] expects ", d->arity,
             " tensor arguments, got ", inputs.size());
  return call_op1(*d, inputs);
}

#define KILN_UNARY(FN, NAME) \
  Tensor FN(const Tensor& x) { return call_op1(KILN_ROW(NAME), {x}); }
KILN_UNARY(neg, "neg")
KILN_UNARY(abs, "abs")
KILN_UNARY(sign, "sign")
KILN_UNARY(exp, "exp")
KILN_UNARY(exp2, "exp2")
KILN_UNARY(log, "log")
KILN_UNARY(log2, "log2")
KILN_UNARY(log10, "log10")
KILN_UNARY(log1p, "log1p")
KILN_UNARY(expm1, "expm1")
KILN_UNARY(sqrt, "sqrt")
KILN_UNARY(rsqrt, "rsqrt")
KILN_UNARY(reciprocal, "reciprocal")
KILN_UNARY(square, "square")
KILN_UNARY(sin, "sin")
KILN_UNARY(cos, "cos")
KILN_UNARY(tan, "tan")
KILN_UNARY(tanh, "tanh")
KILN_UNARY(sigmoid, "sigmoid")
KILN_UNARY(relu, "relu")
KILN_UNARY(silu, "silu")
KILN_UNARY(erf, "erf")
KILN_UNARY(floor, "floor")
KILN_UNARY(ceil, "ceil")
KILN_UNARY(round, "round")
KILN_UNARY(trunc, "trunc")
KILN_UNARY(logical_not, "logical_not")
#undef KILN_UNARY

Tensor gelu(const Tensor& x, const std::string& approximate) {
  KILN_CHECK(approximate == "none" || approximate == "tanh", "[gelu] approximate must be 'none' or 'tanh', got '",
             approximate, "'");
  return call_op1(approximate == "none" ? KILN_ROW("gelu") : KILN_ROW("gelu_tanh"), {x});
}

Tensor softplus(const Tensor& x, double beta, double threshold) {
  KILN_CHECK(beta != 0.0, "[softplus] beta must be non-zero");
  return call_op1(KILN_ROW("softplus"), {x, scalar_like(beta, x), scalar_like(threshold, x)});
}

#define KILN_BINARY(FN, NAME)                                                                   \
  Tensor FN(const Tensor& a, const Tensor& b) { return call_op1(KILN_ROW(NAME), {a, b}); }      \
  Tensor FN(const Tensor& a, const Scalar& b) { return call_op1(KILN_ROW(NAME), {a, scalar_like(b, a)}); }
KILN_BINARY(mul, "mul")
KILN_BINARY(div, "div")
#undef KILN_BINARY

Tensor add(const Tensor& a, const Tensor& b, const Scalar& alpha) {
  if (alpha == Scalar(1)) return call_op1(KILN_ROW("add"), {a, b});
  return call_op1(KILN_ROW("add"), {a, mul(b, alpha)});
}
Tensor add(const Tensor& a, const Scalar& b, const Scalar& alpha) {
  return call_op1(KILN_ROW("add"), {a, scalar_like(alpha == Scalar(1) ? b : scalar_mul(b, alpha), a)});
}
Tensor sub(const Tensor& a, const Tensor& b, const Scalar& alpha) {
  if (alpha == Scalar(1)) return call_op1(KILN_ROW("sub"), {a, b});
  return call_op1(KILN_ROW("sub"), {a, mul(b, alpha)});
}
Tensor sub(const Tensor& a, const Scalar& b, const Scalar& alpha) {
  return call_op1(KILN_ROW("sub"), {a, scalar_like(alpha == Scalar(1) ? b : scalar_mul(b, alpha), a)});
}

Tensor pow(const Tensor& a, const Tensor& b) {
  check_int_pow(a, b);
  return call_op1(KILN_ROW("pow"), {a, b});
}
Tensor pow(const Tensor& a, const Scalar& b) { return pow(a, scalar_like(b, a)); }
Tensor pow(const Scalar& a, const Tensor& b) { return pow(scalar_like(a, b), b); }

Tensor fmod(const Tensor& a, const Tensor& b) {
  check_int_divisor("fmod", a, b);
  return call_op1(KILN_ROW("fmod"), {a, b});
}
Tensor fmod(const Tensor& a, const Scalar& b) { return fmod(a, scalar_like(b, a)); }
Tensor remainder(const Tensor& a, const Tensor& b) {
  check_int_divisor("remainder", a, b);
  return call_op1(KILN_ROW("remainder"), {a, b});
}
Tensor remainder(const Tensor& a, const Scalar& b) { return remainder(a, scalar_like(b, a)); }

Tensor maximum(const Tensor& a, const Tensor& b) { return call_op1(KILN_ROW("maximum"), {a, b}); }
Tensor minimum(const Tensor& a, const Tensor& b) { return call_op1(KILN_ROW("minimum"), {a, b}); }
Tensor eq(const Tensor& a, const Tensor& b) { return call_op1(KILN_ROW("eq"), {a, b}); }
Tensor ne(const Tensor& a, const Tensor& b) { return call_op1(KILN_ROW("ne"), {a, b}); }
Tensor lt(const Tensor& a, const Tensor& b) { return call_op1(KILN_ROW("lt"), {a, b}); }
Tensor le(const Tensor& a, const Tensor& b) { return call_op1(KILN_ROW("le"), {a, b}); }
Tensor gt(const Tensor& a, const Tensor& b) { return call_op1(KILN_ROW("gt"), {a, b}); }
Tensor ge(const Tensor& a, const Tensor& b) { return call_op1(KILN_ROW("ge"), {a, b}); }
Tensor logical_and(const Tensor& a, const Tensor& b) { return call_op1(KILN_ROW("logical_and"), {a, b}); }
Tensor logical_or(const Tensor& a, const Tensor& b) { return call_op1(KILN_ROW("logical_or"), {a, b}); }

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) { return call_op1(KILN_ROW("where"), {cond, a, b}); }
Tensor where(const Tensor& cond, const Scalar& a, const Tensor& b) { return where(cond, scalar_like(a, b), b); }
Tensor where(const Tensor& cond, const Tensor& a, const Scalar& b) { return where(cond, a, scalar_like(b, a)); }

Tensor clamp(const Tensor& x, std::optional<Scalar> min, std::optional<Scalar> max) {
  KILN_CHECK(min || max, "[clamp] at least one of 'min' or 'max' must not be None");
  if (min && max) return call_op1(KILN_ROW("clamp"), {x, scalar_like(*min, x), scalar_like(*max, x)});
  if (min) return call_op1(KILN_ROW("clamp_min"), {x, scalar_like(*min, x)});
  return call_op1(KILN_ROW("clamp_max"), {x, scalar_like(*max, x)});
}
Tensor clamp(const Tensor& x, const std::optional<Tensor>& min, const std::optional<Tensor>& max) {
  KILN_CHECK(min || max, "[clamp] at least one of 'min' or 'max' must not be None");
  if (min && max) return call_op1(KILN_ROW("clamp"), {x, *min, *max});
  if (min) return call_op1(KILN_ROW("clamp_min"), {x, *min});
  return call_op1(KILN_ROW("clamp_max"), {x, *max});
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, const Scalar& value) {
  return masked_fill(x, mask, scalar_like(value, x));
}
namespace {
void check_masked_fill(const Tensor& x, const Tensor& mask, const Tensor& value) {
  KILN_CHECK(mask.dtype() == DType::Bool, "[masked_fill] expected mask to be a bool tensor, got dtype ", mask.dtype());
  KILN_CHECK(value.dim() == 0, "[masked_fill] value must be a 0-dim tensor, got a tensor with ", value.dim(), " dims");
  Shape s = broadcast_shapes("masked_fill", x.sizes(), mask.sizes());
  KILN_CHECK(IntArrayRef(s) == x.sizes(), "[masked_fill] mask of shape ", mask.sizes(),
             " is not broadcastable to the input shape ", x.sizes());
}
}  // namespace

Tensor masked_fill(const Tensor& x, const Tensor& mask, const Tensor& value) {
  check_masked_fill(x, mask, value);
  // The result keeps x's dtype (value is cast), unlike where().
  return call_op1(KILN_ROW("where"), {mask, value.to(x.dtype()), x});
}

// The in-place forms run their row in place (not copy_(op(self))), so autograd sees one write.
Tensor& Tensor::masked_fill_(const Tensor& mask, const Scalar& v) {
  Tensor value = scalar_like(v, *this);
  check_masked_fill(*this, mask, value);
  return call_op_inplace(KILN_ROW("where"), *this, {mask, value.to(dtype()), *this});
}

Tensor& Tensor::clamp_(std::optional<Scalar> lo, std::optional<Scalar> hi) {
  KILN_CHECK(lo || hi, "[clamp_] at least one of 'min' or 'max' must not be None");
  if (lo && hi) return call_op_inplace(KILN_ROW("clamp"), *this, {*this, scalar_like(*lo, *this), scalar_like(*hi, *this)});
  if (lo) return call_op_inplace(KILN_ROW("clamp_min"), *this, {*this, scalar_like(*lo, *this)});
  return call_op_inplace(KILN_ROW("clamp_max"), *this, {*this, scalar_like(*hi, *this)});
}

Tensor& Tensor::pow_(const Scalar& e) {
  Tensor b = scalar_like(e, *this);
  check_int_pow(*this, b);
  return call_op_inplace(KILN_ROW("pow"), *this, {*this, b});
}

}  // namespace kiln
