// dropout: one fused pass drawing the keep mask from Philox (32 random bits per element, see
// random_kernel.h) and scaling the kept values by 1 / (1 - p).
#include "core/random.h"
#include "kernels/cpu/nn_kernels.h"
#include "kernels/cpu/random_kernel.h"

namespace kiln::cpu {

// inputs {input}; attrs (p, seed, offset), with 0 < p < 1.
void dropout_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  const Tensor x = in[0].contiguous();
  const double p = a.d(0);
  const PhiloxKey key{static_cast<uint64_t>(a.i(1)), static_cast<uint64_t>(a.i(2))};
  // p < 1, so the threshold fits 32 bits: the compare is one vector op on the words.
  const uint64_t thr64 = philox::bernoulli_threshold(p);
  KILN_INTERNAL_ASSERT(thr64 <= 0xffffffffull, "[", op.name, "] threshold of p = ", p);
  const uint32_t thr = static_cast<uint32_t>(thr64);
  with_contiguous_output(out[0], [&](Tensor& y) {
    KILN_DISPATCH_FLOATING_TYPES(x.dtype(), op.name, {
      using A = opmath_t<scalar_t>;
      const A scale = static_cast<A>(1.0 / (1.0 - p));
      const scalar_t* xp = x.data_ptr<scalar_t>();
      random_fill<kBatchWords>(y.data_ptr<scalar_t>(), x.numel(), key,
                               [=](int64_t e, const uint32_t* __restrict w, scalar_t* __restrict d, int m) {
                                 const scalar_t* __restrict src = xp + e;
                                 const A s = scale;
                                 const uint32_t t = thr;
                                 // The value computed unconditionally: the select is a blend, not a
                                 // branch that the random mask would mispredict.
                                 for (int k = 0; k < m; ++k) {
                                   const A v = static_cast<A>(src[k]) * s;
                                   d[k] = scalar_t(w[k] >= t ? v : A(0));
                                 }
                               });
    });
  });
}

}  // namespace kiln::cpu
