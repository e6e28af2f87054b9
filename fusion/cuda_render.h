#pragma once
// Kernel IR -> CUDA C, compiled by NVRTC (fusion/nvrtc.h). Each kernel becomes one
//   extern "C" __global__ void kiln_<hash of the key>(T0* __restrict__ b0, const T1* __restrict__ b1, ...,
//                                                      long long p0, long long p1, ...)
// taking its buffers in order (typed device pointers; `const` for buffers it only reads: bool is
// one byte, float16/bfloat16 their 16 bits) and then its runtime parameters. docs/cuda.md describes
// the generated code; cuda_render.cpp has its shapes.
// Present only in builds with the CUDA toolkit (KILN_HAS_CUDA_TOOLKIT).
#include <cstdint>
#include <string>
#include <vector>

#include "fusion/kernel_ir.h"

namespace kiln::fusion {

// How the threads of a launch share the work.
enum class CudaStrategy : uint8_t {
  Pointwise,  // grid-stride loop over every point; 128-bit vector fast path when the layout allows
  Thread,     // reduction: one thread per outer point (short rows, or rows strided in memory)
  Warp,       // reduction: one warp per outer point (rows of a few hundred points)
  Block,      // reduction: one block per outer point (long or runtime-sized rows)
};
const char* cuda_strategy_name(CudaStrategy s);

struct CudaKernel {
  std::string name;         // the kernel IR's name (dumps); not in the source
  std::string symbol;       // the extern "C" name; a function of Kernel::key() only
  std::string source;       // the __global__ function; needs cuda_preamble() before it
  CudaStrategy strategy = CudaStrategy::Pointwise;
  int vector_width = 1;     // lanes of the vector fast path (Pointwise); 1: scalar code only
  int block_size = 256;     // threads per block to launch with (also its __launch_bounds__)
};

// Device helpers the kernels use (vector type, float16/bfloat16 conversions, saturating
// float-to-integer casts, wrapping integer arithmetic, warp reductions). No #include: NVRTC
// needs no include path.
const std::string& cuda_preamble();

// Renders one kernel. The kernel must verify(); raises kiln::InternalError for a construct the
// renderer cannot express.
CudaKernel render_cuda(const Kernel& kernel);

// One translation unit: the preamble, then each distinct symbol once.
std::string cuda_translation_unit(const std::vector<CudaKernel>& kernels);

// Grid and block of a launch. grid == 0: the kernel has nothing to do (launching it is an error).
struct CudaLaunch {
  uint32_t grid = 0, block = 0;
};
// `params`: the kernel's parameter values (Kernel::param_values() for the sizes it was built
// with); `multiprocessors`: of the device (grid-stride loops cover what a capped grid leaves).
CudaLaunch cuda_launch_config(const Kernel& kernel, const CudaKernel& rendered, const std::vector<int64_t>& params,
                              int multiprocessors);

}  // namespace kiln::fusion
