// conv2d and its two backward rows on CUDA through cuDNN's convolution API (libcudnn.so.<major>,
// dlopen'ed like the driver and cuBLAS; the headers come with the toolkit). Without cuDNN the rows
// use the host fallback (counted). Algorithms: cuDNN's own heuristic ranking (the _v7 queries),
// the first that succeeds within the workspace the caching allocator can give. float32 uses FMA
// math unless set_float32_matmul_precision allows TF32, as for cuBLAS.
#include <cudnn.h>
#include <dlfcn.h>


#include "autograd/grad_mode.h"
#include "core/cuda.h"
#include "core/ops.h"
#include "kernels/cuda/cuda_kernels.h"

namespace kiln {
namespace {

constexpr int kCudaIdx = static_cast<int>(DeviceType::CUDA);

#define KILN_CUDNN_ENTRY_POINTS(X)                                                                               \
  X(cudnnGetErrorString) X(cudnnCreate) X(cudnnSetStream) X(cudnnCreateTensorDescriptor)                       \
  X(cudnnSetTensor4dDescriptorEx) X(cudnnDestroyTensorDescriptor) X(cudnnCreateFilterDescriptor)              \
  X(cudnnSetFilter4dDescriptor) X(cudnnDestroyFilterDescriptor) X(cudnnCreateConvolutionDescriptor)           \
  X(cudnnSetConvolution2dDescriptor) X(cudnnSetConvolutionGroupCount) X(cudnnSetConvolutionMathType)          \
  X(cudnnDestroyConvolutionDescriptor) X(cudnnGetConvolutionForwardAlgorithm_v7)                              \
  X(cudnnGetConvolutionForwardWorkspaceSize) X(cudnnConvolutionForward)                                       \
  X(cudnnGetConvolutionBackwardDataAlgorithm_v7) X(cudnnGetConvolutionBackwardDataWorkspaceSize)              \
  X(cudnnConvolutionBackwardData) X(cudnnGetConvolutionBackwardFilterAlgorithm_v7)                            \
  X(cudnnGetConvolutionBackwardFilterWorkspaceSize) X(cudnnConvolutionBackwardFilter)

struct Cudnn {
#define KILN_CUDNN_MEMBER(fn) decltype(&::fn) fn = nullptr;
  KILN_CUDNN_ENTRY_POINTS(KILN_CUDNN_MEMBER)
#undef KILN_CUDNN_MEMBER
  std::string error;
};

const Cudnn& cudnn() {
  static const Cudnn* c = [] {
    auto* d = new Cudnn();
    const std::string soname = "libcudnn.so." + std::to_string(CUDNN_MAJOR);
    void* lib = ::dlopen(soname.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) lib = ::dlopen((std::string(KILN_CUDA_LIBRARY_DIR) + "/" + soname).c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      d->error = soname + " could not be loaded";
      return d;
    }
#define KILN_CUDNN_RESOLVE(fn)                                          \
  d->fn = reinterpret_cast<decltype(&::fn)>(::dlsym(lib, #fn));         \
  if (!d->fn && d->error.empty()) d->error = soname + " lacks " #fn;
    KILN_CUDNN_ENTRY_POINTS(KILN_CUDNN_RESOLVE)
#undef KILN_CUDNN_RESOLVE
    return d;
  }();
  return *c;
}

void check(cudnnStatus_t st, const char* op, const char* what) {
  KILN_CHECK(st == CUDNN_STATUS_SUCCESS, "[", op, "] ", what, " failed: ", cudnn().cudnnGetErrorString(st));
}

cudnnHandle_t handle_for(int device) {
  return thread_handle<cudnnHandle_t>(device, [] {
    cudnnHandle_t h = nullptr;
    check(cudnn().cudnnCreate(&h), "conv2d", "cudnnCreate");
    return h;
  });
}

cudnnDataType_t data_type(DType t) {
  switch (t) {
    case kFloat32: return CUDNN_DATA_FLOAT;
    case kFloat64: return CUDNN_DATA_DOUBLE;
    case kFloat16: return CUDNN_DATA_HALF;
    default: return CUDNN_DATA_BFLOAT16;
  }
}

// The descriptors of one convolution, destroyed with it.
struct Conv {
  const char* op;
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  ~Conv() {
    const Cudnn& c = cudnn();
    if (x) c.cudnnDestroyTensorDescriptor(x);
    if (y) c.cudnnDestroyTensorDescriptor(y);
    if (w) c.cudnnDestroyFilterDescriptor(w);
    if (conv) c.cudnnDestroyConvolutionDescriptor(conv);
  }
};

void set_tensor(const char* op, cudnnTensorDescriptor_t* d, const Tensor& t) {
  const Cudnn& c = cudnn();
  check(c.cudnnCreateTensorDescriptor(d), op, "cudnnCreateTensorDescriptor");
  auto i = [](int64_t v) { return static_cast<int>(v); };
  check(c.cudnnSetTensor4dDescriptorEx(*d, data_type(t.dtype()), i(t.size(0)), i(t.size(1)), i(t.size(2)), i(t.size(3)),
                                       i(t.stride(0)), i(t.stride(1)), i(t.stride(2)), i(t.stride(3))),
        op, "cudnnSetTensor4dDescriptorEx");
}

// x [N, C, H, W], w [K, C/groups, kh, kw] (sizes; w's memory contiguous), y [N, K, oh, ow].
void describe(Conv& cv, const Tensor& x, IntArrayRef w, const Tensor& y, const Attrs& a, DType t) {
  const Cudnn& c = cudnn();
  set_tensor(cv.op, &cv.x, x);
  set_tensor(cv.op, &cv.y, y);
  check(c.cudnnCreateFilterDescriptor(&cv.w), cv.op, "cudnnCreateFilterDescriptor");
  check(c.cudnnSetFilter4dDescriptor(cv.w, data_type(t), CUDNN_TENSOR_NCHW, static_cast<int>(w[0]), static_cast<int>(w[1]),
                                     static_cast<int>(w[2]), static_cast<int>(w[3])),
        cv.op, "cudnnSetFilter4dDescriptor");
  check(c.cudnnCreateConvolutionDescriptor(&cv.conv), cv.op, "cudnnCreateConvolutionDescriptor");
  const Shape &s = a.ints(0), &p = a.ints(1), &d = a.ints(2);
  check(c.cudnnSetConvolution2dDescriptor(cv.conv, static_cast<int>(p[0]), static_cast<int>(p[1]), static_cast<int>(s[0]),
                                          static_cast<int>(s[1]), static_cast<int>(d[0]), static_cast<int>(d[1]),
                                          CUDNN_CROSS_CORRELATION, t == kFloat64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT),
        cv.op, "cudnnSetConvolution2dDescriptor");
  check(c.cudnnSetConvolutionGroupCount(cv.conv, static_cast<int>(a.i(3))), cv.op, "cudnnSetConvolutionGroupCount");
  const cudnnMathType_t math = t == kFloat32 && !detail::tf32_matmul_allowed() ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH;
  check(c.cudnnSetConvolutionMathType(cv.conv, math), cv.op, "cudnnSetConvolutionMathType");
}

Tensor workspace(size_t bytes, const Device& dev) {
  return empty({static_cast<int64_t>(std::max<size_t>(bytes, 1))}, TensorOptions(kUInt8).device(dev));
}

bool usable(const TensorList& in, const TensorList& out) {
  if (!cudnn().error.empty()) return false;
  const DType t = out[0].dtype();
  return t == kFloat32 || t == kFloat64 || t == kFloat16 || t == kBFloat16;
}

Tensor batched4(const Tensor& t) { return t.dim() == 4 ? t : t.unsqueeze(0); }
int device_of(const Tensor& t) { return t.device().index() < 0 ? 0 : t.device().index(); }

// The steps every convolution direction shares: the handle on the current stream, cuDNN's ranked
// algorithms, then the first that runs within a workspace. `algos(h, perf, &n)` fills the ranking,
// `bytes(h, algo, &size)` asks an algorithm's workspace, `run(h, algo, alpha, ws, size, beta)` runs it.
template <class Perf, class Algos, class Bytes, class Run>
void run_convolution(const char* op, const char* what, const Tensor& out, Algos&& algos, Bytes&& bytes, Run&& run) {
  const int device = device_of(out);
  cudnnHandle_t h = handle_for(device);
  cuda::make_current(device);  // the handle's device, whatever the last driver call used
  check(cudnn().cudnnSetStream(h, static_cast<cudaStream_t>(cuda::current_stream(device).handle)), op, "cudnnSetStream");
  Perf perf[8];
  int n = 0;
  check(algos(h, perf, &n), op, "finding an algorithm");
  const double one = 1, zero = 0;
  const float onef = 1, zerof = 0;
  const bool f64 = out.dtype() == kFloat64;
  const void* alpha = f64 ? static_cast<const void*>(&one) : &onef;
  const void* beta = f64 ? static_cast<const void*>(&zero) : &zerof;
  cudnnStatus_t st = CUDNN_STATUS_NOT_SUPPORTED;
  for (int i = 0; i < n && st != CUDNN_STATUS_SUCCESS; ++i) {
    size_t size = 0;
    if (perf[i].status != CUDNN_STATUS_SUCCESS || bytes(h, perf[i].algo, &size) != CUDNN_STATUS_SUCCESS) continue;
    Tensor ws;
    try {
      ws = workspace(size, out.device());
    } catch (const Error&) {
      continue;  // this algorithm's workspace does not fit: a later one may need less
    }
    st = run(h, perf[i].algo, alpha, ws.data_ptr(), size, beta);
  }
  check(st, op, what);
}

void conv2d_cuda(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  if (!usable(in, out)) return host_fallback(op, in, out, a);
  NoGradGuard no_grad;
  into_contiguous(out[0], [&](Tensor& o) {
    // Dense NCHW operands: cuDNN rejects zero (expanded) and overlapping strides.
    const Tensor x = batched4(in[0]).contiguous(), w = in[1].contiguous(), y = batched4(o);
    if (y.numel() == 0) return;
    Conv cv{"conv2d"};
    describe(cv, x, w.sizes(), y, a, o.dtype());
    const Cudnn& c = cudnn();
    run_convolution<cudnnConvolutionFwdAlgoPerf_t>(
        cv.op, "cudnnConvolutionForward", o,
        [&](cudnnHandle_t h, auto* perf, int* n) {
          return c.cudnnGetConvolutionForwardAlgorithm_v7(h, cv.x, cv.w, cv.conv, cv.y, 8, n, perf);
        },
        [&](cudnnHandle_t h, auto algo, size_t* size) {
          return c.cudnnGetConvolutionForwardWorkspaceSize(h, cv.x, cv.w, cv.conv, cv.y, algo, size);
        },
        [&](cudnnHandle_t h, auto algo, const void* alpha, void* ws, size_t size, const void* beta) {
          return c.cudnnConvolutionForward(h, alpha, cv.x, x.data_ptr(), cv.w, w.data_ptr(), cv.conv, algo, ws, size,
                                           beta, cv.y, y.data_ptr());
        });
    if (in.size() == 3 && in[2].defined()) {
      Tensor yy = y;
      yy.add_(in[2].view({1, -1, 1, 1}));
    }
  });
}

void conv2d_backward_input_cuda(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  if (!usable(in, out)) return host_fallback(op, in, out, a);
  NoGradGuard no_grad;
  into_contiguous(out[0], [&](Tensor& o) {
    const Tensor dy = batched4(in[0]).contiguous(), w = in[1].contiguous(), dx = batched4(o);
    if (dx.numel() == 0) return;
    if (dy.numel() == 0) return (void)Tensor(dx).zero_();
    Conv cv{"conv2d_backward_input"};
    describe(cv, dx, w.sizes(), dy, a, o.dtype());
    const Cudnn& c = cudnn();
    run_convolution<cudnnConvolutionBwdDataAlgoPerf_t>(
        cv.op, "cudnnConvolutionBackwardData", o,
        [&](cudnnHandle_t h, auto* perf, int* n) {
          return c.cudnnGetConvolutionBackwardDataAlgorithm_v7(h, cv.w, cv.y, cv.conv, cv.x, 8, n, perf);
        },
        [&](cudnnHandle_t h, auto algo, size_t* size) {
          return c.cudnnGetConvolutionBackwardDataWorkspaceSize(h, cv.w, cv.y, cv.conv, cv.x, algo, size);
        },
        [&](cudnnHandle_t h, auto algo, const void* alpha, void* ws, size_t size, const void* beta) {
          return c.cudnnConvolutionBackwardData(h, alpha, cv.w, w.data_ptr(), cv.y, dy.data_ptr(), cv.conv, algo, ws,
                                                size, beta, cv.x, dx.data_ptr());
        });
  });
}

void conv2d_backward_weight_cuda(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  if (!usable(in, out)) return host_fallback(op, in, out, a);
  NoGradGuard no_grad;
  into_contiguous(out[0], [&](Tensor& dw) {
    const Tensor dy = batched4(in[0]).contiguous(), x = batched4(in[1]).contiguous();
    if (dw.numel() == 0) return;
    if (dy.numel() == 0) return (void)Tensor(dw).zero_();
    Conv cv{"conv2d_backward_weight"};
    describe(cv, x, dw.sizes(), dy, a, dw.dtype());
    const Cudnn& c = cudnn();
    run_convolution<cudnnConvolutionBwdFilterAlgoPerf_t>(
        cv.op, "cudnnConvolutionBackwardFilter", dw,
        [&](cudnnHandle_t h, auto* perf, int* n) {
          return c.cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, cv.x, cv.y, cv.conv, cv.w, 8, n, perf);
        },
        [&](cudnnHandle_t h, auto algo, size_t* size) {
          return c.cudnnGetConvolutionBackwardFilterWorkspaceSize(h, cv.x, cv.y, cv.conv, cv.w, algo, size);
        },
        [&](cudnnHandle_t h, auto algo, const void* alpha, void* ws, size_t size, const void* beta) {
          return c.cudnnConvolutionBackwardFilter(h, alpha, cv.x, x.data_ptr(), cv.y, dy.data_ptr(), cv.conv, algo, ws,
                                                  size, beta, cv.w, dw.data_ptr());
        });
  });
}

}  // namespace

namespace ops_registration {
void register_cuda_cudnn_kernels(OpRegistry& r) {
  r.mutable_get("conv2d").kernels[kCudaIdx] = &conv2d_cuda;
  r.mutable_get("conv2d_backward_input").kernels[kCudaIdx] = &conv2d_backward_input_cuda;
  r.mutable_get("conv2d_backward_weight").kernels[kCudaIdx] = &conv2d_backward_weight_cuda;
}
}  // namespace ops_registration

}  // namespace kiln
