#pragma once
// Running kernel IR on a GPU: render (fusion/cuda_render.h), compile (fusion/nvrtc.h, cached in
// memory and on disk), load the module into the device once, launch on a stream. The eager CUDA
// ops (kernels/cuda/) and compiled plans (jit) both launch through here.
// Present only in builds with the CUDA toolkit (KILN_HAS_CUDA_TOOLKIT).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/cuda_driver.h"
#include "fusion/cuda_render.h"
#include "fusion/kernel_ir.h"

namespace kiln::fusion {

struct CudaFunction {
  CudaKernel rendered;
  int device = 0;
  void* function = nullptr;               // a CUfunction, valid while `module` lives
  std::shared_ptr<cuda::Module> module;
};

// The kernels rendered into one translation unit, compiled for the device's architecture (one
// NVRTC run on a miss) and loaded into it; modules are kept per (device, source) for the process.
std::vector<std::shared_ptr<const CudaFunction>> load_cuda_kernels(const std::vector<const Kernel*>& kernels, int device,
                                                                   const std::string& name);
// Launches `f` (made from `kernel`) with its parameter values over device buffers (storage base
// addresses, in kernel buffer order) on `s`. A kernel with nothing to do is not launched.
void launch_cuda_kernel(const CudaFunction& f, const Kernel& kernel, const std::vector<int64_t>& params,
                        const uint64_t* buffers, const cuda::Stream& s);

}  // namespace kiln::fusion
