#include "fusion/nvrtc.h"
#include "fusion/cache_file.h"
#include "fusion/hash.h"

#include "core/error.h"

namespace kiln::fusion {

std::vector<std::string> nvrtc_options(int arch) {
  return {"--gpu-architecture=sm_" + std::to_string(arch), "--std=c++17", "-default-device", "--fmad=false"};
}

}  // namespace kiln::fusion

#if KILN_HAS_CUDA_TOOLKIT

#include <dlfcn.h>
#include <nvrtc.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <string_view>
#include <unordered_map>

#include "core/logging.h"
#include "core/profiler.h"
#include "fusion/codegen.h"

#ifndef KILN_NVRTC_SONAME
#error "KILN_NVRTC_SONAME (libnvrtc.so.<toolkit major>) must be defined by the build"
#endif
#ifndef KILN_CUDA_LIBRARY_DIR
#define KILN_CUDA_LIBRARY_DIR ""
#endif

namespace kiln::fusion {
namespace {

#define KILN_NVRTC_ENTRY_POINTS(X)                                                                  \
  X(nvrtcGetErrorString) X(nvrtcVersion) X(nvrtcGetNumSupportedArchs) X(nvrtcGetSupportedArchs)    \
  X(nvrtcCreateProgram) X(nvrtcDestroyProgram) X(nvrtcCompileProgram) X(nvrtcGetProgramLogSize)    \
  X(nvrtcGetProgramLog) X(nvrtcGetPTXSize) X(nvrtcGetPTX) X(nvrtcGetCUBINSize) X(nvrtcGetCUBIN)

struct Nvrtc {
#define KILN_NVRTC_MEMBER(fn) decltype(&::fn) fn##_ = nullptr;
  KILN_NVRTC_ENTRY_POINTS(KILN_NVRTC_MEMBER)
#undef KILN_NVRTC_MEMBER
  std::string error;    // why NVRTC is unusable; empty when it loaded
  std::string version;  // "13.0"
  std::vector<int> archs;
};

const Nvrtc& nvrtc() {
  static const Nvrtc* lib = [] {
    auto* n = new Nvrtc();  // leaked with the library handle: compiled code may outlive statics
    auto dlerror_text = [] {
      const char* e = ::dlerror();
      return std::string(e ? e : "unknown dlopen error");
    };
    void* h = ::dlopen(KILN_NVRTC_SONAME, RTLD_NOW | RTLD_LOCAL);
    std::string why = h ? "" : dlerror_text();
    // The toolkit's own directory, for machines whose loader path lacks it (no ldconfig entry).
    if (!h && *KILN_CUDA_LIBRARY_DIR) {
      const std::string path = std::string(KILN_CUDA_LIBRARY_DIR) + "/" + KILN_NVRTC_SONAME;
      h = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (!h) why += "; " + dlerror_text();
    }
    if (!h) {
      n->error = std::string(KILN_NVRTC_SONAME) + " could not be loaded: " + why;
      return n;
    }
#define KILN_NVRTC_RESOLVE(fn)                                                   \
  n->fn##_ = reinterpret_cast<decltype(&::fn)>(::dlsym(h, #fn));                 \
  if (!n->fn##_ && n->error.empty()) n->error = std::string(KILN_NVRTC_SONAME) + " lacks " #fn;
    KILN_NVRTC_ENTRY_POINTS(KILN_NVRTC_RESOLVE)
#undef KILN_NVRTC_RESOLVE
    if (!n->error.empty()) return n;
    int major = 0, minor = 0, count = 0;
    if (n->nvrtcVersion_(&major, &minor) != NVRTC_SUCCESS || n->nvrtcGetNumSupportedArchs_(&count) != NVRTC_SUCCESS) {
      n->error = std::string(KILN_NVRTC_SONAME) + " does not answer nvrtcVersion / nvrtcGetNumSupportedArchs";
      return n;
    }
    n->version = std::to_string(major) + "." + std::to_string(minor);
    n->archs.resize(static_cast<size_t>(count));
    if (count > 0 && n->nvrtcGetSupportedArchs_(n->archs.data()) != NVRTC_SUCCESS) n->archs.clear();
    return n;
  }();
  return *lib;
}

const Nvrtc& usable() {
  const Nvrtc& n = nvrtc();
  KILN_CHECK(n.error.empty(), "[nvrtc] NVRTC is not available: ", n.error);
  return n;
}

// ---- disk cache files ------------------------------------------------------------------------
// Header, then the key text, the cubin, the PTX and the log. The key text holds the whole source,
// so a file is only ever taken for exactly the source it was compiled from.
constexpr char kMagic[8] = {'K', 'I', 'L', 'N', 'C', 'U', 'B', '\0'};
constexpr uint32_t kFormatVersion = 1;
constexpr uint64_t kChecksumSeed = 0x6375626b696c6eull;
constexpr uint64_t kMaxPart = uint64_t(1) << 31;

struct FileHeader {
  char magic[8];
  uint32_t version;
  uint32_t header_size;
  uint64_t key_size, cubin_size, ptx_size, log_size;
  uint64_t checksum;  // of everything after the header
};

enum class DiskRead { Missing, Rejected, Hit };

DiskRead read_cache_file(const std::string& path, const std::string& key, CudaBinary* out) {
  std::string data;
  const FileRead read = read_whole_file(path, sizeof(FileHeader) + 4 * kMaxPart, &data);
  if (read == FileRead::Missing) return DiskRead::Missing;
  if (read != FileRead::Ok || data.size() < sizeof(FileHeader)) return DiskRead::Rejected;
  FileHeader h;
  std::memcpy(&h, data.data(), sizeof h);
  if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0 || h.version != kFormatVersion || h.header_size != sizeof(FileHeader) ||
      h.key_size != key.size() || h.cubin_size > kMaxPart || h.ptx_size > kMaxPart || h.log_size > kMaxPart ||
      data.size() != sizeof(FileHeader) + h.key_size + h.cubin_size + h.ptx_size + h.log_size)
    return DiskRead::Rejected;
  std::string_view body = std::string_view(data).substr(sizeof(FileHeader));
  if (hash64(body, kChecksumSeed) != h.checksum || body.substr(0, key.size()) != key) return DiskRead::Rejected;
  size_t at = key.size();
  out->cubin.assign(body.substr(at, h.cubin_size));
  at += h.cubin_size;
  out->ptx.assign(body.substr(at, h.ptx_size));
  at += h.ptx_size;
  out->log.assign(body.substr(at, h.log_size));
  return out->cubin.empty() ? DiskRead::Rejected : DiskRead::Hit;
}

bool write_cache_file(const std::string& path, const std::string& key, const CudaBinary& b) {
  FileHeader h{};
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.version = kFormatVersion;
  h.header_size = sizeof(FileHeader);
  h.key_size = key.size();
  h.cubin_size = b.cubin.size();
  h.ptx_size = b.ptx.size();
  h.log_size = b.log.size();
  const std::string body = key + b.cubin + b.ptx + b.log;
  h.checksum = hash64(body, kChecksumSeed);
  return write_file_atomically(path, {std::string_view(reinterpret_cast<const char*>(&h), sizeof h), body});
}

// ---- the cache -------------------------------------------------------------------------------
struct CacheState {
  std::mutex mu;
  std::unordered_map<std::string, std::shared_ptr<const CudaBinary>> binaries;  // by key
  NvrtcCacheStats stats;
};

CacheState& state() {
  static CacheState* s = new CacheState();
  return *s;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

void dump(const std::string& name, int arch, const char* ext, const std::string& text) {
  const char* dir = std::getenv("KILN_DUMP_DIR");
  if (!dir || !*dir) return;
  const std::string path = std::string(dir) + "/" + name + ".sm_" + std::to_string(arch) + ext;
  std::ofstream f(path, std::ios::binary);
  f << text;
  if (!f) logging::logger().warn("[nvrtc] could not write the dump {}", path);
}

// One NVRTC run; raises with the log when the source does not compile.
void compile(const Nvrtc& n, const std::string& source, int arch, const std::string& name, CudaBinary* out) {
  nvrtcProgram prog = nullptr;
  const std::string file = name + ".cu";
  nvrtcResult r = n.nvrtcCreateProgram_(&prog, source.c_str(), file.c_str(), 0, nullptr, nullptr);
  KILN_CHECK(r == NVRTC_SUCCESS, "[nvrtc] nvrtcCreateProgram(", name, ") failed: ", n.nvrtcGetErrorString_(r));
  struct Destroy {
    const Nvrtc& n;
    nvrtcProgram* p;
    ~Destroy() { n.nvrtcDestroyProgram_(p); }
  } destroy{n, &prog};
  const std::vector<std::string> opts = nvrtc_options(arch);
  std::vector<const char*> argv;
  for (const std::string& o : opts) argv.push_back(o.c_str());
  const nvrtcResult compiled = n.nvrtcCompileProgram_(prog, static_cast<int>(argv.size()), argv.data());
  size_t size = 0;
  if (n.nvrtcGetProgramLogSize_(prog, &size) == NVRTC_SUCCESS && size > 1) {
    out->log.resize(size);
    if (n.nvrtcGetProgramLog_(prog, out->log.data()) != NVRTC_SUCCESS) out->log.clear();
    while (!out->log.empty() && (out->log.back() == '\0' || out->log.back() == '\n')) out->log.pop_back();
  }
  KILN_CHECK(compiled == NVRTC_SUCCESS, "[nvrtc] compiling ", name, " for sm_", arch, " failed (",
             n.nvrtcGetErrorString_(compiled), "):\n", out->log);
  r = n.nvrtcGetCUBINSize_(prog, &size);
  KILN_CHECK(r == NVRTC_SUCCESS && size > 0, "[nvrtc] ", name, ": no cubin for sm_", arch, " (", n.nvrtcGetErrorString_(r), ")");
  out->cubin.resize(size);
  r = n.nvrtcGetCUBIN_(prog, out->cubin.data());
  KILN_CHECK(r == NVRTC_SUCCESS, "[nvrtc] nvrtcGetCUBIN(", name, ") failed: ", n.nvrtcGetErrorString_(r));
  r = n.nvrtcGetPTXSize_(prog, &size);
  KILN_CHECK(r == NVRTC_SUCCESS, "[nvrtc] nvrtcGetPTXSize(", name, ") failed: ", n.nvrtcGetErrorString_(r));
  out->ptx.resize(size);
  r = n.nvrtcGetPTX_(prog, out->ptx.data());
  KILN_CHECK(r == NVRTC_SUCCESS, "[nvrtc] nvrtcGetPTX(", name, ") failed: ", n.nvrtcGetErrorString_(r));
  while (!out->ptx.empty() && out->ptx.back() == '\0') out->ptx.pop_back();
}

}  // namespace

bool nvrtc_available() { return nvrtc().error.empty(); }

std::string nvrtc_unavailable_reason() { return nvrtc().error; }

std::string nvrtc_version() { return usable().version; }

std::vector<int> nvrtc_supported_archs() { return usable().archs; }

std::shared_ptr<const CudaBinary> nvrtc_compile(const std::string& source, int arch, const NvrtcOptions& options) {
  const Nvrtc& n = usable();
  bool supported = false;
  for (int a : n.archs) supported |= a == arch;
  KILN_CHECK(supported, "[nvrtc] sm_", arch, " is not an architecture NVRTC ", n.version, " compiles for (it supports ",
             n.archs, ")");
  std::string options_text;
  for (const std::string& o : nvrtc_options(arch)) options_text += o + " ";
  // The cache key; the disk file also holds the source, which it must match byte for byte.
  const std::string key = "nvrtc " + n.version + " | sm_" + std::to_string(arch) + " | " + options_text + "| " +
                          hex64(hash64(source, 1)) + hex64(hash64(source, 2)) + " " + std::to_string(source.size());
  dump(options.name, arch, ".cu", source);
  CacheState& st = state();
  {
    std::lock_guard<std::mutex> lock(st.mu);
    if (auto it = st.binaries.find(key); it != st.binaries.end()) {
      ++st.stats.memory_hits;
      dump(options.name, arch, ".ptx", it->second->ptx);
      return it->second;
    }
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto bin = std::make_shared<CudaBinary>();
  bin->arch = arch;
  bin->key = key;
  const std::string dir = options.use_disk_cache ? cache_dir() : std::string();
  const std::string path = dir.empty() ? std::string() : dir + "/" + hex64(hash64(key, 3)) + hex64(hash64(source, 4)) + ".kcubin";
  const std::string file_key = key + "\n" + source;
  bool hit = false, rejected = false;
  if (!path.empty()) {
    profiler::Scope load_scope("cache load", profiler::Category::Jit);
    if (profiler::Event* e = load_scope.event()) e->detail = path;
    switch (read_cache_file(path, file_key, bin.get())) {
      case DiskRead::Hit: hit = true; break;
      case DiskRead::Rejected:
        rejected = true;
        KILN_LOG(perf, "nvrtc: cache file {} is corrupt, truncated or for another source; recompiling", path);
        bin->cubin.clear();
        bin->ptx.clear();
        bin->log.clear();
        break;
      case DiskRead::Missing: break;
    }
  }
  bool wrote = false;
  if (hit) {
    bin->from_disk = true;
  } else {
    profiler::Scope compile_scope("nvrtc compile", profiler::Category::Jit);
    if (profiler::Event* e = compile_scope.event()) e->detail = options.name + " sm_" + std::to_string(arch);
    compile(n, source, arch, options.name, bin.get());
    wrote = !path.empty() && write_cache_file(path, file_key, *bin);
  }
  bin->compile_ms = ms_since(t0);
  KILN_LOG(perf, "nvrtc: {} for sm_{} {} in {:.2f} ms ({} bytes of cubin{})", options.name, arch,
           hit ? "loaded from the disk cache" : "compiled", bin->compile_ms, bin->cubin.size(),
           wrote ? ", written to the disk cache" : "");
  if (!bin->log.empty()) KILN_LOG(code, "nvrtc: {} for sm_{}: {}", options.name, arch, bin->log);
  dump(options.name, arch, ".ptx", bin->ptx);
  std::lock_guard<std::mutex> lock(st.mu);
  st.stats.disk_hits += hit ? 1 : 0;
  st.stats.compiled += hit ? 0 : 1;
  st.stats.disk_writes += wrote ? 1 : 0;
  st.stats.disk_rejected += rejected ? 1 : 0;
  auto [it, inserted] = st.binaries.emplace(key, std::move(bin));  // a concurrent twin may have won: keep one
  return it->second;
}

NvrtcCacheStats nvrtc_cache_stats() {
  std::lock_guard<std::mutex> lock(state().mu);
  return state().stats;
}

void nvrtc_clear_memory_cache() {
  std::lock_guard<std::mutex> lock(state().mu);
  state().binaries.clear();
}

}  // namespace kiln::fusion

#else  // !KILN_HAS_CUDA_TOOLKIT

namespace kiln::fusion {
namespace {
constexpr const char* kNoToolkit = "kiln was built without the CUDA toolkit (KILN_WITH_CUDA=OFF, or none found)";
}

bool nvrtc_available() { return false; }
std::string nvrtc_unavailable_reason() { return kNoToolkit; }
std::string nvrtc_version() { KILN_FAIL("[nvrtc] NVRTC is not available: ", kNoToolkit); }
std::vector<int> nvrtc_supported_archs() { KILN_FAIL("[nvrtc] NVRTC is not available: ", kNoToolkit); }
std::shared_ptr<const CudaBinary> nvrtc_compile(const std::string&, int, const NvrtcOptions&) {
  KILN_FAIL("[nvrtc] NVRTC is not available: ", kNoToolkit);
}
NvrtcCacheStats nvrtc_cache_stats() { return {}; }
void nvrtc_clear_memory_cache() {}

}  // namespace kiln::fusion

#endif
