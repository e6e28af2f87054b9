// The rows without a CUDA kernel of their own (random numbers, the argument combinations the
// native kernels do not take: half/bfloat16 pooling, integer pow, ...) run their CPU kernel on host copies of the arguments, and
// the results are copied back into the CUDA outputs. Slow (two transfers and a device sync per
// call) but exact — the CPU kernel's results, so random ops give the CPU generator's numbers —
// and every use is counted (cuda::host_fallback_counts(), KILN_LOG=perf names each op once).
// Also here: fill, which needs no kernel (memsets, or a broadcast copy of one element).
#include <cstring>

#include "autograd/grad_mode.h"
#include "core/cuda.h"
#include "core/ops.h"
#include "core/tensor_impl.h"
#include "kernels/cuda/cuda_kernels.h"

namespace kiln {
namespace {

constexpr int kCpuIdx = static_cast<int>(DeviceType::CPU);
constexpr int kCudaIdx = static_cast<int>(DeviceType::CUDA);

int device_index(const Device& d) { return d.index() < 0 ? 0 : d.index(); }

void fill_cuda(const OpDef&, const TensorList&, TensorList& out, const Attrs& a) {
  const Tensor& dst = out.at(0);
  if (dst.numel() == 0) return;
  // The value's bits in dst's dtype, from a one-element CPU tensor.
  Tensor v = full({}, a.scalar(0), dst.dtype(), Device(kCPU));
  const size_t n = itemsize(dst.dtype());
  uint64_t bits = 0;
  std::memcpy(&bits, v.data_ptr(), n);
  const bool contiguous = dst.is_contiguous();
  const cuda::Stream s = cuda::current_stream(device_index(dst.device()));
  const uint64_t addr = reinterpret_cast<uint64_t>(dst.data_ptr());
  const size_t count = static_cast<size_t>(dst.numel());
  if (contiguous && n <= 4) {
    cuda::memset_async(addr, static_cast<uint32_t>(bits), count, static_cast<int>(n), s);
  } else if (contiguous && n == 8 && (bits >> 32) == (bits & 0xffffffffu)) {
    cuda::memset_async(addr, static_cast<uint32_t>(bits), 2 * count, 4, s);  // 0, -1 and other repeating words
  } else {
    cuda_copy(v, dst);  // a broadcast copy of the (uploaded) element, whatever the strides
  }
}

}  // namespace

void host_fallback(const OpDef& op, const TensorList& inputs, TensorList& out, const Attrs& attrs) {
  KernelFn cpu = op.kernels[kCpuIdx];
  KILN_CHECK(cpu != nullptr, "[", op.name, "] has neither a CUDA nor a CPU kernel");
  detail::count_host_fallback(op.name);
  NoGradGuard no_grad;
  TensorList hin;
  hin.reserve(inputs.size());
  for (const Tensor& t : inputs) hin.push_back(t.defined() && t.is_cuda() ? t.to(Device(kCPU)) : t);
  TensorList hout;
  hout.reserve(out.size());
  for (const Tensor& t : out) hout.push_back(empty(t.sizes(), t.dtype(), Device(kCPU)));
  // In-place rows read the target: start from its contents.
  for (size_t i = 0; i < out.size(); ++i)
    for (const Tensor& t : inputs)
      if (t.defined() && t.is_same(out[i])) hout[i] = hin[static_cast<size_t>(&t - inputs.data())];
  cpu(op, hin, hout, attrs);
  for (size_t i = 0; i < out.size(); ++i) {
    Tensor dst = out[i];
    dst.copy_(hout[i]);
  }
}

namespace ops_registration {
void register_cuda_kernels(OpRegistry& r) {
  register_cuda_fused_kernels(r);
  register_cuda_compositions(r);
  register_cuda_blas_kernels(r);
  register_cuda_handwritten_kernels(r);
#if KILN_HAS_CUDNN
  register_cuda_cudnn_kernels(r);
#endif
  r.mutable_get("fill").kernels[kCudaIdx] = &fill_cuda;
  for (const OpDef* d : r.all()) {
    OpDef& row = r.mutable_get(d->name);
    if (!row.kernels[kCudaIdx] && row.kernels[kCpuIdx] && row.kind != OpKind::View) row.kernels[kCudaIdx] = &host_fallback;
  }
}
}  // namespace ops_registration

}  // namespace kiln
