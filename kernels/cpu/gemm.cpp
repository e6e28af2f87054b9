#include "kernels/cpu/gemm.h"

#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/ops.h"
#include "core/profiler.h"
#include "kernels/cpu/parallel.h"

namespace kiln::cpu {
namespace {

// --- float32: oneDNN sgemm ----------------------------------------------------------------------

// How BLAS can read an R x C operand with strides (rs, cs): 'N' (row-major, leading dim rs) or
// 'T' (column-major, leading dim cs). False: other layouts need a copy.
bool blas_layout(int64_t R, int64_t C, int64_t rs, int64_t cs, char& trans, int64_t& ld) {
  const int64_t c1 = std::max<int64_t>(1, C), r1 = std::max<int64_t>(1, R);
  if ((cs == 1 || C == 1) && (R == 1 || rs >= c1)) {
    trans = 'N';
    ld = R == 1 ? c1 : rs;
    return true;
  }
  if ((rs == 1 || R == 1) && (C == 1 || cs >= r1)) {
    trans = 'T';
    ld = C == 1 ? r1 : cs;
    return true;
  }
  return false;
}

// Copies an R x C strided operand into a row-major buffer of type D.
template <class D, class S>
void pack_rowmajor(int64_t R, int64_t C, const S* src, int64_t rs, int64_t cs, D* dst) {
  for (int64_t i = 0; i < R; ++i) {
    const S* s = src + i * rs;
    D* __restrict d = dst + i * C;
    if (cs == 1) {
      for (int64_t j = 0; j < C; ++j) d[j] = static_cast<D>(static_cast<opmath_t<S>>(s[j]));
    } else {
      for (int64_t j = 0; j < C; ++j) d[j] = static_cast<D>(static_cast<opmath_t<S>>(s[j * cs]));
    }
  }
}

void sgemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t ars, int64_t acs, const float* B, int64_t brs,
           int64_t bcs, float* C, int64_t ldc, bool accumulate) {
  char ta, tb;
  int64_t lda, ldb;
  std::vector<float> abuf, bbuf;
  if (!blas_layout(M, K, ars, acs, ta, lda)) {
    abuf.resize(static_cast<size_t>(M * K));
    pack_rowmajor(M, K, A, ars, acs, abuf.data());
    A = abuf.data(), ta = 'N', lda = K;
  }
  if (!blas_layout(K, N, brs, bcs, tb, ldb)) {
    bbuf.resize(static_cast<size_t>(K * N));
    pack_rowmajor(K, N, B, brs, bcs, bbuf.data());
    B = bbuf.data(), tb = 'N', ldb = N;
  }
  dnnl_status_t st = dnnl_sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, accumulate ? 1.0f : 0.0f, C, std::max<int64_t>(1, ldc));
  KILN_INTERNAL_ASSERT(st == dnnl_success, "dnnl_sgemm failed with status ", static_cast<int>(st), " (M=", M,
                       " N=", N, " K=", K, " lda=", lda, " ldb=", ldb, " ldc=", ldc, ")");
}

// float16 / bfloat16: convert to float32, sgemm, convert back.
template <class T>
void gemm_via_float(int64_t M, int64_t N, int64_t K, MatRef A, MatRef B, T* C, int64_t ldc, bool accumulate) {
  std::vector<float> a(static_cast<size_t>(M * K)), b(static_cast<size_t>(K * N)), c(static_cast<size_t>(M * N));
  pack_rowmajor(M, K, static_cast<const T*>(A.data), A.rs, A.cs, a.data());
  pack_rowmajor(K, N, static_cast<const T*>(B.data), B.rs, B.cs, b.data());
  if (accumulate) pack_rowmajor(M, N, C, ldc, 1, c.data());
  sgemm(M, N, K, a.data(), K, 1, b.data(), N, 1, c.data(), N, accumulate);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = T(c[i * N + j]);
}

// --- float64 and integers: a cache-blocked GEMM -------------------------------------------------
// GotoBLAS-style: B is packed into KC x NR column panels, A into MR x KC row panels, and an
// MR x NR register tile accumulates over one KC block. Threads split the rows of C.

template <class T>
struct Blocking {
  static constexpr int MR = 4;
  static constexpr int NR = static_cast<int>(std::max<size_t>(8, 64 / sizeof(T)));  // two AVX2 vectors
  static constexpr int64_t KC = 256;
  static constexpr int64_t MC = 64;
  static constexpr int64_t NC = std::max<int64_t>(NR, (256 * 1024 / sizeof(T) / KC) / NR * NR);
};

template <class T, int MR, int NR>
inline void micro_kernel(int64_t kc, const T* __restrict ap, const T* __restrict bp, T* __restrict c, int64_t ldc,
                         int mr, int nr, bool add) {
  T acc[MR][NR] = {};
  for (int64_t k = 0; k < kc; ++k) {
    const T* a = ap + k * MR;
    const T* b = bp + k * NR;
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] = static_cast<T>(acc[i][j] + a[i] * b[j]);
  }
  if (mr == MR && nr == NR) {
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) c[i * ldc + j] = static_cast<T>((add ? c[i * ldc + j] : T(0)) + acc[i][j]);
    return;
  }
  for (int i = 0; i < mr; ++i)
    for (int j = 0; j < nr; ++j) c[i * ldc + j] = static_cast<T>((add ? c[i * ldc + j] : T(0)) + acc[i][j]);
}

template <class T>
void gemm_blocked_rows(int64_t m0, int64_t m1, int64_t N, int64_t K, const T* A, int64_t ars, int64_t acs,
                       const T* B, int64_t brs, int64_t bcs, T* C, int64_t ldc, bool accumulate) {
  using Bk = Blocking<T>;
  constexpr int MR = Bk::MR, NR = Bk::NR;
  std::vector<T> apack(static_cast<size_t>(Bk::MC * Bk::KC));
  std::vector<T> bpack(static_cast<size_t>(Bk::NC * Bk::KC));
  for (int64_t j0 = 0; j0 < N; j0 += Bk::NC) {
    const int64_t nc = std::min(Bk::NC, N - j0);
    for (int64_t p0 = 0; p0 < K; p0 += Bk::KC) {
      const int64_t kc = std::min(Bk::KC, K - p0);
      const bool add = accumulate || p0 > 0;
      // Pack B[p0:p0+kc, j0:j0+nc] into NR-wide panels, zero-padded.
      for (int64_t jp = 0; jp < nc; jp += NR) {
        T* dst = bpack.data() + jp * kc;
        const int nr = static_cast<int>(std::min<int64_t>(NR, nc - jp));
        for (int64_t k = 0; k < kc; ++k) {
          const T* src = B + (p0 + k) * brs + (j0 + jp) * bcs;
          T* d = dst + k * NR;
          for (int j = 0; j < nr; ++j) d[j] = src[j * bcs];
          for (int j = nr; j < NR; ++j) d[j] = T(0);
        }
      }
      for (int64_t i0 = m0; i0 < m1; i0 += Bk::MC) {
        const int64_t mc = std::min(Bk::MC, m1 - i0);
        // Pack A[i0:i0+mc, p0:p0+kc] into MR-tall panels, zero-padded.
        for (int64_t ip = 0; ip < mc; ip += MR) {
          T* dst = apack.data() + ip * kc;
          const int mr = static_cast<int>(std::min<int64_t>(MR, mc - ip));
          for (int i = 0; i < MR; ++i) {
            if (i < mr) {
              const T* src = A + (i0 + ip + i) * ars + p0 * acs;
              for (int64_t k = 0; k < kc; ++k) dst[k * MR + i] = src[k * acs];
            } else {
              for (int64_t k = 0; k < kc; ++k) dst[k * MR + i] = T(0);
            }
          }
        }
        for (int64_t jp = 0; jp < nc; jp += NR) {
          const int nr = static_cast<int>(std::min<int64_t>(NR, nc - jp));
          for (int64_t ip = 0; ip < mc; ip += MR) {
            const int mr = static_cast<int>(std::min<int64_t>(MR, mc - ip));
            micro_kernel<T, MR, NR>(kc, apack.data() + ip * kc, bpack.data() + jp * kc,
                                    C + (i0 + ip) * ldc + j0 + jp, ldc, mr, nr, add);
          }
        }
      }
    }
  }
}

template <class T>
void gemm_blocked(int64_t M, int64_t N, int64_t K, MatRef A, MatRef B, T* C, int64_t ldc, bool accumulate) {
  const T* a = static_cast<const T*>(A.data);
  const T* b = static_cast<const T*>(B.data);
  // Rows per thread: at least ~64k multiply-adds each, in whole MR tiles.
  const int64_t row_work = std::max<int64_t>(1, N * K);
  const int64_t grain = std::max<int64_t>(Blocking<T>::MR, 65536 / row_work);
  parallel_for(M, grain, [&](int64_t m0, int64_t m1) {
    gemm_blocked_rows<T>(m0, m1, N, K, a, A.rs, A.cs, b, B.rs, B.cs, C, ldc, accumulate);
  });
}

void gemm_any(DType dt, int64_t M, int64_t N, int64_t K, MatRef A, MatRef B, void* C, int64_t ldc, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate) {
      const size_t isz = itemsize(dt);
      for (int64_t i = 0; i < M; ++i) std::memset(static_cast<char*>(C) + i * ldc * isz, 0, static_cast<size_t>(N) * isz);
    }
    return;
  }
  switch (dt) {
    case DType::Float32:
      sgemm(M, N, K, static_cast<const float*>(A.data), A.rs, A.cs, static_cast<const float*>(B.data), B.rs, B.cs,
            static_cast<float*>(C), ldc, accumulate);
      return;
    case DType::Float16: return gemm_via_float<Half>(M, N, K, A, B, static_cast<Half*>(C), ldc, accumulate);
    case DType::BFloat16: return gemm_via_float<BFloat16>(M, N, K, A, B, static_cast<BFloat16*>(C), ldc, accumulate);
    case DType::Float64: return gemm_blocked<double>(M, N, K, A, B, static_cast<double*>(C), ldc, accumulate);
    case DType::Int64: return gemm_blocked<int64_t>(M, N, K, A, B, static_cast<int64_t*>(C), ldc, accumulate);
    case DType::Int32: return gemm_blocked<int32_t>(M, N, K, A, B, static_cast<int32_t*>(C), ldc, accumulate);
    case DType::Int16: return gemm_blocked<int16_t>(M, N, K, A, B, static_cast<int16_t*>(C), ldc, accumulate);
    case DType::Int8: return gemm_blocked<int8_t>(M, N, K, A, B, static_cast<int8_t*>(C), ldc, accumulate);
    case DType::UInt8: return gemm_blocked<uint8_t>(M, N, K, A, B, static_cast<uint8_t*>(C), ldc, accumulate);
    default: KILN_FAIL("[gemm] unsupported dtype ", dt);
  }
}

// A BLAS event: 2*M*N*K flops; bytes = A, B and C once (C twice when accumulating).
void profiled_gemm(DType dt, int64_t M, int64_t N, int64_t K, MatRef A, MatRef B, void* C, int64_t ldc, bool accumulate) {
  profiler::Scope scope(dt == DType::Float32 ? "sgemm" : "gemm", profiler::Category::Blas);
  if (profiler::Event* e = scope.event()) {
    e->dtype = std::string(dtype_name(dt));
    e->device = "cpu";
    e->shapes = "[[" + std::to_string(M) + ", " + std::to_string(K) + "], [" + std::to_string(K) + ", " +
                std::to_string(N) + "]]";
    const double isz = static_cast<double>(itemsize(dt));
    e->bytes = static_cast<int64_t>(isz * static_cast<double>(M * K + K * N + M * N * (accumulate ? 2 : 1)));
    e->flops = 2.0 * static_cast<double>(M) * static_cast<double>(N) * static_cast<double>(K);
  }
  gemm_any(dt, M, N, K, A, B, C, ldc, accumulate);
}

}  // namespace

void gemm(DType dt, int64_t M, int64_t N, int64_t K, MatRef A, MatRef B, void* C, int64_t ldc, bool accumulate) {
  if (profiler::enabled()) [[unlikely]]
    return profiled_gemm(dt, M, N, K, A, B, C, ldc, accumulate);
  gemm_any(dt, M, N, K, A, B, C, ldc, accumulate);
}

void matmul_batched(const Tensor& a, const Tensor& b, const Tensor& out_t, bool accumulate) {
  KILN_INTERNAL_ASSERT(a.dim() >= 2 && b.dim() >= 2 && out_t.dim() >= 2, "matmul_batched needs matrices");
  KILN_INTERNAL_ASSERT(a.dtype() == out_t.dtype() && b.dtype() == out_t.dtype(), "matmul_batched dtypes differ");
  Tensor out = out_t;
  if (out.numel() == 0) return;
  if (!out.is_contiguous()) {
    Tensor tmp = accumulate ? out.contiguous() : empty(out.sizes(), out.dtype());
    matmul_batched(a, b, tmp, accumulate);
    out.copy_(tmp);
    return;
  }
  const DType dt = out.dtype();
  const int64_t M = out.size(-2), N = out.size(-1), K = a.size(-1);
  const int64_t nb = out.dim() - 2;
  // Batch strides of a and b over out's batch dims (0 where broadcast).
  std::vector<int64_t> bsz(nb), as(nb, 0), bs(nb, 0);
  const int64_t aoff = nb - (a.dim() - 2), boff = nb - (b.dim() - 2);
  int64_t batch = 1;
  for (int64_t d = 0; d < nb; ++d) {
    bsz[d] = out.size(d);
    batch *= bsz[d];
    if (d >= aoff && a.size(d - aoff) != 1) as[d] = a.stride(d - aoff);
    if (d >= boff && b.size(d - boff) != 1) bs[d] = b.stride(d - boff);
  }
  const size_t isz = itemsize(dt);
  const char* ap = static_cast<const char*>(a.data_ptr());
  const char* bp = static_cast<const char*>(b.data_ptr());
  char* cp = static_cast<char*>(out.data_ptr());
  const MatRef bmat{bp, b.stride(-2), b.stride(-1)};

  // One shared b: fold a's batch and row dims into the rows of a single GEMM when they merge.
  if (batch > 1 && std::all_of(bs.begin(), bs.end(), [](int64_t s) { return s == 0; })) {
    std::vector<std::pair<int64_t, int64_t>> dims;  // (size, stride), size-1 dims dropped
    for (int64_t d = 0; d < nb; ++d)
      if (bsz[d] != 1) dims.emplace_back(bsz[d], as[d]);
    if (M != 1) dims.emplace_back(M, a.stride(-2));
    bool merges = true;
    for (size_t i = 0; i + 1 < dims.size(); ++i)
      merges = merges && dims[i].second == dims[i + 1].second * dims[i + 1].first;
    if (merges) {
      const int64_t rs = dims.empty() ? 1 : dims.back().second;
      gemm(dt, batch * M, N, K, MatRef{ap, rs, a.stride(-1)}, bmat, cp, N, accumulate);
      return;
    }
  }

  auto run_batch = [&](int64_t i) {
    int64_t ao = 0, bo = 0, rem = i;
    for (int64_t d = nb - 1; d >= 0; --d) {
      const int64_t idx = rem % bsz[d];
      rem /= bsz[d];
      ao += idx * as[d];
      bo += idx * bs[d];
    }
    gemm(dt, M, N, K, MatRef{ap + ao * static_cast<int64_t>(isz), a.stride(-2), a.stride(-1)},
         MatRef{bp + bo * static_cast<int64_t>(isz), b.stride(-2), b.stride(-1)}, cp + i * M * N * static_cast<int64_t>(isz),
         N, accumulate);
  };
  // Small matrices: threads take whole batches (each GEMM then runs on one thread).
  const int64_t work = M * N * K;
  if (batch > 1 && work < (int64_t(1) << 18)) {
    parallel_for(batch, std::max<int64_t>(1, 65536 / std::max<int64_t>(1, work)), [&](int64_t b0, int64_t b1) {
      for (int64_t i = b0; i < b1; ++i) run_batch(i);
    });
  } else {
    for (int64_t i = 0; i < batch; ++i) run_batch(i);
  }
}

}  // namespace kiln::cpu
