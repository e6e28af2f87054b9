#pragma once
// A symbolic scalar for instantiating the pointwise formulas of kernels/formulas.h: each
// arithmetic operation appends a kernel IR expression instead of computing a number, so the
// codegen never restates what an op computes (DESIGN.md §3). The primitives of kiln::fm are
// overloaded here and found by argument-dependent lookup from inside the formulas.
#include <string_view>

#include "fusion/kernel_ir.h"

namespace kiln::fusion {

// Appends expressions to a kernel, folding nothing (LLVM's optimiser does that).
class ExprBuilder {
 public:
  explicit ExprBuilder(Kernel& k) : k_(k) {}
  Kernel& kernel() { return k_; }
  int add(Expr e);
  int constant(double v, DType dtype);
  int unary(ExprOp op, int a);                       // dtype of a (IsNan/Not: Bool)
  int binary(ExprOp op, int a, int b);               // a, b of one dtype; comparisons: Bool
  int select(int cond, int a, int b);
  int cast(int a, DType to);                         // no-op when already `to`
  DType dtype(int e) const { return k_.exprs.at(static_cast<size_t>(e)).dtype; }

 private:
  Kernel& k_;
};

namespace sym {

// The builder and dtype formulas compute in, for T(0.5)-style constants (set per instantiation).
struct Context {
  ExprBuilder* builder = nullptr;
  DType compute = DType::Float32;
};
Context& context();

struct Sym {
  int id = -1;
  Sym() = default;
  // T(1.5), T(0) in a formula: a constant of the compute dtype.
  Sym(double v);  // NOLINT(google-explicit-constructor): formulas write T(0) - x
  Sym(int v) : Sym(static_cast<double>(v)) {}  // NOLINT(google-explicit-constructor)
  static Sym of(int expr) {
    Sym s;
    s.id = expr;
    return s;
  }
};

Sym operator+(Sym a, Sym b);
Sym operator-(Sym a, Sym b);
Sym operator*(Sym a, Sym b);
Sym operator/(Sym a, Sym b);
Sym operator-(Sym a);
Sym operator<(Sym a, Sym b);
Sym operator<=(Sym a, Sym b);
Sym operator>(Sym a, Sym b);
Sym operator>=(Sym a, Sym b);
Sym operator==(Sym a, Sym b);
Sym operator!=(Sym a, Sym b);
Sym operator&&(Sym a, Sym b);
Sym operator||(Sym a, Sym b);

Sym select(Sym c, Sym a, Sym b);
Sym exp(Sym x);
Sym exp2(Sym x);
Sym log(Sym x);
Sym log2(Sym x);
Sym log10(Sym x);
Sym log1p(Sym x);
Sym expm1(Sym x);
Sym sqrt(Sym x);
Sym sin(Sym x);
Sym cos(Sym x);
Sym tan(Sym x);
Sym tanh(Sym x);
Sym erf(Sym x);
Sym floor(Sym x);  // identity on integers
Sym ceil(Sym x);
Sym round(Sym x);
Sym trunc(Sym x);
Sym abs(Sym x);
Sym isnan(Sym x);
Sym fmod(Sym a, Sym b);
Sym pow(Sym a, Sym b);
// cast_bool<T>(cond) in the formulas: a Bool expression as 0/1 of the compute dtype.
template <class T>
Sym cast_bool(Sym c) {
  return Sym::of(context().builder->cast(c.id, context().compute));
}
// max/min are not overloaded: fm::max<Sym> spells out the NaN-propagating select from the
// formulas' own definition.

}  // namespace sym

// Evaluates the formula of pointwise op `name` on `args` (already cast to `compute`).
// Returns -1 when the op has no formula or cannot be computed in `compute` by the codegen.
int apply_formula(ExprBuilder& b, std::string_view name, const std::vector<int>& args, DType compute);
// Whether the codegen can compute op `name` in dtype `compute` with the same results as eager.
bool formula_supported(std::string_view name, DType compute);

}  // namespace kiln::fusion
