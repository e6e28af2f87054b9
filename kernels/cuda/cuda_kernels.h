#pragma once
// The CUDA column of the op registry (core/op.h). Which row runs how on a GPU:
//   fused_ops.cpp     pointwise rows, reductions, softmax/log_softmax/layer_norm: kernel IR made by
//                     the fusion backend from the op's formula, CUDA C, NVRTC (one definition per op)
//   compositions.cpp  argmax, all/any, cat, tril/triu, one_hot, the losses, ...: public ops over
//                     the rows above (device-agnostic, so tested on the CPU)
//   blas.cpp          mm/bmm/matmul/linear: cuBLAS (TF32 only when kiln::set_float32_matmul_precision allows)
//   cudnn.cpp         conv2d and its backward rows: cuDNN
//   handwritten.cpp   index_select, embedding, gather, scatter(_add), pooling, cumsum and the random
//                     rows: the CUDA C of handwritten.cuh, compiled by NVRTC
//   host_fallback.cpp fill (memsets), and everything else (randperm, integer pow/fmod/remainder,
//                     half-precision pooling/random, any row without NVRTC or cuBLAS/cuDNN): the CPU
//                     kernel on host copies, the results copied back — correct and counted
//                     (cuda::host_fallback_counts()), not fast; see docs/cuda.md
// Built only with the CUDA toolkit (KILN_HAS_CUDA_TOOLKIT).
#include <map>
#include <string>
#include <vector>

#include "core/cuda_driver.h"
#include "core/op.h"
#include "core/ops.h"
#include "fusion/kernel_ir.h"

namespace kiln {

// dst = src converted to dst's dtype (src broadcast to dst's shape), on dst's device and current
// stream, whatever dst's strides. Records nothing for autograd or a capture.
void cuda_copy(const Tensor& src, const Tensor& dst);
// The kernels the eager CUDA path makes for this call (`out`: the outputs call_op would pass), built
// without a device — the tests compile them with NVRTC. Empty when the call goes to the host.
std::vector<fusion::Kernel> eager_cuda_kernels(const OpDef& op, const TensorList& in, const TensorList& out,
                                               const Attrs& attrs);
// Calls f(t) with `out` itself when it is contiguous (as call_op's outputs are), else with a
// contiguous temporary then copied into `out`: for kernels that write dense memory.
template <class F>
void into_contiguous(Tensor& out, F&& f) {
  if (out.is_contiguous()) return f(out);
  Tensor tmp = empty(out.sizes(), out.dtype(), out.device());
  f(tmp);
  out.copy_(tmp);
}
// A library handle (cuBLAS, cuDNN) of this thread for `device`, made by create() with the device's
// context current on first use; such handles must not be shared between threads.
template <class Handle, class Create>
Handle thread_handle(int device, Create&& create) {
  thread_local std::map<int, Handle> handles;
  auto it = handles.find(device);
  if (it != handles.end()) return it->second;
  cuda::make_current(device);
  Handle h = create();
  handles.emplace(device, h);
  return h;
}
// Runs `op`'s CPU kernel on host copies of the inputs and copies the outputs back into `out`.
void host_fallback(const OpDef& op, const TensorList& inputs, TensorList& out, const Attrs& attrs);

// The text of handwritten.cuh (the tests compile it with NVRTC).
const char* handwritten_cuda_source();
// sum, mean, amax or amin of every element of `x` into `out` in two stages (1024 partial results,
// then one): the CUDA kernels give a single row one block, which leaves a GPU mostly idle for long
// rows. Device-agnostic (tested on the CPU).
void split_full_reduction(const OpDef& op, const Tensor& x, Tensor& out, const Attrs& a);
// The composed kernels by row name (compositions.cpp).
const std::map<std::string, KernelFn>& cuda_compositions();

namespace ops_registration {
void register_cuda_kernels(OpRegistry& r);  // all of the column, in the order above
void register_cuda_fused_kernels(OpRegistry& r);
void register_cuda_compositions(OpRegistry& r);
void register_cuda_blas_kernels(OpRegistry& r);
void register_cuda_cudnn_kernels(OpRegistry& r);
void register_cuda_handwritten_kernels(OpRegistry& r);
}  // namespace ops_registration

}  // namespace kiln
