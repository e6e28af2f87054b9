// mm, bmm, matmul and linear on CUDA through cuBLAS (cublasGemmStridedBatchedEx), loaded at run time
// like the driver (libcublas.so.<toolkit major>), so a CUDA build runs where cuBLAS is absent:
// there the rows fall back to the host (kernels/cuda/host_fallback.cpp), counted as such.
// Row-major C[M,N] = A[M,K] B[K,N] is column-major C^T = B^T A^T, so B goes first. Operands with a
// unit stride in either of their last two dims are used in place (transposed or not); others are
// copied contiguous first. float32 uses TF32 tensor cores only when set_float32_matmul_precision
// allows it; float16/bfloat16 accumulate in float32; float64 in float64; integers go to the host.
#include <dlfcn.h>

#include <cstdint>

#include "autograd/grad_mode.h"
#include "core/cuda.h"
#include "core/ops.h"
#include "core/tensor_impl.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/matmul_operands.h"

namespace kiln {
namespace {

constexpr int kCudaIdx = static_cast<int>(DeviceType::CUDA);

// The few cuBLAS declarations used, with the values of cublas_api.h / library_types.h (the header
// has C++ overloads of the GEMM entry point that make its address ambiguous).
using Handle = void*;
using CreateFn = int (*)(Handle*);
using SetStreamFn = int (*)(Handle, void*);
using GemmFn = int (*)(Handle, int transa, int transb, int m, int n, int k, const void* alpha, const void* A, int Atype,
                       int lda, long long strideA, const void* B, int Btype, int ldb, long long strideB, const void* beta,
                       void* C, int Ctype, int ldc, long long strideC, int batch, int compute, int algo);
constexpr int kOpN = 0, kOpT = 1;
constexpr int kR32F = 0, kR64F = 1, kR16F = 2, kR16BF = 14;
constexpr int kCompute32F = 68, kCompute32FFastTF32 = 77, kCompute64F = 70;
constexpr int kGemmDefault = -1;

struct Cublas {
  void* lib = nullptr;
  CreateFn create = nullptr;
  SetStreamFn set_stream = nullptr;
  GemmFn gemm = nullptr;
  std::string error;
};

const Cublas& cublas() {
  static const Cublas* c = [] {
    auto* b = new Cublas();
    const std::string soname = std::string("libcublas.so.") + KILN_CUDA_MAJOR;
    b->lib = ::dlopen(soname.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!b->lib) b->lib = ::dlopen((std::string(KILN_CUDA_LIBRARY_DIR) + "/" + soname).c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!b->lib) {
      b->error = soname + " could not be loaded";
      return b;
    }
    b->create = reinterpret_cast<CreateFn>(::dlsym(b->lib, "cublasCreate_v2"));
    b->set_stream = reinterpret_cast<SetStreamFn>(::dlsym(b->lib, "cublasSetStream_v2"));
    b->gemm = reinterpret_cast<GemmFn>(::dlsym(b->lib, "cublasGemmStridedBatchedEx"));
    if (!b->create || !b->set_stream || !b->gemm) b->error = soname + " lacks the GEMM entry points";
    return b;
  }();
  return *c;
}

bool cublas_usable() { return cublas().error.empty(); }

Handle handle_for(int device) {
  return thread_handle<Handle>(device, [device] {
    Handle h = nullptr;
    const int st = cublas().create(&h);
    KILN_CHECK(st == 0, "[cuda] cublasCreate failed on cuda:", device, " (cublasStatus ", st, ")");
    return h;
  });
}

int data_type(const OpDef& op, DType t) {
  switch (t) {
    case kFloat32: return kR32F;
    case kFloat64: return kR64F;
    case kFloat16: return kR16F;
    case kBFloat16: return kR16BF;
    default: KILN_FAIL("[", op.name, "] cuBLAS has no ", t, " GEMM");
  }
}

// One operand as cuBLAS sees it: a matrix (or a batch of them, the leading dim) used in place when
// one of its last two dims has unit stride.
struct Operand {
  Tensor t;  // keeps a copy alive
  int op = kOpN;
  int64_t ld = 0, batch_stride = 0;
};

Operand operand(const Tensor& x) {
  const int64_t d = x.dim();
  const int64_t r = x.size(d - 2), c = x.size(d - 1), sr = x.stride(d - 2), sc = x.stride(d - 1);
  Operand o{x};
  if ((sc == 1 || c == 1) && sr >= std::max<int64_t>(c, 1)) {
    o.op = kOpN;
    o.ld = sr;
  } else if ((sr == 1 || r == 1) && sc >= std::max<int64_t>(r, 1)) {
    o.op = kOpT;
    o.ld = sc;
  } else {
    o.t = x.contiguous();
    o.op = kOpN;
    o.ld = std::max<int64_t>(c, 1);
  }
  o.batch_stride = d == 3 ? o.t.stride(0) : 0;
  return o;
}

// c[b] = a[b] @ bm[b] (+ c[b] when accumulate), a [B?, M, K], bm [B?, K, N], c contiguous [B?, M, N].
void gemm(const OpDef& op, const Tensor& a, const Tensor& bm, const Tensor& c, bool accumulate) {
  const int64_t d = c.dim();
  const int64_t M = c.size(d - 2), N = c.size(d - 1), K = a.size(-1), B = d == 3 ? c.size(0) : 1;
  if (c.numel() == 0) return;
  const int device = c.device().index() < 0 ? 0 : c.device().index();
  const DType t = c.dtype();
  if (K == 0) {  // an empty sum
    if (!accumulate) cuda_copy(full({}, 0, t, Device(kCPU)), c);
    return;
  }
  KILN_CHECK(M <= INT32_MAX && N <= INT32_MAX && K <= INT32_MAX && B <= INT32_MAX, "[", op.name,
             "] matrix sizes beyond 2^31 (", M, "x", K, " @ ", K, "x", N, ")");
  const Operand A = operand(a), Bo = operand(bm);
  const int type = data_type(op, t);
  int compute = kCompute32F;
  if (t == kFloat64) compute = kCompute64F;
  else if (t == kFloat32 && detail::tf32_matmul_allowed()) compute = kCompute32FFastTF32;
  const double alpha64 = 1, beta64 = accumulate ? 1 : 0;
  const float alpha32 = 1, beta32 = accumulate ? 1 : 0;
  const void* alpha = t == kFloat64 ? static_cast<const void*>(&alpha64) : &alpha32;
  const void* beta = t == kFloat64 ? static_cast<const void*>(&beta64) : &beta32;
  Handle h = handle_for(device);
  cuda::make_current(device);  // the handle's device, whatever the last driver call used
  const cuda::Stream s = cuda::current_stream(device);
  KILN_CHECK(cublas().set_stream(h, s.handle) == 0, "[", op.name, "] cublasSetStream failed");
  const int st = cublas().gemm(h, Bo.op, A.op, static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), alpha,
                               Bo.t.data_ptr(), type, static_cast<int>(Bo.ld), Bo.batch_stride, A.t.data_ptr(), type,
                               static_cast<int>(A.ld), A.batch_stride, beta, c.data_ptr(), type, static_cast<int>(N),
                               d == 3 ? M * N : 0, static_cast<int>(B), compute, kGemmDefault);
  KILN_CHECK(st == 0, "[", op.name, "] cublasGemmStridedBatchedEx failed (cublasStatus ", st, ") for ", a.sizes(), " @ ",
             bm.sizes(), " in ", t);
}

bool blas_dtype(DType t) { return t == kFloat32 || t == kFloat64 || t == kFloat16 || t == kBFloat16; }

void mm_cuda(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& attrs) {
  if (!cublas_usable() || !blas_dtype(out[0].dtype()) || !out[0].is_contiguous()) return host_fallback(op, in, out, attrs);
  NoGradGuard no_grad;
  gemm(op, in[0], in[1], out[0], false);
}

void matmul_cuda(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& attrs) {
  if (!cublas_usable() || !blas_dtype(out[0].dtype()) || !out[0].is_contiguous()) return host_fallback(op, in, out, attrs);
  NoGradGuard no_grad;
  auto [a, b, o] = matmul_as_matrices(in[0], in[1], out[0]);
  const int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  if (a.dim() == 2 && b.dim() == 2) return gemm(op, a, b, o, false);
  // Batch dims broadcast: both operands expanded to the output's batch, as [B, rows, cols].
  Shape batch(o.sizes().begin(), o.sizes().end() - 2);
  int64_t B = 1;
  for (int64_t s : batch) B *= s;
  Shape ae = batch, be = batch;
  ae.insert(ae.end(), {M, K});
  be.insert(be.end(), {K, N});
  Tensor a3 = a.expand(ae).reshape({B, M, K}), b3 = b.expand(be).reshape({B, K, N});
  gemm(op, a3, b3, o.view({B, M, N}), false);
}

void linear_cuda(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& attrs) {
  if (!cublas_usable() || !blas_dtype(out[0].dtype()) || !out[0].is_contiguous()) return host_fallback(op, in, out, attrs);
  NoGradGuard no_grad;
  const Tensor &x = in[0], &w = in[1];
  const int64_t K = x.size(-1), N = w.size(0);
  Tensor x2 = x.reshape({-1, K});
  Tensor c2 = out[0].view({x2.size(0), N});
  const bool has_bias = in.size() == 3 && in[2].defined();
  if (has_bias) cuda_copy(in[2].expand({x2.size(0), N}), c2);  // the GEMM accumulates onto the bias
  gemm(op, x2, w.t(), c2, has_bias);
}

}  // namespace

namespace ops_registration {
void register_cuda_blas_kernels(OpRegistry& r) {
  r.mutable_get("mm").kernels[kCudaIdx] = &mm_cuda;
  r.mutable_get("bmm").kernels[kCudaIdx] = &mm_cuda;
  r.mutable_get("matmul").kernels[kCudaIdx] = &matmul_cuda;
  r.mutable_get("linear").kernels[kCudaIdx] = &linear_cuda;
}
}  // namespace ops_registration

}  // namespace kiln
