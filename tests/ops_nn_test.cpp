// nn ops: layer_norm, dropout, cross_entropy, nll_loss, mse_loss against float64 plain-loop
// references (PyTorch's definitions), plus every error path.
#include <cmath>
#include <random>

#include "core/op.h"
#include "op_table.h"
#include "test_util.h"

using namespace kiln;
using namespace kiln::optable;
using kiln::testing::close;
using kiln::testing::to_vec;

namespace {

// ---- layer_norm ------------------------------------------------------------------------------

// x, weight, bias as float64 contiguous; k trailing dims normalised.
Tensor ref_layer_norm(const Tensor& x, int64_t k, const Tensor& w, const Tensor& b, double eps) {
  int64_t n = 1;
  for (int64_t d = x.dim() - k; d < x.dim(); ++d) n *= x.size(d);
  Tensor out = empty(x.sizes(), kFloat64);
  const double* xp = x.data_ptr<double>();
  double* o = out.data_ptr<double>();
  const int64_t rows = n == 0 ? 0 : x.numel() / n;
  for (int64_t r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < n; ++i) mean += xp[r * n + i];
    mean /= double(n);
    for (int64_t i = 0; i < n; ++i) var += (xp[r * n + i] - mean) * (xp[r * n + i] - mean);
    var /= double(n);
    for (int64_t i = 0; i < n; ++i) {
      double v = (xp[r * n + i] - mean) / std::sqrt(var + eps);
      if (w.defined()) v *= w.data_ptr<double>()[i];
      if (b.defined()) v += b.data_ptr<double>()[i];
      o[r * n + i] = v;
    }
  }
  return out;
}

Shape trailing(const Tensor& x, int64_t k) {
  Shape s;
  for (int64_t d = x.dim() - k; d < x.dim(); ++d) s.push_back(x.size(d));
  return s;
}

// ---- losses: float64 references written from PyTorch's definitions ---------------------------

struct Geom {
  int64_t N, C, S;
};
Geom geom_of(const Tensor& x) {
  if (x.dim() == 1) return {1, x.size(0), 1};
  int64_t s = 1;
  for (int64_t d = 2; d < x.dim(); ++d) s *= x.size(d);
  return {x.size(0), x.size(1), s};
}
Shape positions_shape(const Tensor& x) {
  Shape s;
  for (int64_t d = 0; d < x.dim(); ++d)
    if (d != (x.dim() == 1 ? 0 : 1)) s.push_back(x.size(d));
  return s;
}

// log_softmax over the class dim, [N, C, S] layout (float64, contiguous).
std::vector<double> ref_log_softmax(const Tensor& x) {
  Geom g = geom_of(x);
  const double* p = x.data_ptr<double>();
  std::vector<double> out(static_cast<size_t>(x.numel()));
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t s = 0; s < g.S; ++s) {
      double m = -INFINITY;
      for (int64_t c = 0; c < g.C; ++c) m = std::max(m, p[(n * g.C + c) * g.S + s]);
      double se = 0;
      for (int64_t c = 0; c < g.C; ++c) se += std::exp(p[(n * g.C + c) * g.S + s] - m);
      for (int64_t c = 0; c < g.C; ++c) out[(n * g.C + c) * g.S + s] = p[(n * g.C + c) * g.S + s] - m - std::log(se);
    }
  return out;
}

Tensor reduce_ref(const std::vector<double>& per, const Shape& shape, Reduction r, double denom) {
  if (r == Reduction::None) {
    Tensor t = empty(shape, kFloat64);
    std::copy(per.begin(), per.end(), t.data_ptr<double>());
    return t;
  }
  double s = 0;
  for (double v : per) s += v;
  return full({}, r == Reduction::Sum ? s : s / denom, kFloat64, Device(kCPU));
}

// nll_loss on log-probabilities `lp` ([N, C, S] order), class targets.
Tensor ref_nll(const Tensor& x, const std::vector<double>& lp, const std::vector<int64_t>& tgt,
               const std::vector<double>& w, Reduction r, int64_t ignore) {
  Geom g = geom_of(x);
  std::vector<double> per(static_cast<size_t>(g.N * g.S));
  double wsum = 0;
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t s = 0; s < g.S; ++s) {
      int64_t t = tgt[n * g.S + s];
      if (t == ignore) continue;
      double wt = w.empty() ? 1.0 : w[t];
      per[n * g.S + s] = -wt * lp[(n * g.C + t) * g.S + s];
      wsum += wt;
    }
  return reduce_ref(per, positions_shape(x), r, wsum);
}

// cross_entropy with class targets: PyTorch's cross_entropy_loss_label_smoothing.
Tensor ref_ce_class(const Tensor& x, const std::vector<int64_t>& tgt, const std::vector<double>& w, Reduction r,
                    int64_t ignore, double ls) {
  std::vector<double> lp = ref_log_softmax(x);
  Tensor nll = ref_nll(x, lp, tgt, w, r, ignore);
  if (ls == 0.0) return nll;
  Geom g = geom_of(x);
  std::vector<double> smooth(static_cast<size_t>(g.N * g.S));
  double denom = 0;
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t s = 0; s < g.S; ++s) {
      int64_t t = tgt[n * g.S + s];
      if (t == ignore) continue;
      double v = 0;
      for (int64_t c = 0; c < g.C; ++c) v -= (w.empty() ? 1.0 : w[c]) * lp[(n * g.C + c) * g.S + s];
      smooth[n * g.S + s] = v;
      denom += w.empty() ? 1.0 : w[t];  // mean: weights of the non-ignored targets (or their count)
    }
  Tensor sm = reduce_ref(smooth, positions_shape(x), r, denom);
  Tensor out = empty(nll.sizes(), kFloat64);
  for (int64_t i = 0; i < out.numel(); ++i)
    out.data_ptr<double>()[i] =
        (1 - ls) * nll.data_ptr<double>()[i] + ls / double(g.C) * sm.data_ptr<double>()[i];
  return out;
}

// cross_entropy with probability targets: -sum_c w_c t'_c log p_c, t' = t (1 - ls) + ls / C;
// mean divides by the number of positions.
Tensor ref_ce_prob(const Tensor& x, const Tensor& t, const std::vector<double>& w, Reduction r, double ls) {
  std::vector<double> lp = ref_log_softmax(x);
  Geom g = geom_of(x);
  const double* tp = t.data_ptr<double>();
  std::vector<double> per(static_cast<size_t>(g.N * g.S));
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t s = 0; s < g.S; ++s) {
      double v = 0;
      for (int64_t c = 0; c < g.C; ++c) {
        int64_t i = (n * g.C + c) * g.S + s;
        v -= (w.empty() ? 1.0 : w[c]) * (tp[i] * (1 - ls) + ls / double(g.C)) * lp[i];
      }
      per[n * g.S + s] = v;
    }
  return reduce_ref(per, positions_shape(x), r, double(g.N * g.S));
}

std::vector<int64_t> random_targets(int64_t n, int64_t C, int64_t ignore, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::vector<int64_t> t(static_cast<size_t>(n));
  for (auto& v : t) v = static_cast<int64_t>(gen() % static_cast<uint64_t>(C));
  // Some positions carry ignore_index explicitly (when it is not a class, it must still be skipped).
  for (int64_t i = 0; i < n; i += 3) t[i] = ignore;
  return t;
}

Tensor targets_tensor(const std::vector<int64_t>& t, const Shape& shape, DType dt = kInt64) {
  Tensor out = empty(shape, kInt64);
  std::copy(t.begin(), t.end(), out.data_ptr<int64_t>());
  return out.to(dt);
}

std::vector<double> random_weights(int64_t C, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> u(0.2, 2.0);
  std::vector<double> w(static_cast<size_t>(C));
  for (auto& v : w) v = u(gen);
  return w;
}

Tensor weights_tensor(const std::vector<double>& w, DType dt) {
  Tensor t = empty({static_cast<int64_t>(w.size())}, kFloat64);
  std::copy(w.begin(), w.end(), t.data_ptr<double>());
  return t.to(dt);
}

const char* red_name(Reduction r) { return r == Reduction::None ? "none" : r == Reduction::Mean ? "mean" : "sum"; }

// Loss tolerances: the kernel rounds only the result, so relative error is the result dtype's.
std::pair<double, double> loss_tol(DType dt) {
  switch (dt) {
    case DType::Float64: return {1e-10, 1e-12};
    case DType::Float32: return {2e-5, 2e-6};
    case DType::Float16: return {2e-3, 1e-3};
    default: return {1e-2, 1e-2};
  }
}

const std::vector<Shape> kLossShapes = {{5}, {4, 5}, {3, 4, 7}, {2, 3, 4, 5}, {0, 4}, {2, 3, 0}, {1, 40}, {3, 37, 2}};

}  // namespace

// ---- layer_norm ------------------------------------------------------------------------------

TEST(LayerNorm, OpTable) {
  for (int64_t k : {1, 2}) {
    for (int affine = 0; affine < 4; ++affine) {
      const bool hw = affine & 1, hb = affine & 2;
      OpCase c;
      c.name = "layer_norm k=" + std::to_string(k) + (hw ? " weight" : "") + (hb ? " bias" : "");
      std::vector<Shape> xs = k == 1 ? std::vector<Shape>{{4, 7}, {2, 3, 8}, {0, 5}, {1, 33}, {3, 70}, {6}}
                                     : std::vector<Shape>{{2, 3, 8}, {0, 4, 5}, {5, 2, 17}, {4, 3}};
      for (const Shape& x : xs) {
        Shape ns(x.end() - k, x.end());
        std::vector<Shape> set{x};
        if (hw) set.push_back(ns);
        if (hb) set.push_back(ns);
        c.shape_sets.push_back(set);
      }
      c.dtypes = float_dtypes();
      c.tol_scale = 2;
      c.run = [=](const TensorList& in) {
        std::optional<Tensor> w, b;
        size_t i = 1;
        if (hw) w = in[i++];
        if (hb) b = in[i++];
        return layer_norm(in[0], trailing(in[0], k), w, b, 1e-5);
      };
      c.ref = [=](const TensorList& in) {
        size_t i = 1;
        Tensor w = hw ? in[i++] : Tensor();
        Tensor b = hb ? in[i++] : Tensor();
        return ref_layer_norm(in[0], k, w, b, 1e-5);
      };
      check_case(c);
    }
  }
}

TEST(LayerNorm, ConstantRowsEpsAndMixedWeightDtype) {
  // A constant row has zero variance: the output is bias (0 without), scaled by 1/sqrt(eps).
  Tensor x = full({2, 4}, 3.0);
  EXPECT_TRUE(close(layer_norm(x, {4}), zeros({2, 4})));
  Tensor y = tensor({{1.0, 3.0}}, kFloat64);
  EXPECT_TRUE(close(layer_norm(y, {2}, std::nullopt, std::nullopt, 1.0),
                    tensor({{-1 / std::sqrt(2.0), 1 / std::sqrt(2.0)}}, kFloat64), 1e-12, 1e-12));
  // float32 weights with a bfloat16 input (the mixed form PyTorch allows).
  Tensor xb = random_input({3, 6}, kBFloat16, {}, 1);
  Tensor w = random_input({6}, kFloat32, {}, 2), b = random_input({6}, kFloat32, {}, 3);
  Tensor out = layer_norm(xb, {6}, w, b);
  EXPECT_EQ(out.dtype(), kBFloat16);
  EXPECT_TRUE(close(out, ref_layer_norm(xb.to(kFloat64), 1, w.to(kFloat64), b.to(kFloat64), 1e-5), 1.6e-2, 1e-2));
  // Large rows (parallel, vectorised paths) and a large mean offset (two-pass variance).
  Tensor big = random_input({64, 1000}, kFloat32, {99.0, 101.0}, 4);
  EXPECT_TRUE(close(layer_norm(big, {1000}), ref_layer_norm(big.to(kFloat64), 1, Tensor(), Tensor(), 1e-5), 1e-4, 1e-4));
}

TEST(LayerNorm, Errors) {
  Tensor x = zeros({2, 3});
  EXPECT_KILN_ERROR(layer_norm(x, {}), "[layer_norm]", "normalized_shape", "at least 1-dimensional");
  EXPECT_KILN_ERROR(layer_norm(x, {4}), "[layer_norm]", "normalized_shape=[4]", "[*, 4]", "[2, 3]");
  EXPECT_KILN_ERROR(layer_norm(x, {2, 3, 1}), "[layer_norm]", "[*, 2, 3, 1]", "[2, 3]");
  EXPECT_KILN_ERROR(layer_norm(zeros({}), {1}), "[layer_norm]", "[*, 1]", "[]");
  EXPECT_KILN_ERROR(layer_norm(x, {3}, zeros({4})), "[layer_norm]", "weight", "[4]", "normalized_shape=[3]");
  EXPECT_KILN_ERROR(layer_norm(x, {3}, zeros({1, 3})), "[layer_norm]", "weight", "[1, 3]");
  EXPECT_KILN_ERROR(layer_norm(x, {3}, std::nullopt, zeros({2})), "[layer_norm]", "bias", "[2]");
  EXPECT_KILN_ERROR(layer_norm(x, {3}, zeros({3}, kInt64)), "[layer_norm]", "weight", "int64");
  EXPECT_KILN_ERROR(layer_norm(zeros({2, 3}, kInt64), {3}), "[layer_norm]", "floating point", "int64");
  EXPECT_KILN_ERROR(layer_norm(Tensor(), {3}), "[layer_norm]", "undefined");
}

// ---- dropout ---------------------------------------------------------------------------------

TEST(Dropout, IdentityZerosAndScaling) {
  Tensor x = random_input({4, 5}, kFloat32, {}, 5);
  EXPECT_TRUE(dropout(x, 0.5, false).is_same(x));
  EXPECT_TRUE(dropout(x, 0.0, true).is_same(x));
  EXPECT_TRUE(dropout(x, 1.0, false).is_same(x));
  Tensor z = dropout(x, 1.0, true);
  EXPECT_EQ(z.sizes(), x.sizes());
  EXPECT_EQ(z.dtype(), kFloat32);
  EXPECT_EQ(to_vec(z), std::vector<double>(20, 0.0));
  EXPECT_EQ(dropout(zeros({0, 3}), 0.5).numel(), 0);
  EXPECT_EQ(dropout(ones({}), 0.5).dim(), 0);

  manual_seed(11);
  const int64_t n = 100000;
  for (DType dt : float_dtypes()) {
    for (double p : {0.1, 0.3, 0.9}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " p=" + std::to_string(p));
      Tensor in = random_input({n}, dt, {0.5, 2.0}, 6);
      auto xi = to_vec(in);
      Tensor out = dropout(in, p);
      EXPECT_EQ(out.dtype(), dt);
      auto v = to_vec(out);
      const double scale = 1.0 / (1.0 - p);
      auto [rtol, atol] = tolerance(dt, 1.0);
      int64_t dropped = 0;
      for (int64_t i = 0; i < n; ++i) {
        if (v[i] == 0.0) {
          ++dropped;
        } else {
          ASSERT_NEAR(v[i], xi[i] * scale, atol + rtol * xi[i] * scale) << i;
        }
      }
      EXPECT_NEAR(double(dropped) / n, p, 5 * std::sqrt(p * (1 - p) / n));
    }
  }
}

TEST(Dropout, DeterministicLayoutAndThreadIndependent) {
  Tensor x = random_input({300, 257}, kFloat32, {1.0, 2.0}, 7);
  manual_seed(12);
  auto a = to_vec(dropout(x, 0.4));
  auto a2 = to_vec(dropout(x, 0.4));
  manual_seed(12);
  EXPECT_EQ(to_vec(dropout(x, 0.4)), a);
  EXPECT_NE(a, a2);
  // The mask depends on the logical index only: a transposed input gets the mask a contiguous
  // copy would get.
  Tensor xt = x.t();
  manual_seed(13);
  auto b = to_vec(dropout(xt, 0.4));
  manual_seed(13);
  EXPECT_EQ(to_vec(dropout(xt.contiguous(), 0.4)), b);
  int saved = get_num_threads();
  set_num_threads(1);
  manual_seed(14);
  auto one = to_vec(dropout(x, 0.7));
  set_num_threads(2);
  manual_seed(14);
  auto two = to_vec(dropout(x, 0.7));
  set_num_threads(saved);
  EXPECT_EQ(one, two);
}

TEST(Dropout, Errors) {
  Tensor x = ones({3});
  EXPECT_KILN_ERROR(dropout(x, -0.1), "[dropout]", "between 0 and 1", "-0.1");
  EXPECT_KILN_ERROR(dropout(x, 1.5), "[dropout]", "1.5");
  EXPECT_KILN_ERROR(dropout(x, NAN), "[dropout]", "nan");
  EXPECT_KILN_ERROR(dropout(x, 1.5, false), "[dropout]", "1.5");
  EXPECT_KILN_ERROR(dropout(ones({3}, kInt64), 0.5), "[dropout]", "floating point", "int64");
  EXPECT_KILN_ERROR(dropout(Tensor(), 0.5), "[dropout]", "undefined");
  // The row itself rejects what the front end handles (p = 1) and bad attributes.
  EXPECT_KILN_ERROR(call_op1(op_def("dropout"), {x}, Attrs{1.0, int64_t(0), int64_t(0)}), "[dropout]", "p < 1");
  EXPECT_KILN_ERROR(call_op1(op_def("dropout"), {x}, Attrs{2.0, int64_t(0), int64_t(0)}), "[dropout]", "2");
}

// ---- cross_entropy / nll_loss -------------------------------------------------------------

TEST(CrossEntropy, ClassTargetsAllOptions) {
  uint64_t seed = 100;
  for (const Shape& shape : kLossShapes) {
    for (DType dt : float_dtypes()) {
      for (bool weighted : {false, true}) {
        for (int64_t ignore : {int64_t(-100), int64_t(1)}) {
          for (double ls : {0.0, 0.1, 1.0}) {
            for (Reduction r : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
              for (Layout layout : {Layout::Contiguous, Layout::Transposed}) {
                std::ostringstream where;
                where << "shape=" << IntArrayRef(shape) << " dtype=" << dt << " weighted=" << weighted
                      << " ignore=" << ignore << " ls=" << ls << " reduction=" << red_name(r)
                      << " layout=" << layout_name(layout);
                SCOPED_TRACE(where.str());
                Tensor x = apply_layout(random_input(shape, dt, {-3, 3}, ++seed), layout);
                const int64_t C = shape.size() == 1 ? shape[0] : shape[1];
                Shape tshape = positions_shape(x);
                auto tv = random_targets(shape_numel(tshape), C, ignore, ++seed);
                Tensor t = targets_tensor(tv, tshape);
                std::vector<double> w = weighted ? random_weights(C, ++seed) : std::vector<double>{};
                std::optional<Tensor> wt;
                if (weighted) wt = weights_tensor(w, dt);
                if (weighted && dt != kFloat64) w = to_vec(*wt);  // the reference sees the rounded weights
                Tensor out = cross_entropy(x, t, wt, r, ignore, ls);
                EXPECT_EQ(out.dtype(), dt);
                Tensor expected = ref_ce_class(x.to(kFloat64).contiguous(), tv, w, r, ignore, ls);
                auto [rtol, atol] = loss_tol(dt);
                EXPECT_TRUE(close(out, expected, rtol, atol));
              }
            }
          }
        }
      }
    }
  }
}

TEST(CrossEntropy, ProbabilityTargetsAllOptions) {
  uint64_t seed = 500;
  for (const Shape& shape : kLossShapes) {
    for (DType dt : float_dtypes()) {
      for (bool weighted : {false, true}) {
        for (double ls : {0.0, 0.25}) {
          for (Reduction r : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
            for (Layout layout : {Layout::Contiguous, Layout::Sliced}) {
              std::ostringstream where;
              where << "shape=" << IntArrayRef(shape) << " dtype=" << dt << " weighted=" << weighted << " ls=" << ls
                    << " reduction=" << red_name(r) << " layout=" << layout_name(layout);
              SCOPED_TRACE(where.str());
              Tensor x = apply_layout(random_input(shape, dt, {-3, 3}, ++seed), layout);
              Tensor t = apply_layout(random_input(shape, dt, {0, 1}, ++seed), layout);
              const int64_t C = shape.size() == 1 ? shape[0] : shape[1];
              std::vector<double> w = weighted ? random_weights(C, ++seed) : std::vector<double>{};
              std::optional<Tensor> wt;
              if (weighted) wt = weights_tensor(w, dt);
              if (weighted && dt != kFloat64) w = to_vec(*wt);
              Tensor out = cross_entropy(x, t, wt, r, -100, ls);
              EXPECT_EQ(out.dtype(), dt);
              Tensor expected = ref_ce_prob(x.to(kFloat64).contiguous(), t.to(kFloat64).contiguous(), w, r, ls);
              auto [rtol, atol] = loss_tol(dt);
              EXPECT_TRUE(close(out, expected, rtol, atol));
            }
          }
        }
      }
    }
  }
  // A float64 target with a float32 input promotes (input * target in PyTorch).
  Tensor x = random_input({3, 4}, kFloat32, {}, 1), t = random_input({3, 4}, kFloat64, {0, 1}, 2);
  Tensor out = cross_entropy(x, t);
  EXPECT_EQ(out.dtype(), kFloat64);
  EXPECT_TRUE(close(out, ref_ce_prob(x.to(kFloat64), t, {}, Reduction::Mean, 0.0), 1e-10, 1e-12));
}

TEST(CrossEntropy, KnownValuesAndSpecialCases) {
  // log_softmax([0, 0]) = [-log 2, -log 2].
  Tensor x = zeros({2, 2});
  EXPECT_NEAR(cross_entropy(x, tensor({0, 1})).item<double>(), std::log(2.0), 1e-6);
  // Every target ignored: mean is 0/0 = nan (as in PyTorch); sum is 0.
  Tensor t = tensor({-100, -100});
  EXPECT_TRUE(std::isnan(cross_entropy(x, t).item<double>()));
  EXPECT_EQ(cross_entropy(x, t, std::nullopt, Reduction::Sum).item<double>(), 0.0);
  EXPECT_TRUE(std::isnan(cross_entropy(zeros({0, 3}), zeros({0}, kInt64)).item<double>()));
  EXPECT_TRUE(std::isnan(cross_entropy(zeros({0, 3}), zeros({0, 3})).item<double>()));
  // Unbatched input gives a 0-dim result even with reduction none.
  EXPECT_EQ(cross_entropy(zeros({4}), tensor(2).squeeze(), std::nullopt, Reduction::None).dim(), 0);
  EXPECT_EQ(cross_entropy(zeros({4}), full({4}, 0.25), std::nullopt, Reduction::None).dim(), 0);
  // Integer target dtypes other than int64 are accepted.
  Tensor xi = random_input({3, 5}, kFloat64, {}, 3);
  EXPECT_TRUE(close(cross_entropy(xi, tensor({4, 0, 2}).to(kInt32)), cross_entropy(xi, tensor({4, 0, 2}))));
  EXPECT_TRUE(close(nll_loss(xi, tensor({4, 0, 2}).to(kUInt8)), nll_loss(xi, tensor({4, 0, 2}))));
  // Large inputs are stable (log_softmax subtracts the max).
  Tensor big = tensor({{1000.0, 0.0}}, kFloat32);
  EXPECT_NEAR(cross_entropy(big, tensor({0})).item<double>(), 0.0, 1e-6);
  EXPECT_NEAR(cross_entropy(big, tensor({1})).item<double>(), 1000.0, 1e-3);
  // NaN propagates; -inf logits (masked classes) contribute nothing to the softmax.
  EXPECT_TRUE(std::isnan(cross_entropy(tensor({{0.0, NAN, 1.0}}), tensor({0})).item<double>()));
  Tensor masked = tensor({{0.0, -INFINITY, 0.0}});
  EXPECT_NEAR(cross_entropy(masked, tensor({2})).item<double>(), std::log(2.0), 1e-6);
  EXPECT_TRUE(std::isinf(cross_entropy(masked, tensor({1})).item<double>()));
  Tensor masked3 = zeros({1, 3, 20});
  masked3.select(1, 1).fill_(-INFINITY);
  EXPECT_NEAR(cross_entropy(masked3, zeros({1, 20}, kInt64)).item<double>(), std::log(2.0), 1e-6);
  // Large batch (parallel path) matches the reference.
  Tensor xb = random_input({3000, 33}, kFloat32, {-4, 4}, 8);
  auto tv = random_targets(3000, 33, -100, 9);
  EXPECT_TRUE(close(cross_entropy(xb, targets_tensor(tv, {3000}), std::nullopt, Reduction::Mean, -100, 0.2),
                    ref_ce_class(xb.to(kFloat64), tv, {}, Reduction::Mean, -100, 0.2), 1e-5, 1e-6));
}

TEST(NllLoss, AllOptions) {
  uint64_t seed = 900;
  for (const Shape& shape : kLossShapes) {
    for (DType dt : float_dtypes()) {
      for (bool weighted : {false, true}) {
        for (int64_t ignore : {int64_t(-100), int64_t(0)}) {
          for (Reduction r : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
            for (Layout layout : {Layout::Contiguous, Layout::Transposed}) {
              std::ostringstream where;
              where << "shape=" << IntArrayRef(shape) << " dtype=" << dt << " weighted=" << weighted
                    << " ignore=" << ignore << " reduction=" << red_name(r) << " layout=" << layout_name(layout);
              SCOPED_TRACE(where.str());
              Tensor x = apply_layout(random_input(shape, dt, {-5, 0}, ++seed), layout);
              const int64_t C = shape.size() == 1 ? shape[0] : shape[1];
              Shape tshape = positions_shape(x);
              auto tv = random_targets(shape_numel(tshape), C, ignore, ++seed);
              std::vector<double> w = weighted ? random_weights(C, ++seed) : std::vector<double>{};
              std::optional<Tensor> wt;
              if (weighted) wt = weights_tensor(w, dt);
              if (weighted && dt != kFloat64) w = to_vec(*wt);
              Tensor out = nll_loss(x, targets_tensor(tv, tshape), wt, r, ignore);
              EXPECT_EQ(out.dtype(), dt);
              Tensor xd = x.to(kFloat64).contiguous();
              Tensor expected = ref_nll(xd, to_vec(xd), tv, w, r, ignore);
              auto [rtol, atol] = loss_tol(dt);
              EXPECT_TRUE(close(out, expected, rtol, atol));
            }
          }
        }
      }
    }
  }
}

TEST(CrossEntropy, Errors) {
  Tensor x = zeros({2, 3});
  EXPECT_KILN_ERROR(cross_entropy(x, tensor({0, 5})), "[cross_entropy]", "target 5", "out of bounds", "C = 3");
  EXPECT_KILN_ERROR(cross_entropy(x, tensor({-1, 0})), "[cross_entropy]", "target -1", "C = 3");
  EXPECT_KILN_ERROR(cross_entropy(zeros({2, 3, 4}), full({2, 4}, 3, kInt64)), "[cross_entropy]", "target 3", "C = 3");
  EXPECT_KILN_ERROR(cross_entropy(zeros({3}), tensor(3).squeeze()), "[cross_entropy]", "target 3");
  EXPECT_KILN_ERROR(cross_entropy(x, tensor({0, 1, 2})), "[cross_entropy]", "target of shape [2]", "[3]");
  EXPECT_KILN_ERROR(cross_entropy(zeros({2, 3, 4}), zeros({2, 5}, kInt64)), "[cross_entropy]", "[2, 4]", "[2, 5]");
  EXPECT_KILN_ERROR(cross_entropy(zeros({3}), tensor({1})), "[cross_entropy]", "target of shape []", "[1]");
  EXPECT_KILN_ERROR(cross_entropy(x, zeros({2})), "[cross_entropy]", "floating point target", "[2, 3]", "[2]");
  EXPECT_KILN_ERROR(cross_entropy(x, zeros({2, 3}, kInt64)), "[cross_entropy]", "floating point target", "int64");
  EXPECT_KILN_ERROR(cross_entropy(x, zeros({2, 3}), std::nullopt, Reduction::Mean, 1), "[cross_entropy]",
                    "ignore_index", "ignore_index=1");
  EXPECT_KILN_ERROR(cross_entropy(x, zeros({2}, kBool)), "[cross_entropy]", "integer", "bool");
  EXPECT_KILN_ERROR(cross_entropy(x, tensor({0, 1}), zeros({4})), "[cross_entropy]", "weight", "3 classes", "[4]");
  EXPECT_KILN_ERROR(cross_entropy(x, tensor({0, 1}), zeros({1, 3})), "[cross_entropy]", "weight", "[1, 3]");
  EXPECT_KILN_ERROR(cross_entropy(x, tensor({0, 1}), zeros({3}, kInt64)), "[cross_entropy]", "weight", "int64");
  EXPECT_KILN_ERROR(cross_entropy(x, tensor({0, 1}), std::nullopt, Reduction::Mean, -100, 1.5), "[cross_entropy]",
                    "label_smoothing", "1.5");
  EXPECT_KILN_ERROR(cross_entropy(x, tensor({0, 1}), std::nullopt, Reduction::Mean, -100, -0.1), "[cross_entropy]",
                    "label_smoothing", "-0.1");
  EXPECT_KILN_ERROR(cross_entropy(zeros({}), tensor({0})), "[cross_entropy]", "0-dim");
  EXPECT_KILN_ERROR(cross_entropy(zeros({2, 3}, kInt64), tensor({0, 1})), "[cross_entropy]", "floating point", "int64");
  EXPECT_KILN_ERROR(cross_entropy(x, tensor({0, 1}), std::nullopt, static_cast<Reduction>(7)), "[cross_entropy]",
                    "reduction", "7");
  EXPECT_KILN_ERROR(cross_entropy(Tensor(), tensor({0})), "[cross_entropy]", "input", "undefined");
  EXPECT_KILN_ERROR(cross_entropy(x, Tensor()), "[cross_entropy]", "target", "undefined");
}

TEST(NllLoss, Errors) {
  Tensor x = zeros({2, 3});
  EXPECT_KILN_ERROR(nll_loss(x, tensor({3, 0})), "[nll_loss]", "target 3", "C = 3");
  EXPECT_KILN_ERROR(nll_loss(x, tensor({0, -7})), "[nll_loss]", "target -7");
  EXPECT_KILN_ERROR(nll_loss(x, zeros({2, 3})), "[nll_loss]", "integer", "float32");
  EXPECT_KILN_ERROR(nll_loss(x, tensor({0})), "[nll_loss]", "[2]", "[1]");
  EXPECT_KILN_ERROR(nll_loss(x, tensor({0, 1}), zeros({2})), "[nll_loss]", "weight", "3 classes");
  EXPECT_KILN_ERROR(nll_loss(zeros({}), tensor(0).squeeze()), "[nll_loss]", "0-dim");
  EXPECT_KILN_ERROR(nll_loss(zeros({2, 3}, kInt32), tensor({0, 1})), "[nll_loss]", "int32");
  EXPECT_KILN_ERROR(nll_loss(x, tensor({0, 1}), std::nullopt, static_cast<Reduction>(-1)), "[nll_loss]", "reduction");
  EXPECT_KILN_ERROR(nll_loss(Tensor(), tensor({0})), "[nll_loss]", "undefined");
  // ignore_index skips a target that would otherwise be out of range.
  EXPECT_EQ(nll_loss(x, tensor({5, 0}), std::nullopt, Reduction::Sum, 5).item<double>(), 0.0);
}

// ---- mse_loss ------------------------------------------------------------------------------

TEST(MseLoss, OpTable) {
  std::vector<std::vector<Shape>> sets = {{{3, 4}, {3, 4}}, {{3, 4}, {4}}, {{2, 1, 4}, {3, 1}}, {{}, {}},
                                          {{0, 3}, {0, 3}}, {{5}, {}},      {{40, 30}, {40, 30}}};
  for (Reduction r : {Reduction::None, Reduction::Mean, Reduction::Sum}) {
    OpCase c;
    c.name = std::string("mse_loss ") + red_name(r);
    c.shape_sets = sets;
    c.dtypes = float_dtypes();
    c.tol_scale = r == Reduction::None ? 1 : 2;
    c.run = [r](const TensorList& in) { return mse_loss(in[0], in[1], r); };
    c.ref = [r](const TensorList& in) {
      Tensor sq = ref_pointwise(in, [](const std::vector<double>& v) { return (v[0] - v[1]) * (v[0] - v[1]); });
      if (r == Reduction::None) return sq;
      return ref_reduce(sq, {}, false, [r](const std::vector<double>& v) {
        double s = 0;
        for (double x : v) s += x;
        return r == Reduction::Sum ? s : s / double(v.size());
      });
    };
    c.out_dtype = [](DType d) { return d; };
    check_case(c);
  }
  // Mixed dtypes promote; integer with float promotes to float.
  EXPECT_EQ(mse_loss(zeros({2}, kFloat32), ones({2}, kFloat64)).dtype(), kFloat64);
  Tensor m = mse_loss(tensor({1, 2, 3}), tensor({1.5, 2.0, 5.0}), Reduction::Sum);
  EXPECT_EQ(m.dtype(), kFloat32);
  EXPECT_NEAR(m.item<double>(), 0.25 + 0 + 4, 1e-6);
  // Large input (parallel chunks) is independent of the thread count.
  Tensor a = random_input({300000}, kFloat32, {}, 11), b = random_input({300000}, kFloat32, {}, 12);
  int saved = get_num_threads();
  set_num_threads(1);
  double one = mse_loss(a, b).item<double>();
  set_num_threads(2);
  double two = mse_loss(a, b).item<double>();
  set_num_threads(saved);
  EXPECT_EQ(one, two);
}

TEST(MseLoss, Errors) {
  EXPECT_KILN_ERROR(mse_loss(zeros({2, 3}), zeros({4})), "[mse_loss]", "[2, 3]", "[4]");
  EXPECT_KILN_ERROR(mse_loss(zeros({2}, kInt64), zeros({2}, kInt64)), "[mse_loss]", "floating point", "int64");
  EXPECT_KILN_ERROR(mse_loss(zeros({2}), zeros({2}), static_cast<Reduction>(3)), "[mse_loss]", "reduction", "3");
  EXPECT_KILN_ERROR(mse_loss(zeros({2}), Tensor()), "[mse_loss]", "target", "undefined");
}
