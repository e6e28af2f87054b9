#pragma once
// kiln's CUDA API in one header: devices and streams (core/cuda_driver.h), memory
// (core/cuda_allocator.h), and the settings and counters of the CUDA kernels. docs/cuda.md.
#include <cstdint>
#include <map>
#include <string>

#include "core/cuda_allocator.h"
#include "core/cuda_driver.h"

namespace kiln {

// float32 matmuls on CUDA: "highest" (the default: full float32 arithmetic), "high" or "medium"
// (TF32 tensor cores allowed, ~10 mantissa bits per product, as torch.set_float32_matmul_precision).
// Raises kiln::Error for any other string. The CPU kernels always use float32.
void set_float32_matmul_precision(const std::string& precision);
std::string get_float32_matmul_precision();

namespace cuda {
// Ops that ran on CUDA tensors through the host fallback (their CPU kernel on host copies, results
// copied back), by op name, since the start or the last reset. Empty when every op had a CUDA kernel.
std::map<std::string, int64_t> host_fallback_counts();
void reset_host_fallback_counts();
}  // namespace cuda

namespace detail {
void count_host_fallback(const std::string& op);
bool tf32_matmul_allowed();
}  // namespace detail

}  // namespace kiln
