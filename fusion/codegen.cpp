#include "fusion/codegen.h"

#include <link.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <mutex>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "core/logging.h"
#include "core/profiler.h"
#if KILN_HAVE_LLVM
#include "fusion/llvm_jit.h"
#endif

#ifndef KILN_VERSION_STRING
#error "KILN_VERSION_STRING (the project version) must be defined: the kernel cache key includes it"
#endif

namespace kiln::fusion {

std::string cache_dir() {
  std::string dir;
  if (const char* env = std::getenv("KILN_CACHE_DIR"); env && *env)
    dir = env;
  else if (const char* home = std::getenv("HOME"); home && *home)
    dir = std::string(home) + "/.cache/kiln";
  else
    return "";
  // Unusable (cannot be created, not a directory, not writable): no disk cache, never an error.
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (!std::filesystem::is_directory(dir, ec) || ::access(dir.c_str(), W_OK | X_OK) != 0) return "";
  return dir;
}

namespace {

// The GNU build ID of the library holding this code (empty when it has none): part of the
// target description, so that a rebuilt kiln (a changed renderer or math library, same version
// number) never loads objects another build left in the disk cache.
std::string library_build_id() {
  struct Search {
    uintptr_t addr;
    std::string id;
  } search{reinterpret_cast<uintptr_t>(&library_build_id), {}};
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) -> int {
        auto* s = static_cast<Search*>(data);
        bool contains = false;
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const ElfW(Phdr)& ph = info->dlpi_phdr[i];
          const uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
          if (ph.p_type == PT_LOAD && s->addr >= lo && s->addr < lo + ph.p_memsz) contains = true;
        }
        if (!contains) return 0;
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const ElfW(Phdr)& ph = info->dlpi_phdr[i];
          if (ph.p_type != PT_NOTE) continue;
          const char* p = reinterpret_cast<const char*>(info->dlpi_addr + ph.p_vaddr);
          const char* end = p + ph.p_memsz;
          while (p + sizeof(ElfW(Nhdr)) <= end) {
            const auto* note = reinterpret_cast<const ElfW(Nhdr)*>(p);
            const char* name = p + sizeof(ElfW(Nhdr));
            const char* desc = name + ((note->n_namesz + 3) & ~3u);
            if (desc + note->n_descsz > end) break;
            if (note->n_type == NT_GNU_BUILD_ID && note->n_namesz == 4 && std::memcmp(name, "GNU", 4) == 0) {
              static const char* const kDigits = "0123456789abcdef";
              for (size_t b = 0; b < note->n_descsz; ++b) {
                const auto byte = static_cast<unsigned char>(desc[b]);
                s->id += kDigits[byte >> 4];
                s->id += kDigits[byte & 15];
              }
              return 1;
            }
            p = desc + ((note->n_descsz + 3) & ~3u);
          }
        }
        return 1;
      },
      &search);
  return search.id;
}

std::string kiln_version_description() {
  // Never destroyed: kernel keys may still be built by the background compiler at exit.
  static const std::string& text = *new std::string([] {
    std::string build = library_build_id();
    return std::string("kiln " KILN_VERSION_STRING) + (build.empty() ? "" : " build " + build.substr(0, 16));
  }());
  return text;
}

bool failure_injected() {
  const char* v = std::getenv("KILN_INJECT_CODEGEN_FAILURE");
  return v && *v && std::string_view(v) != "0";
}

using KernelPtr = std::shared_ptr<const CompiledKernel>;

struct CacheState {
  std::mutex mu;
  std::unordered_map<std::string, KernelPtr> kernels;  // by full key
  // Keys some thread is compiling right now: others wait for that result instead of compiling
  // the same kernel again.
  std::unordered_map<std::string, std::shared_future<KernelPtr>> in_flight;
  CacheStats stats;
};

CacheState& state() {
  static CacheState* s = new CacheState();  // leaked: kernels may run during static destruction
  return *s;
}

}  // namespace

CacheStats cache_stats() {
  CacheState& st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  return st.stats;
}

void clear_memory_cache() {
  CacheState& st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  st.kernels.clear();
}

#if KILN_HAVE_LLVM

bool codegen_available() { return true; }

std::string target_description() { return llvm_jit::host_description() + " " + kiln_version_description(); }

namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Compiles (or loads from the disk cache) the kernels whose full keys are `keys`, all in one
// module / one object file.
std::vector<KernelPtr> build(const std::vector<const Kernel*>& kernels, const std::vector<std::string>& keys,
                             const CodegenOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  const size_t n = kernels.size();
  // Symbols derive from the keys, not the kernels' names: an object from the disk cache must be
  // usable by a process that named the same kernels differently.
  std::vector<std::string> symbols;
  std::unordered_set<std::string> used;
  std::string keys_text;
  for (size_t i = 0; i < n; ++i) {
    std::string sym = "kiln_" + hex64(hash64(keys[i]));
    if (!used.insert(sym).second) sym += "_" + std::to_string(i);  // a 64-bit collision: still unique
    symbols.push_back(sym);
    keys_text += keys[i];
    keys_text += '\n';
  }
  const std::string dir = options.use_disk_cache ? cache_dir() : std::string();
  const std::string path = dir.empty() ? std::string()
                                       : dir + "/" + hex64(hash64(keys_text, 1)) +
                                             hex64(hash64(keys_text, 2)) + ".kobj";
  auto finish = [&](const std::vector<uint64_t>& addresses, bool from_disk, const llvm_jit::ModuleText* text) {
    const double ms = ms_since(t0);
    std::vector<KernelPtr> out;
    for (size_t i = 0; i < n; ++i) {
      auto k = std::make_shared<CompiledKernel>();
      k->fn = reinterpret_cast<KernelFn>(static_cast<uintptr_t>(addresses[i]));
      k->key = keys[i];
      k->symbol = symbols[i];
      if (text) {
        k->llvm_ir = text->before[i];
        k->llvm_ir_optimized = text->after[i];
      }
      k->from_disk = from_disk;
      k->compile_ms = ms / static_cast<double>(n);
      out.push_back(std::move(k));
    }
    return out;
  };

  bool rejected = false;
  if (!path.empty()) {
    profiler::Scope load_scope("cache load", profiler::Category::Jit);
    if (profiler::Event* e = load_scope.event()) e->detail = path;
    std::string object;
    switch (llvm_jit::read_cache_file(path, keys_text, &object)) {
      case llvm_jit::DiskRead::Hit:
        try {
          std::vector<uint64_t> addresses = llvm_jit::load_object(object, symbols);
          {
            std::lock_guard<std::mutex> lock(state().mu);
            state().stats.disk_hits += static_cast<int64_t>(n);
          }
          KILN_LOG(perf, "codegen: {} kernel(s) loaded from the disk cache in {:.2f} ms ({})", n, ms_since(t0), path);
          return finish(addresses, true, nullptr);
        } catch (const Error& e) {
          KILN_LOG(perf, "codegen: cache file {} does not load ({}); recompiling", path, e.what());
          rejected = true;
        }
        break;
      case llvm_jit::DiskRead::Rejected:
        KILN_LOG(perf, "codegen: cache file {} is corrupt, truncated or for other kernels; recompiling", path);
        rejected = true;
        break;
      case llvm_jit::DiskRead::Missing: break;
    }
  }
  if (rejected) {
    std::lock_guard<std::mutex> lock(state().mu);
    ++state().stats.disk_rejected;
  }

  llvm_jit::ModuleText text;
  llvm_jit::CompileTimings phases;
  const std::string object = llvm_jit::compile_object(kernels, symbols, options.keep_text ? &text : nullptr, &phases);
  const auto t_link = std::chrono::steady_clock::now();
  profiler::Scope link_scope("link", profiler::Category::Jit);
  std::vector<uint64_t> addresses = llvm_jit::load_object(object, symbols);
  link_scope.close();
  const double link_ms = ms_since(t_link);
  const double compile_ms = ms_since(t0);
  // Written only once the object has linked, so the cache never holds one that does not.
  const bool wrote = !path.empty() && llvm_jit::write_cache_file(path, keys_text, object);
  {
    std::lock_guard<std::mutex> lock(state().mu);
    state().stats.compiled += static_cast<int64_t>(n);
    state().stats.disk_writes += wrote ? 1 : 0;
  }
  KILN_LOG(perf,
           "codegen: {} kernel(s) compiled in {:.2f} ms (render {:.2f}, optimise {:.2f}, codegen {:.2f}, link {:.2f}; {} bytes of "
           "object{})",
           n, compile_ms, phases.render_ms, phases.optimise_ms, phases.codegen_ms, link_ms, object.size(),
           wrote ? ", written to the disk cache" : "");
  return finish(addresses, false, options.keep_text ? &text : nullptr);
}

}  // namespace

std::vector<std::shared_ptr<const CompiledKernel>> compile_kernels(const std::vector<const Kernel*>& kernels,
                                                                   const CodegenOptions& options) {
  KILN_CHECK(!failure_injected(), "[codegen] failure injected by KILN_INJECT_CODEGEN_FAILURE=",
             std::getenv("KILN_INJECT_CODEGEN_FAILURE"), " (the graph runs on the interpreter instead)");
  const std::string target = target_description();
  const size_t n = kernels.size();
  std::vector<std::string> keys(n);
  for (size_t i = 0; i < n; ++i) {
    KILN_INTERNAL_ASSERT(kernels[i] != nullptr, "compile_kernels: kernel ", i, " is null");
    keys[i] = kernels[i]->key() + "|target " + target;
  }

  CacheState& st = state();
  std::vector<KernelPtr> out(n);
  std::vector<size_t> misses;
  std::vector<std::promise<KernelPtr>> promises;
  std::vector<std::pair<size_t, std::shared_future<KernelPtr>>> waits;
  {
    std::lock_guard<std::mutex> lock(st.mu);
    for (size_t i = 0; i < n; ++i) {
      if (auto it = st.kernels.find(keys[i]); it != st.kernels.end()) {
        out[i] = it->second;
        ++st.stats.memory_hits;
      } else if (auto f = st.in_flight.find(keys[i]); f != st.in_flight.end()) {
        waits.emplace_back(i, f->second);  // another thread's compile, or a duplicate in this batch
      } else {
        promises.emplace_back();
        st.in_flight.emplace(keys[i], promises.back().get_future().share());
        misses.push_back(i);
      }
    }
  }

  if (!misses.empty()) {
    std::vector<const Kernel*> todo;
    std::vector<std::string> todo_keys;
    for (size_t i : misses) {
      todo.push_back(kernels[i]);
      todo_keys.push_back(keys[i]);
    }
    std::vector<KernelPtr> built;
    try {
      built = build(todo, todo_keys, options);
    } catch (...) {
      std::lock_guard<std::mutex> lock(st.mu);
      for (size_t j = 0; j < misses.size(); ++j) {
        st.in_flight.erase(keys[misses[j]]);
        promises[j].set_exception(std::current_exception());
      }
      throw;
    }
    std::lock_guard<std::mutex> lock(st.mu);
    for (size_t j = 0; j < misses.size(); ++j) {
      st.kernels[keys[misses[j]]] = built[j];
      st.in_flight.erase(keys[misses[j]]);
      promises[j].set_value(built[j]);
      out[misses[j]] = built[j];
    }
  }
  for (auto& [i, future] : waits) {
    out[i] = future.get();  // rethrows the compiling thread's error
    std::lock_guard<std::mutex> lock(st.mu);
    ++st.stats.memory_hits;
  }
  return out;
}

#else  // !KILN_HAVE_LLVM

bool codegen_available() { return false; }

std::string target_description() { return "no codegen (built without LLVM) " + kiln_version_description(); }

std::vector<std::shared_ptr<const CompiledKernel>> compile_kernels(const std::vector<const Kernel*>&, const CodegenOptions&) {
  KILN_CHECK(!failure_injected(), "[codegen] failure injected by KILN_INJECT_CODEGEN_FAILURE=",
             std::getenv("KILN_INJECT_CODEGEN_FAILURE"), " (the graph runs on the interpreter instead)");
  KILN_FAIL("[codegen] kiln was built without LLVM 14-19: no native CPU codegen (graphs run on the interpreter)");
}

#endif

}  // namespace kiln::fusion
