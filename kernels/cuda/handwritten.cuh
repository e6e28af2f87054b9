// Hand-written CUDA kernels for the rows the fusion backend cannot express (data-dependent
// addressing, random numbers): index_select/embedding, gather, scatter, scatter_add, max/avg
// pooling and their backward rows, cumsum, and the random rows (uniform, normal, randint,
// bernoulli, dropout) — these draw the very numbers the CPU kernels draw for the same (seed,
// offset): the same Philox4x32-10 blocks, each element reading the word kernels/cpu/random_kernel.h
// assigns it. The library compiles this file with NVRTC at run time (its text is
// embedded at build time, kernels/cuda/handwritten.cpp); tests/cuda_runtime_test.cpp also compiles
// it as C++ on the host with a one-thread emulation of the launch, and checks every kernel against
// the CPU kernels — so keep it plain C++ that both compilers take: no headers, no shared memory, no
// intrinsics other than atomicAdd, every kernel a grid-stride loop over independent work.
// Buffers are contiguous; indices are int64 and range-checked by the caller before the launch.

#define KILN_LOOP(i, total) \
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (total); i += (long long)blockDim.x * gridDim.x)

struct KilnIndexGeom {    // gather/scatter over an index of shape size[0..rank)
  long long size[8];      // the index's sizes (and the gathered output's)
  long long data[8];      // strides of the tensor addressed through the index (x, or the scatter target)
  long long other[8];     // strides of the other side (scatter's src; unused by gather)
  long long rank, dim;
};

struct KilnPool {  // one [planes, H, W] input, [planes, oH, oW] output
  long long planes, H, W, oH, oW, kH, kW, sH, sW, pH, pW, dH, dW, count_include_pad;
};

template <class T>
__device__ void kiln_index_select(T* __restrict__ out, const T* __restrict__ x, const long long* __restrict__ idx,
                                  long long outer, long long n, long long m, long long inner) {
  KILN_LOOP(i, outer * m * inner) {
    const long long k = i % inner, j = (i / inner) % m, o = i / (inner * m);
    out[i] = x[(o * n + idx[j]) * inner + k];
  }
}

// out[p] = x[p with coordinate `dim` replaced by idx[p]]; out and idx have the index's shape.
template <class T>
__device__ void kiln_gather(T* __restrict__ out, const T* __restrict__ x, const long long* __restrict__ idx,
                            KilnIndexGeom g) {
  long long total = 1;
  for (long long d = 0; d < g.rank; ++d) total *= g.size[d];
  KILN_LOOP(i, total) {
    long long rest = i, off = 0;
    for (long long d = g.rank - 1; d >= 0; --d) {
      const long long c = rest % g.size[d];
      rest /= g.size[d];
      off += (d == g.dim ? idx[i] : c) * g.data[d];
    }
    out[i] = x[off];
  }
}

// target[p with `dim` replaced by idx[p]] = src[p] (add: +=). Duplicate indices: any one wins for
// scatter (as on the GPU in PyTorch); scatter_add adds atomically.
template <class T, bool Add>
__device__ void kiln_scatter(T* target, const T* __restrict__ src, const long long* __restrict__ idx, KilnIndexGeom g) {
  long long total = 1;
  for (long long d = 0; d < g.rank; ++d) total *= g.size[d];
  KILN_LOOP(i, total) {
    long long rest = i, off = 0, soff = 0;
    for (long long d = g.rank - 1; d >= 0; --d) {
      const long long c = rest % g.size[d];
      rest /= g.size[d];
      off += (d == g.dim ? idx[i] : c) * g.data[d];
      soff += c * g.other[d];
    }
    if constexpr (Add) atomicAdd(target + off, src[soff]);
    else target[off] = src[soff];
  }
}

template <class T>
__device__ bool kiln_is_nan(T v) {
  return v != v;
}

// PyTorch's rule: start at the window's first in-bounds element, move on a strictly greater value
// or a NaN; a window that misses the input gets -inf and index -1. `out` or `ind` may be null.
template <class T>
__device__ void kiln_max_pool2d(T* out, long long* ind, const T* __restrict__ x, KilnPool p) {
  KILN_LOOP(i, p.planes * p.oH * p.oW) {
    const long long ow = i % p.oW, oh = (i / p.oW) % p.oH, pl = i / (p.oW * p.oH);
    long long h0 = oh * p.sH - p.pH, w0 = ow * p.sW - p.pW;
    while (h0 < 0) h0 += p.dH;
    while (w0 < 0) w0 += p.dW;
    long long h1 = oh * p.sH - p.pH + (p.kH - 1) * p.dH + 1, w1 = ow * p.sW - p.pW + (p.kW - 1) * p.dW + 1;
    if (h1 > p.H) h1 = p.H;
    if (w1 > p.W) w1 = p.W;
    long long arg = h0 < h1 && w0 < w1 ? h0 * p.W + w0 : -1;
    T best = -(T)1 / (T)0;
    const T* plane = x + pl * p.H * p.W;
    for (long long h = h0; h < h1; h += p.dH)
      for (long long w = w0; w < w1; w += p.dW) {
        const T v = plane[h * p.W + w];
        if (v > best || kiln_is_nan(v)) {
          best = v;
          arg = h * p.W + w;
        }
      }
    if (out) out[i] = best;
    if (ind) ind[i] = arg;
  }
}

// dx (zeroed by the caller) [planes, H*W] += dy at each window's recorded index.
template <class T>
__device__ void kiln_max_pool2d_backward(T* dx, const T* __restrict__ dy, const long long* __restrict__ ind,
                                         long long planes, long long ohw, long long hw) {
  KILN_LOOP(i, planes * ohw) {
    const long long a = ind[i];
    if (a >= 0) atomicAdd(dx + (i / ohw) * hw + a, dy[i]);
  }
}

// The window of output (oh, ow) clipped as PyTorch's avg_pool2d does, and its divisor.
__device__ long long kiln_avg_window(const KilnPool& p, long long oh, long long ow, long long* h0, long long* h1,
                                     long long* w0, long long* w1) {
  long long a0 = oh * p.sH - p.pH, b0 = ow * p.sW - p.pW;
  long long a1 = a0 + p.kH < p.H + p.pH ? a0 + p.kH : p.H + p.pH;
  long long b1 = b0 + p.kW < p.W + p.pW ? b0 + p.kW : p.W + p.pW;
  const long long pool_size = (a1 - a0) * (b1 - b0);
  if (a0 < 0) a0 = 0;
  if (b0 < 0) b0 = 0;
  if (a1 > p.H) a1 = p.H;
  if (b1 > p.W) b1 = p.W;
  *h0 = a0, *h1 = a1, *w0 = b0, *w1 = b1;
  return p.count_include_pad ? pool_size : (a1 - a0) * (b1 - b0);
}

template <class T, class Acc>
__device__ void kiln_avg_pool2d(T* __restrict__ out, const T* __restrict__ x, KilnPool p) {
  KILN_LOOP(i, p.planes * p.oH * p.oW) {
    const long long ow = i % p.oW, oh = (i / p.oW) % p.oH, pl = i / (p.oW * p.oH);
    long long h0, h1, w0, w1;
    const long long divisor = kiln_avg_window(p, oh, ow, &h0, &h1, &w0, &w1);
    if (h0 >= h1 || w0 >= w1) {
      out[i] = (T)0;
      continue;
    }
    const T* plane = x + pl * p.H * p.W;
    Acc sum = 0;
    for (long long h = h0; h < h1; ++h)
      for (long long w = w0; w < w1; ++w) sum += (Acc)plane[h * p.W + w];
    out[i] = (T)(sum / (Acc)divisor);
  }
}

// One thread per input element, summing the windows that cover it (no atomics: deterministic).
template <class T, class Acc>
__device__ void kiln_avg_pool2d_backward(T* __restrict__ dx, const T* __restrict__ dy, KilnPool p) {
  KILN_LOOP(i, p.planes * p.H * p.W) {
    const long long w = i % p.W, h = (i / p.W) % p.H, pl = i / (p.W * p.H);
    const long long lh = h + p.pH - p.kH + 1, lw = w + p.pW - p.kW + 1;
    const long long oh_lo = lh <= 0 ? 0 : (lh + p.sH - 1) / p.sH, ow_lo = lw <= 0 ? 0 : (lw + p.sW - 1) / p.sW;
    long long oh_hi = (h + p.pH) / p.sH, ow_hi = (w + p.pW) / p.sW;
    if (oh_hi > p.oH - 1) oh_hi = p.oH - 1;
    if (ow_hi > p.oW - 1) ow_hi = p.oW - 1;
    Acc acc = 0;
    for (long long oh = oh_lo; oh <= oh_hi; ++oh)
      for (long long ow = ow_lo; ow <= ow_hi; ++ow) {
        long long h0, h1, w0, w1;
        const long long divisor = kiln_avg_window(p, oh, ow, &h0, &h1, &w0, &w1);
        if (h < h0 || h >= h1 || w < w0 || w >= w1) continue;
        acc += (Acc)dy[(pl * p.oH + oh) * p.oW + ow] / (Acc)divisor;
      }
    dx[i] = (T)acc;
  }
}

// Running sums along the middle dim of [outer, n, inner], one thread per (outer, inner) line;
// floats accumulate in double and integers in int64, as the CPU kernel does.
template <class T, class Acc>
__device__ void kiln_cumsum(T* __restrict__ out, const T* __restrict__ x, long long outer, long long n, long long inner) {
  KILN_LOOP(i, outer * inner) {
    const long long o = i / inner, k = i % inner;
    Acc acc = 0;
    for (long long j = 0; j < n; ++j) {
      const long long at = (o * n + j) * inner + k;
      acc += (Acc)x[at];
      out[at] = (T)acc;
    }
  }
}

// ---- entry points: extern "C" names the host side looks up --------------------------------------

#define KILN_MOVE_KERNELS(B, T)                                                                               \
  extern "C" __global__ void kiln_index_select_##B(T* out, const T* x, const long long* idx, long long outer, \
                                                   long long n, long long m, long long inner) {              \
    kiln_index_select<T>(out, x, idx, outer, n, m, inner);                                                    \
  }                                                                                                           \
  extern "C" __global__ void kiln_gather_##B(T* out, const T* x, const long long* idx, KilnIndexGeom g) {      \
    kiln_gather<T>(out, x, idx, g);                                                                           \
  }                                                                                                           \
  extern "C" __global__ void kiln_scatter_##B(T* target, const T* src, const long long* idx, KilnIndexGeom g) { \
    kiln_scatter<T, false>(target, src, idx, g);                                                              \
  }
KILN_MOVE_KERNELS(1, unsigned char)
KILN_MOVE_KERNELS(2, unsigned short)
KILN_MOVE_KERNELS(4, unsigned int)
KILN_MOVE_KERNELS(8, unsigned long long)

#define KILN_SCATTER_ADD_KERNEL(N, T)                                                                          \
  extern "C" __global__ void kiln_scatter_add_##N(T* target, const T* src, const long long* idx, KilnIndexGeom g) { \
    kiln_scatter<T, true>(target, src, idx, g);                                                               \
  }
KILN_SCATTER_ADD_KERNEL(f32, float)
KILN_SCATTER_ADD_KERNEL(f64, double)
KILN_SCATTER_ADD_KERNEL(i32, int)
KILN_SCATTER_ADD_KERNEL(u64, unsigned long long)  // int64: two's complement addition is the same

#define KILN_FLOAT_KERNELS(N, T)                                                                               \
  extern "C" __global__ void kiln_max_pool2d_##N(T* out, long long* ind, const T* x, KilnPool p) {             \
    kiln_max_pool2d<T>(out, ind, x, p);                                                                       \
  }                                                                                                           \
  extern "C" __global__ void kiln_max_pool2d_backward_##N(T* dx, const T* dy, const long long* ind, long long planes, \
                                                          long long ohw, long long hw) {                      \
    kiln_max_pool2d_backward<T>(dx, dy, ind, planes, ohw, hw);                                                \
  }                                                                                                           \
  extern "C" __global__ void kiln_avg_pool2d_##N(T* out, const T* x, KilnPool p) { kiln_avg_pool2d<T, double>(out, x, p); } \
  extern "C" __global__ void kiln_avg_pool2d_backward_##N(T* dx, const T* dy, KilnPool p) {                    \
    kiln_avg_pool2d_backward<T, double>(dx, dy, p);                                                           \
  }                                                                                                           \
  extern "C" __global__ void kiln_cumsum_##N(T* out, const T* x, long long outer, long long n, long long inner) { \
    kiln_cumsum<T, double>(out, x, outer, n, inner);                                                          \
  }
KILN_FLOAT_KERNELS(f32, float)
KILN_FLOAT_KERNELS(f64, double)

extern "C" __global__ void kiln_cumsum_i64(long long* out, const long long* x, long long outer, long long n, long long inner) {
  kiln_cumsum<long long, long long>(out, x, outer, n, inner);
}

// ---- random numbers: Philox4x32-10, laid out as kernels/cpu/random_kernel.h -----------------------
// `a * b + c` is an explicit fma where the CPU kernels' expression is one that GCC contracts in the
// -march=native build (FMA hardware): the same bits there, within an ulp on a CPU build without.
// A batch of 16 blocks (counters offset + 16 b + lane) gives 64 words, word w of lane l being the
// batch's word w * 16 + l. Single-word values: element i is word i % 64 of batch i / 64. Two-word
// values: element i reads words k and k + 32 of batch i / 32 (k = i % 32).

struct KilnPhilox {
  unsigned long long seed, offset;
};

__device__ void kiln_philox_block(KilnPhilox key, unsigned long long counter, unsigned int out[4]) {
  unsigned int c0 = (unsigned int)counter, c1 = (unsigned int)(counter >> 32), c2 = 0, c3 = 0;
  unsigned int k0 = (unsigned int)key.seed, k1 = (unsigned int)(key.seed >> 32);
  for (int r = 0; r < 10; ++r) {
    const unsigned long long p0 = (unsigned long long)0xD2511F53u * c0, p1 = (unsigned long long)0xCD9E8D57u * c2;
    const unsigned int n0 = (unsigned int)(p1 >> 32) ^ c1 ^ k0, n2 = (unsigned int)(p0 >> 32) ^ c3 ^ k1;
    c1 = (unsigned int)p1;
    c3 = (unsigned int)p0;
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

// Word k (< 64) of batch b.
__device__ unsigned int kiln_philox_word(KilnPhilox key, long long b, int k) {
  unsigned int w[4];
  kiln_philox_block(key, key.offset + (unsigned long long)b * 16 + (unsigned long long)(k % 16), w);
  return w[k / 16];
}

__device__ float kiln_bits_f32(unsigned int w) { return (float)(int)(w >> 8) * 5.9604644775390625e-08f; }  // 2^-24
__device__ float kiln_bits_f32_open0(unsigned int w) { return (float)(int)((w >> 8) + 1u) * 5.9604644775390625e-08f; }
__device__ double kiln_bits_f64(unsigned int hi, unsigned int lo) {
  return (double)(long long)((((unsigned long long)hi << 32) | lo) >> 11) * 1.1102230246251565e-16;  // 2^-53
}
__device__ double kiln_bits_f64_open0(unsigned int hi, unsigned int lo) {
  return (double)(long long)(((((unsigned long long)hi << 32) | lo) >> 11) + 1u) * 1.1102230246251565e-16;
}

extern "C" __global__ void kiln_uniform_f32(float* out, long long n, KilnPhilox key, float from, float range, double to) {
  KILN_LOOP(i, n) {
    const float v = fmaf(kiln_bits_f32(kiln_philox_word(key, i / 64, (int)(i % 64))), range, from);
    out[i] = (double)v < to ? v : from;  // rounding may reach `to`: wrap it to `from`, as the CPU
  }
}

extern "C" __global__ void kiln_uniform_f64(double* out, long long n, KilnPhilox key, double from, double range, double to) {
  KILN_LOOP(i, n) {
    const int k = (int)(i % 32);
    unsigned int w[4];
    kiln_philox_block(key, key.offset + (unsigned long long)(i / 32) * 16 + (unsigned long long)(k % 16), w);
    const double v = fma(kiln_bits_f64(w[k / 16], w[k / 16 + 2]), range, from);
    out[i] = v < to ? v : from;
  }
}

// Box-Muller: pair k gives values k (cos) and k + 32 (sin) of a batch of 64 (float32), or k and
// k + 16 of a batch of 32 (float64), as the CPU kernel.
extern "C" __global__ void kiln_normal_f32(float* out, long long n, KilnPhilox key, float mean, float stdv) {
  KILN_LOOP(i, n) {
    const int j = (int)(i % 64), k = j % 32;
    unsigned int w[4];
    kiln_philox_block(key, key.offset + (unsigned long long)(i / 64) * 16 + (unsigned long long)(k % 16), w);
    const float r = sqrtf(-2.0f * logf(kiln_bits_f32_open0(w[k / 16])));
    const float th = 6.28318530717958647692f * kiln_bits_f32(w[k / 16 + 2]);
    out[i] = fmaf(stdv * r, j < 32 ? cosf(th) : sinf(th), mean);
  }
}

extern "C" __global__ void kiln_normal_f64(double* out, long long n, KilnPhilox key, double mean, double stdv) {
  KILN_LOOP(i, n) {
    const int j = (int)(i % 32), k = j % 16;
    unsigned int w[4];
    kiln_philox_block(key, key.offset + (unsigned long long)(i / 32) * 16 + (unsigned long long)k, w);
    const double r = sqrt(-2.0 * log(kiln_bits_f64_open0(w[0], w[1])));
    const double th = 6.283185307179586476925 * kiln_bits_f64(w[2], w[3]);
    out[i] = fma(stdv * r, j < 16 ? cos(th) : sin(th), mean);
  }
}

// Values low + [0, range) as int64 (the caller casts to the output dtype); Lemire's multiply-high.
extern "C" __global__ void kiln_randint_i64(long long* out, long long n, KilnPhilox key, long long low,
                                            unsigned long long range) {
  KILN_LOOP(i, n) {
    unsigned long long r;
    if (range <= (1ull << 32)) {
      r = ((unsigned long long)kiln_philox_word(key, i / 64, (int)(i % 64)) * range) >> 32;
    } else {
      const int k = (int)(i % 32);
      unsigned int w[4];
      kiln_philox_block(key, key.offset + (unsigned long long)(i / 32) * 16 + (unsigned long long)(k % 16), w);
      const unsigned long long x = ((unsigned long long)w[k / 16] << 32) | w[k / 16 + 2];
      // the high 64 bits of the 128-bit product x * range
      const unsigned long long xl = x & 0xffffffffull, xh = x >> 32, rl = range & 0xffffffffull, rh = range >> 32;
      const unsigned long long ll = xl * rl, lh = xl * rh, hl = xh * rl, hh = xh * rh;
      const unsigned long long mid = (ll >> 32) + (lh & 0xffffffffull) + (hl & 0xffffffffull);
      r = hh + (lh >> 32) + (hl >> 32) + (mid >> 32);
    }
    out[i] = (long long)((unsigned long long)low + r);
  }
}

// 1 where the element's word is below the threshold of p (a tensor of probabilities, or `thr`).
#define KILN_BERNOULLI_KERNEL(N, T)                                                                           \
  extern "C" __global__ void kiln_bernoulli_##N(T* out, const T* p, long long n, KilnPhilox key) {             \
    KILN_LOOP(i, n) {                                                                                         \
      const unsigned long long thr = (unsigned long long)((double)p[i] * 4294967296.0);                        \
      out[i] = (unsigned long long)kiln_philox_word(key, i / 64, (int)(i % 64)) < thr ? (T)1 : (T)0;           \
    }                                                                                                         \
  }
KILN_BERNOULLI_KERNEL(f32, float)
KILN_BERNOULLI_KERNEL(f64, double)

extern "C" __global__ void kiln_bernoulli_scalar_u8(unsigned char* out, long long n, KilnPhilox key,
                                                    unsigned long long thr) {
  KILN_LOOP(i, n) out[i] = (unsigned long long)kiln_philox_word(key, i / 64, (int)(i % 64)) < thr ? 1 : 0;
}

// Kept (word >= threshold of p) values scaled by 1 / (1 - p), computed in float for float32.
#define KILN_DROPOUT_KERNEL(N, T)                                                                             \
  extern "C" __global__ void kiln_dropout_##N(T* out, const T* x, long long n, KilnPhilox key,                \
                                              unsigned long long thr, T scale) {                              \
    KILN_LOOP(i, n) {                                                                                         \
      out[i] = (unsigned long long)kiln_philox_word(key, i / 64, (int)(i % 64)) >= thr ? x[i] * scale : (T)0;  \
    }                                                                                                         \
  }
KILN_DROPOUT_KERNEL(f32, float)
KILN_DROPOUT_KERNEL(f64, double)
