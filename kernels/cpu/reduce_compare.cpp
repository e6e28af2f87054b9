// CPU kernels of allclose and equal: a parallel scan over (broadcast) pairs that stops at the
// first mismatch and writes one bool.
#include <atomic>
#include <cmath>

#include "core/ops.h"
#include "core/shape.h"
#include "kernels/cpu/loops.h"
#include "kernels/cpu/reduce.h"

namespace kiln::cpu {
namespace {

// True when pred(a[i], b[i]) holds for every broadcast pair.
template <class T, class Pred>
bool all_pairs(const Tensor& a, const Tensor& b, const Shape& shape, Pred pred) {
  // A stride-0 output of the broadcast shape lets make_iter line the operands up.
  Tensor sink = empty({}, kBool).expand(shape);
  StridedIter it = make_iter(sink, {a, b});
  std::atomic<bool> ok{true};
  for_each_run(it, [&](char** p, const int64_t* s, int64_t n) {
    if (!ok.load(std::memory_order_relaxed)) return;
    for (int64_t i = 0; i < n; ++i) {
      const T x = *reinterpret_cast<const T*>(p[1] + i * s[1]);
      const T y = *reinterpret_cast<const T*>(p[2] + i * s[2]);
      if (!pred(x, y)) {
        ok.store(false, std::memory_order_relaxed);
        return;
      }
    }
  });
  return ok.load();
}

}  // namespace

void allclose_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  const double rtol = a.d(0), atol = a.d(1);
  const bool equal_nan = a.b(2);
  const Shape shape = broadcast_shapes(op.name, in[0].sizes(), in[1].sizes());
  bool ok = true;
  KILN_DISPATCH_ALL_TYPES(in[0].dtype(), op.name, {
    ok = all_pairs<scalar_t>(in[0], in[1], shape, [&](scalar_t xs, scalar_t ys) {
      if constexpr (std::is_same_v<scalar_t, bool>) {
        return xs == ys;
      } else {
        const double x = static_cast<double>(static_cast<opmath_t<scalar_t>>(xs));
        const double y = static_cast<double>(static_cast<opmath_t<scalar_t>>(ys));
        if (x == y) return true;
        if (equal_nan && std::isnan(x) && std::isnan(y)) return true;
        const double diff = std::fabs(x - y);
        return std::isfinite(diff) && diff <= atol + std::fabs(rtol * y);
      }
    });
  });
  out[0].fill_(ok);
}

void equal_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs&) {
  bool ok = in[0].sizes() == in[1].sizes();
  if (ok) {
    KILN_DISPATCH_ALL_TYPES(in[0].dtype(), op.name, {
      ok = all_pairs<scalar_t>(in[0], in[1], in[0].sizes().vec(), [](scalar_t x, scalar_t y) {
        using C = opmath_t<scalar_t>;
        return static_cast<C>(x) == static_cast<C>(y);
      });
    });
  }
  out[0].fill_(ok);
}

}  // namespace kiln::cpu
