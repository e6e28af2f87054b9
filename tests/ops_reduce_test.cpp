// Reductions: op-table rows for every op over dims variants, shapes (0-dim, 0-size, long rows,
// many rows, column tiles, parallel sizes), dtypes and layouts against float64 loop references;
// then dtype rules, special values (NaN, inf), precision, out= and every error path.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "core/op.h"
#include "op_table.h"

using namespace kiln;
using namespace kiln::optable;
using kiln::testing::close;
using kiln::testing::to_vec;

namespace {

using Group = std::vector<double>;
const double kNaN = std::numeric_limits<double>::quiet_NaN();
const double kInf = std::numeric_limits<double>::infinity();

// --- float64 references over one group of reduced values --------------------------------------
double r_sum(const Group& g) { return std::accumulate(g.begin(), g.end(), 0.0); }
double r_mean(const Group& g) { return r_sum(g) / static_cast<double>(g.size()); }
double r_prod(const Group& g) {
  double p = 1;
  for (double v : g) p *= v;
  return p;
}
double r_max(const Group& g) {
  double m = -kInf;
  for (double v : g) m = std::isnan(v) || std::isnan(m) ? kNaN : std::max(m, v);
  return m;
}
double r_min(const Group& g) {
  double m = kInf;
  for (double v : g) m = std::isnan(v) || std::isnan(m) ? kNaN : std::min(m, v);
  return m;
}
double r_argmax(const Group& g) {
  size_t best = 0;
  for (size_t i = 1; i < g.size(); ++i)
    if (!std::isnan(g[best]) && (std::isnan(g[i]) || g[i] > g[best])) best = i;
  return static_cast<double>(best);
}
double r_argmin(const Group& g) {
  size_t best = 0;
  for (size_t i = 1; i < g.size(); ++i)
    if (!std::isnan(g[best]) && (std::isnan(g[i]) || g[i] < g[best])) best = i;
  return static_cast<double>(best);
}
double r_var(const Group& g, int64_t correction) {
  if (g.empty()) return kNaN;
  long double acc = 0;
  for (double v : g) acc += v;
  const double m = static_cast<double>(acc / static_cast<long double>(g.size()));
  double s = 0;
  for (double v : g) s += (v - m) * (v - m);
  return s / std::max(0.0, static_cast<double>(g.size()) - static_cast<double>(correction));
}
double r_logsumexp(const Group& g) {
  const double m = r_max(g);
  const double shift = std::isinf(m) ? 0.0 : m;
  double s = 0;
  for (double v : g) s += std::exp(v - shift);
  return std::log(s) + shift;
}
double r_all(const Group& g) {
  for (double v : g)
    if (v == 0) return 0;
  return 1;
}
double r_any(const Group& g) {
  for (double v : g)
    if (v != 0) return 1;
  return 0;
}

// Applies f to every 1-d slice along `dim` of a float64 contiguous tensor.
Tensor ref_along(const Tensor& x, int64_t dim, const std::function<Group(const Group&)>& f) {
  Tensor out = empty(x.sizes(), kFloat64);
  if (x.numel() == 0) return out;
  const int64_t nd = x.dim();
  if (nd == 0) {
    out.data_ptr<double>()[0] = f({x.data_ptr<double>()[0]})[0];
    return out;
  }
  dim = dim < 0 ? dim + nd : dim;
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= x.size(d);
  for (int64_t d = dim + 1; d < nd; ++d) inner *= x.size(d);
  const int64_t n = x.size(dim);
  const double* p = x.data_ptr<double>();
  double* q = out.data_ptr<double>();
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      Group g(static_cast<size_t>(n));
      for (int64_t k = 0; k < n; ++k) g[k] = p[(o * n + k) * inner + i];
      Group r = f(g);
      for (int64_t k = 0; k < n; ++k) q[(o * n + k) * inner + i] = r[k];
    }
  return out;
}

Group r_softmax(const Group& g) {
  const double m = r_max(g);
  double s = 0;
  for (double v : g) s += std::exp(v - m);
  Group r;
  for (double v : g) r.push_back(std::exp(v - m) / s);
  return r;
}
Group r_log_softmax(const Group& g) {
  const double m = r_max(g);
  double s = 0;
  for (double v : g) s += std::exp(v - m);
  Group r;
  for (double v : g) r.push_back(v - m - std::log(s));
  return r;
}
Group r_cumsum(const Group& g) {
  Group r;
  double acc = 0;
  for (double v : g) r.push_back(acc += v);
  return r;
}

// --- dims variants ---------------------------------------------------------------------------
struct Variant {
  std::vector<int64_t> dims;
  bool keepdim;
  std::vector<std::vector<Shape>> shapes;
  bool core = false;  // also run by the light specs
};

std::vector<Variant> variants() {
  const std::vector<std::vector<Shape>> r3{{{4, 5, 6}}, {{3, 1, 33}}, {{2, 0, 3}}};
  // Long rows (cascaded blocks), many rows (> kCascade), > 1024 columns (two column tiles), and
  // sizes that take the parallel paths (over outputs, and split over the reduced space).
  const std::vector<std::vector<Shape>> r2{{{7, 9}},     {{5, 1100}},  {{300, 5}}, {{2, 5000}},
                                           {{12000, 3}}, {{3, 12000}}, {{0, 4}}};
  return {
      {{}, false, {{{4, 5, 6}}, {{7, 9}}, {{36000}}, {{}}, {{2, 0, 3}}, {{1}}}, true},
      {{}, true, {{{4, 5, 6}}, {{}}, {{0}}}},
      {{0}, false, r3, true},
      {{1}, true, r3},
      {{2}, false, r3},
      {{-1}, true, r3, true},
      {{0, 2}, false, r3, true},
      {{-1, 0}, true, r3},
      {{0, 1, 2}, false, r3},
      {{0}, false, r2, true},
      {{1}, false, r2},
      {{-1}, true, r2, true},
      {{1, 0}, false, r2},
      {{0}, false, {{{}}}, true},
      {{-1}, true, {{{}}}},
  };
}

bool is_big(const std::vector<Shape>& set) { return shape_numel(set[0]) > 16384; }

// Drops shape sets that reduce an empty dim (ops with no identity raise there).
std::vector<std::vector<Shape>> nonempty_reductions(const Variant& v) {
  std::vector<std::vector<Shape>> r;
  for (const auto& set : v.shapes) {
    const Shape& s = set[0];
    bool bad = false;
    for (size_t d = 0; d < s.size(); ++d) {
      bool reduced = v.dims.empty();
      for (int64_t k : v.dims) reduced |= (k < 0 ? k + static_cast<int64_t>(s.size()) : k) == static_cast<int64_t>(d);
      bad |= reduced && s[d] == 0;
    }
    if (!bad) r.push_back(set);
  }
  return r;
}

std::string variant_name(const std::string& op, const Variant& v) {
  std::ostringstream os;
  os << op << " dims=" << IntArrayRef(v.dims) << " keepdim=" << v.keepdim;
  return os.str();
}

using ReduceRun = std::function<Tensor(const Tensor&, const std::vector<int64_t>&, bool)>;

struct ReduceSpec {
  std::string name;
  ReduceRun run;
  std::function<double(const Group&)> ref;
  std::vector<DType> dtypes;
  bool needs_nonempty = false;
  std::function<DType(DType)> out_dtype{};
  Domain domain{};
  double tol_scale = 1.0;
  InputFn make_input{};
  bool light = false;           // core variants and small shapes only
  int64_t max_reduced = -1;     // skip shape sets reducing more values (prod overflows)
};

int64_t reduced_count(const Shape& s, const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (size_t d = 0; d < s.size(); ++d) {
    bool reduced = dims.empty();
    for (int64_t k : dims) reduced |= (k < 0 ? k + static_cast<int64_t>(s.size()) : k) == static_cast<int64_t>(d);
    if (reduced) n *= s[d];
  }
  return n;
}

// Every dtype runs the small shapes; the large (parallel-path) shapes run float32 and int32.
void check_reduce(const ReduceSpec& s) {
  for (const Variant& v : variants()) {
    if (s.light && !v.core) continue;
    std::vector<std::vector<Shape>> small, big;
    for (const auto& set : s.needs_nonempty ? nonempty_reductions(v) : v.shapes) {
      if (s.max_reduced >= 0 && reduced_count(set[0], v.dims) > s.max_reduced) continue;
      (is_big(set) ? big : small).push_back(set);
    }
    std::vector<DType> big_dtypes;
    for (DType d : s.dtypes)
      if (d == kFloat32 || d == kInt32) big_dtypes.push_back(d);
    for (int pass = 0; pass < 2; ++pass) {
      OpCase c;
      c.name = variant_name(s.name, v);
      c.shape_sets = pass == 0 ? small : big;
      c.dtypes = pass == 0 ? s.dtypes : big_dtypes;
      if (c.shape_sets.empty() || (pass == 1 && s.light)) continue;
      c.run = [run = s.run, v](const TensorList& in) { return run(in[0], v.dims, v.keepdim); };
      c.ref = [ref = s.ref, v](const TensorList& in) {
        // A 0-dim tensor accepts dim 0 / -1 and reduces its single value.
        return ref_reduce(in[0], in[0].dim() == 0 ? std::vector<int64_t>{} : v.dims, v.keepdim, ref);
      };
      c.out_dtype = s.out_dtype;
      c.domain = s.domain;
      c.tol_scale = s.tol_scale;
      c.make_input = s.make_input;
      check_case(c);
    }
  }
}

ReduceSpec light(ReduceSpec s) {
  s.light = true;
  return s;
}

DType int_to_long(DType d) { return is_integral(d, true) ? kInt64 : d; }

// Inputs with many exact zeros (for all/any on floats).
Tensor sparse_input(size_t, const Shape& shape, DType dt) {
  static uint64_t seed = 99;
  Tensor t = random_input(shape, kFloat64, Domain{-1.0, 2.0}, ++seed);
  double* p = t.data_ptr<double>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = p[i] < 0 ? 0.0 : p[i];
  return t.to(dt);
}

}  // namespace

// --- op table: dim reductions ----------------------------------------------------------------

TEST(Reduce, Sum) {
  check_reduce({"sum", [](const Tensor& x, auto d, bool k) { return sum(x, d, k); }, r_sum, all_dtypes(), false,
                int_to_long});
}

TEST(Reduce, SumWithDtype) {
  check_reduce(light({"sum(dtype=float64)", [](const Tensor& x, auto d, bool k) { return sum(x, d, k, kFloat64); },
                      r_sum, {kInt32, kFloat16, kBool, kFloat32}, false, [](DType) { return kFloat64; }}));
}

TEST(Reduce, Mean) {
  check_reduce({"mean", [](const Tensor& x, auto d, bool k) { return mean(x, d, k); }, r_mean, float_dtypes()});
  check_reduce(light({"mean(dtype=float32)", [](const Tensor& x, auto d, bool k) { return mean(x, d, k, kFloat32); },
                      r_mean, {kInt64, kUInt8, kFloat16}, false, [](DType) { return kFloat32; }}));
  // The sum divided by the count (one rounding): where the sum is exact, the mean of equal values
  // is exact, also for counts whose reciprocal does not round exactly (36.75 * fl(1/49) is not
  // 0.75; 36.75 / 49 is).
  for (int64_t n : {49, 98, 13}) {
    EXPECT_TRUE(equal(full({3, n}, 0.75, kFloat64).mean({1}), full({3}, 0.75, kFloat64))) << n;
    EXPECT_TRUE(equal(full({n, 5}, 7.0, kFloat64).mean({0}), full({5}, 7.0, kFloat64))) << n;
  }
}

TEST(Reduce, Prod) {
  ReduceSpec s{"prod", [](const Tensor& x, auto d, bool k) { return prod(x, d, k); }, r_prod, all_dtypes(), false,
               int_to_long, Domain{-1.5, 1.5}};
  s.tol_scale = 4;
  s.max_reduced = 120;
  check_reduce(s);
}

TEST(Reduce, AmaxAmin) {
  check_reduce({"amax", [](const Tensor& x, auto d, bool k) { return amax(x, d, k); }, r_max, all_dtypes(), true,
                [](DType d) { return d; }});
  check_reduce({"amin", [](const Tensor& x, auto d, bool k) { return amin(x, d, k); }, r_min, all_dtypes(), true,
                [](DType d) { return d; }});
}

TEST(Reduce, VarStd) {
  for (int64_t corr : {1, 0, 2}) {
    ReduceSpec s{"var(correction=" + std::to_string(corr) + ")",
                 [corr](const Tensor& x, auto d, bool k) { return var(x, d, corr, k); },
                 [corr](const Group& g) { return r_var(g, corr); }, float_dtypes()};
    check_reduce(corr == 1 ? s : light(s));
  }
  check_reduce(light({"std", [](const Tensor& x, auto d, bool k) { return kiln::std(x, d, 1, k); },
                      [](const Group& g) { return std::sqrt(r_var(g, 1)); }, float_dtypes()}));
  check_reduce(light({"var_mean.var",
                      [](const Tensor& x, auto d, bool k) { return std::get<0>(var_mean(x, d, 1, k)); },
                      [](const Group& g) { return r_var(g, 1); }, float_dtypes()}));
  check_reduce(light({"var_mean.mean",
                      [](const Tensor& x, auto d, bool k) { return std::get<1>(var_mean(x, d, 1, k)); }, r_mean,
                      float_dtypes()}));
}

TEST(Reduce, LogSumExp) {
  ReduceSpec s{"logsumexp", [](const Tensor& x, auto d, bool k) { return logsumexp(x, d, k); }, r_logsumexp,
               float_dtypes(), false, [](DType d) { return d; }, Domain{-20, 20}};
  check_reduce(s);
  s.name = "logsumexp(int)";
  s.dtypes = {kInt32, kInt64, kBool, kUInt8};
  s.out_dtype = [](DType) { return kFloat32; };
  check_reduce(light(s));
}

TEST(Reduce, AllAny) {
  auto bool_out = [](DType) { return kBool; };
  ReduceSpec a{"all", [](const Tensor& x, auto d, bool k) { return all(x, d, k); }, r_all, all_dtypes(), false,
               bool_out, Domain{-1, 1}};
  ReduceSpec o{"any", [](const Tensor& x, auto d, bool k) { return any(x, d, k); }, r_any, all_dtypes(), false,
               bool_out, Domain{-1, 1}};
  check_reduce(a);
  check_reduce(o);
  a.name = "all(sparse floats)";
  o.name = "any(sparse floats)";
  a.dtypes = o.dtypes = float_dtypes();
  a.make_input = o.make_input = sparse_input;
  check_reduce(light(a));
  check_reduce(light(o));
}

// --- op table: single-dim ops ----------------------------------------------------------------

namespace {
struct DimVariant {
  int64_t dim;
  bool keepdim;
  std::vector<std::vector<Shape>> shapes;
};
std::vector<DimVariant> dim_variants() {
  return {
      {0, false, {{{4, 5, 6}}, {{3, 1, 33}}, {{300, 5}}, {{3, 1100}}, {{12000, 3}}}},
      {1, true, {{{4, 5, 6}}, {{3, 1, 33}}, {{2, 0, 3}}, {{5, 300}}, {{3, 12000}}}},
      {-1, false, {{{4, 5, 6}}, {{2, 5000}}, {{0, 7}}, {{1}}}},
      {0, true, {{{}}}},
      {-1, false, {{{}}}},
  };
}

// Reduces with ref over one dim; empty reduced dims are skipped (these ops raise there).
void check_dim_op(const std::string& name, const std::vector<DType>& dtypes,
                  const std::function<Tensor(const Tensor&, int64_t, bool)>& run,
                  const std::function<double(const Group&)>& ref, std::function<DType(DType)> out_dtype) {
  for (const DimVariant& v : dim_variants()) {
    OpCase c;
    c.name = name + " dim=" + std::to_string(v.dim) + " keepdim=" + std::to_string(v.keepdim);
    for (const auto& set : v.shapes) {
      const Shape& s = set[0];
      if (!s.empty() && s[v.dim < 0 ? v.dim + s.size() : v.dim] == 0) continue;
      c.shape_sets.push_back(set);
    }
    c.dtypes = dtypes;
    c.run = [run, v](const TensorList& in) { return run(in[0], v.dim, v.keepdim); };
    c.ref = [ref, v](const TensorList& in) {
      return ref_reduce(in[0], in[0].dim() == 0 ? std::vector<int64_t>{} : std::vector<int64_t>{v.dim}, v.keepdim,
                        ref);
    };
    c.out_dtype = out_dtype;
    // Large (parallel-path) shapes run float32 and int32 only.
    OpCase big = c;
    big.shape_sets.clear();
    big.dtypes.clear();
    for (DType d : dtypes)
      if (d == kFloat32 || d == kInt32) big.dtypes.push_back(d);
    std::vector<std::vector<Shape>> small;
    for (const auto& set : c.shape_sets) (is_big(set) ? big.shape_sets : small).push_back(set);
    c.shape_sets = small;
    check_case(c);
    check_case(big);
  }
}

std::vector<DType> no_bool() { return numeric_dtypes(); }
}  // namespace

TEST(Reduce, MaxMinWithDim) {
  auto same = [](DType d) { return d; };
  auto lng = [](DType) { return kInt64; };
  check_dim_op("max.values", all_dtypes(), [](const Tensor& x, int64_t d, bool k) { return std::get<0>(max(x, d, k)); },
               r_max, same);
  check_dim_op("max.indices", all_dtypes(),
               [](const Tensor& x, int64_t d, bool k) { return std::get<1>(max(x, d, k)); }, r_argmax, lng);
  check_dim_op("min.values", all_dtypes(), [](const Tensor& x, int64_t d, bool k) { return std::get<0>(min(x, d, k)); },
               r_min, same);
  check_dim_op("min.indices", all_dtypes(),
               [](const Tensor& x, int64_t d, bool k) { return std::get<1>(min(x, d, k)); }, r_argmin, lng);
}

TEST(Reduce, ArgmaxArgmin) {
  auto lng = [](DType) { return kInt64; };
  check_dim_op("argmax", no_bool(), [](const Tensor& x, int64_t d, bool k) { return argmax(x, d, k); }, r_argmax, lng);
  check_dim_op("argmin", no_bool(), [](const Tensor& x, int64_t d, bool k) { return argmin(x, d, k); }, r_argmin, lng);
  // Without a dim: index into the flattened tensor.
  for (bool keep : {false, true}) {
    OpCase c;
    c.name = std::string("argmax(dim=None) keepdim=") + (keep ? "1" : "0");
    c.shape_sets = {{{4, 5, 6}}, {{7, 9}}, {{36000}}, {{}}, {{2, 1, 3}}};
    c.dtypes = no_bool();
    c.run = [keep](const TensorList& in) { return argmax(in[0], std::nullopt, keep); };
    c.ref = [keep](const TensorList& in) { return ref_reduce(in[0], {}, keep, r_argmax); };
    check_case(c);
    c.name = std::string("argmin(dim=None) keepdim=") + (keep ? "1" : "0");
    c.run = [keep](const TensorList& in) { return argmin(in[0], std::nullopt, keep); };
    c.ref = [keep](const TensorList& in) { return ref_reduce(in[0], {}, keep, r_argmin); };
    check_case(c);
  }
}

TEST(Reduce, MaxMinFull) {
  OpCase c;
  c.name = "max()";
  c.shape_sets = {{{4, 5, 6}}, {{36000}}, {{}}, {{3, 1}}};
  c.dtypes = all_dtypes();
  c.run = [](const TensorList& in) { return max(in[0]); };
  c.ref = [](const TensorList& in) { return ref_reduce(in[0], {}, false, r_max); };
  check_case(c);
  c.name = "min()";
  c.run = [](const TensorList& in) { return min(in[0]); };
  c.ref = [](const TensorList& in) { return ref_reduce(in[0], {}, false, r_min); };
  check_case(c);
}

namespace {
void check_along(const std::string& name, const std::vector<DType>& dtypes,
                 const std::function<Tensor(const Tensor&, int64_t)>& run,
                 const std::function<Group(const Group&)>& ref, std::function<DType(DType)> out_dtype,
                 Domain domain = {}) {
  const std::vector<std::pair<int64_t, std::vector<std::vector<Shape>>>> vs{
      {-1, {{{4, 5, 6}}, {{3, 1, 33}}, {{2, 0, 3}}, {{2, 5000}}, {{40, 1000}}, {{1}}}},
      {0, {{{4, 5, 6}}, {{300, 5}}, {{7, 1100}}, {{0, 3}}, {{}}}},
      {1, {{{4, 5, 6}}, {{3, 1, 33}}, {{2, 300, 40}}}},
      {-1, {{{}}}},
  };
  for (const auto& [dim, shapes] : vs) {
    OpCase c;
    c.name = name + " dim=" + std::to_string(dim);
    c.shape_sets = shapes;
    c.dtypes = dtypes;
    c.domain = domain;
    c.run = [run, dim = dim](const TensorList& in) { return run(in[0], dim); };
    c.ref = [ref, dim = dim](const TensorList& in) { return ref_along(in[0], dim, ref); };
    c.out_dtype = out_dtype;
    check_case(c);
  }
}
}  // namespace

TEST(Reduce, Softmax) {
  auto same = [](DType d) { return d; };
  check_along("softmax", float_dtypes(), [](const Tensor& x, int64_t d) { return softmax(x, d); }, r_softmax, same,
              Domain{-10, 10});
  check_along("log_softmax", float_dtypes(), [](const Tensor& x, int64_t d) { return log_softmax(x, d); },
              r_log_softmax, same, Domain{-10, 10});
  auto f32 = [](DType) { return kFloat32; };
  check_along("softmax(dtype=float32)", {kFloat16, kInt64, kFloat64},
              [](const Tensor& x, int64_t d) { return softmax(x, d, kFloat32); }, r_softmax, f32);
  check_along("log_softmax(dtype=float32)", {kBFloat16, kInt32},
              [](const Tensor& x, int64_t d) { return log_softmax(x, d, kFloat32); }, r_log_softmax, f32);
}

TEST(Reduce, Cumsum) {
  check_along("cumsum", all_dtypes(), [](const Tensor& x, int64_t d) { return cumsum(x, d); }, r_cumsum, int_to_long);
  check_along("cumsum(dtype=float64)", {kInt32, kFloat32, kBool},
              [](const Tensor& x, int64_t d) { return cumsum(x, d, kFloat64); }, r_cumsum,
              [](DType) { return kFloat64; });
}

// --- dtype rules and shapes --------------------------------------------------------------------

TEST(Reduce, ResultDtypesAndShapes) {
  Tensor i = tensor({{1, 2, 3}, {4, 5, 6}}, kInt32);
  EXPECT_EQ(sum(i).dtype(), kInt64);
  EXPECT_EQ(sum(i).item<int64_t>(), 21);
  EXPECT_EQ(prod(i).item<int64_t>(), 720);
  EXPECT_EQ(sum(i, {}, false, kInt32).dtype(), kInt32);
  EXPECT_EQ(sum(tensor({true, true, false})).item<int64_t>(), 2);
  EXPECT_EQ(sum(i, {0}).sizes().vec(), (Shape{3}));
  EXPECT_EQ(sum(i, {0}, true).sizes().vec(), (Shape{1, 3}));
  EXPECT_EQ(sum(i, {}, true).sizes().vec(), (Shape{1, 1}));
  EXPECT_EQ(to_vec(sum(i, {-1})), (std::vector<double>{6, 15}));
  EXPECT_EQ(mean(i, {}, false, kFloat64).item<double>(), 3.5);
  EXPECT_EQ(amax(i).dtype(), kInt32);
  EXPECT_EQ(argmax(i).item<int64_t>(), 5);
  EXPECT_EQ(argmax(i, std::nullopt, true).sizes().vec(), (Shape{1, 1}));
  EXPECT_EQ(all(i).dtype(), kBool);
  EXPECT_EQ(any(zeros({3}, kUInt8)).dtype(), kBool);
  EXPECT_FALSE(any(zeros({3}, kUInt8)).item<bool>());
  EXPECT_EQ(logsumexp(i, {1}).dtype(), kFloat32);
  EXPECT_EQ(cumsum(i, 1).dtype(), kInt64);
  EXPECT_EQ(cumsum(i.to(kFloat16), 1).dtype(), kFloat16);
  EXPECT_EQ(softmax(i.to(kFloat16), 1, kFloat32).dtype(), kFloat32);
  EXPECT_EQ(softmax(full({}, 3.0), 0).item<double>(), 1.0);
  EXPECT_EQ(log_softmax(full({}, 3.0), -1).item<double>(), 0.0);
  // Empty reductions: sum 0, prod 1, mean nan; all true, any false.
  Tensor e = zeros({0, 3});
  EXPECT_EQ(to_vec(sum(e, {0})), (std::vector<double>{0, 0, 0}));
  EXPECT_EQ(to_vec(prod(e, {0})), (std::vector<double>{1, 1, 1}));
  EXPECT_TRUE(std::isnan(mean(e).item<double>()));
  EXPECT_TRUE(all(e).item<bool>());
  EXPECT_FALSE(any(e).item<bool>());
  EXPECT_EQ(amax(e, {1}).sizes().vec(), (Shape{0}));
  EXPECT_EQ(std::get<1>(max(e, 1)).sizes().vec(), (Shape{0}));
  // Tensor methods forward here.
  Tensor f = tensor({{1.0, 5.0}, {3.0, 2.0}});
  EXPECT_EQ(f.sum().item<double>(), 11.0);
  EXPECT_EQ(to_vec(std::get<1>(f.max(1))), (std::vector<double>{1, 0}));
  EXPECT_EQ(to_vec(f.argmin(0)), (std::vector<double>{0, 1}));
  EXPECT_TRUE(f.all().item<bool>());
  EXPECT_TRUE(close(f.var({1}), tensor({8.0, 0.5})));
  EXPECT_TRUE(close(f.cumsum(0), tensor({{1.0, 5.0}, {4.0, 7.0}})));
}

TEST(Reduce, VarCorrectionEdges) {
  Tensor one = tensor({2.0});
  EXPECT_TRUE(std::isnan(var(one).item<double>()));        // n - 1 = 0: 0 / 0
  EXPECT_EQ(var(one, {}, 0).item<double>(), 0.0);
  EXPECT_TRUE(std::isinf(var(tensor({1.0, 2.0}), {}, 3).item<double>()));  // dof clamps to 0
  auto [v, m] = var_mean(zeros({0}));
  EXPECT_TRUE(std::isnan(v.item<double>()));
  EXPECT_TRUE(std::isnan(m.item<double>()));
  // Large offset: the two-pass blocks keep float32 variance exact enough.
  Tensor x = add(random_input({100000}, kFloat32, Domain{-2, 2}, 11), 1e4);
  double ref = r_var(to_vec(x), 1);
  EXPECT_NEAR(var(x).item<double>(), ref, ref * 1e-4);
}

// --- special values --------------------------------------------------------------------------

TEST(Reduce, NaNPropagates) {
  for (DType dt : float_dtypes()) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor x = tensor({{1.0, kNaN, 3.0, kNaN}, {4.0, -1.0, kInf, 0.0}}).to(dt);
    EXPECT_TRUE(std::isnan(amax(x).item<double>()));
    EXPECT_TRUE(std::isnan(amin(x).item<double>()));
    EXPECT_TRUE(std::isnan(max(x).item<double>()));
    EXPECT_EQ(argmax(x).item<int64_t>(), 1);
    EXPECT_EQ(argmin(x).item<int64_t>(), 1);
    auto [v, i] = max(x, 1);
    EXPECT_TRUE(std::isnan(to_vec(v)[0]));
    EXPECT_EQ(to_vec(v)[1], kInf);
    EXPECT_EQ(to_vec(i), (std::vector<double>{1, 2}));
    auto [v0, i0] = min(x, 0);
    EXPECT_EQ(to_vec(i0), (std::vector<double>{0, 0, 0, 0}));  // NaN wins over -1 and 0
    EXPECT_TRUE(std::isnan(to_vec(v0)[1]));
    EXPECT_TRUE(std::isnan(to_vec(logsumexp(x, {1}))[0]));
    EXPECT_TRUE(std::isnan(to_vec(sum(x, {1}))[0]));
    EXPECT_TRUE(any(x).item<bool>());  // NaN is truthy
    Tensor s = softmax(x, 1);
    for (double p : to_vec(s.select(0, 0))) EXPECT_TRUE(std::isnan(p));
  }
  // A NaN late in a long row (vector path) and in columns (column path).
  Tensor big = zeros({50000});
  big.narrow(0, 40001, 1).fill_(kNaN);
  big.narrow(0, 45000, 1).fill_(kNaN);
  EXPECT_EQ(argmax(big).item<int64_t>(), 40001);
  EXPECT_TRUE(std::isnan(amax(big).item<double>()));
  Tensor cols = zeros({300, 4});
  cols.select(0, 200).select(0, 2).fill_(kNaN);
  EXPECT_EQ(to_vec(argmax(cols, 0)), (std::vector<double>{0, 0, 200, 0}));
  EXPECT_TRUE(std::isnan(to_vec(amin(cols, {0}))[2]));
}

TEST(Reduce, InfinitiesInLogSumExpAndSoftmax) {
  for (DType dt : float_dtypes()) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor x = tensor({{-kInf, -kInf, -kInf}, {1.0, -kInf, 2.0}, {kInf, 1.0, 0.0}, {-1000.0, -1000.0, -kInf}})
                   .to(dt);
    Tensor l = logsumexp(x, {1});
    auto lv = to_vec(l);
    EXPECT_EQ(lv[0], -kInf);
    EXPECT_NEAR(lv[1], std::log(std::exp(1.0) + std::exp(2.0)), 0.02);
    EXPECT_EQ(lv[2], kInf);
    EXPECT_NEAR(lv[3], -1000.0 + std::log(2.0), 4.0);  // -1000 rounds in half/bfloat16
    // The same along columns (column path).
    auto lc = to_vec(logsumexp(x.t().contiguous(), {0}));
    EXPECT_EQ(lc[0], -kInf);
    EXPECT_EQ(lc[2], kInf);
    Tensor s = softmax(x, 1);
    auto sv = to_vec(s);
    for (int k = 0; k < 3; ++k) EXPECT_TRUE(std::isnan(sv[k]));  // all -inf: 0 / 0
    EXPECT_EQ(sv[4], 0.0);                                        // masked entry
    EXPECT_NEAR(sv[3] + sv[5], 1.0, 1e-2);
    EXPECT_NEAR(sv[9], 0.5, 1e-2);
    EXPECT_EQ(sv[11], 0.0);
    EXPECT_EQ(to_vec(log_softmax(x, 1))[4], -kInf);
    EXPECT_TRUE(close(softmax(x.t(), 0), s.t(), 1e-2, 1e-3));  // column path agrees
  }
  // Large finite values do not overflow.
  Tensor big = tensor({1000.0, 1000.0});
  EXPECT_NEAR(logsumexp(big, {0}).item<double>(), 1000.0 + std::log(2.0), 1e-3);
  EXPECT_TRUE(close(softmax(big, 0), tensor({0.5, 0.5})));
}

TEST(Reduce, FloatExpAccuracy) {
  // softmax over float32 uses a vectorised exp; check it over the whole float range.
  Tensor x = linspace(-110, 90, 200001, kFloat64);
  Tensor got = logsumexp(x.to(kFloat32).unsqueeze(1), {1});  // log(exp(x)) == x
  EXPECT_TRUE(close(got, x.to(kFloat32).to(kFloat64), 1e-6, 1e-6));
  Tensor pairs = zeros({200001, 2});
  pairs.select(1, 0).copy_(x);
  Tensor e = softmax(pairs, 1).select(1, 0);
  auto ev = to_vec(e), xv = to_vec(x.to(kFloat32));
  for (size_t i = 0; i < ev.size(); i += 997) {
    double ref = 1.0 / (1.0 + std::exp(-xv[i]));
    ASSERT_NEAR(ev[i], ref, 1e-6 + 1e-6 * ref) << "x=" << xv[i];
  }
}

// --- precision and parallel paths --------------------------------------------------------------

TEST(Reduce, Float32SumsAreAccurate) {
  for (Tensor x : {random_input({100000}, kFloat32, Domain{0, 1}, 1), random_input({100000}, kFloat32, Domain{-3, 3}, 2),
                   random_input({100000}, kFloat32, Domain{100, 101}, 3)}) {
    const auto v = to_vec(x);
    const double ref = std::accumulate(v.begin(), v.end(), 0.0);
    EXPECT_NEAR(sum(x).item<double>(), ref, 1e-5 * std::fabs(ref) + 1e-3);
    EXPECT_NEAR(mean(x).item<double>(), ref / 1e5, 1e-5 * std::fabs(ref / 1e5) + 1e-8);
    // The same values as one column (column path) and as a strided row (general path).
    Tensor col = x.reshape({100000, 1}).expand({100000, 2}).contiguous();
    EXPECT_TRUE(close(sum(col, {0}), full({2}, ref, kFloat64), 1e-5, 1e-3));
    Tensor buf = zeros({100000, 2});
    buf.select(1, 1).copy_(x);
    Tensor strided = buf.select(1, 1);
    EXPECT_NEAR(sum(strided).item<double>(), ref, 1e-5 * std::fabs(ref) + 1e-3);
    // Many short rows reduced together (cascaded combine of runs).
    Tensor runs = x.reshape({1000, 100}).t();
    EXPECT_NEAR(sum(runs).item<double>(), ref, 1e-5 * std::fabs(ref) + 1e-3);
  }
}

TEST(Reduce, ParallelSplitsAgreeWithOneThread) {
  Tensor x = random_input({3, 70001}, kFloat32, Domain{-3, 3}, 4);
  Tensor ties = random_input({70001, 2}, kInt64, Domain{0, 2}, 5);
  int nt = get_num_threads();
  auto run = [&] {
    return TensorList{sum(x),          sum(x, {1}),      sum(x.t(), {0}),           amax(x),
                      argmax(x.flatten()), std::get<1>(max(ties, 0)), argmin(ties, 0), var(x, {1}),
                      logsumexp(x, {0, 1}), all(x), any(ties, {0}), softmax(x, 1)};
  };
  TensorList multi = run();
  set_num_threads(1);
  TensorList single = run();
  set_num_threads(nt);
  for (size_t i = 0; i < multi.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_TRUE(close(multi[i], single[i], 1e-5, 1e-4));
  }
  EXPECT_EQ(to_vec(std::get<1>(max(ties, 0)))[0], to_vec(argmax(ties.select(1, 0)))[0]);
}

TEST(Reduce, OutVariantWithStridedOutput) {
  Tensor x = arange(24, kFloat32).reshape({2, 3, 4});
  Tensor out = zeros({4, 3}).t();  // [3, 4], not contiguous
  call_op_out(op_def("sum"), out, {x}, Attrs{Shape{0}, false, Attr()});
  EXPECT_TRUE(close(out, sum(x, {0})));
  Tensor sm = zeros({4, 3, 2}).permute({2, 1, 0});
  call_op_out(op_def("softmax"), sm, {x}, Attrs{int64_t(-1), Attr()});
  EXPECT_TRUE(close(sm, softmax(x, -1)));
  Tensor cs = zeros({4, 3, 2}).permute({2, 1, 0});
  call_op_out(op_def("cumsum"), cs, {x}, Attrs{int64_t(1), Attr()});
  EXPECT_TRUE(close(cs, cumsum(x, 1)));
}

TEST(Reduce, RowsAreRegistered) {
  for (const char* name : {"sum", "mean", "prod", "amax", "amin", "max_dim", "min_dim", "argmax", "argmin", "var",
                           "std", "var_mean", "logsumexp", "all", "any", "softmax", "log_softmax", "cumsum",
                           "allclose", "equal"}) {
    const OpDef* d = OpRegistry::instance().find(name);
    ASSERT_NE(d, nullptr) << name;
    EXPECT_NE(d->kernels[static_cast<int>(DeviceType::CPU)], nullptr) << name;
  }
  EXPECT_EQ(op_def("sum").attr_names, (std::vector<std::string>{"dims", "keepdim", "dtype"}));
  EXPECT_EQ(op_def("softmax").kind, OpKind::Reduction);
}

// --- allclose / equal ----------------------------------------------------------------------------

TEST(Reduce, AllcloseAndEqual) {
  Tensor a = tensor({1.0, 2.0, kNaN, kInf});
  Tensor b = tensor({1.0 + 1e-7, 2.0, kNaN, kInf});
  EXPECT_FALSE(allclose(a, b));
  EXPECT_TRUE(allclose(a, b, 1e-5, 1e-8, true));
  EXPECT_FALSE(allclose(a, tensor({1.0, 2.0, kNaN, -kInf}), 1e-5, 1e-8, true));
  EXPECT_FALSE(allclose(tensor({1.0}), tensor({1.1})));
  EXPECT_TRUE(allclose(tensor({1.0}), tensor({1.1}), 0.0, 0.2));
  EXPECT_TRUE(allclose(tensor({100.0}), tensor({101.0}), 0.02, 0.0));
  EXPECT_TRUE(allclose(ones({3, 1}), ones({4})));  // broadcasts
  EXPECT_TRUE(allclose(tensor({1, 2}), tensor({1, 2})));
  EXPECT_FALSE(allclose(tensor({true, false}), tensor({true, true})));
  EXPECT_TRUE(allclose(zeros({0}), zeros({0})));
  Tensor big = random_input({100000}, kFloat32, Domain{-3, 3}, 6);
  Tensor big2 = big.clone();
  EXPECT_TRUE(allclose(big, big2));
  big2.narrow(0, 77777, 1).fill_(5.0);
  EXPECT_FALSE(allclose(big, big2));
  EXPECT_FALSE(equal(big, big2));
  EXPECT_TRUE(equal(big, big.clone()));
  EXPECT_TRUE(equal(big.reshape({1000, 100}).t(), big.reshape({1000, 100}).t().contiguous()));
  EXPECT_FALSE(equal(ones({2, 3}), ones({3, 2})));
  EXPECT_FALSE(equal(ones({3}), ones({1, 3})));
  EXPECT_FALSE(equal(tensor({kNaN}), tensor({kNaN})));
  EXPECT_TRUE(equal(tensor({1, 2}, kInt32), tensor({1, 2}, kInt32)));
  EXPECT_TRUE(equal(zeros({0, 2}), zeros({0, 2})));
  for (DType dt : all_dtypes()) {
    Tensor x = random_input({5, 6}, dt, {}, 5);
    EXPECT_TRUE(equal(x, x.t().contiguous().t())) << dt;
    EXPECT_TRUE(allclose(x, x.t().contiguous().t())) << dt;
  }
}

// --- errors ------------------------------------------------------------------------------------

TEST(Reduce, DimErrors) {
  Tensor x = zeros({2, 3});
  EXPECT_KILN_ERROR(sum(x, {2}), "[sum]", "dim 2 out of range");
  EXPECT_KILN_ERROR(sum(x, {0, -2}), "[sum]", "dim 0 appears multiple times");
  EXPECT_KILN_ERROR(mean(x, {-3}), "[mean]", "dim -3 out of range");
  EXPECT_KILN_ERROR(prod(x, {1, 1}), "[prod]", "appears multiple times");
  EXPECT_KILN_ERROR(amax(x, {5}), "[amax]", "dim 5");
  EXPECT_KILN_ERROR(amin(x, {0, 0}), "[amin]", "multiple times");
  EXPECT_KILN_ERROR(max(x, 2), "[max]", "dim 2 out of range");
  EXPECT_KILN_ERROR(min(x, -3), "[min]", "dim -3 out of range");
  EXPECT_KILN_ERROR(argmax(x, 2), "[argmax]", "dim 2");
  EXPECT_KILN_ERROR(argmin(x, -4), "[argmin]", "dim -4");
  EXPECT_KILN_ERROR(var(x, {3}), "[var]", "dim 3");
  EXPECT_KILN_ERROR(kiln::std(x, {0, 0}), "[std]", "multiple times");
  EXPECT_KILN_ERROR(var_mean(x, {2}), "[var_mean]", "dim 2");
  EXPECT_KILN_ERROR(logsumexp(x, {1, -1}), "[logsumexp]", "multiple times");
  EXPECT_KILN_ERROR(all(x, {2}), "[all]", "dim 2");
  EXPECT_KILN_ERROR(any(x, {-3}), "[any]", "dim -3");
  EXPECT_KILN_ERROR(softmax(x, 2), "[softmax]", "dim 2 out of range");
  EXPECT_KILN_ERROR(log_softmax(x, -3), "[log_softmax]", "dim -3");
  EXPECT_KILN_ERROR(cumsum(x, 2), "[cumsum]", "dim 2");
  Tensor s = full({}, 1.0);
  EXPECT_KILN_ERROR(sum(s, {1}), "[sum]", "dim 1 out of range");
  Tensor deep = zeros(Shape(65, 1));
  EXPECT_KILN_ERROR(sum(deep), "[sum]", "more than 64 dims", "65");
  EXPECT_KILN_ERROR(max(deep, 0), "[max]", "more than 64 dims");
  EXPECT_KILN_ERROR(softmax(s, 1), "[softmax]", "dim 1");
}

TEST(Reduce, EmptyReductionErrors) {
  Tensor e = zeros({0, 3});
  EXPECT_KILN_ERROR(max(e), "[max]", "numel() == 0");
  EXPECT_KILN_ERROR(min(e), "[min]", "numel() == 0");
  EXPECT_KILN_ERROR(amax(e), "[amax]", "reduction dim 0", "non-zero size");
  EXPECT_KILN_ERROR(amin(e, {0}), "[amin]", "reduction dim 0");
  EXPECT_KILN_ERROR(max(e, 0), "[max]", "reduction dim 0", "non-zero size");
  EXPECT_KILN_ERROR(min(e, -2), "[min]", "reduction dim 0");
  EXPECT_KILN_ERROR(argmax(e), "[argmax]", "numel() == 0");
  EXPECT_KILN_ERROR(argmin(e, 0), "[argmin]", "reduction dim 0");
  EXPECT_KILN_ERROR(amax(zeros({2, 0}), {-1}), "[amax]", "reduction dim 1");
}

TEST(Reduce, DtypeErrors) {
  Tensor i = tensor({1, 2, 3});
  EXPECT_KILN_ERROR(mean(i), "[mean]", "Input dtype must be either a floating point", "int64");
  EXPECT_KILN_ERROR(mean(i.to(kFloat32), {}, false, kInt32), "[mean]", "Optional dtype", "int32");
  EXPECT_KILN_ERROR(mean(tensor({true})), "[mean]", "bool");
  EXPECT_KILN_ERROR(var(i), "[var]", "floating point", "int64");
  EXPECT_KILN_ERROR(kiln::std(i.to(kInt32)), "[std]", "floating point", "int32");
  EXPECT_KILN_ERROR(var_mean(tensor({true})), "[var_mean]", "floating point", "bool");
  EXPECT_KILN_ERROR(softmax(i, 0), "[softmax]", "floating point", "int64");
  EXPECT_KILN_ERROR(log_softmax(i, 0), "[log_softmax]", "floating point", "int64");
  EXPECT_KILN_ERROR(softmax(i.to(kFloat32), 0, kInt64), "[softmax]", "floating point dtype", "int64");
  EXPECT_KILN_ERROR(log_softmax(i.to(kFloat32), 0, kBool), "[log_softmax]", "bool");
  EXPECT_KILN_ERROR(argmax(tensor({true, false})), "[argmax]", "bool");
  EXPECT_KILN_ERROR(argmin(tensor({true, false}), 0), "[argmin]", "bool");
  EXPECT_KILN_ERROR(allclose(i, i.to(kFloat32)), "[allclose]", "same dtype", "int64", "float32");
  EXPECT_KILN_ERROR(allclose(ones({2}), ones({3})), "[allclose]", "cannot be broadcast");
  EXPECT_KILN_ERROR(allclose(ones({2}), ones({2}), -1.0), "[allclose]", "rtol", "-1");
  EXPECT_KILN_ERROR(allclose(ones({2}), ones({2}), 1e-5, -2.0), "[allclose]", "atol", "-2");
  EXPECT_KILN_ERROR(equal(i, i.to(kFloat64)), "[equal]", "same dtype", "float64");
  EXPECT_KILN_ERROR(sum(Tensor()), "[sum]", "undefined");
}
