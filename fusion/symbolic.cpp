#include "fusion/symbolic.h"

#include <unordered_map>

#include "core/error.h"
#include "kernels/formulas.h"

namespace kiln::fusion {

int ExprBuilder::add(Expr e) {
  k_.exprs.push_back(e);
  return static_cast<int>(k_.exprs.size()) - 1;
}

int ExprBuilder::constant(double v, DType dtype) {
  Expr e;
  e.op = ExprOp::Const;
  e.dtype = dtype;
  if (is_integral(dtype, false))
    e.ivalue = static_cast<int64_t>(v);
  else if (dtype == DType::Bool)
    e.value = v != 0 ? 1 : 0;
  else
    e.value = v;
  return add(e);
}

int ExprBuilder::unary(ExprOp op, int a) {
  Expr e;
  e.op = op;
  e.dtype = op == ExprOp::IsNan || op == ExprOp::Not ? DType::Bool : dtype(a);
  e.args[0] = a;
  return add(e);
}

int ExprBuilder::binary(ExprOp op, int a, int b) {
  KILN_INTERNAL_ASSERT(dtype(a) == dtype(b), "fusion: ", expr_op_name(op), " of ", dtype(a), " and ", dtype(b));
  Expr e;
  e.op = op;
  const bool logical = op >= ExprOp::Lt && op <= ExprOp::Or;
  e.dtype = logical ? DType::Bool : dtype(a);
  // Bool arithmetic as the formulas mean it for bool tensors: + is or, * is and.
  if (dtype(a) == DType::Bool && op == ExprOp::Add) e.op = ExprOp::Or;
  if (dtype(a) == DType::Bool && op == ExprOp::Mul) e.op = ExprOp::And;
  e.args[0] = a;
  e.args[1] = b;
  return add(e);
}

int ExprBuilder::select(int cond, int a, int b) {
  KILN_INTERNAL_ASSERT(dtype(cond) == DType::Bool && dtype(a) == dtype(b), "fusion: malformed select");
  Expr e;
  e.op = ExprOp::Select;
  e.dtype = dtype(a);
  e.args[0] = cond;
  e.args[1] = a;
  e.args[2] = b;
  return add(e);
}

int ExprBuilder::cast(int a, DType to) {
  if (dtype(a) == to) return a;
  Expr e;
  e.op = ExprOp::Cast;
  e.dtype = to;
  e.args[0] = a;
  return add(e);
}

namespace sym {

Context& context() {
  thread_local Context c;
  return c;
}

namespace {
ExprBuilder& b() { return *context().builder; }
Sym un(ExprOp op, Sym x) { return Sym::of(b().unary(op, x.id)); }
Sym bin(ExprOp op, Sym x, Sym y) { return Sym::of(b().binary(op, x.id, y.id)); }
bool integral(Sym x) { return !is_floating_point(b().dtype(x.id)); }
}  // namespace

Sym::Sym(double v) : id(b().constant(v, context().compute)) {}

Sym operator+(Sym a, Sym b) { return bin(ExprOp::Add, a, b); }
Sym operator-(Sym a, Sym b) { return bin(ExprOp::Sub, a, b); }
Sym operator*(Sym a, Sym b) { return bin(ExprOp::Mul, a, b); }
Sym operator/(Sym a, Sym b) { return bin(ExprOp::Div, a, b); }
Sym operator-(Sym a) { return un(ExprOp::Neg, a); }
Sym operator<(Sym a, Sym b) { return bin(ExprOp::Lt, a, b); }
Sym operator<=(Sym a, Sym b) { return bin(ExprOp::Le, a, b); }
Sym operator>(Sym a, Sym b) { return bin(ExprOp::Gt, a, b); }
Sym operator>=(Sym a, Sym b) { return bin(ExprOp::Ge, a, b); }
Sym operator==(Sym a, Sym b) { return bin(ExprOp::Eq, a, b); }
Sym operator!=(Sym a, Sym b) { return bin(ExprOp::Ne, a, b); }
Sym operator&&(Sym a, Sym b) { return bin(ExprOp::And, a, b); }
Sym operator||(Sym a, Sym b) { return bin(ExprOp::Or, a, b); }

Sym select(Sym c, Sym a, Sym b_) { return Sym::of(b().select(c.id, a.id, b_.id)); }
Sym exp(Sym x) { return un(ExprOp::Exp, x); }
Sym exp2(Sym x) { return un(ExprOp::Exp2, x); }
Sym log(Sym x) { return un(ExprOp::Log, x); }
Sym log2(Sym x) { return un(ExprOp::Log2, x); }
Sym log10(Sym x) { return un(ExprOp::Log10, x); }
Sym log1p(Sym x) { return un(ExprOp::Log1p, x); }
Sym expm1(Sym x) { return un(ExprOp::Expm1, x); }
Sym sqrt(Sym x) { return un(ExprOp::Sqrt, x); }
Sym sin(Sym x) { return un(ExprOp::Sin, x); }
Sym cos(Sym x) { return un(ExprOp::Cos, x); }
Sym tan(Sym x) { return un(ExprOp::Tan, x); }
Sym tanh(Sym x) { return un(ExprOp::Tanh, x); }
Sym erf(Sym x) { return un(ExprOp::Erf, x); }
Sym floor(Sym x) { return integral(x) ? x : un(ExprOp::Floor, x); }
Sym ceil(Sym x) { return integral(x) ? x : un(ExprOp::Ceil, x); }
Sym round(Sym x) { return integral(x) ? x : un(ExprOp::Round, x); }
Sym trunc(Sym x) { return integral(x) ? x : un(ExprOp::Trunc, x); }
Sym abs(Sym x) { return b().dtype(x.id) == DType::Bool ? x : un(ExprOp::Abs, x); }
Sym isnan(Sym x) { return un(ExprOp::IsNan, x); }
Sym fmod(Sym a, Sym b_) { return bin(ExprOp::Fmod, a, b_); }
Sym pow(Sym a, Sym b_) { return bin(ExprOp::Pow, a, b_); }

}  // namespace sym

namespace {

using Apply = int (*)(const std::vector<int>& args);
struct FormulaInfo {
  Apply apply;
  bool bool_ok;
};

template <class F>
int call_formula(const std::vector<int>& a) {
  using sym::Sym;
  if constexpr (F::arity == 1)
    return Sym(F::apply(Sym::of(a[0]))).id;
  else if constexpr (F::arity == 2)
    return Sym(F::apply(Sym::of(a[0]), Sym::of(a[1]))).id;
  else
    return Sym(F::apply(Sym::of(a[0]), Sym::of(a[1]), Sym::of(a[2]))).id;
}

template <class... F>
void add_all(std::unordered_map<std::string_view, FormulaInfo>& m, formulas::List<F...>) {
  (m.emplace(F::name, FormulaInfo{&call_formula<F>, F::bool_ok}), ...);
}

const std::unordered_map<std::string_view, FormulaInfo>& formula_table() {
  static const auto table = [] {
    std::unordered_map<std::string_view, FormulaInfo> m;
    add_all(m, formulas::AllPointwise{});
    return m;
  }();
  return table;
}

}  // namespace

bool formula_supported(std::string_view name, DType compute) {
  auto it = formula_table().find(name);
  if (it == formula_table().end()) return false;
  if (compute == DType::Float16 || compute == DType::BFloat16) return false;  // eager computes them in float
  if (is_floating_point(compute)) return true;
  if (compute == DType::Bool)
    return name == "eq" || name == "ne" || name == "logical_and" || name == "logical_or" || name == "logical_not" ||
           name == "where" || name == "add" || name == "mul";
  // Integer pow/fmod/remainder have data-dependent loops and zero checks in eager: not fused.
  return name != "pow" && name != "fmod" && name != "remainder";
}

int apply_formula(ExprBuilder& b, std::string_view name, const std::vector<int>& args, DType compute) {
  if (!formula_supported(name, compute)) return -1;
  const FormulaInfo& f = formula_table().at(name);
  sym::Context& ctx = sym::context();
  sym::Context saved = ctx;
  ctx = sym::Context{&b, compute};
  int r = f.apply(args);
  ctx = saved;
  return r;
}

}  // namespace kiln::fusion
