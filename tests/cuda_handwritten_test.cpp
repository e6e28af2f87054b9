// The hand-written CUDA kernels (kernels/cuda/handwritten.cuh), checked without a GPU: the same
// source compiled here as C++, each kernel launched by a host emulation of a grid (3 blocks of 2
// threads, run one after another, so every grid-stride loop strides), on CPU buffers, against the
// CPU kernels of the same rows. NVRTC compiling the source (sm_80, sm_90, no warning) is tested in
// cuda_runtime_test.cpp; on a GPU the rows themselves are compared there.
#include <gtest/gtest.h>

#include <cmath>

#include "core/op.h"
#include "kiln/kiln.h"
#include "test_util.h"

// ---- a one-thread-at-a-time launch emulation ---------------------------------------------------
namespace emu {
struct Dim {
  unsigned x = 0;
};
}  // namespace emu
static emu::Dim threadIdx, blockIdx, blockDim, gridDim;
#define __global__
#define __device__
using std::cos;  // the double overloads the .cuh's device code calls
using std::fma;
using std::log;
using std::sin;
using std::sqrt;
template <class T>
T atomicAdd(T* p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}
#include "kernels/cuda/handwritten.cuh"

namespace kiln {
namespace {

template <class F>
void run_grid(F&& kernel) {
  blockDim.x = 2;
  gridDim.x = 3;
  for (unsigned b = 0; b < gridDim.x; ++b)
    for (unsigned t = 0; t < blockDim.x; ++t) {
      blockIdx.x = b;
      threadIdx.x = t;
      kernel();
    }
}

KilnIndexGeom geom(const Tensor& index, const Tensor& data, const Tensor* other, int64_t dim) {
  KilnIndexGeom g{};
  g.rank = index.dim();
  g.dim = dim;
  for (int64_t d = 0; d < index.dim(); ++d) {
    g.size[d] = index.size(d);
    g.data[d] = data.stride(d);
    g.other[d] = other ? other->stride(d) : 0;
  }
  return g;
}

template <class T>
T* ptr(const Tensor& t) {
  return static_cast<T*>(t.data_ptr());
}

TEST(CudaHandwrittenKernels, IndexSelectAndGather) {
  manual_seed(1);
  Tensor x = randn({3, 5, 4}), idx = tensor({4, 0, 4, 2}).to(kInt64);
  Tensor out = empty({3, 4, 4});
  run_grid([&] { kiln_index_select_4(ptr<unsigned>(out), ptr<unsigned>(x), ptr<long long>(idx), 3, 5, 4, 4); });
  EXPECT_TRUE(testing::close(out, index_select(x, 1, idx), 0, 0));

  Tensor xd = randn({4, 6}).to(kFloat64), gi = randint(0, 6, {4, 3});
  Tensor g = empty({4, 3}, TensorOptions(kFloat64));
  KilnIndexGeom gg = geom(gi, xd, nullptr, 1);
  run_grid([&] { kiln_gather_8(ptr<unsigned long long>(g), ptr<unsigned long long>(xd), ptr<long long>(gi), gg); });
  EXPECT_TRUE(testing::close(g, gather(xd, 1, gi), 0, 0));
  Tensor gi0 = randint(0, 4, {2, 6});
  Tensor g0 = empty({2, 6}, TensorOptions(kFloat64));
  KilnIndexGeom gg0 = geom(gi0, xd, nullptr, 0);
  run_grid([&] { kiln_gather_8(ptr<unsigned long long>(g0), ptr<unsigned long long>(xd), ptr<long long>(gi0), gg0); });
  EXPECT_TRUE(testing::close(g0, gather(xd, 0, gi0), 0, 0));
}

TEST(CudaHandwrittenKernels, ScatterAndScatterAdd) {
  manual_seed(2);
  Tensor self = randn({4, 6}), src = randn({3, 5});
  Tensor idx = tensor({{5, 0, 2}, {1, 3, 4}, {0, 1, 2}}).to(kInt64);  // distinct per row: scatter is deterministic
  Tensor target = self.clone();
  KilnIndexGeom g = geom(idx, target, &src, 1);
  run_grid([&] { kiln_scatter_4(ptr<unsigned>(target), ptr<unsigned>(src), ptr<long long>(idx), g); });
  EXPECT_TRUE(testing::close(target, scatter(self, 1, idx, src), 0, 0));

  Tensor dup = randint(0, 4, {5, 6});  // duplicates along dim 0
  Tensor add_src = randn({5, 6});
  Tensor acc = self.clone();
  KilnIndexGeom ga = geom(dup, acc, &add_src, 0);
  run_grid([&] { kiln_scatter_add_f32(ptr<float>(acc), ptr<float>(add_src), ptr<long long>(dup), ga); });
  EXPECT_TRUE(testing::close(acc, scatter_add(self, 0, dup, add_src), 1e-6, 1e-6));

  Tensor iself = randint(-5, 5, {4, 6}), isrc = randint(-5, 5, {5, 6});
  Tensor iacc = iself.clone();
  KilnIndexGeom gi = geom(dup, iacc, &isrc, 0);
  run_grid([&] {
    kiln_scatter_add_u64(ptr<unsigned long long>(iacc), ptr<unsigned long long>(isrc), ptr<long long>(dup), gi);
  });
  EXPECT_TRUE(testing::close(iacc, scatter_add(iself, 0, dup, isrc), 0, 0));
}

struct PoolCase {
  Shape k, s, p, d;
  bool ceil, include_pad;
};

KilnPool pool(const Tensor& x, const Tensor& y, const PoolCase& c) {
  KilnPool p{};
  p.H = x.size(-2), p.W = x.size(-1), p.oH = y.size(-2), p.oW = y.size(-1);
  p.planes = x.numel() / (p.H * p.W);
  p.kH = c.k[0], p.kW = c.k[1], p.sH = c.s[0], p.sW = c.s[1], p.pH = c.p[0], p.pW = c.p[1], p.dH = c.d[0], p.dW = c.d[1];
  p.count_include_pad = c.include_pad;
  return p;
}

TEST(CudaHandwrittenKernels, MaxPoolingForwardAndBackward) {
  manual_seed(3);
  for (const PoolCase& c : {PoolCase{{3, 3}, {2, 2}, {1, 1}, {1, 1}, false, false},
                            PoolCase{{3, 2}, {2, 1}, {1, 0}, {2, 3}, true, false},
                            PoolCase{{2, 2}, {2, 2}, {0, 0}, {1, 1}, true, false}}) {
    Tensor x = randn({2, 3, 9, 8}).to(kFloat64);
    x.select(0, 1).select(0, 2).select(0, 4).fill_(std::nan(""));
    Tensor ref = max_pool2d(x, c.k, c.s, c.p, c.d, c.ceil);
    Tensor ref_i = max_pool2d_indices(x, c.k, c.s, c.p, c.d, c.ceil);
    Tensor y = empty(ref.sizes(), TensorOptions(kFloat64)), yi = empty(ref.sizes(), TensorOptions(kInt64));
    KilnPool p = pool(x, ref, c);
    run_grid([&] { kiln_max_pool2d_f64(ptr<double>(y), ptr<long long>(yi), ptr<double>(x), p); });
    EXPECT_TRUE(testing::close(y, ref, 0, 0));
    EXPECT_TRUE(testing::close(yi, ref_i, 0, 0));
    // Values only (no index buffer), float32.
    Tensor xf = x.to(kFloat32), yf = empty(ref.sizes());
    run_grid([&] { kiln_max_pool2d_f32(ptr<float>(yf), nullptr, ptr<float>(xf), p); });
    EXPECT_TRUE(testing::close(yf, max_pool2d(xf, c.k, c.s, c.p, c.d, c.ceil), 0, 0));
    // Backward: dy scattered (added) at the recorded indices.
    Tensor dy = randn(ref.sizes()).to(kFloat64), dx = zeros(x.sizes(), TensorOptions(kFloat64));
    const long long planes = 6, ohw = ref.size(2) * ref.size(3), hw = 72;
    run_grid([&] { kiln_max_pool2d_backward_f64(ptr<double>(dx), ptr<double>(dy), ptr<long long>(ref_i), planes, ohw, hw); });
    EXPECT_TRUE(testing::close(dx, max_pool2d_backward(dy, ref_i, x.sizes()), 1e-12, 1e-12));
  }
}

TEST(CudaHandwrittenKernels, AvgPoolingForwardAndBackward) {
  manual_seed(4);
  for (const PoolCase& c : {PoolCase{{3, 3}, {2, 2}, {1, 1}, {1, 1}, false, true},
                            PoolCase{{3, 3}, {2, 2}, {1, 1}, {1, 1}, true, false},
                            PoolCase{{2, 3}, {1, 2}, {1, 1}, {1, 1}, true, true}}) {
    Tensor x = randn({2, 3, 7, 9});
    Tensor ref = avg_pool2d(x, c.k, c.s, c.p, c.ceil, c.include_pad);
    Tensor y = empty(ref.sizes());
    KilnPool p = pool(x, ref, c);
    run_grid([&] { kiln_avg_pool2d_f32(ptr<float>(y), ptr<float>(x), p); });
    EXPECT_TRUE(testing::close(y, ref, 1e-6, 1e-6));
    Tensor dy = randn(ref.sizes()), dx = empty(x.sizes());
    run_grid([&] { kiln_avg_pool2d_backward_f32(ptr<float>(dx), ptr<float>(dy), p); });
    EXPECT_TRUE(testing::close(dx, avg_pool2d_backward(dy, x.sizes(), c.k, c.s, c.p, c.ceil, c.include_pad), 1e-5, 1e-6));
  }
}

TEST(CudaHandwrittenKernels, Cumsum) {
  manual_seed(5);
  Tensor x = randn({3, 7, 2}), y = empty({3, 7, 2});
  run_grid([&] { kiln_cumsum_f32(ptr<float>(y), ptr<float>(x), 3, 7, 2); });
  EXPECT_TRUE(testing::close(y, cumsum(x, 1), 1e-6, 1e-6));
  Tensor xi = randint(-100, 100, {4, 9}), yi = empty({4, 9}, TensorOptions(kInt64));
  run_grid([&] { kiln_cumsum_i64(ptr<long long>(yi), ptr<long long>(xi), 4, 9, 1); });
  EXPECT_TRUE(testing::close(yi, cumsum(xi, 1), 0, 0));
}

// The CPU kernel of a random row with explicit attributes.
Tensor cpu_row(const char* row, const TensorList& in, const Attrs& a, const Shape& sizes, DType t) {
  const OpDef& op = op_def(row);
  TensorList out{empty(sizes, TensorOptions(t))};
  op.kernels[static_cast<int>(DeviceType::CPU)](op, in, out, a);
  return out[0];
}

TEST(CudaHandwrittenKernels, RandomRowsDrawTheCpuKernelsNumbers) {
  const int64_t seed = 1234567, offset = 7;  // an offset inside a batch of 16 counters
  const KilnPhilox key{static_cast<unsigned long long>(seed), static_cast<unsigned long long>(offset)};
  const long long n = 1000;  // not a multiple of a batch
  {
    Tensor ref = cpu_row("uniform", {}, Attrs{Shape{n}, kFloat32, seed, offset, -2.0, 3.0}, {n}, kFloat32);
    Tensor got = empty({n});
    run_grid([&] { kiln_uniform_f32(ptr<float>(got), n, key, -2.0f, 5.0f, 3.0); });
    // The CPU build contracts a * b + c where FMA hardware exists; the kernel's explicit fma then gives
    // its bits exactly, and within an ulp otherwise.
    EXPECT_TRUE(testing::close(got, ref, 0, 4.8e-7)) << "uniform f32";
    Tensor ref64 = cpu_row("uniform", {}, Attrs{Shape{n}, kFloat64, seed, offset, 0.0, 1.0}, {n}, kFloat64);
    Tensor got64 = empty({n}, TensorOptions(kFloat64));
    run_grid([&] { kiln_uniform_f64(ptr<double>(got64), n, key, 0.0, 1.0, 1.0); });
    EXPECT_TRUE(testing::close(got64, ref64, 0, 2.3e-16)) << "uniform f64";
  }
  {
    Tensor ref = cpu_row("normal", {}, Attrs{Shape{n}, kFloat32, seed, offset, 1.0, 2.0}, {n}, kFloat32);
    Tensor got = empty({n});
    run_grid([&] { kiln_normal_f32(ptr<float>(got), n, key, 1.0f, 2.0f); });
    EXPECT_TRUE(testing::close(got, ref, 2e-6, 2e-6)) << "normal f32";
    Tensor ref64 = cpu_row("normal", {}, Attrs{Shape{n}, kFloat64, seed, offset, 0.0, 1.0}, {n}, kFloat64);
    Tensor got64 = empty({n}, TensorOptions(kFloat64));
    run_grid([&] { kiln_normal_f64(ptr<double>(got64), n, key, 0.0, 1.0); });
    EXPECT_TRUE(testing::close(got64, ref64, 1e-14, 1e-14)) << "normal f64";
  }
  for (auto [low, high] : {std::pair<int64_t, int64_t>{-5, 17}, {-(int64_t{1} << 40), int64_t{1} << 41}}) {
    Tensor ref = cpu_row("randint", {}, Attrs{Shape{n}, kInt64, seed, offset, low, high}, {n}, kInt64);
    Tensor got = empty({n}, TensorOptions(kInt64));
    const unsigned long long range = static_cast<unsigned long long>(high) - static_cast<unsigned long long>(low);
    run_grid([&] { kiln_randint_i64(ptr<long long>(got), n, key, low, range); });
    EXPECT_TRUE(testing::close(got, ref, 0, 0)) << "randint [" << low << ", " << high << ")";
  }
  {
    Tensor p = rand({n});
    Tensor ref = cpu_row("bernoulli", {p}, Attrs{seed, offset}, {n}, kFloat32);
    Tensor got = empty({n});
    run_grid([&] { kiln_bernoulli_f32(ptr<float>(got), ptr<float>(p), n, key); });
    EXPECT_TRUE(testing::close(got, ref, 0, 0)) << "bernoulli";
    Tensor refs = cpu_row("bernoulli_scalar", {}, Attrs{Shape{n}, kUInt8, seed, offset, 0.3}, {n}, kUInt8);
    Tensor gots = empty({n}, TensorOptions(kUInt8));
    run_grid([&] { kiln_bernoulli_scalar_u8(ptr<unsigned char>(gots), n, key, static_cast<unsigned long long>(0.3 * 4294967296.0)); });
    EXPECT_TRUE(testing::close(gots, refs, 0, 0)) << "bernoulli_scalar";
  }
  for (DType t : {kFloat32, kFloat64}) {
    Tensor x = randn({n}).to(t);
    Tensor ref = cpu_row("dropout", {x}, Attrs{0.25, seed, offset}, {n}, t);
    Tensor got = empty({n}, TensorOptions(t));
    const unsigned long long thr = static_cast<unsigned long long>(0.25 * 4294967296.0);
    if (t == kFloat32)
      run_grid([&] { kiln_dropout_f32(ptr<float>(got), ptr<float>(x), n, key, thr, static_cast<float>(1.0 / 0.75)); });
    else
      run_grid([&] { kiln_dropout_f64(ptr<double>(got), ptr<double>(x), n, key, thr, 1.0 / 0.75); });
    EXPECT_TRUE(testing::close(got, ref, 0, 0)) << "dropout " << t;
  }
}

}  // namespace
}  // namespace kiln
