// Loss kernels. Inputs are viewed as [N, C, S] (S = product of the dims after the class dim):
// each position (n, s) gets its loss in double, then the reduction (none / mean / sum) runs in a
// fixed order, so results do not depend on the thread count. cross_entropy computes its
// log_softmax in registers (max, then sum of exp) and never materialises it.
#include <cmath>
#include <limits>
#include <vector>

#include "core/shape.h"
#include "kernels/cpu/nn_kernels.h"
#include "kernels/cpu/parallel.h"
#include "kernels/scalar_math.h"

namespace kiln::cpu {
namespace {

// exp in the op-math type; the float form vectorises (glibc's expf is a scalar call).
template <class A>
inline A fast_exp(A x) {
  if constexpr (std::is_same_v<A, float>) return math::exp_f32(x);
  else return std::exp(x);
}

enum Red : int64_t { kNone = 0, kMean = 1, kSum = 2 };
constexpr int kTile = 16;  // positions processed together when S > 1

struct Geom {
  int64_t N, C, S;
  int64_t positions() const { return N * S; }
};

Geom geom_of(const Tensor& x) {
  if (x.dim() == 1) return {1, x.size(0), 1};
  int64_t s = 1;
  for (int64_t d = 2; d < x.dim(); ++d) s *= x.size(d);
  return {x.size(0), x.size(1), s};
}

std::vector<double> weights_of(const Tensor& w, int64_t C) {
  if (!w.defined()) return std::vector<double>(static_cast<size_t>(C), 1.0);
  Tensor c = w.to(kFloat64).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + C);
}

// log(sum(exp(x))) over a contiguous row, in the op-math type with lanes for the vectoriser.
template <class T>
double row_lse(const T* x, int64_t C) {
  using A = opmath_t<T>;
  constexpr int L = 16;
  A mx[L];
  for (int j = 0; j < L; ++j) mx[j] = -std::numeric_limits<A>::infinity();
  int64_t i = 0;
  for (; i + L <= C; i += L)
    for (int j = 0; j < L; ++j) {
      A v = static_cast<A>(x[i + j]);
      mx[j] = v > mx[j] ? v : mx[j];
    }
  A m = -std::numeric_limits<A>::infinity();
  for (; i < C; ++i) m = std::max(m, static_cast<A>(x[i]));
  for (int j = 0; j < L; ++j) m = std::max(m, mx[j]);
  A se[L] = {};
  for (i = 0; i + L <= C; i += L)
    for (int j = 0; j < L; ++j) se[j] += fast_exp(static_cast<A>(x[i + j]) - m);
  A s = 0;
  for (; i < C; ++i) s += fast_exp(static_cast<A>(x[i]) - m);
  for (int j = 0; j < L; ++j) s += se[j];
  return static_cast<double>(m) + std::log(static_cast<double>(s));
}

// sum_c w[c] * x[c] (and, with `t`, sum_c w[c] * t'[c] * (x[c] - lse) for probability targets).
template <class T>
double row_wdot(const T* x, const double* w, int64_t C) {
  double acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= C; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += w[i + j] * static_cast<double>(x[i + j]);
  double s = 0;
  for (; i < C; ++i) s += w[i] * static_cast<double>(x[i]);
  for (int j = 0; j < 8; ++j) s += acc[j];
  return s;
}

template <class T>
double row_prob_dot(const T* x, const T* t, const double* w, int64_t C, double lse, double keep, double add) {
  double acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= C; i += 8)
    for (int j = 0; j < 8; ++j)
      acc[j] += w[i + j] * (static_cast<double>(t[i + j]) * keep + add) * (static_cast<double>(x[i + j]) - lse);
  double s = 0;
  for (; i < C; ++i) s += w[i] * (static_cast<double>(t[i]) * keep + add) * (static_cast<double>(x[i]) - lse);
  for (int j = 0; j < 8; ++j) s += acc[j];
  return s;
}

// lse[j] for positions j < m of a tile whose element (c, j) is xb[c * S + j].
template <class T>
void tile_lse(const T* xb, int64_t C, int64_t S, int m, double* lse) {
  using A = opmath_t<T>;
  A mx[kTile], se[kTile];
  for (int j = 0; j < kTile; ++j) {
    mx[j] = -std::numeric_limits<A>::infinity();
    se[j] = 0;
  }
  for (int64_t c = 0; c < C; ++c)
    for (int j = 0; j < m; ++j) {
      A v = static_cast<A>(xb[c * S + j]);
      mx[j] = v > mx[j] ? v : mx[j];
    }
  for (int64_t c = 0; c < C; ++c)
    for (int j = 0; j < m; ++j) se[j] += fast_exp(static_cast<A>(xb[c * S + j]) - mx[j]);
  for (int j = 0; j < m; ++j) lse[j] = static_cast<double>(mx[j]) + std::log(static_cast<double>(se[j]));
}

// Runs fn(n, s0, m) over row positions (S == 1: s0 = 0, m = 1) or tiles of positions (S > 1).
template <class Fn>
void for_each_tile(const Geom& g, Fn&& fn) {
  const int64_t per_n = (g.S + kTile - 1) / kTile;
  const int64_t count = g.N * per_n;
  const int64_t work = std::max<int64_t>(1, g.C) * (g.S == 1 ? 1 : kTile);
  parallel_for(count, std::max<int64_t>(1, kParallelGrain / work), [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      const int64_t n = k / per_n, s0 = (k % per_n) * kTile;
      fn(n, s0, static_cast<int>(std::min<int64_t>(kTile, g.S - s0)));
    }
  });
}

// Per-position losses with class-index targets: loss[p] and the target's weight wt[p] (0 when
// ignored). With label smoothing ls: (1 - ls) * nll + ls / C * (-sum_c w_c log p_c).
template <class T>
void class_losses(const T* x, const int64_t* tgt, const double* w, const Geom& g, bool log_softmax, int64_t ignore,
                  double ls, double* loss, double* wt) {
  const int64_t C = g.C, S = g.S;
  double wsum_all = 0;
  for (int64_t c = 0; c < C; ++c) wsum_all += w[c];
  const double smooth_scale = ls > 0 ? ls / static_cast<double>(C) : 0.0;
  for_each_tile(g, [&](int64_t n, int64_t s0, int m) {
    const T* xb = x + n * C * S + s0;
    double lse[kTile] = {};
    if (log_softmax) {
      if (S == 1) lse[0] = row_lse(xb, C);
      else tile_lse(xb, C, S, m, lse);
    }
    double dot[kTile] = {};
    if (ls > 0) {
      if (S == 1) {
        dot[0] = row_wdot(xb, w, C);
      } else {
        for (int64_t c = 0; c < C; ++c)
          for (int j = 0; j < m; ++j) dot[j] += w[c] * static_cast<double>(xb[c * S + j]);
      }
    }
    for (int j = 0; j < m; ++j) {
      const int64_t p = n * S + s0 + j, t = tgt[p];
      if (t == ignore) {
        loss[p] = 0;
        wt[p] = 0;
        continue;
      }
      double l = -(1.0 - ls) * w[t] * (static_cast<double>(xb[t * S + j]) - lse[j]);
      if (ls > 0) l -= smooth_scale * (dot[j] - lse[j] * wsum_all);
      loss[p] = l;
      wt[p] = w[t];
    }
  });
}

// Per-position losses with probability targets: -sum_c w_c t'_c log p_c, t' = t (1 - ls) + ls / C.
template <class T>
void prob_losses(const T* x, const T* tg, const double* w, const Geom& g, double ls, double* loss) {
  const int64_t C = g.C, S = g.S;
  const double keep = 1.0 - ls, add = ls / static_cast<double>(C);
  for_each_tile(g, [&](int64_t n, int64_t s0, int m) {
    const int64_t base = n * C * S + s0;
    const T* xb = x + base;
    const T* tb = tg + base;
    double lse[kTile];
    if (S == 1) {
      lse[0] = row_lse(xb, C);
      loss[n] = -row_prob_dot(xb, tb, w, C, lse[0], keep, add);
      return;
    }
    tile_lse(xb, C, S, m, lse);
    double acc[kTile] = {};
    for (int64_t c = 0; c < C; ++c)
      for (int j = 0; j < m; ++j)
        acc[j] += w[c] * (static_cast<double>(tb[c * S + j]) * keep + add) * (static_cast<double>(xb[c * S + j]) - lse[j]);
    for (int j = 0; j < m; ++j) loss[n * S + s0 + j] = -acc[j];
  });
}

// Writes the per-position losses (reduction none) or their sum / mean (divided by `denom`).
template <class T>
void write_reduced(Tensor& out, int64_t reduction, const std::vector<double>& loss, double denom) {
  with_contiguous_output(out, [&](Tensor& o) {
    T* op = o.data_ptr<T>();
    if (reduction == kNone) {
      for (size_t i = 0; i < loss.size(); ++i) op[i] = convert<T>(loss[i]);
      return;
    }
    double s = lane_sum(loss.data(), static_cast<int64_t>(loss.size()));
    op[0] = convert<T>(reduction == kMean ? s / denom : s);
  });
}

void check_targets(const char* op, const int64_t* tgt, int64_t n, int64_t C, int64_t ignore) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = tgt[i];
    KILN_CHECK(t == ignore || (t >= 0 && t < C), "[", op, "] target ", t, " is out of bounds: expected a class index in [0, ",
               C, ") for C = ", C, " classes (or ignore_index ", ignore, ")");
  }
}

// cross_entropy (log_softmax = true) and nll_loss (input already holds log-probabilities).
void class_loss_kernel(const char* op, bool log_softmax, const TensorList& in, TensorList& out, int64_t reduction,
                       int64_t ignore, double ls) {
  const Tensor x = in[0].contiguous();
  const Tensor tgt = in[1].to(kInt64).contiguous();
  const Geom g = geom_of(x);
  const int64_t P = g.positions();
  const int64_t* tp = tgt.data_ptr<int64_t>();
  check_targets(op, tp, P, g.C, ignore);
  const std::vector<double> w = weights_of(in.size() > 2 ? in[2] : Tensor(), g.C);
  std::vector<double> loss(static_cast<size_t>(P)), wt(static_cast<size_t>(P));
  KILN_DISPATCH_FLOATING_TYPES(x.dtype(), op, {
    class_losses<scalar_t>(x.data_ptr<scalar_t>(), tp, w.data(), g, log_softmax, ignore, ls, loss.data(), wt.data());
    write_reduced<scalar_t>(out[0], reduction, loss, lane_sum(wt.data(), P));
  });
}

}  // namespace

// inputs {input, target, weight?}; attrs (reduction, ignore_index, label_smoothing).
void cross_entropy_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  const int64_t reduction = a.i(0);
  const double ls = a.d(2);
  if (!is_floating_point(in[1].dtype())) {
    class_loss_kernel(op.name.c_str(), true, in, out, reduction, a.i(1), ls);
    return;
  }
  const DType dt = out[0].dtype();
  const Tensor x = in[0].to(dt).contiguous(), tg = in[1].to(dt).contiguous();
  const Geom g = geom_of(x);
  const std::vector<double> w = weights_of(in.size() > 2 ? in[2] : Tensor(), g.C);
  std::vector<double> loss(static_cast<size_t>(g.positions()));
  KILN_DISPATCH_FLOATING_TYPES(dt, op.name, {
    prob_losses<scalar_t>(x.data_ptr<scalar_t>(), tg.data_ptr<scalar_t>(), w.data(), g, ls, loss.data());
    write_reduced<scalar_t>(out[0], reduction, loss, static_cast<double>(g.positions()));
  });
}

// inputs {input (log-probabilities), target, weight?}; attrs (reduction, ignore_index).
void nll_loss_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  class_loss_kernel(op.name.c_str(), false, in, out, a.i(0), a.i(1), 0.0);
}

// inputs {input, target}, broadcast; attrs (reduction).
void mse_loss_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  const int64_t reduction = a.i(0);
  const DType dt = out[0].dtype();
  const Shape shape = broadcast_shapes(op.name, in[0].sizes(), in[1].sizes());
  const Tensor x = in[0].to(dt).expand(shape).contiguous(), y = in[1].to(dt).expand(shape).contiguous();
  const int64_t n = x.numel();
  KILN_DISPATCH_FLOATING_TYPES(dt, op.name, {
    using A = opmath_t<scalar_t>;
    const scalar_t* __restrict xp = x.data_ptr<scalar_t>();
    const scalar_t* __restrict yp = y.data_ptr<scalar_t>();
    if (reduction == kNone) {
      with_contiguous_output(out[0], [&](Tensor& o) {
        scalar_t* __restrict op_ = o.data_ptr<scalar_t>();
        parallel_for(n, kParallelGrain, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) {
            A d = static_cast<A>(xp[i]) - static_cast<A>(yp[i]);
            op_[i] = scalar_t(d * d);
          }
        });
      });
      return;
    }
    // Fixed chunks summed in order: the same result for any thread count.
    constexpr int64_t kChunk = 4096;
    const int64_t chunks = (n + kChunk - 1) / kChunk;
    std::vector<double> part(static_cast<size_t>(chunks));
    parallel_for(chunks, std::max<int64_t>(1, kParallelGrain / kChunk), [&](int64_t b, int64_t e) {
      for (int64_t c = b; c < e; ++c) {
        const int64_t i0 = c * kChunk, i1 = std::min(n, i0 + kChunk);
        double acc[8] = {};
        int64_t i = i0;
        for (; i + 8 <= i1; i += 8)
          for (int j = 0; j < 8; ++j) {
            double d = static_cast<double>(static_cast<A>(xp[i + j])) - static_cast<double>(static_cast<A>(yp[i + j]));
            acc[j] += d * d;
          }
        double s = 0;
        for (; i < i1; ++i) {
          double d = static_cast<double>(static_cast<A>(xp[i])) - static_cast<double>(static_cast<A>(yp[i]));
          s += d * d;
        }
        part[c] = lane_sum(acc, 8) + s;
      }
    });
    const double total = lane_sum(part.data(), chunks);
    with_contiguous_output(out[0], [&](Tensor& o) {
      o.data_ptr<scalar_t>()[0] = convert<scalar_t>(reduction == kMean ? total / static_cast<double>(n) : total);
    });
  });
}

}  // namespace kiln::cpu
