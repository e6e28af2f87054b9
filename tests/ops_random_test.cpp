// Random ops: Philox known answers, reproducibility (seed, replay, thread count), statistics,
// bounds, dtypes and error paths.
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <thread>

#include "core/op.h"
#include "core/random.h"
#include "op_table.h"
#include "test_util.h"

using namespace kiln;
using kiln::testing::to_vec;

namespace {

struct Moments {
  double mean, var, min, max;
};
Moments moments(const Tensor& t) {
  auto v = to_vec(t);
  double s = 0, mn = INFINITY, mx = -INFINITY;
  for (double x : v) {
    s += x;
    mn = std::min(mn, x);
    mx = std::max(mx, x);
  }
  double m = s / static_cast<double>(v.size()), q = 0;
  for (double x : v) q += (x - m) * (x - m);
  return {m, q / static_cast<double>(v.size()), mn, mx};
}

// Restores the thread count a test changed.
struct ThreadGuard {
  int saved = get_num_threads();
  ~ThreadGuard() { set_num_threads(saved); }
};

}  // namespace

TEST(Philox, KnownAnswers) {
  // Random123's kat_vectors for philox4x32_10.
  using A4 = std::array<uint32_t, 4>;
  EXPECT_EQ(philox::block({0, 0, 0, 0}, {0, 0}), (A4{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}));
  EXPECT_EQ(philox::block({~0u, ~0u, ~0u, ~0u}, {~0u, ~0u}), (A4{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}));
  EXPECT_EQ(philox::block({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, {0xa4093822u, 0x299f31d0u}),
            (A4{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}));
}

TEST(Philox, BatchedBlocksMatchSingleBlocks) {
  PhiloxKey key{0x0123456789abcdefull, 0xfffffffffffffff0ull};  // the counter carries into the high word
  uint32_t r[4][philox::kLanes];
  philox::blocks(key, 5, r);
  for (int j = 0; j < philox::kLanes; ++j) {
    uint64_t c = key.offset + 5 + static_cast<uint64_t>(j);
    auto b = philox::block({uint32_t(c), uint32_t(c >> 32), 0, 0}, {uint32_t(key.seed), uint32_t(key.seed >> 32)});
    for (int w = 0; w < 4; ++w) EXPECT_EQ(r[w][j], b[w]) << "lane " << j << " word " << w;
  }
}

TEST(Generator, ReservesDisjointRangesAndReseeds) {
  Generator g(7);
  PhiloxKey a = g.reserve(10), b = g.reserve(0), c = g.reserve(100);
  EXPECT_EQ(a.seed, 7u);
  EXPECT_GE(b.offset, a.offset + 10);
  EXPECT_GE(c.offset, b.offset + 1);
  g.manual_seed(9);
  EXPECT_EQ(g.seed(), 9u);
  EXPECT_EQ(g.offset(), 0u);
}

TEST(Generator, ConcurrentCallersGetDisjointCounters) {
  Generator g(1);
  std::vector<std::vector<uint64_t>> got(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) got[t].push_back(g.reserve(1 + i % 40).offset);
    });
  for (auto& th : threads) th.join();
  std::vector<uint64_t> all;
  for (auto& v : got) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(std::adjacent_find(all.begin(), all.end()), all.end());
  for (size_t i = 1; i < all.size(); ++i) ASSERT_GE(all[i] - all[i - 1], uint64_t(philox::kLanes));
  // Concurrent rand() calls through the default generator never share values.
  std::vector<Tensor> res(4);
  threads.clear();
  for (int t = 0; t < 4; ++t) threads.emplace_back([&, t] { res[t] = rand({256}, kFloat64); });
  for (auto& th : threads) th.join();
  std::set<double> seen;
  for (auto& r : res)
    for (double v : to_vec(r)) seen.insert(v);
  EXPECT_EQ(seen.size(), 4u * 256u);
}

TEST(Random, SameSeedSameValuesDifferentSeedDifferent) {
  manual_seed(42);
  auto a = to_vec(rand({1000}));
  auto a2 = to_vec(rand({1000}));
  manual_seed(42);
  auto b = to_vec(rand({1000}));
  EXPECT_EQ(a, b);
  EXPECT_NE(a, a2);  // consecutive calls draw fresh counters
  manual_seed(43);
  EXPECT_NE(to_vec(rand({1000})), a);

  for (auto fn : std::vector<std::function<Tensor()>>{
           [] { return randn({777}, kFloat64); }, [] { return randint(-5, 1000, {333}); },
           [] { return randperm(500); }, [] { return bernoulli(full({300}, 0.5)); },
           [] { return normal(2.0, 3.0, {65}, kBFloat16); }, [] { return rand({3, 5}, kFloat16); },
           [] { return dropout(ones({400}), 0.5); }, [] { return empty({40}).uniform_(-1, 1); },
           [] { return empty({40}, kFloat64).normal_(1, 2); }, [] { return empty({40}, kInt32).bernoulli_(0.5); }}) {
    manual_seed(123);
    auto x = to_vec(fn());
    manual_seed(123);
    EXPECT_EQ(to_vec(fn()), x);
    manual_seed(124);
    EXPECT_NE(to_vec(fn()), x);
  }
}

TEST(Random, ReplayingARowGivesTheSameValues) {
  manual_seed(5);
  rand({10});  // move the offset away from 0
  const uint64_t seed = default_generator().seed(), offset = default_generator().offset();
  Tensor a = randn({1234}, kFloat64);
  Attrs attrs{Shape{1234}, kFloat64, static_cast<int64_t>(seed), static_cast<int64_t>(offset), 0.0, 1.0};
  Tensor b = call_op1(op_def("normal"), {}, attrs);
  Tensor c = call_op1(op_def("normal"), {}, attrs);
  EXPECT_EQ(to_vec(a), to_vec(b));
  EXPECT_EQ(to_vec(b), to_vec(c));
  EXPECT_EQ(op_def("normal").kind, OpKind::Factory);
}

TEST(Random, IndependentOfThreadCount) {
  ThreadGuard guard;
  auto draw = [] {
    manual_seed(2024);
    std::vector<std::vector<double>> out;
    out.push_back(to_vec(rand({100003})));
    out.push_back(to_vec(rand({50001}, kFloat64)));
    out.push_back(to_vec(randn({100003})));
    out.push_back(to_vec(randn({50001}, kFloat64)));
    out.push_back(to_vec(randn({40000}, kBFloat16)));
    out.push_back(to_vec(randint(0, 1000, {100003})));
    out.push_back(to_vec(randint(std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(), {60001})));
    out.push_back(to_vec(randperm(70000)));
    out.push_back(to_vec(bernoulli(rand({100003}))));
    out.push_back(to_vec(dropout(ones({100003}), 0.25)));
    Tensor big = empty({300, 401});
    big.t().uniform_(-3, 3);  // in place through a transposed view
    out.push_back(to_vec(big));
    return out;
  };
  set_num_threads(1);
  auto one = draw();
  set_num_threads(2);
  auto two = draw();
  ASSERT_EQ(one.size(), two.size());
  for (size_t i = 0; i < one.size(); ++i) EXPECT_EQ(one[i], two[i]) << "draw " << i;
}

TEST(Random, UniformMoments) {
  manual_seed(1);
  const int64_t n = 100000;
  for (DType dt : {kFloat32, kFloat64, kFloat16, kBFloat16}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor t = rand({n}, dt);
    EXPECT_EQ(t.dtype(), dt);
    EXPECT_EQ(t.sizes().vec(), Shape{n});
    Moments m = moments(t);
    const double se = std::sqrt(1.0 / 12.0 / n);  // standard error of the mean
    EXPECT_NEAR(m.mean, 0.5, 5 * se + (dt == kBFloat16 ? 2e-3 : 0.0));
    EXPECT_NEAR(m.var, 1.0 / 12.0, 0.003);
    EXPECT_GE(m.min, 0.0);
    EXPECT_LT(m.max, 1.0);
  }
  // uniform_ over [from, to), including a range where rounding would reach `to` in half.
  for (DType dt : {kFloat32, kFloat64, kFloat16, kBFloat16}) {
    Tensor t = empty({n}, dt);
    t.uniform_(1.0, 2.0);
    Moments m = moments(t);
    EXPECT_GE(m.min, 1.0);
    EXPECT_LT(m.max, 2.0);
    EXPECT_NEAR(m.mean, 1.5, 0.01);
  }
  Tensor e = empty({n}, kFloat64).uniform_(-3.0, 5.0);
  Moments m = moments(e);
  EXPECT_NEAR(m.mean, 1.0, 5 * 8 * std::sqrt(1.0 / 12.0 / n));
  EXPECT_NEAR(m.var, 64.0 / 12.0, 0.1);
  EXPECT_EQ(to_vec(empty({5}).uniform_(2.0, 2.0)), std::vector<double>(5, 2.0));
}

TEST(Random, NormalMoments) {
  manual_seed(2);
  const int64_t n = 100000;
  for (DType dt : {kFloat32, kFloat64, kFloat16, kBFloat16}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor t = randn({n}, dt);
    EXPECT_EQ(t.dtype(), dt);
    Moments m = moments(t);
    EXPECT_NEAR(m.mean, 0.0, 5 / std::sqrt(double(n)));
    EXPECT_NEAR(m.var, 1.0, 5 * std::sqrt(2.0 / n) + (dt == kBFloat16 ? 5e-3 : 0.0));
    auto v = to_vec(t);
    double within1 = 0, fourth = 0;
    for (double x : v) {
      within1 += std::fabs(x) < 1.0;
      fourth += x * x * x * x;
    }
    EXPECT_NEAR(within1 / n, 0.682689, 0.01);
    EXPECT_NEAR(fourth / n, 3.0, 0.15);  // kurtosis of a Gaussian
    EXPECT_TRUE(std::all_of(v.begin(), v.end(), [](double x) { return std::isfinite(x); }));
  }
  Moments m = moments(normal(3.0, 2.0, {n}, kFloat64));
  EXPECT_NEAR(m.mean, 3.0, 5 * 2 / std::sqrt(double(n)));
  EXPECT_NEAR(m.var, 4.0, 4.0 * 5 * std::sqrt(2.0 / n));
  Tensor t = empty({n});
  t.normal_(-1.0, 0.5);
  m = moments(t);
  EXPECT_NEAR(m.mean, -1.0, 0.01);
  EXPECT_NEAR(m.var, 0.25, 0.01);
  EXPECT_EQ(to_vec(normal(1.5, 0.0, {4})), std::vector<double>(4, 1.5));
}

TEST(Random, InPlaceThroughViewsTouchesOnlyTheView) {
  manual_seed(3);
  Tensor base = zeros({6, 8});
  Tensor v = base.slice(1, 1, 7, 2);  // non-contiguous
  v.uniform_(5.0, 6.0);
  auto b = to_vec(base);
  for (int64_t i = 0; i < 6; ++i)
    for (int64_t j = 0; j < 8; ++j) {
      double x = b[i * 8 + j];
      if (j >= 1 && j < 7 && (j - 1) % 2 == 0) {
        EXPECT_GE(x, 5.0);
        EXPECT_LT(x, 6.0);
      } else {
        EXPECT_EQ(x, 0.0);
      }
    }
  // The values are those a contiguous tensor of the view's shape would get.
  manual_seed(4);
  Tensor w = zeros({5, 7}).t();
  w.normal_();
  manual_seed(4);
  Tensor c = zeros({7, 5});
  c.normal_();
  EXPECT_EQ(to_vec(w), to_vec(c));
  // Scalar (0-dim) and empty tensors.
  Tensor s = zeros({});
  s.uniform_(1, 2);
  EXPECT_GE(s.item<double>(), 1.0);
  EXPECT_EQ(rand({0, 3}).numel(), 0);
  EXPECT_EQ(rand({}).dim(), 0);
}

TEST(Random, RandintBoundsAndCoverage) {
  manual_seed(5);
  Tensor t = randint(-3, 5, {10000});
  EXPECT_EQ(t.dtype(), kInt64);
  std::set<double> seen;
  for (double x : to_vec(t)) {
    EXPECT_GE(x, -3);
    EXPECT_LT(x, 5);
    seen.insert(x);
  }
  EXPECT_EQ(seen.size(), 8u);
  Moments m = moments(randint(10, {100000}));
  EXPECT_GE(m.min, 0);
  EXPECT_LE(m.max, 9);
  EXPECT_NEAR(m.mean, 4.5, 0.05);
  EXPECT_NEAR(m.var, 99.0 / 12.0, 0.15);
  for (DType dt : {kUInt8, kInt8, kInt16, kInt32, kFloat32, kFloat64, kFloat16, kBFloat16}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor r = randint(0, 100, {5000}, dt);
    EXPECT_EQ(r.dtype(), dt);
    Moments rm = moments(r);
    EXPECT_GE(rm.min, 0);
    EXPECT_LE(rm.max, 99);
    for (double x : to_vec(r)) ASSERT_EQ(x, std::floor(x));
  }
  Moments u8 = moments(randint(0, 256, {20000}, kUInt8));
  EXPECT_EQ(u8.min, 0);
  EXPECT_EQ(u8.max, 255);
  Moments bl = moments(randint(0, 2, {1000}, kBool));
  EXPECT_EQ(bl.min, 0);
  EXPECT_EQ(bl.max, 1);
  // The full int64 range (64-bit draws) and a range wider than 2^32.
  Tensor wide = randint(std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(), {1000});
  int64_t* wp = wide.data_ptr<int64_t>();
  int neg = 0;
  for (int i = 0; i < 1000; ++i) neg += wp[i] < 0;
  EXPECT_GT(neg, 400);
  EXPECT_LT(neg, 600);
  Tensor big = randint(0, int64_t(1) << 40, {1000});
  Moments bm = moments(big);
  EXPECT_GT(bm.max, double(int64_t(1) << 39));
  EXPECT_LT(bm.max, double(int64_t(1) << 40));
  EXPECT_EQ(to_vec(randint(7, 8, {4})), std::vector<double>(4, 7));
}

TEST(Random, RandpermIsAPermutation) {
  manual_seed(6);
  for (int64_t n : {0, 1, 2, 17, 1000, 70001}) {
    Tensor p = randperm(n);
    EXPECT_EQ(p.dtype(), kInt64);
    EXPECT_EQ(p.sizes().vec(), Shape{n});
    auto v = to_vec(p);
    std::sort(v.begin(), v.end());
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(v[i], double(i));
  }
  auto v = to_vec(randperm(1000));
  int fixed = 0;
  for (int i = 0; i < 1000; ++i) fixed += v[i] == i;
  EXPECT_LT(fixed, 10);  // expected ~1 fixed point
  for (DType dt : {kInt32, kInt16, kUInt8, kFloat32, kFloat16, kBFloat16, kFloat64}) {
    Tensor p = randperm(200, dt);
    EXPECT_EQ(p.dtype(), dt);
    auto s = to_vec(p);
    std::sort(s.begin(), s.end());
    for (int i = 0; i < 200; ++i) ASSERT_EQ(s[i], i);
  }
  // Uniformity: each of the 6 permutations of 3 appears about equally often.
  std::map<std::vector<double>, int> counts;
  for (int i = 0; i < 3000; ++i) counts[to_vec(randperm(3))]++;
  EXPECT_EQ(counts.size(), 6u);
  for (auto& [perm, c] : counts) EXPECT_NEAR(c, 500, 100);
}

TEST(Random, BernoulliRates) {
  manual_seed(7);
  const int64_t n = 100000;
  for (DType dt : {kFloat32, kFloat64, kFloat16, kBFloat16}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor b = bernoulli(full({n}, 0.3, dt));
    EXPECT_EQ(b.dtype(), dt);
    Moments m = moments(b);
    EXPECT_NEAR(m.mean, 0.3, 5 * std::sqrt(0.21 / n) + 1e-3);
    auto bv = to_vec(b);
    EXPECT_EQ(std::set<double>(bv.begin(), bv.end()).size(), 2u);
  }
  EXPECT_EQ(to_vec(bernoulli(zeros({1000}))), std::vector<double>(1000, 0.0));
  EXPECT_EQ(to_vec(bernoulli(ones({1000}))), std::vector<double>(1000, 1.0));
  // Per-element probabilities, on a non-contiguous p.
  Tensor p = zeros({2, 5000}, kFloat64);
  p.select(0, 1).fill_(1.0);
  auto v = to_vec(bernoulli(p.t()));
  for (int64_t i = 0; i < 5000; ++i) {
    ASSERT_EQ(v[2 * i], 0.0);
    ASSERT_EQ(v[2 * i + 1], 1.0);
  }
  EXPECT_EQ(bernoulli(full({}, 1.0)).dim(), 0);
  // In place: any dtype gets 0 / 1.
  for (DType dt : {kFloat32, kInt64, kBool, kUInt8, kBFloat16}) {
    Tensor t = full({n}, 5, dt);
    t.bernoulli_(0.25);
    Moments m = moments(t);
    EXPECT_NEAR(m.mean, 0.25, 5 * std::sqrt(0.1875 / n));
    EXPECT_EQ(m.min, 0);
    EXPECT_EQ(m.max, 1);
  }
  EXPECT_EQ(to_vec(zeros({10}).bernoulli_(1.0)), std::vector<double>(10, 1.0));
  EXPECT_EQ(to_vec(ones({10}).bernoulli_(0.0)), std::vector<double>(10, 0.0));
}

TEST(Random, OptionsAreHonoured) {
  Tensor r = rand({3}, TensorOptions(kFloat64).requires_grad());
  EXPECT_TRUE(r.requires_grad());
  EXPECT_EQ(r.dtype(), kFloat64);
  set_default_dtype(kFloat64);
  EXPECT_EQ(rand({2}).dtype(), kFloat64);
  EXPECT_EQ(randn({2}).dtype(), kFloat64);
  set_default_dtype(kFloat32);
  EXPECT_EQ(rand_like(zeros({2, 2}, kFloat16)).dtype(), kFloat16);
  EXPECT_EQ(randn_like(zeros({2, 2}, kBFloat16)).sizes().vec(), (Shape{2, 2}));
}

TEST(Random, Errors) {
  EXPECT_KILN_ERROR(rand({2}, kInt64), "[rand]", "floating point", "int64");
  EXPECT_KILN_ERROR(randn({2}, kBool), "[randn]", "floating point", "bool");
  EXPECT_KILN_ERROR(normal(0, 1, {2}, kInt32), "[normal]", "int32");
  EXPECT_KILN_ERROR(rand({2, -1}), "[rand]", "-1");
  EXPECT_KILN_ERROR(randn({-3}), "[randn]", "-3");
  EXPECT_KILN_ERROR(randint(5, 5, {2}), "[randint]", "low=5", "high=5");
  EXPECT_KILN_ERROR(randint(0, {2}), "[randint]", "low=0", "high=0");
  EXPECT_KILN_ERROR(randint(-1, 10, {2}, kUInt8), "[randint]", "-1", "uint8");
  EXPECT_KILN_ERROR(randint(0, 300, {2}, kUInt8), "[randint]", "300", "uint8");
  EXPECT_KILN_ERROR(randint(0, 3, {2}, kBool), "[randint]", "bool");
  EXPECT_KILN_ERROR(randint(0, 5000, {2}, kFloat16), "[randint]", "float16");
  EXPECT_KILN_ERROR(randint(0, 5, {-2}), "[randint]", "-2");
  EXPECT_KILN_ERROR(randperm(-1), "[randperm]", "n=-1");
  EXPECT_KILN_ERROR(randperm(3, kBool), "[randperm]", "bool");
  EXPECT_KILN_ERROR(randperm(300, kUInt8), "[randperm]", "300", "uint8");
  EXPECT_KILN_ERROR(normal(0, -1, {2}), "[normal]", "std", "-1");
  EXPECT_KILN_ERROR(normal(0, NAN, {2}), "[normal]", "std", "nan");
  EXPECT_KILN_ERROR(normal(INFINITY, 1, {2}), "[normal]", "mean", "inf");
  EXPECT_KILN_ERROR(bernoulli(full({3}, 1.5)), "[bernoulli]", "1.5", "[0, 1]");
  EXPECT_KILN_ERROR(bernoulli(tensor({0.5, -0.25})), "[bernoulli]", "-0.25", "index 1");
  EXPECT_KILN_ERROR(bernoulli(full({2}, NAN)), "[bernoulli]", "nan");
  EXPECT_KILN_ERROR(bernoulli(ones({2}, kInt64)), "[bernoulli]", "floating point", "int64");
  EXPECT_KILN_ERROR(bernoulli(Tensor()), "[bernoulli]", "undefined");
  Tensor f = zeros({3});
  EXPECT_KILN_ERROR(f.uniform_(2, 1), "[uniform_]", "from=2", "to=1");
  EXPECT_KILN_ERROR(f.uniform_(0, INFINITY), "[uniform_]", "inf");
  EXPECT_KILN_ERROR(zeros({3}, kFloat16).uniform_(-60000, 60000), "[uniform_]", "float16");
  EXPECT_KILN_ERROR(zeros({3}, kInt64).uniform_(0, 1), "[uniform_]", "int64");
  EXPECT_KILN_ERROR(zeros({3}, kInt32).normal_(0, 1), "[normal_]", "int32");
  EXPECT_KILN_ERROR(f.normal_(0, -2), "[normal_]", "std", "-2");
  EXPECT_KILN_ERROR(f.bernoulli_(1.5), "[bernoulli_]", "1.5");
  EXPECT_KILN_ERROR(f.bernoulli_(-0.5), "[bernoulli_]", "-0.5");
  EXPECT_EQ(to_vec(f), std::vector<double>(3, 0.0));  // failed calls wrote nothing
}
