// kiln::jit::compile gives what eager gives, for every op of the registry: each row is run alone
// (all the dtypes it supports, contiguous and strided inputs, in-place forms on arguments, random
// ops under one seed) three times — two traced calls and a replay — and its gradients are compared
// with backward() inside and outside the compiled call. Then 200 random chains of 5-15 ops
// (pointwise with broadcasting, reductions, views, matmul, softmax, in-place writes on
// intermediates and on views of them) are compared the same way.
//
// Passes reorder no arithmetic, so results are expected to be (and are counted as) bitwise equal;
// the comparison allows rtol 1e-6 / atol 1e-7 for float32 and 1e-12 for float64, exact for
// integers and bool. A row without a case fails the suite (JitOpsTable.EveryRowHasACase).
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "autograd/grad_mode.h"
#include "core/op.h"
#include "jit/compile.h"
#include "kiln/kiln.h"
#include "op_table.h"
#include "test_util.h"

using namespace kiln;
using optable::Domain;
using optable::Layout;

namespace {

// --- comparison ---------------------------------------------------------------------------------

struct Tally {
  int64_t tensors = 0, bitwise = 0;
};
Tally& tally() {
  static Tally t;
  return t;
}

std::pair<double, double> tol(DType t) {
  switch (t) {
    case DType::Float64: return {1e-12, 1e-12};
    case DType::Float32: return {1e-6, 1e-7};
    case DType::Float16: return {1e-3, 1e-3};
    case DType::BFloat16: return {8e-3, 8e-3};
    default: return {0.0, 0.0};
  }
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  Tensor x = a.contiguous(), y = b.contiguous();
  return x.numel() == 0 || std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()) == 0;
}

// Compiled `got` against eager `want`: dtype, shape, then values (exact for integers and bool).
::testing::AssertionResult same(const Tensor& got, const Tensor& want) {
  if (got.defined() != want.defined())
    return ::testing::AssertionFailure() << "defined " << got.defined() << " vs eager " << want.defined();
  if (!got.defined()) return ::testing::AssertionSuccess();
  if (got.dtype() != want.dtype())
    return ::testing::AssertionFailure() << "dtype " << got.dtype() << " vs eager " << want.dtype();
  if (got.sizes() != want.sizes())
    return ::testing::AssertionFailure() << "shape " << got.sizes() << " vs eager " << want.sizes();
  ++tally().tensors;
  if (bitwise_equal(got, want)) {
    ++tally().bitwise;
    return ::testing::AssertionSuccess();
  }
  if (!is_floating_point(got.dtype())) {
    Tensor a = got.to(kInt64).contiguous(), b = want.to(kInt64).contiguous();
    for (int64_t i = 0; i < a.numel(); ++i)
      if (a.data_ptr<int64_t>()[i] != b.data_ptr<int64_t>()[i])
        return ::testing::AssertionFailure() << "element " << i << ": " << a.data_ptr<int64_t>()[i] << " vs eager "
                                             << b.data_ptr<int64_t>()[i];
    return ::testing::AssertionSuccess();
  }
  auto [rtol, atol] = tol(got.dtype());
  return kiln::testing::close(got, want, rtol, atol);
}

::testing::AssertionResult same_list(const TensorList& got, const TensorList& want) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << got.size() << " results vs eager " << want.size();
  for (size_t i = 0; i < got.size(); ++i) {
    auto r = same(got[i], want[i]);
    if (!r) return ::testing::AssertionFailure() << "result " << i << ": " << r.message();
  }
  return ::testing::AssertionSuccess();
}

// Deep copies (eager results may be views of inputs that later calls overwrite).
TensorList snapshot(const TensorList& l) {
  NoGradGuard no_grad;
  TensorList out;
  for (const Tensor& t : l) out.push_back(t.defined() ? t.detach().clone() : Tensor());
  return out;
}

// --- the table ----------------------------------------------------------------------------------

using Fn = std::function<TensorList(const TensorList& in, DType dt)>;
// Makes input `index` (shape, dtype of the run, seed) — for indices, masks, probabilities.
using MakeFn = std::function<Tensor(size_t index, const Shape& shape, DType dt, uint64_t seed)>;

struct Case {
  std::string row;    // the registry row it exercises (checked in the captured graph)
  std::string label;  // unique within the row
  std::vector<std::vector<Shape>> shape_sets;
  std::vector<DType> dtypes;
  Domain domain{};
  Fn f;
  MakeFn make{};                 // inputs it returns are used as made (no layout)
  std::vector<int> made{};       // which inputs `make` makes (all when empty and make is set)
  bool random = false;           // draws from the default generator
  bool inplace = false;          // f writes input 0 (a fresh tensor each call) and returns it
  bool layouts = true;           // also transposed, sliced and broadcast inputs
  bool grad = true;              // gradients too, if the row is differentiable
  bool replays = true;           // the third call is served by replay
  std::function<int(DType)> breaks{};  // graph breaks per traced call (default 0)
};

const std::vector<DType> kF = {kFloat32, kFloat64};
const std::vector<DType> kFH = {kFloat32, kFloat64, kFloat16, kBFloat16};
const std::vector<DType> kNum = optable::numeric_dtypes();
const std::vector<DType> kAll = optable::all_dtypes();
const std::vector<DType> kInts = {kInt64, kInt32, kInt16, kInt8, kUInt8};

std::vector<DType> plus(std::vector<DType> a, const std::vector<DType>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

Fn one(std::function<Tensor(const TensorList&)> f) {
  return [f](const TensorList& in, DType) { return TensorList{f(in)}; };
}
Fn many(std::function<TensorList(const TensorList&)> f) {
  return [f](const TensorList& in, DType) { return f(in); };
}
Fn with_dtype(std::function<Tensor(const TensorList&, DType)> f) {
  return [f](const TensorList& in, DType dt) { return TensorList{f(in, dt)}; };
}
// An in-place form: writes input 0 and returns it.
Fn inplace(std::function<void(Tensor&, const TensorList&)> f) {
  return [f](const TensorList& in, DType) {
    Tensor t = in[0];
    f(t, in);
    return TensorList{t};
  };
}
std::function<int(DType)> breaks_for_integers(int n) {
  return [n](DType dt) { return is_floating_point(dt) ? 0 : n; };
}

Tensor rand_values(const Shape& s, DType dt, Domain d, uint64_t seed) { return optable::random_input(s, dt, d, seed); }

// Index-like inputs: integers in [lo, hi] of dtype `dt`.
MakeFn ints_in(int64_t lo, int64_t hi, DType dt = kInt64) {
  return [=](size_t, const Shape& s, DType, uint64_t seed) {
    return rand_values(s, dt, Domain{static_cast<double>(lo), static_cast<double>(hi)}, seed);
  };
}
MakeFn bool_mask() {
  return [](size_t, const Shape& s, DType, uint64_t seed) { return rand_values(s, kBool, {}, seed); };
}

std::vector<Case> unary(const std::string& row, std::function<Tensor(const Tensor&)> op, std::vector<DType> dts,
                        Domain d = {}) {
  Fn f = one([op](const TensorList& in) { return op(in[0]); });
  return {Case{.row = row, .label = "", .shape_sets = {{{3, 4}}, {{}}, {{0, 3}}}, .dtypes = std::move(dts), .domain = d,
               .f = f}};
}

std::vector<Case> binary(const std::string& row, std::function<Tensor(const Tensor&, const Tensor&)> op,
                         std::vector<DType> dts, Domain d = {}, MakeFn make = {}, std::vector<int> made = {}) {
  Fn f = one([op](const TensorList& in) { return op(in[0], in[1]); });
  return {Case{.row = row,
               .label = "",
               .shape_sets = {{{3, 4}, {3, 4}}, {{2, 3, 4}, {4}}, {{3, 1}, {1, 4}}, {{}, {2, 3}}, {{0, 3}, {3}}},
               .dtypes = std::move(dts),
               .domain = d,
               .f = f,
               .make = std::move(make),
               .made = std::move(made)}};
}

// A strictly positive or non-zero divisor (second input).
MakeFn nonzero_second(Domain first) {
  return [first](size_t i, const Shape& s, DType dt, uint64_t seed) {
    if (i == 0) return rand_values(s, dt, first, seed);
    Tensor mag = rand_values(s, dt, Domain{1, 3}, seed);
    if (dt == kUInt8 || dt == kBool) return mag;
    Tensor sign = rand_values(s, kBool, {}, seed + 7);
    return where(sign, mag, neg(mag));
  };
}

void add(std::vector<Case>& to, std::vector<Case> more) {
  for (Case& c : more) to.push_back(std::move(c));
}

std::vector<Case> make_table() {
  std::vector<Case> t;
  const Domain pos{0.1, 2.0}, unit{-0.9, 0.9};

  // --- copy / fill ---
  t.push_back({.row = "copy", .label = "to_other_dtype", .shape_sets = {{{3, 4}}, {{}}}, .dtypes = kAll,
               .f = one([](const TensorList& in) { return in[0].to(in[0].dtype() == kFloat64 ? kFloat32 : kFloat64); })});
  t.push_back({.row = "copy", .label = "clone", .shape_sets = {{{3, 4}}, {{2, 3, 2}}}, .dtypes = kAll,
               .f = one([](const TensorList& in) { return in[0].clone(); })});
  t.push_back({.row = "copy", .label = "contiguous", .shape_sets = {{{3, 4}}}, .dtypes = kF,
               .f = one([](const TensorList& in) { return in[0].t().contiguous(); })});
  t.push_back({.row = "copy", .label = "copy_", .shape_sets = {{{3, 4}, {3, 4}}, {{2, 3}, {3}}}, .dtypes = kAll,
               .f = inplace([](Tensor& x, const TensorList& in) { x.copy_(in[1]); }), .inplace = true});
  t.push_back({.row = "copy", .label = "copy_cast", .shape_sets = {{{3, 4}, {3, 4}}}, .dtypes = kF,
               .f = inplace([](Tensor& x, const TensorList& in) { x.copy_(in[1]); }),
               .make = [](size_t i, const Shape& s, DType dt, uint64_t seed) {
                 return rand_values(s, i == 0 ? dt : kInt32, Domain{-5, 5}, seed);
               },
               .made = {1}, .inplace = true});
  t.push_back({.row = "fill", .label = "fill_", .shape_sets = {{{3, 4}}, {{}}}, .dtypes = kAll,
               .f = inplace([](Tensor& x, const TensorList&) { x.fill_(Scalar(1)); }), .inplace = true});
  t.push_back({.row = "fill", .label = "zero_", .shape_sets = {{{3, 4}}}, .dtypes = kNum,
               .f = inplace([](Tensor& x, const TensorList&) { x.zero_(); }), .inplace = true});
  t.push_back({.row = "fill", .label = "full_like", .shape_sets = {{{3, 4}}}, .dtypes = kF,
               .f = one([](const TensorList& in) { return full_like(in[0], 2.5) + in[0]; })});
  t.push_back({.row = "fill", .label = "factories", .shape_sets = {{}}, .dtypes = kNum,
               .f = with_dtype([](const TensorList&, DType dt) { return zeros({2, 3}, dt) + ones({3}, dt) + full({2, 1}, 2, dt); })});

  // --- unary pointwise ---
  add(t, unary("neg", [](const Tensor& x) { return neg(x); }, {kFloat32, kFloat64, kFloat16, kBFloat16, kInt64, kInt32, kInt8}));
  add(t, unary("abs", [](const Tensor& x) { return abs(x); }, kNum));
  add(t, unary("sign", [](const Tensor& x) { return sign(x); }, kNum));
  add(t, unary("exp", [](const Tensor& x) { return exp(x); }, plus(kFH, {kInt64})));
  add(t, unary("exp2", [](const Tensor& x) { return exp2(x); }, plus(kFH, {kInt32})));
  add(t, unary("log", [](const Tensor& x) { return log(x); }, plus(kFH, {kInt64}), pos));
  add(t, unary("log2", [](const Tensor& x) { return log2(x); }, kFH, pos));
  add(t, unary("log10", [](const Tensor& x) { return log10(x); }, kFH, pos));
  add(t, unary("log1p", [](const Tensor& x) { return log1p(x); }, kFH, unit));
  add(t, unary("expm1", [](const Tensor& x) { return expm1(x); }, kFH));
  add(t, unary("sqrt", [](const Tensor& x) { return sqrt(x); }, plus(kFH, {kInt64}), pos));
  add(t, unary("rsqrt", [](const Tensor& x) { return rsqrt(x); }, kFH, pos));
  add(t, unary("reciprocal", [](const Tensor& x) { return reciprocal(x); }, kFH, pos));
  add(t, unary("square", [](const Tensor& x) { return square(x); }, plus(kFH, {kInt64, kInt32})));
  add(t, unary("sin", [](const Tensor& x) { return sin(x); }, plus(kFH, {kInt16})));
  add(t, unary("cos", [](const Tensor& x) { return cos(x); }, kFH));
  add(t, unary("tan", [](const Tensor& x) { return tan(x); }, kFH, unit));
  add(t, unary("tanh", [](const Tensor& x) { return tanh(x); }, kFH));
  add(t, unary("sigmoid", [](const Tensor& x) { return sigmoid(x); }, plus(kFH, {kUInt8})));
  add(t, unary("relu", [](const Tensor& x) { return relu(x); }, plus(kFH, {kInt64, kInt32})));
  add(t, unary("gelu", [](const Tensor& x) { return gelu(x); }, kFH));
  add(t, unary("gelu_tanh", [](const Tensor& x) { return gelu(x, "tanh"); }, kFH));
  add(t, unary("silu", [](const Tensor& x) { return silu(x); }, kFH));
  add(t, unary("softplus", [](const Tensor& x) { return softplus(x, 2.0, 1.5); }, kFH));
  add(t, unary("erf", [](const Tensor& x) { return erf(x); }, kFH));
  add(t, unary("floor", [](const Tensor& x) { return floor(x); }, plus(kFH, {kInt64})));
  add(t, unary("ceil", [](const Tensor& x) { return ceil(x); }, plus(kFH, {kInt32})));
  add(t, unary("round", [](const Tensor& x) { return round(x); }, plus(kFH, {kInt16})));
  add(t, unary("trunc", [](const Tensor& x) { return trunc(x); }, plus(kFH, {kInt8})));
  add(t, unary("logical_not", [](const Tensor& x) { return logical_not(x); }, kAll));

  // --- binary pointwise ---
  add(t, binary("add", [](const Tensor& a, const Tensor& b) { return add(a, b); }, kAll));
  add(t, binary("sub", [](const Tensor& a, const Tensor& b) { return sub(a, b); }, kNum));
  add(t, binary("mul", [](const Tensor& a, const Tensor& b) { return mul(a, b); }, kAll));
  add(t, binary("div", [](const Tensor& a, const Tensor& b) { return div(a, b); }, kNum, {}, nonzero_second({-2, 2})));
  add(t, binary("pow", [](const Tensor& a, const Tensor& b) { return pow(a, b); }, plus(kFH, {kInt64}), Domain{0, 3}));
  add(t, binary("fmod", [](const Tensor& a, const Tensor& b) { return fmod(a, b); }, kNum, {}, nonzero_second({-5, 5})));
  add(t, binary("remainder", [](const Tensor& a, const Tensor& b) { return remainder(a, b); }, kNum, {},
                nonzero_second({-5, 5})));
  add(t, binary("maximum", [](const Tensor& a, const Tensor& b) { return maximum(a, b); }, kAll));
  add(t, binary("minimum", [](const Tensor& a, const Tensor& b) { return minimum(a, b); }, kNum));
  add(t, binary("eq", [](const Tensor& a, const Tensor& b) { return eq(a, b); }, kAll, Domain{-1, 1}));
  add(t, binary("ne", [](const Tensor& a, const Tensor& b) { return ne(a, b); }, kAll, Domain{-1, 1}));
  add(t, binary("lt", [](const Tensor& a, const Tensor& b) { return lt(a, b); }, kAll));
  add(t, binary("le", [](const Tensor& a, const Tensor& b) { return le(a, b); }, kNum, Domain{-1, 1}));
  add(t, binary("gt", [](const Tensor& a, const Tensor& b) { return gt(a, b); }, kNum));
  add(t, binary("ge", [](const Tensor& a, const Tensor& b) { return ge(a, b); }, kAll, Domain{-1, 1}));
  add(t, binary("logical_and", [](const Tensor& a, const Tensor& b) { return logical_and(a, b); }, kAll, Domain{-1, 1}));
  add(t, binary("logical_or", [](const Tensor& a, const Tensor& b) { return logical_or(a, b); }, kAll, Domain{-1, 1}));
  // Integer divisors and exponents are checked on the host (item()): one break per call.
  for (Case& c : t)
    if (c.row == "fmod" || c.row == "remainder" || c.row == "pow") c.breaks = breaks_for_integers(1);

  // Scalar operands (wrapped numbers), alpha, operators.
  t.push_back({.row = "add", .label = "scalar_alpha", .shape_sets = {{{3, 4}, {4}}}, .dtypes = kNum,
               .f = one([](const TensorList& in) { return add(in[0], in[1], 2) + 3; })});
  t.push_back({.row = "sub", .label = "scalar_alpha", .shape_sets = {{{3, 4}, {4}}}, .dtypes = kF,
               .f = one([](const TensorList& in) { return sub(in[0], in[1], 0.5) - 1.25; })});
  t.push_back({.row = "mul", .label = "scalar", .shape_sets = {{{3, 4}}}, .dtypes = kNum,
               .f = one([](const TensorList& in) { return in[0] * 3 * 0.5; })});
  t.push_back({.row = "div", .label = "scalar", .shape_sets = {{{3, 4}}}, .dtypes = kNum,
               .f = one([](const TensorList& in) { return in[0] / 4; })});
  t.push_back({.row = "pow", .label = "scalar_exponent", .shape_sets = {{{3, 4}}}, .dtypes = kFH, .domain = pos,
               .f = one([](const TensorList& in) { return pow(in[0], 2.5) + pow(2.0, in[0]); })});
  t.push_back({.row = "eq", .label = "scalar", .shape_sets = {{{3, 4}}}, .dtypes = kNum, .domain = {-2, 2},
               .f = many([](const TensorList& in) {
                 return TensorList{in[0] == 1, in[0] != 1, in[0] < 0, in[0] <= 0, in[0] > 1, in[0] >= 1};
               })});
  // In-place forms on an argument.
  t.push_back({.row = "add", .label = "add_", .shape_sets = {{{3, 4}, {3, 4}}, {{3, 4}, {4}}}, .dtypes = kNum,
               .f = inplace([](Tensor& x, const TensorList& in) { x.add_(in[1]).add_(2); }), .inplace = true});
  t.push_back({.row = "add", .label = "add_alpha", .shape_sets = {{{3, 4}, {1, 4}}}, .dtypes = kF,
               .f = inplace([](Tensor& x, const TensorList& in) { x.add_(in[1], -0.5); }), .inplace = true});
  t.push_back({.row = "sub", .label = "sub_", .shape_sets = {{{3, 4}, {3, 4}}}, .dtypes = kNum,
               .f = inplace([](Tensor& x, const TensorList& in) { x.sub_(in[1]); x -= 1; }), .inplace = true});
  t.push_back({.row = "mul", .label = "mul_", .shape_sets = {{{3, 4}, {3, 4}}, {{3, 4}, {3, 1}}}, .dtypes = kNum,
               .f = inplace([](Tensor& x, const TensorList& in) { x.mul_(in[1]).mul_(2); }), .inplace = true});
  t.push_back({.row = "div", .label = "div_", .shape_sets = {{{3, 4}, {3, 4}}}, .dtypes = kF,
               .f = inplace([](Tensor& x, const TensorList& in) { x.div_(in[1]); x /= 2; }),
               .make = nonzero_second({-2, 2}), .made = {1}, .inplace = true});
  t.push_back({.row = "pow", .label = "pow_", .shape_sets = {{{3, 4}}}, .dtypes = kF, .domain = pos,
               .f = inplace([](Tensor& x, const TensorList&) { x.pow_(1.5); }), .inplace = true});
  t.push_back({.row = "exp", .label = "unary_inplace", .shape_sets = {{{3, 4}}}, .dtypes = kF, .domain = pos,
               .f = inplace([](Tensor& x, const TensorList&) { x.exp_().log_().sqrt_().neg_().abs_().relu_().sigmoid_().tanh_(); }),
               .inplace = true});

  // --- clamp / where ---
  t.push_back({.row = "clamp_min", .label = "", .shape_sets = {{{3, 4}}, {{}}}, .dtypes = kNum,
               .f = one([](const TensorList& in) { return clamp(in[0], Scalar(-1)); })});
  t.push_back({.row = "clamp_max", .label = "", .shape_sets = {{{3, 4}}, {{}}}, .dtypes = kNum,
               .f = one([](const TensorList& in) { return clamp(in[0], std::nullopt, Scalar(1)); })});
  t.push_back({.row = "clamp", .label = "scalars", .shape_sets = {{{3, 4}}, {{}}}, .dtypes = kNum,
               .f = one([](const TensorList& in) { return clamp(in[0], Scalar(-1), Scalar(1)); })});
  t.push_back({.row = "clamp", .label = "tensors", .shape_sets = {{{3, 4}, {4}, {3, 1}}}, .dtypes = kNum,
               .f = one([](const TensorList& in) {
                 return clamp(in[0], std::optional<Tensor>(in[1] - 1), std::optional<Tensor>(in[2] + 1));
               })});
  t.push_back({.row = "clamp_min", .label = "tensor_min", .shape_sets = {{{3, 4}, {4}}}, .dtypes = kF,
               .f = one([](const TensorList& in) { return clamp(in[0], std::optional<Tensor>(in[1]), std::nullopt); })});
  t.push_back({.row = "clamp_max", .label = "tensor_max", .shape_sets = {{{3, 4}, {4}}}, .dtypes = kF,
               .f = one([](const TensorList& in) { return clamp(in[0], std::nullopt, std::optional<Tensor>(in[1])); })});
  t.push_back({.row = "clamp", .label = "clamp_", .shape_sets = {{{3, 4}}}, .dtypes = kNum,
               .f = inplace([](Tensor& x, const TensorList&) { x.clamp_(Scalar(-1), Scalar(1)); }), .inplace = true});
  t.push_back({.row = "clamp_min", .label = "clamp_min_", .shape_sets = {{{3, 4}}}, .dtypes = kF,
               .f = inplace([](Tensor& x, const TensorList&) { x.clamp_(Scalar(-0.5)); }), .inplace = true});
  t.push_back({.row = "clamp_max", .label = "clamp_max_", .shape_sets = {{{3, 4}}}, .dtypes = kF,
               .f = inplace([](Tensor& x, const TensorList&) { x.clamp_(std::nullopt, Scalar(0.5)); }), .inplace = true});
  t.push_back({.row = "where", .label = "", .shape_sets = {{{3, 4}, {3, 4}, {3, 4}}, {{3, 1}, {4}, {2, 3, 4}}}, .dtypes = kAll,
               .f = one([](const TensorList& in) { return where(in[0], in[1], in[2]); }), .make = bool_mask(), .made = {0}});
  t.push_back({.row = "where", .label = "scalar_branch", .shape_sets = {{{3, 4}, {3, 4}}}, .dtypes = kF,
               .f = one([](const TensorList& in) { return where(in[0], 0.5, in[1]) + where(in[0], in[1], -2.0); }),
               .make = bool_mask(), .made = {0}});
  t.push_back({.row = "where", .label = "masked_fill", .shape_sets = {{{3, 4}, {3, 4}}, {{3, 4}, {4}}}, .dtypes = kNum,
               .f = one([](const TensorList& in) { return masked_fill(in[0], in[1], Scalar(7)); }), .make = bool_mask(),
               .made = {1}});
  t.push_back({.row = "where", .label = "masked_fill_", .shape_sets = {{{3, 4}, {3, 4}}, {{3, 4}, {3, 1}}}, .dtypes = kNum,
               .f = inplace([](Tensor& x, const TensorList& in) { x.masked_fill_(in[1], Scalar(-3)); }),
               .make = bool_mask(), .made = {1}, .inplace = true});

  // --- views (results alias the argument) ---
  auto view_case = [&](const std::string& row, const std::string& label, std::vector<std::vector<Shape>> sets,
                       std::function<Tensor(const Tensor&)> op) {
    t.push_back({.row = row, .label = label, .shape_sets = sets, .dtypes = kAll,
                 .f = one([op](const TensorList& in) { return op(in[0]); })});
    // ... and of an intermediate, written through the view afterwards.
    t.push_back({.row = row, .label = label.empty() ? "of_intermediate" : label + "_of_intermediate",
                 .shape_sets = {sets.front()}, .dtypes = kF,
                 .f = many([op](const TensorList& in) {
                   Tensor y = in[0] * 2;
                   Tensor v = op(y);
                   Tensor r = v + 1;
                   v.mul_(3);
                   return TensorList{r, y, v};
                 })});
  };
  view_case("view", "", {{{2, 3, 4}}}, [](const Tensor& x) { return x.contiguous().view({6, 4}); });
  view_case("permute", "", {{{2, 3, 4}}}, [](const Tensor& x) { return x.permute({2, 0, 1}); });
  view_case("transpose", "", {{{2, 3, 4}}}, [](const Tensor& x) { return x.transpose(0, 2); });
  view_case("unsqueeze", "", {{{2, 3, 4}}}, [](const Tensor& x) { return x.unsqueeze(1); });
  view_case("squeeze", "", {{{2, 3, 4}}}, [](const Tensor& x) { return x.unsqueeze(0).unsqueeze(3).squeeze(); });
  view_case("expand", "", {{{2, 3, 4}}}, [](const Tensor& x) { return x.narrow(1, 0, 1).expand({2, 5, 4}); });
  view_case("select", "", {{{2, 3, 4}}}, [](const Tensor& x) { return x.select(1, 2); });
  view_case("slice", "", {{{2, 3, 4}}}, [](const Tensor& x) { return x.slice(2, 1, std::nullopt, 2); });
  view_case("narrow", "", {{{2, 3, 4}}}, [](const Tensor& x) { return x.narrow(2, 1, 2); });
  view_case("unfold", "", {{{2, 3, 4}}}, [](const Tensor& x) { return x.unfold(2, 2, 1); });
  view_case("as_strided", "", {{{2, 3, 4}}}, [](const Tensor& x) { return x.contiguous().as_strided({3, 2}, {4, 1}, 1); });
  view_case("diagonal", "", {{{2, 3, 4}}}, [](const Tensor& x) { return x.diagonal(1, 1, 2); });
  view_case("alias", "", {{{4}}}, [](const Tensor& x) { return x.t(); });
  t.push_back({.row = "narrow", .label = "split_chunk", .shape_sets = {{{5, 4}}}, .dtypes = kF,
               .f = many([](const TensorList& in) {
                 TensorList r = split(in[0], 2, 0);
                 for (const Tensor& c : chunk(in[0], 3, 1)) r.push_back(c);
                 return r;
               })});
  t.push_back({.row = "select", .label = "unbind", .shape_sets = {{{3, 4}}}, .dtypes = kF,
               .f = many([](const TensorList& in) { return unbind(in[0], 1); })});
  t.push_back({.row = "view", .label = "reshape_copy", .shape_sets = {{{3, 4}}}, .dtypes = kF,
               .f = one([](const TensorList& in) { return in[0].t().reshape({12}) + in[0].flatten(); })});

  // --- reductions ---
  auto red = [&](const std::string& row, const std::string& label, std::vector<DType> dts,
                 std::function<Tensor(const Tensor&)> op, Domain d = {}) {
    t.push_back({.row = row, .label = label, .shape_sets = {{{3, 4, 5}}, {{4}}}, .dtypes = std::move(dts),
                 .domain = d, .f = one([op](const TensorList& in) { return op(in[0]); })});
  };
  red("sum", "all", plus(kFH, {kInt64, kInt32, kUInt8, kBool}), [](const Tensor& x) { return sum(x); });
  red("sum", "dims_keepdim", kNum, [](const Tensor& x) { return x.dim() > 1 ? sum(x, {0, -1}, true) : sum(x, {0}, true); });
  red("sum", "dtype", kF, [](const Tensor& x) { return sum(x, {0}, false, kFloat64); });
  red("mean", "all", kFH, [](const Tensor& x) { return mean(x); });
  red("mean", "dim", kF, [](const Tensor& x) { return mean(x, {-1}, true); });
  red("prod", "all", plus(kF, {kInt64}), [](const Tensor& x) { return prod(x); }, Domain{0.5, 1.5});
  red("prod", "dim", kF, [](const Tensor& x) { return prod(x, {0}, false); });
  red("amax", "", kNum, [](const Tensor& x) { return amax(x, {-1}) + max(x); });
  red("amin", "", kNum, [](const Tensor& x) { return amin(x, {0}, true) + min(x); });
  t.push_back({.row = "max_dim", .label = "", .shape_sets = {{{3, 4, 5}}, {{4}}}, .dtypes = kNum,
               .f = many([](const TensorList& in) {
                 auto [v, i] = max(in[0], -1, false);
                 return TensorList{v, i};
               })});
  t.push_back({.row = "min_dim", .label = "", .shape_sets = {{{3, 4, 5}}, {{4}}}, .dtypes = kNum,
               .f = many([](const TensorList& in) {
                 auto [v, i] = min(in[0], 0, true);
                 return TensorList{v, i};
               })});
  red("argmax", "", kNum, [](const Tensor& x) { return argmax(x, -1) + argmax(x); });
  red("argmin", "", kNum, [](const Tensor& x) { return argmin(x, 0, true) + argmin(x); });
  red("var", "", kFH, [](const Tensor& x) { return var(x, {-1}, 1, true) + var(x); });
  red("std", "", kF, [](const Tensor& x) { return kiln::std(x, {0}, 0) + kiln::std(x); });
  t.push_back({.row = "var_mean", .label = "", .shape_sets = {{{3, 4, 5}}, {{4}}}, .dtypes = kF,
               .f = many([](const TensorList& in) {
                 auto [v, m] = var_mean(in[0], {-1}, 1, false);
                 return TensorList{v, m};
               })});
  red("logsumexp", "", kFH, [](const Tensor& x) { return logsumexp(x, {-1}, true); });
  red("all", "", kAll, [](const Tensor& x) { return logical_and(all(x, {-1}), all(x)); }, Domain{0, 2});
  red("any", "", kAll, [](const Tensor& x) { return logical_or(any(x, {0}, true), any(x)); }, Domain{-1, 1});
  red("softmax", "", kFH, [](const Tensor& x) { return softmax(x, -1); });
  red("softmax", "dtype", {kFloat32}, [](const Tensor& x) { return softmax(x, 0, kFloat64); });
  red("log_softmax", "", kFH, [](const Tensor& x) { return log_softmax(x, 0); });
  red("cumsum", "", plus(kF, {kInt64, kInt32}), [](const Tensor& x) { return cumsum(x, -1); });
  // allclose() and equal() return bool through item(): the rows themselves give tensors.
  t.push_back({.row = "allclose", .label = "", .shape_sets = {{{3, 4}, {3, 4}}, {{3, 4}, {4}}}, .dtypes = kF,
               .f = many([](const TensorList& in) {
                 const OpDef& r = op_def("allclose");
                 return TensorList{call_op1(r, {in[0], in[1]}, Attrs{1e-5, 1e-8, false}),
                                   call_op1(r, {in[0], in[0] + 1e-9}, Attrs{1e-5, 1e-8, false})};
               })});
  t.push_back({.row = "equal", .label = "", .shape_sets = {{{3, 4}, {3, 4}}}, .dtypes = kNum,
               .f = many([](const TensorList& in) {
                 const OpDef& r = op_def("equal");
                 return TensorList{call_op1(r, {in[0], in[1]}), call_op1(r, {in[0], in[0].clone()})};
               })});
  t.push_back({.row = "allclose", .label = "front_end_bool", .shape_sets = {{{3, 4}, {3, 4}}}, .dtypes = kF,
               .f = one([](const TensorList& in) { return scalar_tensor(Scalar(allclose(in[0] * 2, in[1]))); }),
               .replays = false, .breaks = [](DType) { return 1; }});

  // --- linear algebra ---
  t.push_back({.row = "mm", .label = "", .shape_sets = {{{3, 4}, {4, 5}}, {{1, 3}, {3, 1}}}, .dtypes = kF,
               .f = one([](const TensorList& in) { return mm(in[0], in[1]); })});
  t.push_back({.row = "bmm", .label = "", .shape_sets = {{{2, 3, 4}, {2, 4, 5}}}, .dtypes = kF,
               .f = one([](const TensorList& in) { return bmm(in[0], in[1]); })});
  t.push_back({.row = "matmul", .label = "",
               .shape_sets = {{{4}, {4}}, {{3, 4}, {4}}, {{4}, {4, 2}}, {{2, 3, 4}, {4, 5}}, {{2, 1, 3, 4}, {3, 4, 2}}},
               .dtypes = kF, .f = one([](const TensorList& in) { return matmul(in[0], in[1]); })});
  t.push_back({.row = "linear", .label = "", .shape_sets = {{{2, 3, 4}, {5, 4}, {5}}, {{4}, {2, 4}, {2}}}, .dtypes = kF,
               .f = many([](const TensorList& in) {
                 return TensorList{linear(in[0], in[1], in[2]), linear(in[0], in[1])};
               })});

  // --- convolution and pooling ---
  t.push_back({.row = "conv2d", .label = "", .shape_sets = {{{2, 4, 6, 5}, {6, 2, 3, 2}, {6}}}, .dtypes = kF,
               .f = many([](const TensorList& in) {
                 return TensorList{conv2d(in[0], in[1], in[2], {2, 1}, {1, 1}, {1, 2}, 2),
                                   conv2d(in[0].narrow(1, 0, 2), in[1])};
               })});
  t.push_back({.row = "max_pool2d", .label = "", .shape_sets = {{{2, 3, 6, 5}}, {{3, 5, 5}}}, .dtypes = kF,
               .f = many([](const TensorList& in) {
                 return TensorList{max_pool2d(in[0], {2, 2}), max_pool2d(in[0], {3, 2}, {2, 1}, {1, 1}, {1, 1}, true)};
               })});
  t.push_back({.row = "avg_pool2d", .label = "", .shape_sets = {{{2, 3, 6, 5}}, {{3, 5, 5}}}, .dtypes = kF,
               .f = many([](const TensorList& in) {
                 return TensorList{avg_pool2d(in[0], {2, 2}), avg_pool2d(in[0], {3, 2}, {2, 1}, {1, 1}, true, false)};
               })});
  t.push_back({.row = "max_pool2d_indices", .label = "", .shape_sets = {{{2, 3, 6, 5}}}, .dtypes = kF,
               .f = one([](const TensorList& in) { return max_pool2d_indices(in[0], {3, 2}, {2, 1}, {1, 0}); })});
  t.push_back({.row = "conv2d_backward_input", .label = "", .shape_sets = {{{2, 6, 3, 5}, {6, 2, 3, 2}}}, .dtypes = kF,
               .f = one([](const TensorList& in) {
                 return conv2d_backward_input(in[0], in[1], {2, 4, 6, 5}, {2, 1}, {1, 1}, {1, 2}, 2);
               })});
  t.push_back({.row = "conv2d_backward_weight", .label = "", .shape_sets = {{{2, 6, 3, 5}, {2, 4, 6, 5}}}, .dtypes = kF,
               .f = one([](const TensorList& in) {
                 return conv2d_backward_weight(in[0], in[1], {6, 2, 3, 2}, {2, 1}, {1, 1}, {1, 2}, 2);
               })});
  t.push_back({.row = "max_pool2d_backward", .label = "", .shape_sets = {{{2, 3, 6, 5}, {2, 3, 3, 2}}}, .dtypes = kF,
               .f = one([](const TensorList& in) {
                 return max_pool2d_backward(in[1], max_pool2d_indices(in[0], {2, 2}), {2, 3, 6, 5});
               })});
  t.push_back({.row = "avg_pool2d_backward", .label = "", .shape_sets = {{{2, 3, 4, 6}}}, .dtypes = kF,
               .f = one([](const TensorList& in) {
                 return avg_pool2d_backward(in[0], {2, 3, 6, 5}, {3, 2}, {2, 1}, {1, 1}, true, false);
               })});

  // --- structure and indexing ---
  t.push_back({.row = "cat", .label = "", .shape_sets = {{{2, 3}, {4, 3}, {1, 3}}}, .dtypes = kAll,
               .f = many([](const TensorList& in) {
                 return TensorList{cat(in, 0), cat({in[0], in[0]}, 1), stack({in[0], in[0] + in[0]}, 1)};
               })});
  t.push_back({.row = "index_select", .label = "", .shape_sets = {{{5, 3}, {7}}, {{2, 6, 3}, {4}}}, .dtypes = kNum,
               .f = one([](const TensorList& in) { return index_select(in[0], in[0].dim() - 2, in[1]); }),
               .make = ints_in(0, 4), .made = {1}});
  t.push_back({.row = "gather", .label = "", .shape_sets = {{{4, 5}, {3, 5}}}, .dtypes = kNum,
               .f = one([](const TensorList& in) { return gather(in[0], 0, in[1]); }), .make = ints_in(0, 3),
               .made = {1}});
  t.push_back({.row = "scatter", .label = "", .shape_sets = {{{4, 5}, {2, 5}, {2, 5}}}, .dtypes = kNum,
               .f = many([](const TensorList& in) {
                 // One index per column hits a distinct row: no write order to depend on.
                 Tensor idx = in[1].narrow(0, 0, 1);
                 return TensorList{scatter(in[0], 0, idx, in[2].narrow(0, 0, 1)), scatter(in[0], 0, idx, Scalar(5))};
               }),
               .make = ints_in(0, 3), .made = {1}});
  t.push_back({.row = "scatter_add", .label = "", .shape_sets = {{{4, 5}, {3, 5}, {3, 5}}}, .dtypes = kF,
               .f = one([](const TensorList& in) { return scatter_add(in[0], 0, in[1], in[2]); }),
               .make = ints_in(0, 3), .made = {1}});
  t.push_back({.row = "embedding", .label = "", .shape_sets = {{{6, 3}, {2, 4}}}, .dtypes = kF,
               .f = many([](const TensorList& in) {
                 return TensorList{embedding(in[0], in[1]), embedding(in[0], in[1], 2)};
               }),
               .make = ints_in(0, 5), .made = {1}});
  t.push_back({.row = "one_hot", .label = "", .shape_sets = {{{2, 4}}}, .dtypes = {kInt64},
               .f = one([](const TensorList& in) { return one_hot(in[0], 6); }), .make = ints_in(0, 5),
               .replays = false});  // its infer checks the values on the host: never replayed
  t.push_back({.row = "tril", .label = "", .shape_sets = {{{4, 5}}, {{2, 3, 4}}}, .dtypes = kAll,
               .f = one([](const TensorList& in) { return tril(in[0], -1); })});
  t.push_back({.row = "triu", .label = "", .shape_sets = {{{4, 5}}, {{2, 3, 4}}}, .dtypes = kAll,
               .f = one([](const TensorList& in) { return triu(in[0], 1); })});

  // --- nn ---
  t.push_back({.row = "layer_norm", .label = "", .shape_sets = {{{2, 3, 4}, {3, 4}, {3, 4}}}, .dtypes = kF,
               .f = many([](const TensorList& in) {
                 return TensorList{layer_norm(in[0], {3, 4}, in[1], in[2]), layer_norm(in[0], {4}, std::nullopt, std::nullopt, 1e-3)};
               })});
  t.push_back({.row = "cross_entropy", .label = "", .shape_sets = {{{4, 5}, {4}, {5}}}, .dtypes = kF,
               .f = many([](const TensorList& in) {
                 return TensorList{cross_entropy(in[0], in[1]), cross_entropy(in[0], in[1], in[2], Reduction::Sum),
                                   cross_entropy(in[0], in[1], std::nullopt, Reduction::None, 2, 0.1)};
               }),
               .make = [](size_t i, const Shape& s, DType dt, uint64_t seed) {
                 return i == 1 ? rand_values(s, kInt64, Domain{0, 4}, seed) : rand_values(s, dt, Domain{0.5, 2}, seed);
               },
               .made = {1, 2}});
  t.push_back({.row = "nll_loss", .label = "", .shape_sets = {{{4, 5}, {4}, {5}}}, .dtypes = kF,
               .f = many([](const TensorList& in) {
                 return TensorList{nll_loss(in[0], in[1]), nll_loss(in[0], in[1], in[2], Reduction::None, 1)};
               }),
               .make = [](size_t i, const Shape& s, DType dt, uint64_t seed) {
                 return i == 1 ? rand_values(s, kInt64, Domain{0, 4}, seed) : rand_values(s, dt, Domain{0.5, 2}, seed);
               },
               .made = {1, 2}});
  t.push_back({.row = "mse_loss", .label = "", .shape_sets = {{{3, 4}, {3, 4}}}, .dtypes = kF,
               .f = many([](const TensorList& in) {
                 return TensorList{mse_loss(in[0], in[1]), mse_loss(in[0], in[1], Reduction::Sum),
                                   mse_loss(in[0], in[1], Reduction::None)};
               })});

  // --- random: the compiled calls draw what eager draws under the same seed ---
  t.push_back({.row = "uniform", .label = "rand", .shape_sets = {{}}, .dtypes = kFH,
               .f = with_dtype([](const TensorList&, DType dt) { return rand({3, 5}, dt); }), .random = true});
  t.push_back({.row = "uniform", .label = "uniform_", .shape_sets = {{{3, 4}}}, .dtypes = kF,
               .f = inplace([](Tensor& x, const TensorList&) { x.uniform_(-2, 3); }), .random = true, .inplace = true});
  t.push_back({.row = "uniform", .label = "rand_like", .shape_sets = {{{3, 4}}}, .dtypes = kF,
               .f = one([](const TensorList& in) { return rand_like(in[0]) * in[0]; }), .random = true});
  t.push_back({.row = "normal", .label = "randn", .shape_sets = {{}}, .dtypes = kFH,
               .f = with_dtype([](const TensorList&, DType dt) { return randn({3, 5}, dt) + normal(2.0, 0.5, {5}, dt); }),
               .random = true});
  t.push_back({.row = "normal", .label = "normal_", .shape_sets = {{{3, 4}}}, .dtypes = kF,
               .f = inplace([](Tensor& x, const TensorList&) { x.normal_(1.0, 2.0); }), .random = true, .inplace = true});
  t.push_back({.row = "normal", .label = "randn_like", .shape_sets = {{{3, 4}}}, .dtypes = kF,
               .f = one([](const TensorList& in) { return randn_like(in[0]) + in[0]; }), .random = true});
  t.push_back({.row = "randint", .label = "", .shape_sets = {{}}, .dtypes = {kInt64, kInt32, kUInt8, kFloat32},
               .f = with_dtype([](const TensorList&, DType dt) { return randint(2, 9, {4, 3}, dt); }), .random = true});
  t.push_back({.row = "randperm", .label = "", .shape_sets = {{}}, .dtypes = {kInt64, kInt32},
               .f = with_dtype([](const TensorList&, DType dt) { return randperm(10, dt); }), .random = true});
  t.push_back({.row = "bernoulli_scalar", .label = "bernoulli_", .shape_sets = {{{3, 4}}}, .dtypes = kAll,
               .f = inplace([](Tensor& x, const TensorList&) { x.bernoulli_(0.3); }), .random = true, .inplace = true});
  t.push_back({.row = "bernoulli", .label = "", .shape_sets = {{{3, 4}}}, .dtypes = kFH, .domain = {0, 1},
               .f = one([](const TensorList& in) { return bernoulli(in[0]); }), .random = true});
  t.push_back({.row = "dropout", .label = "", .shape_sets = {{{4, 5}}, {{2, 3, 4}}}, .dtypes = kFH,
               .f = many([](const TensorList& in) {
                 return TensorList{dropout(in[0], 0.4), dropout(in[0], 0.0), dropout(in[0], 0.5, false), dropout(in[0], 1.0)};
               }),
               .random = true});
  t.push_back({.row = "uniform", .label = "several_draws", .shape_sets = {{{3, 4}}}, .dtypes = kF,
               .f = many([](const TensorList& in) {
                 Tensor a = rand({3, 4}, in[0].dtype());
                 Tensor b = dropout(in[0] + a, 0.25);
                 Tensor c = randn({4}, in[0].dtype());
                 return TensorList{a, b * c, rand({2}, in[0].dtype())};
               }),
               .random = true});
  return t;
}

const std::vector<Case>& table() {
  static const std::vector<Case> t = make_table();
  return t;
}

std::string case_name(const Case& c) { return c.label.empty() ? c.row : c.row + "_" + c.label; }

// --- running one case ---------------------------------------------------------------------------

std::vector<Layout> layouts_of(const Case& c) {
  if (!c.layouts) return {Layout::Contiguous};
  return {Layout::Contiguous, Layout::Transposed, Layout::Sliced, Layout::Broadcast};
}

bool is_made(const Case& c, size_t i) {
  if (!c.make) return false;
  return c.made.empty() || std::find(c.made.begin(), c.made.end(), static_cast<int>(i)) != c.made.end();
}

// The inputs of one run: values (contiguous) and the layout each input is given.
struct Inputs {
  TensorList base;
  std::vector<char> laid;       // the run's layout applies (inputs from `make` stay as made)
  std::vector<Layout> layouts;  // per input
  Layout layout = Layout::Contiguous;
  TensorList shared;            // the tensors every call gets...

  // ...except the in-place target, fresh (same geometry) for every call.
  TensorList for_call(const Case& c) const {
    TensorList a = shared;
    if (c.inplace) a[0] = optable::apply_layout(base[0].clone(), layouts[0]);
    return a;
  }
};

Inputs make_inputs(const Case& c, const std::vector<Shape>& shapes, DType dt, Layout layout, uint64_t seed) {
  Inputs in;
  in.layout = layout;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const uint64_t s = seed * 131 + i;
    const bool made = is_made(c, i);
    in.base.push_back(made ? c.make(i, shapes[i], dt, s) : rand_values(shapes[i], dt, c.domain, s));
    in.laid.push_back(!made);
    Layout l = made ? Layout::Contiguous : layout;
    if (c.inplace && i == 0 && l == Layout::Broadcast) l = Layout::Contiguous;  // writes need distinct elements
    in.layouts.push_back(l);
    in.shared.push_back(optable::apply_layout(in.base[i].clone(), l));
  }
  return in;
}

// All of a tensor's storage, flat: an in-place write through a strided view must leave the
// elements between its own untouched.
Tensor whole_storage(const Tensor& t) {
  const int64_t n = static_cast<int64_t>(t.impl()->storage()->nbytes() / itemsize(t.dtype()));
  return t.as_strided({n}, {1}, 0);
}

std::string describe(const Case& c, DType dt, Layout l, const std::vector<Shape>& shapes) {
  std::ostringstream os;
  os << case_name(c) << " dtype=" << dt << " layout=" << optable::layout_name(l) << " shapes=";
  for (const Shape& s : shapes) os << IntArrayRef(s);
  return os.str();
}

uint64_t seed_of(const std::string& s) { return std::hash<std::string>{}(s) & 0xffffff; }

// The row appears in the captured graph (as an op, a view or an in-place write).
bool records_row(const std::string& graph_text, const std::string& row) {
  return graph_text.find(" " + row + "(") != std::string::npos || graph_text.find(" " + row + "_(") != std::string::npos;
}

void check_values(const Case& c, DType dt, Layout layout, const std::vector<Shape>& shapes, bool check_row) {
  const std::string where = describe(c, dt, layout, shapes);
  SCOPED_TRACE(where);
  const uint64_t seed = seed_of(where);
  Inputs in = make_inputs(c, shapes, dt, layout, seed);
  Fn f = c.f;

  if (check_row) {
    TensorList a = in.for_call(c);
    jit::Explanation ex = jit::explain([&](const TensorList& x) { return f(x, dt); }, a);
    std::string text;
    for (const std::string& g : ex.graphs) text += g;
    EXPECT_TRUE(records_row(text, c.row)) << "the captured graph lacks a " << c.row << " node:\n" << ex.str();
  }

  // Eager: three calls (one seed for all three when random).
  std::vector<TensorList> want(3), want_args(3);
  if (c.random) manual_seed(seed);
  for (int k = 0; k < 3; ++k) {
    TensorList a = in.for_call(c);
    try {
      want[k] = snapshot(f(a, dt));
    } catch (const std::exception& e) {
      ADD_FAILURE() << "eager call raised (bad case): " << e.what();
      return;
    }
    want_args[k] = snapshot(a);
    if (c.inplace) want_args[k].push_back(snapshot({whole_storage(a[0])})[0]);
  }
  Tensor want_after = c.random ? rand({6}, kFloat64) : Tensor();

  jit::reset();
  auto cf = jit::compile([f, dt](const std::vector<Tensor>& a) { return f(a, dt); }, {.name = case_name(c)});
  if (c.random) manual_seed(seed);
  const int breaks = c.breaks ? c.breaks(dt) : 0;
  std::vector<TensorList> kept;
  for (int k = 0; k < 3; ++k) {
    SCOPED_TRACE("compiled call " + std::to_string(k + 1));
    TensorList a = in.for_call(c);
    jit::Stats before = jit::stats();
    TensorList got;
    try {
      got = cf(a);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "compiled call raised: " << e.what();
      return;
    }
    jit::Stats after = jit::stats();
    EXPECT_TRUE(same_list(got, want[k]));
    kept.push_back(got);
    if (c.inplace) a.push_back(whole_storage(a[0]));
    EXPECT_TRUE(same_list(a, want_args[k])) << "arguments after the call";
    if (c.inplace) EXPECT_TRUE(got[0].is_same(a[0])) << "the in-place form returns its argument";
    const bool replay = after.replays > before.replays;
    if (k < 2) EXPECT_FALSE(replay);
    // A call with a graph break runs segmented: never replayed.
    if (k == 2) EXPECT_EQ(replay, c.replays && breaks == 0) << jit::stats().str();
  }
  // Later calls (replays reuse their plan's buffers) leave earlier results alone.
  for (size_t k = 0; k < kept.size(); ++k)
    EXPECT_TRUE(same_list(kept[k], want[k])) << "result of call " << k + 1 << " after the last call";
  if (c.random) EXPECT_TRUE(same(rand({6}, kFloat64), want_after)) << "the generator advanced differently";
  jit::Stats s = jit::stats();
  EXPECT_EQ(s.eager_fallbacks, 0) << s.str();
  EXPECT_EQ(s.graph_breaks.size(), static_cast<size_t>(breaks * 3)) << s.str();
  EXPECT_EQ(s.compiles, breaks + 1) << s.str();
  EXPECT_TRUE(s.recompiles.empty()) << s.str();
}


// --- gradients ----------------------------------------------------------------------------------

bool differentiable(const Case& c) {
  const OpDef* d = OpRegistry::instance().find(c.row);
  return d && d->differentiable && c.grad;
}

// Known JIT limitation: the backward of these cases builds an index tensor on the host
// (arange() in the vjps of unfold and as_strided; an in-place write on a view reaches its base
// through as_strided's vjp). A tensor filled by host code inside the call enters the graph as a
// captured input bound by identity, and each call makes a new one, so the traces never match
// and the function stays in trace mode (results are still compiled and correct). Treating such
// tensors as constants would bake in data that may come from unguarded C++ state.
const char* known_no_replay_with_backward(const Case& c) {
  if (c.label.find("of_intermediate") != std::string::npos)
    return "in-place write on a view: as_strided vjp calls arange()";
  if (c.row == "unfold" || c.row == "as_strided") return "the vjp calls arange()";
  return nullptr;
}

// Float64 leaves (every input not made by `make`), fresh per side.
TensorList grad_leaves(const Case& c, const Inputs& in) {
  TensorList a = in.shared;
  for (size_t i = 0; i < a.size(); ++i)
    if (in.laid[i] && is_floating_point(a[i].dtype())) {
      a[i] = optable::apply_layout(in.base[i].clone(), in.layout == Layout::Broadcast ? Layout::Contiguous : in.layout);
      a[i].requires_grad_();
    }
  return a;
}

// f on the leaves; in-place forms write a copy of input 0 (a leaf cannot be written).
TensorList forward(const Fn& f, bool inplace_case, TensorList a) {
  if (inplace_case) a[0] = a[0].clone();
  return f(a, kFloat64);
}

Tensor weighted_loss(const TensorList& outs, const TensorList& w) {
  Tensor loss;
  for (size_t k = 0; k < outs.size(); ++k) {
    if (!outs[k].defined() || !outs[k].requires_grad()) continue;
    Tensor term = (outs[k] * w[k]).sum();
    loss = loss.defined() ? loss + term : term;
  }
  return loss;
}

::testing::AssertionResult same_grads(const TensorList& got, const TensorList& want) {
  for (size_t i = 0; i < got.size(); ++i) {
    if (!got[i].requires_grad()) continue;
    auto r = same(got[i].grad(), want[i].grad());
    if (!r) return ::testing::AssertionFailure() << "grad of input " << i << ": " << r.message();
  }
  return ::testing::AssertionSuccess();
}

void check_grads(const Case& c, Layout layout, const std::vector<Shape>& shapes) {
  const std::string where = describe(c, kFloat64, layout, shapes) + " (gradients)";
  SCOPED_TRACE(where);
  const uint64_t seed = seed_of(where);
  Inputs in = make_inputs(c, shapes, kFloat64, layout, seed);
  const Fn f = c.f;
  const bool ip = c.inplace;

  // Weights: one random tensor per differentiable output.
  TensorList probe_leaves = grad_leaves(c, in);
  if (c.random) manual_seed(seed);
  TensorList probe = forward(f, ip, probe_leaves);
  TensorList w;
  bool any = false;
  for (size_t k = 0; k < probe.size(); ++k) {
    any |= probe[k].requires_grad();
    w.push_back(is_floating_point(probe[k].dtype()) ? rand_values(probe[k].sizes().vec(), kFloat64, {}, seed + k)
                                                    : Tensor());
  }
  if (!any) return;  // no output depends differentiably on an input (e.g. dropout(p=0) returns x)
  const size_t n = shapes.size();

  // 1. backward() inside the compiled call; grads accumulate over the calls on both sides.
  auto step = [f, ip, n](const std::vector<Tensor>& a) {
    TensorList x(a.begin(), a.begin() + static_cast<std::ptrdiff_t>(n)), ws(a.begin() + static_cast<std::ptrdiff_t>(n), a.end());
    Tensor loss = weighted_loss(forward(f, ip, x), ws);
    loss.backward();
    return loss.detach();
  };
  auto args_of = [&](const TensorList& leaves) {
    TensorList a = leaves;
    for (const Tensor& t : w) a.push_back(t.defined() ? t : zeros({}, kFloat64));
    return a;
  };
  constexpr int kCalls = 4;
  TensorList eager_leaves = grad_leaves(c, in);
  std::vector<Tensor> want_loss;
  std::vector<TensorList> want_grads;
  if (c.random) manual_seed(seed + 1);
  std::string eager_error;
  try {
    (void)step(args_of(grad_leaves(c, in)));
  } catch (const Error& e) {
    eager_error = e.what();
  }
  if (!eager_error.empty()) {
    // The compiled call raises what eager raises (a saved tensor modified in place...).
    jit::reset();
    auto failing = jit::compile(step, {.name = case_name(c) + "_grad"});
    EXPECT_KILN_ERROR(failing(args_of(grad_leaves(c, in))), eager_error.c_str());
    return;
  }
  if (c.random) manual_seed(seed + 1);
  for (int k = 0; k < kCalls; ++k) {
    want_loss.push_back(step(args_of(eager_leaves)));
    TensorList g;
    for (const Tensor& l : eager_leaves) g.push_back(l.requires_grad() && l.grad().defined() ? l.grad().clone() : Tensor());
    want_grads.push_back(g);
  }
  jit::reset();
  auto cstep = jit::compile(step, {.name = case_name(c) + "_grad"});
  TensorList leaves = grad_leaves(c, in);
  if (c.random) manual_seed(seed + 1);
  for (int k = 0; k < kCalls; ++k) {
    SCOPED_TRACE("compiled step " + std::to_string(k + 1));
    Tensor loss;
    try {
      loss = cstep(args_of(leaves));
    } catch (const std::exception& e) {
      ADD_FAILURE() << "compiled step raised: " << e.what();
      return;
    }
    EXPECT_TRUE(same(loss, want_loss[k]));
    for (size_t i = 0; i < leaves.size(); ++i)
      if (leaves[i].requires_grad()) EXPECT_TRUE(same(leaves[i].grad(), want_grads[k][i])) << "grad of input " << i;
  }
  jit::Stats s = jit::stats();
  EXPECT_EQ(s.eager_fallbacks, 0) << s.str();
  const int breaks = c.breaks ? c.breaks(kFloat64) : 0;
  if (breaks == 0) {
    EXPECT_TRUE(s.graph_breaks.empty()) << s.str();
    // Call 1 sets .grad, calls 2.. accumulate into it: two graphs, replay from call 4.
    if (const char* why = known_no_replay_with_backward(c)) {
      EXPECT_EQ(s.replays, 0) << "known limitation (" << why << ") no longer holds: update known_no_replay_with_backward";
    } else {
      EXPECT_GE(s.replays, 1) << s.str();
    }
  }

  // 2. Forward compiled, backward outside: the results carry autograd history.
  jit::reset();
  auto cfwd = jit::compile([f, ip](const std::vector<Tensor>& a) { return forward(f, ip, a); }, {.name = case_name(c) + "_fwd"});
  TensorList eager2 = grad_leaves(c, in), jit2 = grad_leaves(c, in);
  if (c.random) manual_seed(seed + 2);
  std::vector<TensorList> want2;
  std::vector<std::pair<bool, bool>> history;  // per result: requires_grad, is_leaf (as eager)
  for (int k = 0; k < 3; ++k) {
    TensorList outs = forward(f, ip, eager2);
    if (k == 0)
      for (const Tensor& o : outs) history.emplace_back(o.requires_grad(), o.requires_grad() && o.is_leaf());
    weighted_loss(outs, w).backward();
    TensorList g;
    for (const Tensor& l : eager2) g.push_back(l.requires_grad() && l.grad().defined() ? l.grad().clone() : Tensor());
    want2.push_back(g);
  }
  if (c.random) manual_seed(seed + 2);
  for (int k = 0; k < 3; ++k) {
    SCOPED_TRACE("compiled forward " + std::to_string(k + 1));
    TensorList outs;
    try {
      outs = cfwd(jit2);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "compiled forward raised: " << e.what();
      return;
    }
    ASSERT_EQ(outs.size(), history.size());
    for (size_t r = 0; r < outs.size(); ++r) {
      // Autograd history is recorded during capture: the results carry it as eager's do.
      EXPECT_EQ(outs[r].requires_grad(), history[r].first) << "result " << r;
      if (history[r].first && !history[r].second) EXPECT_NE(outs[r].grad_fn(), nullptr) << "result " << r;
    }
    weighted_loss(outs, w).backward();
    for (size_t i = 0; i < jit2.size(); ++i)
      if (jit2[i].requires_grad()) EXPECT_TRUE(same(jit2[i].grad(), want2[k][i])) << "grad of input " << i;
  }
  EXPECT_EQ(jit::stats().eager_fallbacks, 0);
}

// --- one test per case: values, then gradients -------------------------------------------------

class JitOps : public ::testing::TestWithParam<size_t> {};

TEST_P(JitOps, CompiledEqualsEager) {
  const Case& c = table()[GetParam()];
  bool first = true;
  for (const auto& shapes : c.shape_sets)
    for (DType dt : c.dtypes)
      for (Layout l : layouts_of(c)) {
        // Low-precision and integer dtypes: contiguous and one strided layout are enough.
        if ((dt != kFloat32 && dt != kFloat64) && l != Layout::Contiguous && l != Layout::Transposed) continue;
        check_values(c, dt, l, shapes, first);
        first = false;
      }
  if (!differentiable(c)) return;
  for (const auto& shapes : c.shape_sets)
    for (Layout l : {Layout::Contiguous, Layout::Transposed}) {
      if (!c.layouts && l != Layout::Contiguous) continue;
      check_grads(c, l, shapes);
    }
}

std::vector<size_t> all_cases() {
  std::vector<size_t> v(table().size());
  for (size_t i = 0; i < v.size(); ++i) v[i] = i;
  return v;
}

std::string param_name(const ::testing::TestParamInfo<size_t>& info) { return case_name(table()[info.param]); }

INSTANTIATE_TEST_SUITE_P(Rows, JitOps, ::testing::ValuesIn(all_cases()), param_name);

// --- every case on CUDA against the CPU (needs a GPU) -------------------------------------------
// Each case's first shape set, every dtype, contiguous and transposed inputs: eager CUDA results
// against eager CPU results (GPU transcendental functions are other implementations: a few ulp),
// and float64 gradients of the weighted loss. Random cases draw the CPU's numbers on the GPU too.

std::pair<double, double> cuda_tol(DType t) {
  switch (t) {
    case DType::Float64: return {1e-9, 1e-9};
    case DType::Float32: return {2e-5, 2e-5};
    case DType::Float16: return {4e-3, 4e-3};
    case DType::BFloat16: return {3e-2, 3e-2};
    default: return {0.0, 0.0};
  }
}

TensorList to_device(const TensorList& l, const Device& d) {
  TensorList out;
  for (const Tensor& t : l) out.push_back(t.defined() ? t.to(d) : t);
  return out;
}

::testing::AssertionResult same_on_devices(const TensorList& got, const TensorList& want) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << got.size() << " outputs vs " << want.size();
  for (size_t k = 0; k < got.size(); ++k) {
    if (!got[k].defined() || !want[k].defined()) continue;
    if (!got[k].is_cuda()) return ::testing::AssertionFailure() << "output " << k << " is on " << got[k].device();
    if (got[k].dtype() != want[k].dtype()) return ::testing::AssertionFailure() << "output " << k << " dtype";
    const auto [rtol, atol] = cuda_tol(want[k].dtype());
    auto r = kiln::testing::close(got[k].cpu(), want[k], rtol, atol);
    if (!r) return ::testing::AssertionFailure() << "output " << k << ": " << r.message();
  }
  return ::testing::AssertionSuccess();
}

class CudaOps : public ::testing::TestWithParam<size_t> {};

TEST_P(CudaOps, CudaEqualsCpu) {
  if (!cuda::is_available()) GTEST_SKIP() << "no CUDA device: " << cuda::unavailable_reason();
  const Case& c = table()[GetParam()];
  const Device gpu(kCUDA, 0);
  const std::vector<Shape>& shapes = c.shape_sets.front();
  for (DType dt : c.dtypes)
    for (Layout l : {Layout::Contiguous, Layout::Transposed}) {
      if (!c.layouts && l != Layout::Contiguous) continue;
      const std::string where = describe(c, dt, l, shapes) + " (cuda)";
      SCOPED_TRACE(where);
      const uint64_t seed = seed_of(where);
      Inputs in = make_inputs(c, shapes, dt, l, seed);
      TensorList a = in.for_call(c);
      if (c.random) manual_seed(seed);
      TensorList want = snapshot(c.f(a, dt));
      TensorList da = to_device(in.for_call(c), gpu);
      if (c.random) manual_seed(seed);
      TensorList got;
      try {
        got = c.f(da, dt);
      } catch (const std::exception& e) {
        ADD_FAILURE() << "the CUDA call raised: " << e.what();
        continue;
      }
      EXPECT_TRUE(same_on_devices(got, want));
    }
  if (!differentiable(c)) return;
  const std::string where = describe(c, kFloat64, Layout::Contiguous, shapes) + " (cuda gradients)";
  SCOPED_TRACE(where);
  const uint64_t seed = seed_of(where);
  Inputs in = make_inputs(c, shapes, kFloat64, Layout::Contiguous, seed);
  TensorList cpu_leaves = grad_leaves(c, in);
  if (c.random) manual_seed(seed);
  TensorList probe = forward(c.f, c.inplace, cpu_leaves);
  TensorList w;
  for (size_t k = 0; k < probe.size(); ++k)
    w.push_back(is_floating_point(probe[k].dtype()) ? rand_values(probe[k].sizes().vec(), kFloat64, {}, seed + k) : Tensor());
  Tensor loss = weighted_loss(probe, w);
  if (!loss.defined()) return;
  loss.backward();
  TensorList gpu_leaves;
  for (const Tensor& t : cpu_leaves) {
    Tensor g = t.defined() ? t.detach().to(gpu) : t;
    if (t.defined() && t.requires_grad()) g.requires_grad_();
    gpu_leaves.push_back(g);
  }
  if (c.random) manual_seed(seed);
  Tensor gloss = weighted_loss(forward(c.f, c.inplace, gpu_leaves), to_device(w, gpu));
  ASSERT_TRUE(gloss.defined());
  gloss.backward();
  for (size_t i = 0; i < cpu_leaves.size(); ++i) {
    if (!cpu_leaves[i].defined() || !cpu_leaves[i].requires_grad() || !cpu_leaves[i].grad().defined()) continue;
    ASSERT_TRUE(gpu_leaves[i].grad().defined()) << "input " << i << " has no CUDA gradient";
    EXPECT_TRUE(kiln::testing::close(gpu_leaves[i].grad().cpu(), cpu_leaves[i].grad(), 1e-9, 1e-9))
        << "gradient of input " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Rows, CudaOps, ::testing::ValuesIn(all_cases()), param_name);

// --- the table covers the registry ------------------------------------------------------------

TEST(JitOpsTable, EveryRowHasACase) {
  std::set<std::string> covered;
  for (const Case& c : table()) covered.insert(c.row);
  for (const OpDef* d : OpRegistry::instance().all())
    EXPECT_TRUE(covered.count(d->name)) << "registry row '" << d->name << "' has no case in tests/jit_ops_test.cpp";
  for (const std::string& r : covered) EXPECT_NE(OpRegistry::instance().find(r), nullptr) << r;
  std::set<std::string> names;
  for (const Case& c : table()) EXPECT_TRUE(names.insert(case_name(c)).second) << "duplicate case " << case_name(c);
}

// --- host reads inside a compiled call ------------------------------------------------------

// Host code reading a realised tensor that the pending graph writes (item() of an argument
// after an in-place op on it, an infer that reads values) must see the write: the read ends the
// graph there (a break), as for a pending result.
TEST(JitOpsHostReads, ReadAfterAPendingWriteSeesTheWrite) {
  jit::reset();
  auto f = [](Tensor x) {
    x.add_(1);
    double v = x.select(0, 0).item<double>();
    return x * v;
  };
  auto cf = jit::compile(f);
  for (int k = 0; k < 3; ++k) {
    Tensor a = tensor({1.0, 2.0}), b = tensor({1.0, 2.0});
    Tensor want = f(a);
    Tensor got = cf(b);
    EXPECT_TRUE(same(got, want)) << k;
    EXPECT_TRUE(same(b, a)) << k;
  }
  jit::Stats s = jit::stats();
  ASSERT_EQ(s.graph_breaks.size(), 3u) << s.str();
  EXPECT_EQ(s.graph_breaks[0].reason, "item()");
  EXPECT_EQ(s.replays, 0);
}

TEST(JitOpsHostReads, InferReadingAWrittenArgument) {
  // one_hot's infer reads the indices (class count, range check): it must read them written.
  jit::reset();
  auto f = [](Tensor idx) {
    idx.add_(2);
    return one_hot(idx, -1);
  };
  auto cf = jit::compile(f);
  Tensor a = tensor({0, 1, 3}), b = tensor({0, 1, 3});
  Tensor want = f(a);
  EXPECT_TRUE(same(cf(b), want));
  EXPECT_TRUE(same(b, a));
}

TEST(JitOpsHostReads, WriteThroughAViewOfAnArgument) {
  jit::reset();
  auto f = [](const Tensor& x) {
    Tensor row = x.select(0, 1);
    row.mul_(3);
    return x * x.select(1, 0).select(0, 1).item<double>();  // another view of the written row
  };
  auto cf = jit::compile(f);
  Tensor a = tensor({{1.0, 2.0}, {3.0, 4.0}}), b = a.clone();
  Tensor want = f(a);
  EXPECT_TRUE(same(cf(b), want));
  EXPECT_TRUE(same(b, a));
}

// one_hot(x, -1) takes its class count from the values of x, in its infer: the graph does not
// recompute that, so a call whose code read an input's values on the host is never replayed
// (a replay would return the first calls' shape, and skip one_hot(x, C)'s range check).
TEST(JitOpsHostReads, DataDependentShapeIsNotReplayedStale) {
  jit::reset();
  auto f = [](const Tensor& x) { return one_hot(x, -1); };
  auto cf = jit::compile(f);
  Tensor a = tensor({0, 1, 3}), b = tensor({0, 5, 1});
  for (int k = 0; k < 3; ++k) EXPECT_TRUE(same(cf(a), f(a)));
  EXPECT_TRUE(same(cf(b), f(b)));
  EXPECT_KILN_ERROR(jit::compile([](const Tensor& x) { return one_hot(x, 3); })(b), "one_hot");
  EXPECT_EQ(jit::stats().replays, 0);
}

// --- random chains --------------------------------------------------------------------------------

// A chain of 5-15 ops on small float tensors, drawn from a seeded generator. Its steps are built
// against a probe input so that every step is valid for the shape it meets.
struct Chain {
  std::vector<Shape> shapes;  // input 0 and the extra operands the steps read
  std::vector<std::function<Tensor(const Tensor&, const TensorList&)>> steps;
  std::string text;           // the steps, readable
  Tensor run(const TensorList& in) const {
    Tensor cur = in[0];
    for (const auto& st : steps) cur = st(cur, in);
    return cur;
  }
};

class ChainBuilder {
 public:
  // `clone_before_writes`: each in-place step writes a fresh clone, so that no write clobbers a
  // tensor an earlier op saved for backward (otherwise backward raises, in eager as compiled).
  ChainBuilder(uint64_t seed, bool clone_before_writes) : rng_(seed), clone_(clone_before_writes) {}

  Chain build() {
    Chain c;
    Shape s;
    const int rank = pick(1, 3);
    for (int d = 0; d < rank; ++d) s.push_back(pick(1, 4));
    c.shapes.push_back(s);
    probe_ = {rand_values(s, kFloat64, {}, rng_())};
    Tensor cur = probe_[0];
    const int n = pick(5, 15);
    int guard = 0;
    while (static_cast<int>(c.steps.size()) < n && guard++ < 500) {
      std::string text;
      std::vector<Shape> extra;
      auto step = propose(cur, c.shapes.size(), text, extra);
      if (!step) continue;
      TensorList probe = probe_;
      for (const Shape& e : extra) probe.push_back(rand_values(e, kFloat64, {}, rng_()));
      Tensor next;
      try {
        next = step(cur, probe);
      } catch (const Error& e) {
        ADD_FAILURE() << "chain builder made an invalid step " << text << ": " << e.what();
        continue;
      }
      if (next.numel() > 256 || next.numel() == 0) continue;
      probe_ = probe;
      for (const Shape& e : extra) c.shapes.push_back(e);
      c.steps.push_back(step);
      c.text += (c.text.empty() ? "" : " -> ") + text;
      cur = next;
    }
    return c;
  }

 private:
  using Step = std::function<Tensor(const Tensor&, const TensorList&)>;

  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  bool coin(double p = 0.5) { return std::bernoulli_distribution(p)(rng_); }
  double num() { return std::round(std::uniform_real_distribution<double>(-2, 2)(rng_) * 4) / 4; }

  bool fresh(const Tensor& t) const {
    for (const Tensor& p : probe_)
      if (t.impl()->storage() == p.impl()->storage()) return false;
    return true;
  }
  static bool overlapping(const Tensor& t) {
    for (int64_t d = 0; d < t.dim(); ++d)
      if (t.stride(d) == 0 && t.size(d) > 1) return true;
    return false;
  }
  // A shape that broadcasts against `s` without growing it.
  Shape broadcastable(const Shape& s) {
    Shape e(s.begin() + pick(0, static_cast<int>(s.size())), s.end());
    for (auto& d : e)
      if (coin(0.3)) d = 1;
    return e;
  }

  // A unary pointwise op, in place when `inplace`.
  Step unary(std::string& text, bool inplace) {
    switch (pick(0, inplace ? 5 : 11)) {
      case 0: text = inplace ? "tanh_" : "tanh"; return inplace ? Step([](const Tensor& x, const TensorList&) { Tensor t = x; return t.tanh_(); }) : Step([](const Tensor& x, const TensorList&) { return tanh(x); });
      case 1: text = inplace ? "sigmoid_" : "sigmoid"; return inplace ? Step([](const Tensor& x, const TensorList&) { Tensor t = x; return t.sigmoid_(); }) : Step([](const Tensor& x, const TensorList&) { return sigmoid(x); });
      case 2: text = inplace ? "relu_" : "relu"; return inplace ? Step([](const Tensor& x, const TensorList&) { Tensor t = x; return t.relu_(); }) : Step([](const Tensor& x, const TensorList&) { return relu(x); });
      case 3: text = inplace ? "neg_" : "neg"; return inplace ? Step([](const Tensor& x, const TensorList&) { Tensor t = x; return t.neg_(); }) : Step([](const Tensor& x, const TensorList&) { return -x; });
      case 4: {
        double a = num();
        text = (inplace ? "mul_(" : "mul(") + std::to_string(a) + ")";
        return inplace ? Step([a](const Tensor& x, const TensorList&) { Tensor t = x; return t.mul_(a); }) : Step([a](const Tensor& x, const TensorList&) { return x * a; });
      }
      case 5: {
        double a = num();
        text = (inplace ? "add_(" : "add(") + std::to_string(a) + ")";
        return inplace ? Step([a](const Tensor& x, const TensorList&) { Tensor t = x; return t.add_(a); }) : Step([a](const Tensor& x, const TensorList&) { return a + x; });
      }
      case 6: text = "sin"; return [](const Tensor& x, const TensorList&) { return sin(x); };
      case 7: text = "exp(clamp)"; return [](const Tensor& x, const TensorList&) { return exp(clamp(x, Scalar(-3), Scalar(3))); };
      case 8: text = "gelu"; return [](const Tensor& x, const TensorList&) { return gelu(x); };
      case 9: text = "abs"; return [](const Tensor& x, const TensorList&) { return abs(x); };
      case 10: text = "square"; return [](const Tensor& x, const TensorList&) { return square(x) * 0.5; };
      default: text = "silu"; return [](const Tensor& x, const TensorList&) { return silu(x); };
    }
  }

  Step propose(const Tensor& cur, size_t next_input, std::string& text, std::vector<Shape>& extra) {
    const int64_t r = cur.dim();
    const Shape shape = cur.sizes().vec();
    const bool writable = fresh(cur) && !overlapping(cur);
    const int idx = static_cast<int>(next_input);
    switch (pick(0, 14)) {
      case 0:
      case 1:
        return unary(text, false);
      case 2: {  // binary with broadcasting, either side
        Shape e = broadcastable(shape);
        if (coin(0.2) && r < 4 && e.size() == shape.size()) e.insert(e.begin(), 2);  // grows the result
        extra.push_back(e);
        const int op = pick(0, 5);
        const bool swap = coin();
        static const char* names[] = {"add", "sub", "mul", "maximum", "minimum", "div"};
        text = std::string(names[op]) + (swap ? "(in" + std::to_string(idx) + IntArray(e) + ", x)" : "(x, in" + std::to_string(idx) + IntArray(e) + ")");
        return [op, swap, idx](const Tensor& x, const TensorList& in) {
          Tensor a = x, b = in[static_cast<size_t>(idx)];
          if (op == 5) return swap ? b / (abs(a) + 0.5) : a / (abs(b) + 0.5);
          if (swap) std::swap(a, b);
          switch (op) {
            case 0: return a + b;
            case 1: return a - b;
            case 2: return a * b;
            case 3: return maximum(a, b);
            default: return minimum(a, b);
          }
        };
      }
      case 3: {  // reduction over one dim
        if (r == 0) return {};
        const int64_t d = pick(0, static_cast<int>(r) - 1);
        const bool keep = coin();
        const int op = pick(0, 4);
        static const char* names[] = {"sum", "mean", "amax", "logsumexp", "var"};
        if (op == 4 && cur.size(d) < 2) return {};
        text = std::string(names[op]) + "(dim=" + std::to_string(d) + (keep ? ", keepdim)" : ")");
        return [op, d, keep](const Tensor& x, const TensorList&) {
          switch (op) {
            case 0: return sum(x, {d}, keep);
            case 1: return mean(x, {d}, keep);
            case 2: return amax(x, {d}, keep);
            case 3: return logsumexp(x, {d}, keep);
            default: return var(x, {d}, 1, keep);
          }
        };
      }
      case 4: {  // transpose / permute
        if (r < 2) return {};
        if (coin()) {
          int64_t a = pick(0, static_cast<int>(r) - 1), b = pick(0, static_cast<int>(r) - 1);
          text = "transpose(" + std::to_string(a) + ", " + std::to_string(b) + ")";
          return [a, b](const Tensor& x, const TensorList&) { return x.transpose(a, b); };
        }
        Shape perm(static_cast<size_t>(r));
        for (int64_t i = 0; i < r; ++i) perm[static_cast<size_t>(i)] = i;
        std::shuffle(perm.begin(), perm.end(), rng_);
        text = "permute" + IntArray(perm);
        return [perm](const Tensor& x, const TensorList&) { return x.permute(perm); };
      }
      case 5: {  // reshape
        const int64_t n = cur.numel();
        Shape to;
        if (coin() || n < 4) {
          to = {n};
        } else {
          int64_t f = 1;
          for (int64_t k = 2; k <= n; ++k)
            if (n % k == 0) { f = k; if (coin()) break; }
          to = {f, n / f};
          if (coin(0.3)) to.push_back(1);
        }
        text = "reshape" + IntArray(to);
        return [to](const Tensor& x, const TensorList&) { return x.reshape(to); };
      }
      case 6: {  // slice / narrow / select
        if (r == 0) return {};
        const int64_t d = pick(0, static_cast<int>(r) - 1), n = cur.size(d);
        if (n < 2) return {};
        const int kind = pick(0, 2);
        if (kind == 0) {
          int64_t start = pick(0, static_cast<int>(n) - 1), step = pick(1, 2);
          text = "slice(" + std::to_string(d) + ", " + std::to_string(start) + ", step " + std::to_string(step) + ")";
          return [d, start, step](const Tensor& x, const TensorList&) { return x.slice(d, start, std::nullopt, step); };
        }
        if (kind == 1) {
          int64_t start = pick(0, static_cast<int>(n) - 2), len = pick(1, static_cast<int>(n - start));
          text = "narrow(" + std::to_string(d) + ", " + std::to_string(start) + ", " + std::to_string(len) + ")";
          return [d, start, len](const Tensor& x, const TensorList&) { return x.narrow(d, start, len); };
        }
        int64_t i = pick(0, static_cast<int>(n) - 1);
        text = "select(" + std::to_string(d) + ", " + std::to_string(i) + ")";
        return [d, i](const Tensor& x, const TensorList&) { return x.select(d, i); };
      }
      case 7: {  // unsqueeze, then maybe expand that dim
        if (r >= 4) return {};
        const int64_t d = pick(0, static_cast<int>(r));
        const int64_t k = coin() ? pick(2, 3) : 1;
        text = "unsqueeze(" + std::to_string(d) + ")" + (k > 1 ? ".expand(" + std::to_string(k) + ")" : "");
        return [d, k](const Tensor& x, const TensorList&) {
          Tensor u = x.unsqueeze(d);
          if (k == 1) return u;
          Shape to = u.sizes().vec();
          to[static_cast<size_t>(d)] = k;
          return u.expand(to);
        };
      }
      case 8: {  // matmul with a new operand
        if (r == 0) return {};
        const int64_t k = pick(1, 4);
        Shape e = {cur.size(-1), k};
        extra.push_back(e);
        text = "matmul(x, in" + std::to_string(idx) + IntArray(e) + ")";
        return [idx](const Tensor& x, const TensorList& in) { return matmul(x, in[static_cast<size_t>(idx)]); };
      }
      case 9: {  // softmax / log_softmax
        if (r == 0) return {};
        const int64_t d = pick(0, static_cast<int>(r) - 1);
        const bool lg = coin();
        text = std::string(lg ? "log_softmax(" : "softmax(") + std::to_string(d) + ")";
        return [d, lg](const Tensor& x, const TensorList&) { return lg ? log_softmax(x, d) : softmax(x, d); };
      }
      case 10:
      case 11: {  // in place on the intermediate
        if (!writable) return {};
        if (clone_) {
          std::string t;
          Step w = propose_write(shape, idx, t, extra);
          text = "clone()." + t;
          return [w](const Tensor& x, const TensorList& in) { return w(x.clone(), in); };
        }
        return propose_write(shape, idx, text, extra);
      }
      case 12:
      case 13: {  // in place on a view of the intermediate; continue with the base or the view
        if (!writable || r == 0) return {};
        std::string t;
        Step w = propose_view_write(cur, t);
        if (!clone_) {
          text = t;
          return w;
        }
        text = "clone().(" + t + ")";
        return [w](const Tensor& x, const TensorList& in) { return w(x.clone(), in); };
      }
      default: {  // scalar arithmetic
        double a = num();
        if (a == 0) a = 1.5;
        text = "div(" + std::to_string(a) + ")";
        return [a](const Tensor& x, const TensorList&) { return x / a - 0.25; };
      }
    }
  }

  Step propose_write(const Shape& shape, int idx, std::string& text, std::vector<Shape>& extra) {
    {
        if (coin(0.3)) {
          Shape e = broadcastable(shape);
          extra.push_back(e);
          text = "add_(in" + std::to_string(idx) + IntArray(e) + ")";
          return [idx](const Tensor& x, const TensorList& in) { Tensor t = x; return t.add_(in[static_cast<size_t>(idx)]); };
        }
        if (coin(0.3)) {
          text = coin() ? "clamp_(-1, 1)" : "masked_fill_(x > 0.5, 0.25)";
          if (text[0] == 'c') return [](const Tensor& x, const TensorList&) { Tensor t = x; return t.clamp_(Scalar(-1), Scalar(1)); };
          return [](const Tensor& x, const TensorList&) { Tensor t = x; return t.masked_fill_(x > 0.5, Scalar(0.25)); };
        }
        return unary(text, true);
    }
  }

  Step propose_view_write(const Tensor& cur, std::string& text) {
    const int64_t r = cur.dim();
    {
        const int64_t d = pick(0, static_cast<int>(r) - 1), n = cur.size(d);
        const int kind = r >= 2 && coin(0.3) ? 2 : pick(0, 1);
        const int64_t i = pick(0, static_cast<int>(n) - 1);
        std::string op_text;
        Step op = unary(op_text, true);
        const bool keep_view = coin(0.3);
        static const char* names[] = {"select", "slice", "transpose"};
        text = std::string("view ") + names[kind] + "(" + std::to_string(d) + ", " + std::to_string(i) + ")." + op_text +
               (keep_view ? " (continue with the view)" : "");
        return [d, i, kind, op, keep_view](const Tensor& x, const TensorList& in) {
          Tensor v = kind == 0 ? x.select(d, i) : kind == 1 ? x.slice(d, i, std::nullopt, 2) : x.transpose(d, (d + 1) % x.dim());
          Tensor w = op(v, in);
          return keep_view ? w : x;
        };
    }
  }

  static std::string IntArray(const Shape& s) {
    std::ostringstream os;
    os << IntArrayRef(s);
    return os.str();
  }

  std::mt19937_64 rng_;
  bool clone_;
  TensorList probe_;
};

constexpr int kChains = 200;

Chain chain(int i, bool clone_before_writes = false) {
  return ChainBuilder(0x5eed0000ULL + static_cast<uint64_t>(i), clone_before_writes).build();
}

TensorList chain_inputs(const Chain& c, DType dt, uint64_t seed) {
  TensorList in;
  for (size_t k = 0; k < c.shapes.size(); ++k) in.push_back(rand_values(c.shapes[k], dt, {}, seed * 31 + k));
  return in;
}

TEST(JitOpsChains, CompiledEqualsEager) {
  int replayed = 0;
  for (int i = 0; i < kChains; ++i) {
    const Chain c = chain(i);
    const DType dt = i % 4 == 3 ? kFloat64 : kFloat32;
    SCOPED_TRACE("chain " + std::to_string(i) + " (" + std::string(dtype_name(dt)) + "): " + c.text);
    ASSERT_GE(c.steps.size(), 5u);
    TensorList in = chain_inputs(c, dt, static_cast<uint64_t>(i));
    std::vector<Tensor> want;
    for (int k = 0; k < 3; ++k) want.push_back(snapshot({c.run(in)})[0]);
    jit::reset();
    auto cf = jit::compile([c](const std::vector<Tensor>& a) { return c.run(a); }, {.name = "chain" + std::to_string(i)});
    std::vector<Tensor> kept;
    for (int k = 0; k < 3; ++k) {
      Tensor got;
      try {
        got = cf(in);
      } catch (const std::exception& e) {
        ADD_FAILURE() << "compiled call " << k + 1 << " raised: " << e.what();
        break;
      }
      EXPECT_TRUE(same(got, want[static_cast<size_t>(k)])) << "call " << k + 1;
      kept.push_back(got);
    }
    for (size_t k = 0; k < kept.size(); ++k) EXPECT_TRUE(same(kept[k], want[k])) << "call " << k + 1 << ", kept";
    jit::Stats s = jit::stats();
    EXPECT_EQ(s.eager_fallbacks, 0) << s.str();
    EXPECT_TRUE(s.graph_breaks.empty()) << s.str();
    EXPECT_EQ(s.compiles, 1) << s.str();
    EXPECT_EQ(s.replays, 1) << s.str();
    replayed += static_cast<int>(s.replays);
  }
  EXPECT_EQ(replayed, kChains);
}

// Gradients of every fourth chain as drawn (some raise: a write clobbers a saved tensor; the
// compiled call must raise the same) and of the same draws with each write on a fresh clone.
TEST(JitOpsChains, GradientsEqualEager) {
  int compared = 0, raised = 0, raised_safe = 0;
  for (int q = 0; q < kChains / 2; ++q) {
    const int i = q / 2 * 4;
    const bool safe = q % 2 == 1;
    const Chain c = chain(i, safe);
    SCOPED_TRACE("chain " + std::to_string(i) + (safe ? " with clones" : "") + " (gradients): " + c.text);
    const TensorList values = chain_inputs(c, kFloat64, static_cast<uint64_t>(i) + 7);
    auto leaves = [&] {
      TensorList l;
      for (const Tensor& v : values) l.push_back(v.clone().requires_grad_());
      return l;
    };
    Tensor w;
    {
      NoGradGuard no_grad;
      w = rand_values(c.run(values).sizes().vec(), kFloat64, {}, static_cast<uint64_t>(i) + 99);
    }
    auto step = [c](const std::vector<Tensor>& a) {
      TensorList x(a.begin(), a.end() - 1);
      Tensor loss = (c.run(x) * a.back()).sum();
      loss.backward();
      return loss.detach();
    };
    auto args = [&](TensorList l) {
      l.push_back(w);
      return l;
    };
    std::string eager_error;
    try {
      (void)step(args(leaves()));
    } catch (const Error& e) {
      eager_error = e.what();
    }
    jit::reset();
    auto cstep = jit::compile(step, {.name = "chain" + std::to_string(i) + "_grad"});
    if (!eager_error.empty()) {
      // An in-place write clobbered a tensor the backward needs: compiled raises the same.
      EXPECT_KILN_ERROR(cstep(args(leaves())), eager_error.c_str());
      ++(safe ? raised_safe : raised);
      continue;
    }
    TensorList e = leaves(), j = leaves();
    for (int k = 0; k < 3; ++k) {
      Tensor want = step(args(e));
      Tensor got;
      try {
        got = cstep(args(j));
      } catch (const std::exception& ex) {
        ADD_FAILURE() << "compiled step " << k + 1 << " raised: " << ex.what();
        break;
      }
      EXPECT_TRUE(same(got, want)) << "step " << k + 1;
      for (size_t q = 0; q < e.size(); ++q) EXPECT_TRUE(same(j[q].grad(), e[q].grad())) << "step " << k + 1 << " input " << q;
    }
    EXPECT_EQ(jit::stats().eager_fallbacks, 0);
    ++compared;
  }
  std::cout << "[ chains   ] gradients compared for " << compared << " chains; " << raised
            << " raised in eager and compiled alike (in-place write on a saved tensor)\n";
  EXPECT_EQ(raised_safe, 0);
  EXPECT_GE(compared, kChains / 4);
}

// How many compared tensors were bitwise equal (passes reorder no arithmetic).
class TallyReport : public ::testing::Environment {
 public:
  void TearDown() override {
    std::cout << "[ tally    ] " << tally().bitwise << " of " << tally().tensors
              << " compared tensors were bitwise equal to eager\n";
  }
};
const auto* const kTally = ::testing::AddGlobalTestEnvironment(new TallyReport);

}  // namespace
