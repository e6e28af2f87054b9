#pragma once
// Native code for kernel IR: the CPU codegen (LLVM IR renderer + ORC LLJIT, fusion/llvm_*.cpp)
// behind a kernel cache, in memory and on disk ($KILN_CACHE_DIR, default ~/.cache/kiln).
// Without LLVM in the build, codegen_available() is false and compile_kernels raises.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fusion/kernel_ir.h"

namespace kiln::fusion {

// Processes dims[0] in [begin, end) (see kernel_ir.h).
using KernelFn = void (*)(char* const* buffers, const int64_t* params, int64_t begin, int64_t end);

struct CompiledKernel {
  KernelFn fn = nullptr;
  std::string key;          // Kernel::key() plus target and versions
  std::string symbol;       // its name in the generated module
  // Filled when CodegenOptions::keep_text is set and the kernel was compiled in this process
  // (a disk-cache hit has no LLVM IR; the dump says so).
  std::string llvm_ir, llvm_ir_optimized;
  bool from_disk = false;   // loaded from the disk cache
  double compile_ms = 0;    // share of the batch's render + optimise + codegen time
};

struct CodegenOptions {
  bool keep_text = false;   // keep the LLVM IR before and after optimisation (dumps, KILN_LOG=code)
  bool use_disk_cache = true;
};

bool codegen_available();
// The host target as the cache key and logs see it: "x86_64 znver3 +avx2 +fma ... llvm 14.0.6 kiln 0.1.0".
std::string target_description();

// Compiles the kernels (cache misses together in one LLVM module: one optimisation and codegen
// run) or takes them from the cache. Thread-safe. Raises kiln::Error when the codegen fails;
// the caller falls back to the interpreter. $KILN_INJECT_CODEGEN_FAILURE=1 makes every
// compile fail (to test the fallback path).
std::vector<std::shared_ptr<const CompiledKernel>> compile_kernels(const std::vector<const Kernel*>& kernels,
                                                                   const CodegenOptions& options = {});

struct CacheStats {
  int64_t memory_hits = 0, disk_hits = 0, compiled = 0, disk_writes = 0, disk_rejected = 0;
};
CacheStats cache_stats();
// Forgets the in-memory kernels (tests use it to make the next compile consult the disk).
void clear_memory_cache();
// The cache directory in use ($KILN_CACHE_DIR, else ~/.cache/kiln; empty when unusable).
std::string cache_dir();

}  // namespace kiln::fusion
