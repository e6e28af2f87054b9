// gradcheck for every differentiable registry row: each row has cases in the table below
// (input shapes, domains that avoid non-smooth points, attributes), run in float64 on
// contiguous, transposed and sliced leaves, with shapes that broadcast between inputs.
// A differentiable row without cases fails the suite, so a new op cannot skip its vjp check.
#include <cmath>
#include <functional>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "autograd/autograd.h"
#include "autograd/gradcheck.h"
#include "core/op.h"
#include "op_table.h"

using namespace kiln;
using kiln::optable::apply_layout;
using kiln::optable::Layout;

namespace {

using Fn = std::function<TensorList(const TensorList&)>;

struct In {
  Shape shape;
  double lo = -2.0, hi = 2.0;
  std::function<bool(double)> ok{};     // values failing it are redrawn (non-smooth points)
  std::vector<double> values{};         // explicit values instead of random ones
  std::function<Tensor()> fixed{};      // a non-differentiable input (mask, index), used as is
};

struct Case {
  std::string label;
  std::vector<In> inputs;
  Fn f;
  bool layouts = true;  // also run with transposed and sliced leaves
  bool smooth = true;   // false: the first derivative jumps here (ties), no second-order check
};

// Cases that crash or fail today because of a bug outside the files this suite's author owns
// (vjps of other families, core), skipped with a note until fixed (then delete the entry):
// op -> case label -> the bug.
const std::map<std::string, std::map<std::string, std::string>> kKnownVjpBugs = {};

// As above, for the second derivative only.
const std::map<std::string, std::map<std::string, std::string>> kKnownSecondOrderBugs = {
    {"prod", {{"two zeros in a row", "vjp_prod returns a constant 0 where a slice has two or more zeros, so "
                                     "d2/dx_i dx_j (both zeros) is 0 instead of the product of the others"}}},
};

const std::string* find_bug(const std::map<std::string, std::map<std::string, std::string>>& bugs,
                            const std::string& op, const std::string& label) {
  auto it = bugs.find(op);
  if (it == bugs.end()) return nullptr;
  auto jt = it->second.find(label);
  return jt == it->second.end() ? nullptr : &jt->second;
}
const std::string* known_bug(const std::string& op, const std::string& label) {
  return find_bug(kKnownVjpBugs, op, label);
}
const std::string* known_second_order_bug(const std::string& op, const std::string& label) {
  return find_bug(kKnownSecondOrderBugs, op, label);
}

using Table = std::map<std::string, std::vector<Case>>;

// Rows whose vjps and gradchecks live in tests/autograd_ops_test.cpp (written alongside them).
const std::set<std::string> kDelegated = {
    "conv2d", "max_pool2d", "avg_pool2d", "cat", "index_select", "gather", "scatter", "scatter_add",
    "embedding", "tril", "triu", "layer_norm", "dropout", "cross_entropy", "nll_loss", "mse_loss",
    // The backward rows, checked there by double backward through conv2d and the pools.
    "conv2d_backward_input", "conv2d_backward_weight", "max_pool2d_backward", "avg_pool2d_backward"};

Fn one(std::function<Tensor(const TensorList&)> f) {
  return [f](const TensorList& in) { return TensorList{f(in)}; };
}
In in(Shape s, double lo = -2.0, double hi = 2.0, std::function<bool(double)> ok = {}) {
  return In{std::move(s), lo, hi, std::move(ok)};
}
In values(Shape s, std::vector<double> v) {
  In r{std::move(s)};
  r.values = std::move(v);
  return r;
}
In fixed(std::function<Tensor()> make) {
  In r;
  r.fixed = std::move(make);
  return r;
}

int64_t shape_numel(IntArrayRef s) {
  int64_t n = 1;
  for (int64_t v : s) n *= v;
  return n;
}

std::string shape_str(IntArrayRef s) {
  std::ostringstream os;
  os << s;
  return os.str();
}

// Predicates keeping inputs away from the points where an op is not differentiable.
bool away_from_zero(double v) { return std::abs(v) > 0.05; }
bool away_from_integers(double v) { return std::abs(v - std::round(v)) > 0.05; }
bool away_from_halves(double v) { return std::abs(v - std::floor(v) - 0.5) > 0.05; }

// Unary pointwise op: a matrix (all layouts), a vector and a 0-dim tensor.
std::vector<Case> unary(std::function<Tensor(const Tensor&)> op, double lo = -2.0, double hi = 2.0,
                        std::function<bool(double)> ok = {}) {
  Fn f = one([op](const TensorList& x) { return op(x[0]); });
  return {{"2x3", {in({2, 3}, lo, hi, ok)}, f}, {"0-dim", {in({}, lo, hi, ok)}, f}};
}

// Binary pointwise op over same-shape and broadcasting shape pairs.
std::vector<Case> binary(std::function<Tensor(const Tensor&, const Tensor&)> op, In a, In b) {
  Fn f = one([op](const TensorList& x) { return op(x[0], x[1]); });
  std::vector<Case> cases;
  for (auto [sa, sb] : std::vector<std::pair<Shape, Shape>>{
           {{2, 3}, {2, 3}}, {{2, 3}, {3}}, {{2, 1}, {1, 3}}, {{}, {2, 3}}, {{3, 2}, {}}}) {
    In x = a, y = b;
    x.shape = sa;
    y.shape = sb;
    cases.push_back({"broadcast " + shape_str(sa) + " " + shape_str(sb), {x, y}, f});
  }
  return cases;
}

Tensor mask_2x3() { return arange(6).view({2, 3}).remainder(3).ne(1); }  // [[1,0,1],[1,0,1]]

Table build_table() {
  Table t;
  // --- pointwise, one input ---
  t["copy"] = {
      {"clone", {in({2, 3})}, one([](const TensorList& x) { return x[0].clone(); })},
      {"broadcast into buffer", {in({3})},
       one([](const TensorList& x) { return zeros({2, 3}, kFloat64).copy_(x[0]); })},
      {"into a slice", {in({2})},
       one([](const TensorList& x) {
         Tensor buf = zeros({4}, kFloat64);
         buf.narrow(0, 1, 2).copy_(x[0]);
         return buf;
       })},
  };
  t["neg"] = unary([](const Tensor& x) { return -x; });
  t["abs"] = unary([](const Tensor& x) { return x.abs(); }, -2, 2, away_from_zero);
  t["sign"] = unary([](const Tensor& x) { return x.sign(); }, -2, 2, away_from_zero);
  t["exp"] = unary([](const Tensor& x) { return x.exp(); });
  t["exp2"] = unary([](const Tensor& x) { return x.exp2(); });
  t["log"] = unary([](const Tensor& x) { return x.log(); }, 0.2, 3);
  t["log2"] = unary([](const Tensor& x) { return x.log2(); }, 0.2, 3);
  t["log10"] = unary([](const Tensor& x) { return x.log10(); }, 0.2, 3);
  t["log1p"] = unary([](const Tensor& x) { return x.log1p(); }, -0.7, 3);
  t["expm1"] = unary([](const Tensor& x) { return x.expm1(); });
  t["sqrt"] = unary([](const Tensor& x) { return x.sqrt(); }, 0.2, 3);
  t["rsqrt"] = unary([](const Tensor& x) { return x.rsqrt(); }, 0.2, 3);
  t["reciprocal"] = unary([](const Tensor& x) { return x.reciprocal(); }, -2, 2,
                          [](double v) { return std::abs(v) > 0.3; });
  t["square"] = unary([](const Tensor& x) { return x.square(); });
  t["sin"] = unary([](const Tensor& x) { return x.sin(); });
  t["cos"] = unary([](const Tensor& x) { return x.cos(); });
  t["tan"] = unary([](const Tensor& x) { return x.tan(); }, -1.2, 1.2);
  t["tanh"] = unary([](const Tensor& x) { return x.tanh(); });
  t["sigmoid"] = unary([](const Tensor& x) { return x.sigmoid(); });
  t["relu"] = unary([](const Tensor& x) { return x.relu(); }, -2, 2, away_from_zero);
  t["gelu"] = unary([](const Tensor& x) { return gelu(x); }, -3, 3);
  t["gelu_tanh"] = unary([](const Tensor& x) { return gelu(x, "tanh"); }, -3, 3);
  t["silu"] = unary([](const Tensor& x) { return x.silu(); }, -3, 3);
  t["softplus"] = unary([](const Tensor& x) { return softplus(x); }, -3, 3);
  for (Case& c : unary([](const Tensor& x) { return softplus(x, 2.0, 1.0); }, -2, 2,
                       [](double v) { return std::abs(2 * v - 1) > 0.05; })) {
    c.label += " beta 2 threshold 1";  // both the linear and the smooth region
    t["softplus"].push_back(c);
  }
  t["erf"] = unary([](const Tensor& x) { return x.erf(); });
  t["floor"] = unary([](const Tensor& x) { return x.floor(); }, -3, 3, away_from_integers);
  t["ceil"] = unary([](const Tensor& x) { return x.ceil(); }, -3, 3, away_from_integers);
  t["round"] = unary([](const Tensor& x) { return x.round(); }, -3, 3, away_from_halves);
  t["trunc"] = unary([](const Tensor& x) { return x.trunc(); }, -3, 3, away_from_integers);

  // --- pointwise, several inputs ---
  t["add"] = binary([](const Tensor& a, const Tensor& b) { return a + b; }, in({}), in({}));
  t["add"].push_back({"alpha and scalar", {in({2, 3}), in({3})},
                      one([](const TensorList& x) { return add(x[0], x[1], 2.5) + 1.5; })});
  t["sub"] = binary([](const Tensor& a, const Tensor& b) { return a - b; }, in({}), in({}));
  t["sub"].push_back({"alpha and scalar", {in({2, 3}), in({3})},
                      one([](const TensorList& x) { return sub(x[0], x[1], -0.5) - 2.0; })});
  t["mul"] = binary([](const Tensor& a, const Tensor& b) { return a * b; }, in({}), in({}));
  t["mul"].push_back({"self times self", {in({2, 3})}, one([](const TensorList& x) { return x[0] * x[0]; })});
  t["div"] = binary([](const Tensor& a, const Tensor& b) { return a / b; }, in({}),
                    in({}, -2, 2, [](double v) { return std::abs(v) > 0.3; }));
  t["pow"] = binary([](const Tensor& a, const Tensor& b) { return a.pow(b); }, in({}, 0.3, 2), in({}, -2, 2));
  for (double e : {3.0, 2.5, 0.0, -1.0})
    t["pow"].push_back({"scalar exponent " + std::to_string(e), {in({2, 3}, e == 3.0 ? -2 : 0.3, 2)},
                        one([e](const TensorList& x) { return x[0].pow(e); })});
  t["pow"].push_back({"scalar base", {in({2, 3})}, one([](const TensorList& x) { return pow(2.0, x[0]); })});
  t["fmod"] = binary([](const Tensor& a, const Tensor& b) { return fmod(a, b); }, in({}, -3, 3), in({}, 0.7, 1.9));
  t["fmod"].push_back({"negative divisor", {in({2, 3}, -3, 3), in({3}, -1.9, -0.7)},
                       one([](const TensorList& x) { return fmod(x[0], x[1]); })});
  t["fmod"].push_back({"scalar divisor", {in({2, 3}, -3, 3, [](double v) { return away_from_integers(v / 1.5); })},
                       one([](const TensorList& x) { return fmod(x[0], 1.5); })});
  t["remainder"] =
      binary([](const Tensor& a, const Tensor& b) { return remainder(a, b); }, in({}, -3, 3), in({}, 0.7, 1.9));
  t["remainder"].push_back({"negative divisor", {in({2, 3}, -3, 3), in({3}, -1.9, -0.7)},
                            one([](const TensorList& x) { return remainder(x[0], x[1]); })});
  t["maximum"] = binary([](const Tensor& a, const Tensor& b) { return maximum(a, b); }, in({}), in({}));
  t["minimum"] = binary([](const Tensor& a, const Tensor& b) { return minimum(a, b); }, in({}), in({}));
  for (const char* op : {"maximum", "minimum"})  // ties split the gradient evenly (half each side)
    t[op].push_back({"ties", {values({3}, {1, 2, 3}), values({3}, {1, 0, 3})},
                     one([op](const TensorList& x) { return pointwise(op, {x[0], x[1]}); }), true, false});
  auto not_near = [](double p) { return [p](double v) { return std::abs(v - p) > 0.05; }; };
  t["clamp_min"] = binary([](const Tensor& x, const Tensor& lo) { return clamp(x, lo, std::nullopt); }, in({}),
                          in({}, -1, 1));
  t["clamp_min"].push_back({"scalar", {in({2, 3}, -2, 2, not_near(-0.5))},
                            one([](const TensorList& x) { return x[0].clamp_min(-0.5); })});
  t["clamp_max"] = binary([](const Tensor& x, const Tensor& hi) { return clamp(x, std::nullopt, hi); }, in({}),
                          in({}, -1, 1));
  t["clamp_max"].push_back({"scalar", {in({2, 3}, -2, 2, not_near(0.5))},
                            one([](const TensorList& x) { return x[0].clamp_max(0.5); })});
  Fn clamp3 = one([](const TensorList& x) { return clamp(x[0], x[1], x[2]); });
  t["clamp"] = {
      {"min < max", {in({2, 3}), in({2, 3}, -1.5, -0.5), in({3}, 0.5, 1.5)}, clamp3},
      {"min > max (the result is max)", {in({2, 3}), in({3}, 0.5, 1.5), in({2, 3}, -1.5, -0.5)}, clamp3},
      {"scalars", {in({2, 3}, -2, 2, [](double v) { return std::abs(std::abs(v) - 0.5) > 0.05; })},
       one([](const TensorList& x) { return x[0].clamp(-0.5, 0.5); })},
  };
  t["where"] = {
      {"tensors", {fixed(mask_2x3), in({2, 3}), in({3})},
       one([](const TensorList& x) { return where(x[0], x[1], x[2]); })},
      {"broadcast condition", {fixed([] { return tensor({true, false}).view({2, 1}); }), in({2, 3}), in({})},
       one([](const TensorList& x) { return where(x[0], x[1], x[2]); })},
      {"scalar other", {fixed(mask_2x3), in({2, 3})},
       one([](const TensorList& x) { return where(x[0], x[1], 0.5); })},
      {"masked_fill", {in({2, 3}), fixed(mask_2x3)},
       one([](const TensorList& x) { return x[0].masked_fill(x[1], 2.0); })},
  };

  // --- in-place forms (the node then saves copies of the overwritten values) ---
  t["mul"].push_back({"in place through a view", {in({3}), in({2})}, one([](const TensorList& x) {
                        Tensor y = x[0] * 1;
                        y.narrow(0, 1, 2).mul_(x[1]);
                        return y;
                      })});
  t["mul"].push_back({"in place, self twice", {in({2, 3})}, one([](const TensorList& x) {
                        Tensor y = x[0] * 1;
                        y.mul_(y);
                        return y;
                      })});
  t["div"].push_back({"in place", {in({2, 3}), in({3}, 0.5, 2)}, one([](const TensorList& x) {
                        Tensor y = x[0] * 1;
                        y.div_(x[1]);
                        return y;
                      })});
  t["exp"].push_back({"in place", {in({2, 3})}, one([](const TensorList& x) {
                        Tensor y = x[0] * 1;
                        y.exp_();
                        return y;
                      })});
  t["copy"].push_back({"shifted copy within one tensor", {in({4})}, one([](const TensorList& x) {
                         Tensor y = x[0] * 1;
                         y.narrow(0, 0, 3).copy_(y.narrow(0, 1, 3));  // overlapping source and target
                         return y;
                       })});
  t["relu"].push_back({"in place", {in({2, 3}, -2, 2, away_from_zero)}, one([](const TensorList& x) {
                         Tensor y = x[0] * 1;
                         y.relu_();
                         return y;
                       })});
  t["clamp"].push_back({"in place on a row", {in({2, 3}, -2, 2, [](double v) { return std::abs(std::abs(v) - 0.5) > 0.05; })},
                        one([](const TensorList& x) {
                          Tensor y = x[0] * 1;
                          y.select(0, 1).clamp_(-0.5, 0.5);
                          return y;
                        })});
  t["pow"].push_back({"pow_ in place", {in({2, 3}, 0.3, 2)}, one([](const TensorList& x) {
                        Tensor y = x[0] * 1;
                        y.pow_(2.5);
                        return y;
                      })});
  t["where"].push_back({"masked_fill_ in place", {in({2, 3}), fixed(mask_2x3)}, one([](const TensorList& x) {
                          Tensor y = x[0] * 1;
                          y.masked_fill_(x[1], 2.0);
                          return y;
                        })});
  t["tanh"].push_back({"in place on a transposed view", {in({2, 3})}, one([](const TensorList& x) {
                         Tensor y = x[0] * 1;
                         y.t().tanh_();
                         return y;
                       })});

  // --- views ---
  t["view"] = {
      {"2x3 -> 3x2", {in({2, 3})}, one([](const TensorList& x) { return x[0].view({3, 2}); }), false},
      {"flatten", {in({2, 3})}, one([](const TensorList& x) { return x[0].view({-1}); }), false},
      {"0-dim -> 1x1", {in({})}, one([](const TensorList& x) { return x[0].view({1, 1}); })},
      {"reshape of a non-contiguous input copies", {in({2, 3})},
       one([](const TensorList& x) { return x[0].t().reshape({6}); })},
  };
  t["permute"] = {{"3-D", {in({2, 3, 2})}, one([](const TensorList& x) { return x[0].permute({2, 0, 1}); })},
                  {"negative dims", {in({2, 3, 2})},
                   one([](const TensorList& x) { return x[0].permute({-1, 0, -2}); })}};
  t["transpose"] = {{"2-D", {in({2, 3})}, one([](const TensorList& x) { return x[0].transpose(0, 1); })},
                    {"3-D outer", {in({2, 3, 2})}, one([](const TensorList& x) { return x[0].transpose(0, -1); })}};
  t["unsqueeze"] = {{"middle", {in({2, 3})}, one([](const TensorList& x) { return x[0].unsqueeze(1); })},
                    {"last", {in({2, 3})}, one([](const TensorList& x) { return x[0].unsqueeze(-1); })},
                    {"0-dim", {in({})}, one([](const TensorList& x) { return x[0].unsqueeze(0); })}};
  t["squeeze"] = {{"all", {in({2, 1, 3})}, one([](const TensorList& x) { return x[0].squeeze(); })},
                  {"one dim", {in({2, 1, 3})}, one([](const TensorList& x) { return x[0].squeeze(1); })},
                  {"to 0-dim", {in({1})}, one([](const TensorList& x) { return x[0].squeeze(); })}};
  t["expand"] = {{"new and size-1 dims", {in({3, 1})}, one([](const TensorList& x) { return x[0].expand({2, 3, 4}); })},
                 {"0-dim", {in({})}, one([](const TensorList& x) { return x[0].expand({2, 2}); })}};
  t["select"] = {{"dim 1", {in({2, 3})}, one([](const TensorList& x) { return x[0].select(1, 2); })},
                 {"negative index", {in({3, 2})}, one([](const TensorList& x) { return x[0].select(0, -1); })}};
  t["slice"] = {{"step 2", {in({4, 3})}, one([](const TensorList& x) { return x[0].slice(0, 1, 4, 2); })},
                {"dim 1", {in({2, 3})}, one([](const TensorList& x) { return x[0].slice(1, 0, 2); })}};
  t["narrow"] = {{"dim 0", {in({4, 3})}, one([](const TensorList& x) { return x[0].narrow(0, 1, 2); })},
                 {"dim 1", {in({2, 3})}, one([](const TensorList& x) { return x[0].narrow(1, 1, 2); })}};
  t["unfold"] = {{"step >= size", {in({5})}, one([](const TensorList& x) { return x[0].unfold(0, 2, 2); })},
                 {"overlapping windows", {in({5})}, one([](const TensorList& x) { return x[0].unfold(0, 3, 1); })},
                 {"2-D", {in({2, 5})}, one([](const TensorList& x) { return x[0].unfold(1, 2, 1); })}};
  t["as_strided"] = {
      {"window", {in({2, 3})}, one([](const TensorList& x) { return x[0].as_strided({2, 2}, {3, 1}, 1); }), false},
      {"overlapping", {in({2, 3})}, one([](const TensorList& x) { return x[0].as_strided({3, 2}, {1, 1}, 0); }),
       false},
  };
  t["diagonal"] = {{"main", {in({3, 3})}, one([](const TensorList& x) { return x[0].diagonal(); })},
                   {"offset 1", {in({3, 4})}, one([](const TensorList& x) { return x[0].diagonal(1); })},
                   {"offset -1", {in({3, 4})}, one([](const TensorList& x) { return x[0].diagonal(-1); })},
                   {"batched", {in({2, 3, 3})}, one([](const TensorList& x) { return x[0].diagonal(0, 1, 2); })}};
  t["alias"] = {{"t() of a vector", {in({3})}, one([](const TensorList& x) { return x[0].t() * 1.0; })},
                {"squeeze of 0-dim", {in({})}, one([](const TensorList& x) { return x[0].squeeze(0) * 1.0; })}};

  // --- reductions ---
  auto reduce_cases = [](std::function<Tensor(const Tensor&, IntArrayRef, bool)> op, In base) {
    std::vector<Case> cs;
    auto with = [&](Shape s) { In r = base; r.shape = std::move(s); return r; };
    cs.push_back({"all", {with({2, 3})}, one([op](const TensorList& x) { return op(x[0], {}, false); })});
    cs.push_back({"dim 1", {with({2, 3})}, one([op](const TensorList& x) { return op(x[0], {1}, false); })});
    cs.push_back({"dim 0 keepdim", {with({2, 3})}, one([op](const TensorList& x) { return op(x[0], {0}, true); })});
    cs.push_back({"dims 0,2 of 3-D", {with({2, 2, 3})},
                  one([op](const TensorList& x) { return op(x[0], {0, -1}, false); })});
    cs.push_back({"0-dim", {with({})}, one([op](const TensorList& x) { return op(x[0], {}, false); })});
    cs.push_back({"0-dim, dim 0", {with({})}, one([op](const TensorList& x) { return op(x[0], {0}, false); })});
    cs.push_back({"0-dim, dim -1 keepdim", {with({})},
                  one([op](const TensorList& x) { return op(x[0], {-1}, true); })});
    return cs;
  };
  t["sum"] = reduce_cases([](const Tensor& x, IntArrayRef d, bool k) { return sum(x, d, k); }, in({}));
  t["sum"].push_back({"dtype", {in({2, 3})}, one([](const TensorList& x) { return sum(x[0], {1}, false, kFloat64); })});
  t["mean"] = reduce_cases([](const Tensor& x, IntArrayRef d, bool k) { return mean(x, d, k); }, in({}));
  t["prod"] = reduce_cases([](const Tensor& x, IntArrayRef d, bool k) { return prod(x, d, k); }, in({}, -1.5, 1.5));
  t["prod"].push_back({"one zero in a row", {values({2, 3}, {0.5, 0, 2, -1, 1.5, 0.7})},
                       one([](const TensorList& x) { return prod(x[0], {1}); })});
  t["prod"].push_back({"two zeros in a row", {values({2, 3}, {0, 0, 2, -1, 1.5, 0.7})},
                       one([](const TensorList& x) { return prod(x[0], {1}); })});
  t["prod"].push_back({"zero, all dims", {values({2, 3}, {0.5, 0, 2, -1, 1.5, 0.7})},
                       one([](const TensorList& x) { return x[0].prod(); })});
  t["amax"] = reduce_cases([](const Tensor& x, IntArrayRef d, bool k) { return amax(x, d, k); }, in({}));
  t["amin"] = reduce_cases([](const Tensor& x, IntArrayRef d, bool k) { return amin(x, d, k); }, in({}));
  // A tie between two elements: central differences see half the slope, the even split.
  t["amax"].push_back({"tied pair", {values({2, 3}, {1, 3, 3, 0, -1, 2})},
                       one([](const TensorList& x) { return amax(x[0], {1}); }), true, false});
  t["amin"].push_back({"tied pair", {values({2, 3}, {1, -3, -3, 0, -1, 2})},
                       one([](const TensorList& x) { return amin(x[0], {1}); }), true, false});
  t["amax"].push_back({"max() of all", {in({2, 3})}, one([](const TensorList& x) { return x[0].max(); })});
  t["amin"].push_back({"min() of all", {in({2, 3})}, one([](const TensorList& x) { return x[0].min(); })});
  auto dim_cases = [](bool is_max) {
    auto f = [is_max](int64_t dim, bool keep) {
      return Fn([=](const TensorList& x) {
        auto [v, i] = is_max ? x[0].max(dim, keep) : x[0].min(dim, keep);
        return TensorList{v, i};
      });
    };
    return std::vector<Case>{{"dim 1", {in({2, 3})}, f(1, false)},
                             {"dim 0 keepdim", {in({3, 2})}, f(0, true)},
                             {"dim -1 of 3-D", {in({2, 2, 3})}, f(-1, false)},
                             {"0-dim", {in({})}, f(0, false)}};
  };
  t["max_dim"] = dim_cases(true);
  t["min_dim"] = dim_cases(false);
  auto var_like = [](int which) {
    auto f = [which](Shape dims, int64_t correction, bool keep) {
      return Fn([=](const TensorList& x) {
        if (which == 0) return TensorList{var(x[0], dims, correction, keep)};
        if (which == 1) return TensorList{kiln::std(x[0], dims, correction, keep)};
        auto [v, m] = var_mean(x[0], dims, correction, keep);
        return TensorList{v, m};
      });
    };
    return std::vector<Case>{{"all", {in({2, 3})}, f({}, 1, false)},
                             {"dim 1", {in({2, 3})}, f({1}, 1, false)},
                             {"dim 0 correction 0 keepdim", {in({3, 2})}, f({0}, 0, true)},
                             {"dims 0,2 of 3-D correction 2", {in({2, 2, 3})}, f({0, 2}, 2, false)},
                             {"0-dim, dim 0", {in({})}, f({0}, 0, false)}};
  };
  t["var"] = var_like(0);
  t["std"] = var_like(1);
  t["var_mean"] = var_like(2);
  t["logsumexp"] = reduce_cases([](const Tensor& x, IntArrayRef d, bool k) {
    if (d.empty()) {
      Shape all;
      for (int64_t i = 0; i < x.dim(); ++i) all.push_back(i);
      return logsumexp(x, all, k);
    }
    return logsumexp(x, d, k);
  }, in({}));
  auto softmax_cases = [](bool log) {
    auto f = [log](int64_t dim) {
      return one([=](const TensorList& x) { return log ? log_softmax(x[0], dim) : softmax(x[0], dim); });
    };
    return std::vector<Case>{{"dim 1", {in({2, 3})}, f(1)},
                             {"dim 0", {in({3, 2})}, f(0)},
                             {"dim -2 of 3-D", {in({2, 3, 2})}, f(-2)},
                             {"0-dim", {in({})}, f(0)}};
  };
  t["softmax"] = softmax_cases(false);
  t["log_softmax"] = softmax_cases(true);
  t["cumsum"] = {{"dim 1", {in({2, 3})}, one([](const TensorList& x) { return x[0].cumsum(1); })},
                 {"dim 0", {in({3, 2})}, one([](const TensorList& x) { return x[0].cumsum(0); })},
                 {"dim -1 of 1-D", {in({4})}, one([](const TensorList& x) { return x[0].cumsum(-1); })},
                 {"0-dim", {in({})}, one([](const TensorList& x) { return x[0].cumsum(0); })}};

  // --- linear algebra ---
  Fn mm2 = one([](const TensorList& x) { return mm(x[0], x[1]); });
  Fn mat = one([](const TensorList& x) { return matmul(x[0], x[1]); });
  t["mm"] = {{"2x3 3x2", {in({2, 3}), in({3, 2})}, mm2}, {"1x3 3x1", {in({1, 3}), in({3, 1})}, mm2}};
  t["bmm"] = {{"2x1x3 2x3x2", {in({2, 1, 3}), in({2, 3, 2})},
               one([](const TensorList& x) { return bmm(x[0], x[1]); })},
              {"2x2x2 2x2x1", {in({2, 2, 2}), in({2, 2, 1})},
               one([](const TensorList& x) { return bmm(x[0], x[1]); })}};
  t["matmul"] = {{"vector . vector", {in({3}), in({3})}, mat},
                 {"matrix x vector", {in({2, 3}), in({3})}, mat},
                 {"vector x matrix", {in({3}), in({3, 2})}, mat},
                 {"batched x matrix", {in({2, 2, 3}), in({3, 1})}, mat},
                 {"batch broadcast", {in({2, 1, 1, 3}), in({2, 3, 2})}, mat},
                 {"small batch broadcast", {in({2, 1, 1, 2}), in({2, 2, 1})}, mat},
                 {"vector x batched", {in({3}), in({2, 3, 2})}, mat},
                 {"batched x vector", {in({2, 2, 3}), in({3})}, mat}};
  t["linear"] = {
      {"bias", {in({2, 3}), in({3, 3}), in({3})},
       one([](const TensorList& x) { return linear(x[0], x[1], x[2]); })},
      {"no bias, 3-D input", {in({2, 2, 3}), in({2, 3})},
       one([](const TensorList& x) { return linear(x[0], x[1]); })},
      {"1-D input", {in({3}), in({2, 3}), in({2})},
       one([](const TensorList& x) { return linear(x[0], x[1], x[2]); })},
  };
  return t;
}

const Table& table() {
  static const Table t = build_table();
  return t;
}

uint64_t seed_of(const std::string& s, size_t a, size_t b) {
  uint64_t h = 1469598103934665603ull;
  for (char ch : s) h = (h ^ static_cast<uint8_t>(ch)) * 1099511628211ull;
  return h ^ (a * 7919 + b * 104729);
}

Tensor make_input(const In& spec, uint64_t seed, Layout layout) {
  if (spec.fixed) return spec.fixed();
  Tensor v = empty(spec.shape, kFloat64);
  double* p = v.data_ptr<double>();
  if (!spec.values.empty()) {
    KILN_INTERNAL_ASSERT(static_cast<int64_t>(spec.values.size()) == v.numel(), "bad explicit values");
    std::copy(spec.values.begin(), spec.values.end(), p);
  } else {
    std::mt19937_64 gen(seed);
    std::uniform_real_distribution<double> u(spec.lo, spec.hi);
    for (int64_t i = 0; i < v.numel(); ++i) {
      do p[i] = u(gen);
      while (spec.ok && !spec.ok(p[i]));
    }
  }
  NoGradGuard no_grad;  // the layout's buffer and view are plain tensors: the leaf is the view
  return apply_layout(v, layout).requires_grad_();
}

bool applies(const Case& c, Layout l) {
  if (l == Layout::Contiguous) return true;
  if (!c.layouts) return false;
  for (const In& i : c.inputs) {
    if (i.fixed) continue;
    if (l == Layout::Transposed && i.shape.size() >= 2) return true;
    if (l == Layout::Sliced && !i.shape.empty()) return true;
  }
  return false;
}

class Gradcheck : public ::testing::TestWithParam<std::string> {};

TEST_P(Gradcheck, Row) {
  const std::string& name = GetParam();
  const auto& cases = table().at(name);
  ASSERT_FALSE(cases.empty());
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const Case& c = cases[ci];
    if (const std::string* bug = known_bug(name, c.label)) {
      std::cout << "[ SKIPPED  ] " << name << " [" << c.label << "]: known bug: " << *bug << "\n";
      continue;
    }
    for (Layout l : {Layout::Contiguous, Layout::Transposed, Layout::Sliced}) {
      if (!applies(c, l)) continue;
      TensorList inputs;
      for (size_t k = 0; k < c.inputs.size(); ++k) inputs.push_back(make_input(c.inputs[k], seed_of(name, ci, k), l));
      autograd::GradcheckResult r;
      try {
        r = autograd::gradcheck(c.f, inputs);
      } catch (const Error& e) {
        r = {false, std::string("raised: ") + e.what()};
      }
      EXPECT_TRUE(r.ok) << name << " [" << c.label << ", " << optable::layout_name(l) << "]: " << r.message;
    }
  }
}

// Second derivatives: the vjps are written with public ops, so their results are themselves
// differentiable (create_graph). gradcheck of x -> d<w, f(x)>/dx, w fixed and not all ones.
Fn first_derivative(const Fn& f) {
  return [f](const TensorList& in) {
    EnableGradGuard enable;  // gradcheck evaluates its numerical side under NoGradGuard
    TensorList outs = f(in), diff;
    Tensor total;
    for (const Tensor& o : outs) {
      if (!o.defined() || !o.is_floating_point() || !o.requires_grad()) continue;
      Tensor w = (arange(o.numel(), TensorOptions().dtype(kFloat64)) * 1.3 + 0.5).cos().view(o.sizes());
      Tensor term = (o * w).sum();
      total = total.defined() ? total + term : term;
    }
    for (const Tensor& x : in)
      if (x.requires_grad()) diff.push_back(x);
    TensorList g = total.defined() ? autograd::grad({total}, diff, {}, std::nullopt, /*create_graph=*/true,
                                                    /*allow_unused=*/true)
                                   : TensorList(diff.size());
    for (size_t i = 0; i < g.size(); ++i)
      if (!g[i].defined()) g[i] = zeros_like(diff[i]);
    return g;
  };
}

class GradGradcheck : public ::testing::TestWithParam<std::string> {};

TEST_P(GradGradcheck, Row) {
  const std::string& name = GetParam();
  const auto& cases = table().at(name);
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const Case& c = cases[ci];
    if (!c.smooth || known_bug(name, c.label)) continue;
    // The check is O(numel^2) forward-and-backward passes: the larger cases are first-order only.
    int64_t numel = 0;
    for (const In& i : c.inputs)
      if (!i.fixed) numel += shape_numel(i.shape);
    if (numel > 24) continue;
    if (const std::string* bug = known_second_order_bug(name, c.label)) {
      std::cout << "[ SKIPPED  ] " << name << " [" << c.label << "] second derivative: known bug: " << *bug << "\n";
      continue;
    }
    TensorList inputs;
    for (size_t k = 0; k < c.inputs.size(); ++k)
      inputs.push_back(make_input(c.inputs[k], seed_of(name, ci, k), Layout::Contiguous));
    autograd::GradcheckResult r;
    try {
      r = autograd::gradcheck(first_derivative(c.f), inputs);
    } catch (const Error& e) {
      r = {false, std::string("raised: ") + e.what()};
    }
    EXPECT_TRUE(r.ok) << name << " [" << c.label << "] second derivative: " << r.message;
  }
}

std::vector<std::string> table_names() {
  std::vector<std::string> names;
  for (const auto& [name, cases] : table()) names.push_back(name);
  return names;
}

INSTANTIATE_TEST_SUITE_P(Rows, Gradcheck, ::testing::ValuesIn(table_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

INSTANTIATE_TEST_SUITE_P(Rows, GradGradcheck, ::testing::ValuesIn(table_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

TEST(GradcheckTable, EveryDifferentiableRowHasCases) {
  for (const OpDef* d : OpRegistry::instance().all()) {
    if (!d->differentiable) continue;
    if (kDelegated.count(d->name)) continue;
    EXPECT_TRUE(table().count(d->name)) << "differentiable row '" << d->name
                                        << "' has no gradcheck case in tests/autograd_gradcheck_test.cpp";
  }
}

TEST(GradcheckTable, NamesAreDifferentiableRows) {
  for (const auto& [name, cases] : table()) {
    const OpDef* d = OpRegistry::instance().find(name);
    ASSERT_NE(d, nullptr) << "table entry '" << name << "' is not a registry row";
    EXPECT_TRUE(d->differentiable) << name;
    EXPECT_FALSE(kDelegated.count(name)) << name << " is both delegated and in the table";
  }
  for (const std::string& name : kDelegated) {
    const OpDef* d = OpRegistry::instance().find(name);
    ASSERT_NE(d, nullptr) << "delegated '" << name << "' is not a registry row";
    EXPECT_TRUE(d->differentiable) << name;
  }
}

// The table's cases must exercise the row they are filed under.
TEST(GradcheckTable, CasesRecordTheirRow) {
  for (const auto& [name, cases] : table()) {
    for (size_t ci = 0; ci < cases.size(); ++ci) {
      const Case& c = cases[ci];
      TensorList inputs;
      for (size_t k = 0; k < c.inputs.size(); ++k)
        inputs.push_back(make_input(c.inputs[k], seed_of(name, ci, k), Layout::Contiguous));
      TensorList outs = c.f(inputs);  // forward only: safe for known vjp bugs too
      // Walk the recorded graph from the first floating output looking for the row's node.
      std::vector<std::shared_ptr<autograd::Node>> stack;
      std::set<const autograd::Node*> seen;
      for (const Tensor& o : outs)
        if (o.defined() && o.requires_grad() && o.grad_fn()) stack.push_back(o.grad_fn());
      bool found = false;
      while (!stack.empty() && !found) {
        auto n = stack.back();
        stack.pop_back();
        if (!seen.insert(n.get()).second) continue;
        std::string nm = n->name();
        found = nm == name + "Backward" || nm.find("(" + name + "Backward)") != std::string::npos;
        for (const auto& e : n->next_edges)
          if (e.fn) stack.push_back(e.fn);
      }
      EXPECT_TRUE(found) << name << " [" << c.label << "] does not record a " << name << " node";
    }
  }
}

// --- gradcheck itself ------------------------------------------------------------------------------

TEST(GradcheckSelf, DetectsAWrongGradient) {
  Tensor x = tensor({1.0, 2.0}, kFloat64).requires_grad_();
  auto wrong = [](const TensorList& in) {
    Tensor y = in[0] * 2;
    if (y.requires_grad()) y.register_hook([](const Tensor& g) { return g * 3; });
    return TensorList{y};
  };
  autograd::GradcheckResult r = autograd::gradcheck(wrong, {x});
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.message.find("numerical 2"), std::string::npos) << r.message;
  EXPECT_NE(r.message.find("analytical 6"), std::string::npos) << r.message;
  EXPECT_TRUE(autograd::gradcheck([](const TensorList& in) { return TensorList{in[0] * 2}; }, {x}).ok);
}

TEST(GradcheckSelf, OutputsOutsideTheGraphMustBeConstant) {
  Tensor x = tensor({1.0, 2.0}, kFloat64).requires_grad_();
  auto detached = [](const TensorList& in) { return TensorList{in[0].detach() * 2}; };
  EXPECT_FALSE(autograd::gradcheck(detached, {x}).ok);
  auto constant = [](const TensorList& in) { return TensorList{in[0] * 2, ones({2}, kFloat64), in[0].argmax()}; };
  EXPECT_TRUE(autograd::gradcheck(constant, {x}).ok);
}

TEST(GradcheckSelf, OutputsOfOtherFloatingDtypes) {
  // A float32 output: checked with a coarser step, as its numerical side has float32 precision.
  Tensor x = tensor({1.0, 2.0, 3.0}, kFloat64).requires_grad_();
  auto f = [](const TensorList& in) { return TensorList{(in[0] * 2).to(kFloat32)}; };
  autograd::GradcheckResult r = autograd::gradcheck(f, {x}, {1e-2, 1e-3, 1e-2});
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(GradcheckSelf, Errors) {
  Tensor f32 = tensor({1.0f}).requires_grad_();
  auto id = [](const TensorList& in) { return TensorList{in[0] * 1}; };
  EXPECT_KILN_ERROR(autograd::gradcheck(id, {f32}), "[gradcheck]", "float64", "float32");
  EXPECT_KILN_ERROR(autograd::gradcheck(id, {tensor({1.0}, kFloat64)}), "[gradcheck]", "no input requires grad");
}

}  // namespace
