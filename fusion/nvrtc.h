#pragma once
// NVRTC: CUDA C source (fusion/cuda_render.h) -> cubin + PTX for one GPU architecture, behind a
// cache in memory and on disk ($KILN_CACHE_DIR, default ~/.cache/kiln, as the CPU kernels). The
// cache key is the source itself (hashed), the architecture, the options and the NVRTC version.
// libnvrtc is dlopen'ed on first use (docs/decisions.md): a build with the toolkit runs where
// NVRTC is absent, nvrtc_available() is false there and nvrtc_compile raises. Built without the
// toolkit, the same holds everywhere.
// KILN_DUMP_DIR=dir writes <dir>/<name>.sm_<arch>.cu (before compiling) and .ptx (after).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kiln::fusion {

struct NvrtcOptions {
  std::string name = "kiln_kernels";  // the program's name: in errors and dump file names
  bool use_disk_cache = true;
};

struct CudaBinary {
  int arch = 0;             // 90 for sm_90
  std::string cubin;        // the module image for cuModuleLoadData
  std::string ptx;          // the same code as PTX (dumps and inspection)
  std::string log;          // NVRTC's log: empty when the source compiled without a warning
  std::string key;          // NVRTC version, arch, options and source hash
  bool from_disk = false;   // loaded from the disk cache (NVRTC did not run)
  double compile_ms = 0;    // NVRTC time, or the disk read
};

bool nvrtc_available();
// Why nvrtc_available() is false; empty when it is true.
std::string nvrtc_unavailable_reason();
// "13.0". Raises when NVRTC is unavailable.
std::string nvrtc_version();
// Architectures this NVRTC compiles for, as 10 * major + minor (75, 80, 86, 89, 90, ...).
std::vector<int> nvrtc_supported_archs();
// The options every compile uses, for sm_<arch>:
//   --gpu-architecture=sm_90 --std=c++17 -default-device --fmad=false
// (--fmad=false: a * b + c is rounded twice, as in the CPU kernels; docs/cuda.md).
std::vector<std::string> nvrtc_options(int arch);

// Compiles `source` for sm_<arch> (one NVRTC run gives the cubin and its PTX), or takes it from
// the cache. Thread-safe. Raises kiln::Error naming the program and arch with NVRTC's log when
// the source does not compile, and when the arch is not one nvrtc_supported_archs() lists.
// A compile that succeeds with warnings returns them in `log`.
std::shared_ptr<const CudaBinary> nvrtc_compile(const std::string& source, int arch, const NvrtcOptions& options = {});

struct NvrtcCacheStats {
  int64_t memory_hits = 0, disk_hits = 0, compiled = 0, disk_writes = 0, disk_rejected = 0;
};
NvrtcCacheStats nvrtc_cache_stats();
// Forgets the binaries kept in memory (tests use it to make the next compile consult the disk).
void nvrtc_clear_memory_cache();

}  // namespace kiln::fusion
