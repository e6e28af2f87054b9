// Op-table rows for every pointwise op: eager kiln vs float64 references on all layouts and dtypes.
#include <algorithm>
#include <cmath>

#include "core/op.h"
#include "op_table.h"

using namespace kiln;
using namespace kiln::optable;
using V = std::vector<double>;

namespace {

const std::vector<std::vector<Shape>> kUnaryShapes = {{{3, 5}}, {{2, 3, 4}}, {{0, 3}}, {{}}};
const std::vector<std::vector<Shape>> kBinaryShapes = {{{3, 5}, {3, 5}}, {{3, 5}, {5}},   {{4, 1, 5}, {3, 1}},
                                                       {{}, {}},         {{0, 3}, {3}},   {{2, 3}, {}}};
const std::vector<std::vector<Shape>> kTernaryShapes = {{{3, 5}, {3, 5}, {3, 5}}, {{3, 5}, {5}, {3, 1}},
                                                        {{}, {}, {}}, {{0, 2}, {2}, {}}};

std::vector<DType> no_u8(std::vector<DType> v) {
  v.erase(std::remove(v.begin(), v.end(), kUInt8), v.end());
  return v;
}

// Divisors bounded away from zero.
Tensor nonzero_input(const Shape& s, DType dt, uint64_t seed) {
  Tensor t = random_input(s, kFloat64, {0.5, 3.0}, seed);
  Tensor sign = random_input(s, kBool, {}, seed + 7);
  double* p = t.data_ptr<double>();
  const bool* q = sign.data_ptr<bool>();
  for (int64_t i = 0; i < t.numel(); ++i)
    if (q[i] && dt != kUInt8) p[i] = -p[i];
  return (is_floating_point(dt) ? t : t.round()).to(dt);
}

OpCase unary(const std::string& name, std::function<double(double)> f, std::vector<DType> dtypes, Domain d = {}) {
  OpCase c;
  c.name = name;
  c.shape_sets = kUnaryShapes;
  c.dtypes = std::move(dtypes);
  c.domain = d;
  c.run = [name](const TensorList& in) { return pointwise(name, in); };
  c.ref = [f](const TensorList& in) { return ref_pointwise(in, [f](const V& a) { return f(a[0]); }); };
  const OpDef& row = op_def(name);
  if (row.rule == PointwiseRule::FloatOut)
    c.out_dtype = [](DType t) { return is_floating_point(t) ? t : kFloat32; };
  else if (row.rule == PointwiseRule::BoolOut)
    c.out_dtype = [](DType) { return kBool; };
  else
    c.out_dtype = [](DType t) { return t; };
  return c;
}

OpCase binary(const std::string& name, std::function<double(double, double)> f, std::vector<DType> dtypes,
              Domain d = {}) {
  OpCase c = unary(name, nullptr, std::move(dtypes), d);
  c.shape_sets = kBinaryShapes;
  c.ref = [f](const TensorList& in) { return ref_pointwise(in, [f](const V& a) { return f(a[0], a[1]); }); };
  return c;
}

double ref_round(double x) { return std::nearbyint(x); }
double ref_sign(double x) { return x > 0 ? 1.0 : x < 0 ? -1.0 : 0.0; }
double ref_sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double ref_gelu(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }
double ref_gelu_tanh(double x) {
  return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}
double ref_max(double a, double b) { return std::isnan(a) || std::isnan(b) ? NAN : std::max(a, b); }
double ref_min(double a, double b) { return std::isnan(a) || std::isnan(b) ? NAN : std::min(a, b); }
double ref_rem(double a, double b) {
  double m = std::fmod(a, b);
  return (m != 0 && ((b < 0) != (m < 0))) ? m + b : m;
}

}  // namespace

TEST(PointwiseTable, Unary) {
  const auto F = float_dtypes();
  const auto N = numeric_dtypes();
  std::vector<OpCase> rows = {
      unary("neg", [](double x) { return -x; }, no_u8(N)),
      unary("abs", [](double x) { return std::fabs(x); }, all_dtypes()),
      unary("sign", ref_sign, all_dtypes()),
      unary("exp", [](double x) { return std::exp(x); }, N, {-5, 5}),
      unary("exp2", [](double x) { return std::exp2(x); }, N, {-5, 5}),
      unary("log", [](double x) { return std::log(x); }, N, {0.05, 5}),
      unary("log2", [](double x) { return std::log2(x); }, N, {0.05, 5}),
      unary("log10", [](double x) { return std::log10(x); }, N, {0.05, 5}),
      unary("log1p", [](double x) { return std::log1p(x); }, F, {-0.9, 5}),
      unary("expm1", [](double x) { return std::expm1(x); }, F, {-3, 3}),
      unary("sqrt", [](double x) { return std::sqrt(x); }, N, {0, 9}),
      unary("rsqrt", [](double x) { return 1.0 / std::sqrt(x); }, N, {0.1, 9}),
      unary("reciprocal", [](double x) { return 1.0 / x; }, F, {0.2, 4}),
      unary("square", [](double x) { return x * x; }, N),
      unary("sin", [](double x) { return std::sin(x); }, N, {-6, 6}),
      unary("cos", [](double x) { return std::cos(x); }, N, {-6, 6}),
      unary("tan", [](double x) { return std::tan(x); }, F, {-1.2, 1.2}),
      unary("tanh", [](double x) { return std::tanh(x); }, N, {-4, 4}),
      unary("sigmoid", ref_sigmoid, N, {-8, 8}),
      unary("relu", [](double x) { return x < 0 ? 0.0 : x; }, no_u8(N)),
      unary("gelu", ref_gelu, F, {-4, 4}),
      unary("gelu_tanh", ref_gelu_tanh, F, {-4, 4}),
      unary("silu", [](double x) { return x * ref_sigmoid(x); }, F, {-6, 6}),
      unary("erf", [](double x) { return std::erf(x); }, N, {-3, 3}),
      unary("floor", [](double x) { return std::floor(x); }, N, {-4, 4}),
      unary("ceil", [](double x) { return std::ceil(x); }, N, {-4, 4}),
      unary("round", ref_round, N, {-4, 4}),
      unary("trunc", [](double x) { return std::trunc(x); }, N, {-4, 4}),
      unary("logical_not", [](double x) { return x == 0 ? 1.0 : 0.0; }, all_dtypes(), {-1, 1}),
  };
  for (const auto& r : rows) check_case(r);
}

TEST(PointwiseTable, Binary) {
  const auto F = float_dtypes();
  const auto N = numeric_dtypes();
  auto ints_as = [](size_t, const Shape& s, DType dt) { return random_input(s, kInt64, {-2, 2}, 99 + s.size()).to(dt); };
  std::vector<OpCase> rows = {
      binary("add", [](double a, double b) { return a + b; }, no_u8(N)),
      binary("sub", [](double a, double b) { return a - b; }, no_u8(N)),
      binary("mul", [](double a, double b) { return a * b; }, N),
      binary("maximum", ref_max, all_dtypes()),
      binary("minimum", ref_min, all_dtypes()),
      binary("pow", [](double a, double b) { return std::pow(a, b); }, F, {0.2, 2.5}),
  };
  OpCase add_bool = binary("add", [](double a, double b) { return (a != 0 || b != 0) ? 1.0 : 0.0; }, {kBool});
  OpCase mul_bool = binary("mul", [](double a, double b) { return (a != 0 && b != 0) ? 1.0 : 0.0; }, {kBool});
  rows.push_back(add_bool);
  rows.push_back(mul_bool);
  OpCase ipow = binary("pow", [](double a, double b) { return std::pow(a, b); }, {kInt64, kInt32, kInt16}, {0, 3});
  rows.push_back(ipow);
  for (const char* name : {"div", "fmod", "remainder"}) {
    std::function<double(double, double)> f;
    if (std::string(name) == "div") f = [](double a, double b) { return a / b; };
    else if (std::string(name) == "fmod") f = [](double a, double b) { return std::fmod(a, b); };
    else f = ref_rem;
    OpCase c = binary(name, f, std::string(name) == "div" ? N : no_u8(N), {-5, 5});
    c.make_input = [](size_t i, const Shape& s, DType dt) {
      return i == 1 ? nonzero_input(s, dt, 5 + s.size()) : random_input(s, dt, {-5, 5}, 3 + s.size());
    };
    rows.push_back(c);
  }
  for (auto [name, f] : std::vector<std::pair<const char*, std::function<double(double, double)>>>{
           {"eq", [](double a, double b) { return double(a == b); }},
           {"ne", [](double a, double b) { return double(a != b); }},
           {"lt", [](double a, double b) { return double(a < b); }},
           {"le", [](double a, double b) { return double(a <= b); }},
           {"gt", [](double a, double b) { return double(a > b); }},
           {"ge", [](double a, double b) { return double(a >= b); }},
           {"logical_and", [](double a, double b) { return double(a != 0 && b != 0); }},
           {"logical_or", [](double a, double b) { return double(a != 0 || b != 0); }}}) {
    OpCase c = binary(name, f, no_u8(N));
    c.make_input = ints_as;  // integer-valued so that equality actually occurs
    rows.push_back(c);
    OpCase b = binary(name, f, {kBool});
    rows.push_back(b);
  }
  for (const auto& r : rows) check_case(r);
}

TEST(PointwiseTable, TernaryAndParametrised) {
  OpCase where;
  where.name = "where";
  // Plus rows long enough for vector lanes with each of a and b whole or a broadcast scalar (the
  // CPU kernel's four fast paths), and a condition broadcast along rows (its strided path).
  where.shape_sets = kTernaryShapes;
  for (std::vector<Shape> set : std::vector<std::vector<Shape>>{{{4, 37}, {4, 37}, {}},
                                                                {{4, 37}, {}, {4, 37}},
                                                                {{4, 37}, {}, {}},
                                                                {{4, 1}, {4, 37}, {37}}})
    where.shape_sets.push_back(set);
  where.dtypes = all_dtypes();
  where.make_input = [](size_t i, const Shape& s, DType dt) {
    return i == 0 ? random_input(s, kBool, {}, 11 + s.size()) : random_input(s, dt, {-3, 3}, 17 * (i + 1) + s.size());
  };
  where.run = [](const TensorList& in) { return kiln::where(in[0], in[1], in[2]); };
  where.ref = [](const TensorList& in) { return ref_pointwise(in, [](const V& a) { return a[0] != 0 ? a[1] : a[2]; }); };
  where.out_dtype = [](DType t) { return t; };
  check_case(where);

  OpCase clamp = where;
  clamp.name = "clamp";
  clamp.shape_sets = kTernaryShapes;
  clamp.dtypes = numeric_dtypes();
  clamp.make_input = {};
  clamp.run = [](const TensorList& in) { return kiln::clamp(in[0], std::optional<Tensor>(in[1]), std::optional<Tensor>(in[2])); };
  clamp.ref = [](const TensorList& in) {
    return ref_pointwise(in, [](const V& a) { return std::min(std::max(a[0], a[1]), a[2]); });
  };
  check_case(clamp);

  for (auto [beta, threshold] : std::vector<std::pair<double, double>>{{1.0, 20.0}, {2.0, 1.0}}) {
    OpCase sp = unary("softplus", nullptr, float_dtypes(), {-4, 4});
    sp.run = [b = beta, t = threshold](const TensorList& in) { return softplus(in[0], b, t); };
    sp.ref = [b = beta, t = threshold](const TensorList& in) {
      return ref_pointwise(in, [b, t](const V& a) { return a[0] * b > t ? a[0] : std::log1p(std::exp(a[0] * b)) / b; });
    };
    check_case(sp);
  }

  OpCase mf = unary("where", nullptr, all_dtypes());
  mf.name = "masked_fill";
  mf.shape_sets = {{{3, 4}, {3, 4}}, {{3, 4}, {4}}, {{}, {}}, {{0, 2}, {2}}};
  mf.make_input = [](size_t i, const Shape& s, DType dt) {
    return i == 1 ? random_input(s, kBool, {}, 31 + s.size()) : random_input(s, dt, {-3, 3}, 37 + s.size());
  };
  mf.run = [](const TensorList& in) { return masked_fill(in[0], in[1], 1.0); };
  mf.ref = [](const TensorList& in) { return ref_pointwise(in, [](const V& a) { return a[1] != 0 ? 1.0 : a[0]; }); };
  check_case(mf);
}

TEST(Pointwise, ScalarOperandsAndOperators) {
  Tensor x = tensor({1.0, -2.0, 3.0});
  EXPECT_TRUE(kiln::testing::close(x * 2 + 1, tensor({3.0, -3.0, 7.0})));
  EXPECT_TRUE(kiln::testing::close(1 - x, tensor({0.0, 3.0, -2.0})));
  EXPECT_TRUE(kiln::testing::close(6 / x, tensor({6.0, -3.0, 2.0})));
  EXPECT_TRUE(kiln::testing::close(x.add(x, 2), tensor({3.0, -6.0, 9.0})));
  EXPECT_TRUE(kiln::testing::close(x.sub(1, 3), tensor({-2.0, -5.0, 0.0})));
  EXPECT_TRUE(kiln::testing::close(pow(2, tensor({0.0, 1.0, 3.0})), tensor({1.0, 2.0, 8.0})));
  EXPECT_TRUE(kiln::testing::close(gelu(x, "tanh"), pointwise("gelu_tanh", {x})));
  Tensor i = tensor({7, -7});
  EXPECT_EQ(kiln::testing::to_vec(i % 3), (std::vector<double>{1, 2}));
  EXPECT_EQ(kiln::testing::to_vec(fmod(i, 3)), (std::vector<double>{1, -1}));
  EXPECT_EQ(kiln::testing::to_vec(pow(tensor({2, 3}), 3)), (std::vector<double>{8, 27}));
  EXPECT_EQ(kiln::testing::to_vec(clamp(i, -2, 5)), (std::vector<double>{5, -2}));
  EXPECT_EQ(clamp(i, 0.5, std::nullopt).dtype(), kFloat32);
  EXPECT_EQ(kiln::testing::to_vec(!tensor({true, false})), (std::vector<double>{0, 1}));
}

TEST(Pointwise, InPlaceForms) {
  Tensor x = tensor({1.0, 2.0, 3.0});
  Tensor alias = x;
  x += 1;
  x *= tensor({2.0, 2.0, 2.0});
  x.sub_(tensor({1.0}), 2);
  x.div_(2);
  EXPECT_TRUE(kiln::testing::close(alias, tensor({1.0, 2.0, 3.0})));
  x.clamp_(1.5, 2.5).neg_().abs_();
  EXPECT_TRUE(kiln::testing::close(x, tensor({1.5, 2.0, 2.5})));
  Tensor m = zeros({2, 2});
  m.masked_fill_(tensor({{true, false}, {false, true}}), 5);
  EXPECT_EQ(kiln::testing::to_vec(m), (std::vector<double>{5, 0, 0, 5}));
  Tensor i = tensor({1, 2});
  i.add_(3);
  EXPECT_EQ(kiln::testing::to_vec(i), (std::vector<double>{4, 5}));
  Tensor f = tensor({1.0f, 2.0f});
  f.add_(tensor({1.0, 1.0}, kFloat64));  // float64 result written into float32 is allowed
  EXPECT_EQ(f.dtype(), kFloat32);
  EXPECT_EQ(kiln::testing::to_vec(f), (std::vector<double>{2, 3}));
  uint32_t v = f._version();
  f.relu_();
  EXPECT_GT(f._version(), v);
}

TEST(Pointwise, SpecialValues) {
  Tensor s = tensor({INFINITY, -INFINITY, NAN, 0.0, -0.0, 88.0, -88.0, 89.0, -104.0, -95.0});
  auto e = kiln::testing::to_vec(exp(s));
  EXPECT_TRUE(std::isinf(e[0]) && e[0] > 0);
  EXPECT_EQ(e[1], 0.0);
  EXPECT_TRUE(std::isnan(e[2]));
  EXPECT_EQ(e[3], 1.0);
  EXPECT_EQ(e[4], 1.0);
  EXPECT_NEAR(e[5] / std::exp(88.0), 1.0, 1e-6);
  EXPECT_TRUE(std::isinf(e[7]));
  EXPECT_EQ(e[8], 0.0);
  EXPECT_NEAR(e[9] / double(std::exp(-95.0f)), 1.0, 1e-2);  // subnormal result
  EXPECT_TRUE(std::isnan(relu(tensor({NAN})).item<double>()));
  EXPECT_TRUE(std::isnan(maximum(tensor({NAN, 1.0}), tensor({0.0, NAN})).sum().item<double>()));
  EXPECT_TRUE(std::isnan(sqrt(tensor({-1.0})).item<double>()));
  EXPECT_TRUE(std::isinf(log(tensor({0.0})).item<double>()));
  EXPECT_EQ(sigmoid(tensor({-200.0f})).item<float>(), 0.0f);
  EXPECT_EQ(sigmoid(tensor({200.0f})).item<float>(), 1.0f);
  // abs clears the sign bit of -0 and of NaN (fabs), in every floating dtype: rsqrt(abs(-0)) is +inf.
  for (DType dt : {kFloat32, kFloat64, kFloat16, kBFloat16}) {
    SCOPED_TRACE(dt);
    auto a = kiln::testing::to_vec(abs(tensor({-0.0, -NAN, -2.5}).to(dt)));
    EXPECT_FALSE(std::signbit(a[0]));
    EXPECT_TRUE(std::isnan(a[1]) && !std::signbit(a[1]));
    EXPECT_EQ(a[2], 2.5);
    EXPECT_EQ(rsqrt(abs(tensor({-0.0}).to(dt))).item<double>(), INFINITY);
  }
}

// kiln's vectorised expf against float64 over its whole range: within 2 ulp.
TEST(Pointwise, ExpAccuracySweep) {
  Tensor x = linspace(-103.0, 88.7, 200001, kFloat32);
  Tensor y = exp(x);
  const float* px = x.data_ptr<float>();
  const float* py = y.data_ptr<float>();
  double worst = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    double ref = std::exp(double(px[i]));
    if (ref < 1.1754943508222875e-38) continue;  // subnormal results checked above
    double ulp = std::nextafter(float(ref), INFINITY) - float(ref);
    worst = std::max(worst, std::fabs(double(py[i]) - ref) / ulp);
  }
  EXPECT_LE(worst, 2.0);
}

namespace {

Tensor float_tensor(const std::vector<float>& v) {
  Tensor t = empty({int64_t(v.size())}, kFloat32);
  std::copy(v.begin(), v.end(), t.data_ptr<float>());
  return t;
}

// |y - ref| in units of the float ulp at ref (2^-149 in the subnormal range).
double ulp_error(float y, double ref) {
  int e;
  std::frexp(std::max(std::fabs(ref), 1.1754943508222875e-38), &e);
  return std::fabs(double(y) - ref) / std::ldexp(1.0, e - 24);
}

// Worst ulp error of the eager float32 op over xs against the float64 reference.
template <class Op, class Ref>
double worst_ulp(const std::vector<float>& xs, Op op, Ref ref) {
  Tensor y = op(float_tensor(xs));
  const float* py = y.data_ptr<float>();
  double worst = 0;
  for (size_t i = 0; i < xs.size(); ++i) worst = std::max(worst, ulp_error(py[i], ref(double(xs[i]))));
  return worst;
}

std::vector<float> log_spaced(double lo, double hi, int n) {
  std::vector<float> v;
  for (int i = 0; i < n; ++i) v.push_back(float(lo * std::pow(hi / lo, double(i) / (n - 1))));
  return v;
}

std::vector<float> lin_spaced(double lo, double hi, int n) {
  std::vector<float> v;
  for (int i = 0; i < n; ++i) v.push_back(float(lo + (hi - lo) * i / (n - 1)));
  return v;
}

}  // namespace

// kiln's vectorised logf: within 1 ulp (2 allowed) over all normal and subnormal positive floats.
TEST(Pointwise, LogAccuracySweep) {
  std::vector<float> xs = log_spaced(1e-38, 1e38, 400001);
  for (float x : log_spaced(1.4e-45, 1.17e-38, 20001)) xs.push_back(x);  // subnormals
  for (float x : lin_spaced(0.5, 2.0, 100001)) xs.push_back(x);          // around 1, cancellation
  EXPECT_LE(worst_ulp(xs, [](const Tensor& t) { return log(t); }, [](double x) { return std::log(x); }), 2.0);
}

TEST(Pointwise, TanhAccuracySweep) {
  std::vector<float> xs = lin_spaced(-20, 20, 400001);
  for (float x : log_spaced(1e-30, 1.0, 100001)) {  // tiny values and the polynomial / exp switch
    xs.push_back(x);
    xs.push_back(-x);
  }
  EXPECT_LE(worst_ulp(xs, [](const Tensor& t) { return tanh(t); }, [](double x) { return std::tanh(x); }), 2.0);
}

TEST(Pointwise, ErfAccuracySweep) {
  std::vector<float> xs = lin_spaced(-6, 6, 400001);
  for (float x : log_spaced(1e-30, 1.0, 100001)) {
    xs.push_back(x);
    xs.push_back(-x);
  }
  EXPECT_LE(worst_ulp(xs, [](const Tensor& t) { return erf(t); }, [](double x) { return std::erf(x); }), 3.0);
}

TEST(Pointwise, LogTanhErfSpecialValues) {
  Tensor s = float_tensor({0.0f, -0.0f, INFINITY, -INFINITY, NAN, -1.0f, 1.0f, 1.4e-45f});
  Tensor l = log(s), t = tanh(s), e = erf(s);
  const float* pl = l.data_ptr<float>();
  const float* pt = t.data_ptr<float>();
  const float* pe = e.data_ptr<float>();
  EXPECT_TRUE(std::isinf(pl[0]) && pl[0] < 0);
  EXPECT_TRUE(std::isinf(pl[1]) && pl[1] < 0);
  EXPECT_TRUE(std::isinf(pl[2]) && pl[2] > 0);
  EXPECT_TRUE(std::isnan(pl[3]));
  EXPECT_TRUE(std::isnan(pl[4]));
  EXPECT_TRUE(std::isnan(pl[5]));
  EXPECT_EQ(pl[6], 0.0f);
  EXPECT_NEAR(pl[7], std::log(double(1.4e-45f)), 1e-5);
  for (const float* p : {pt, pe}) {
    EXPECT_EQ(p[0], 0.0f);
    EXPECT_FALSE(std::signbit(p[0]));
    EXPECT_EQ(p[1], 0.0f);
    EXPECT_TRUE(std::signbit(p[1]));
    EXPECT_EQ(p[2], 1.0f);
    EXPECT_EQ(p[3], -1.0f);
    EXPECT_TRUE(std::isnan(p[4]));
    EXPECT_EQ(p[7], 1.4e-45f);
  }
  EXPECT_EQ(tanh(float_tensor({100.0f, -100.0f})).sum().item<float>(), 0.0f);
  EXPECT_EQ(erf(float_tensor({10.0f})).item<float>(), 1.0f);
}

TEST(Pointwise, Errors) {
  Tensor a = ones({2, 3}), b = ones({4});
  EXPECT_KILN_ERROR(a + b, "[add]", "[2, 3]", "[4]", "cannot be broadcast");
  EXPECT_KILN_ERROR(mul(a, ones({3, 2})), "[mul]", "[2, 3]", "[3, 2]");
  EXPECT_KILN_ERROR(where(ones({2}), a, a), "[where]", "bool", "float32");
  EXPECT_KILN_ERROR(-tensor({true}), "[neg]", "bool");
  EXPECT_KILN_ERROR(tensor({true}) - tensor({false}), "[sub]", "bool");
  EXPECT_KILN_ERROR(fmod(tensor({1, 2}), 0), "[fmod]", "division by zero");
  EXPECT_KILN_ERROR(remainder(tensor({1, 2}), tensor({1, 0})), "[remainder]", "division by zero");
  EXPECT_KILN_ERROR(pow(tensor({2}), -1), "[pow]", "negative integer powers");
  EXPECT_KILN_ERROR(clamp(a, std::optional<Scalar>(), std::optional<Scalar>()), "[clamp]", "min", "max");
  EXPECT_KILN_ERROR(gelu(a, "fast"), "[gelu]", "fast");
  EXPECT_KILN_ERROR(masked_fill(a, ones({2, 3}), 1.0), "[masked_fill]", "bool");
  EXPECT_KILN_ERROR(masked_fill(ones({3}), tensor({true, false, true, false}), 1.0), "[masked_fill]", "[4]");
  EXPECT_KILN_ERROR(softplus(a, 0.0), "[softplus]", "beta");
  EXPECT_KILN_ERROR(pointwise("nope", {a}), "[pointwise]", "nope");
  Tensor i = tensor({1, 2});
  EXPECT_KILN_ERROR(i.div_(2), "[div]", "float32", "int64");
  EXPECT_KILN_ERROR(i.add_(1.5), "[add]", "float32", "int64");
  Tensor small = ones({3});
  EXPECT_KILN_ERROR(small.add_(ones({2, 3})), "[add]", "[3]", "[2, 3]");
  EXPECT_KILN_ERROR(Tensor() + a, "undefined");
}
