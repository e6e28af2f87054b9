#include "core/allocator.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <new>

#include "core/error.h"
#include "core/profiler.h"

namespace kiln {
namespace {

constexpr size_t kAlign = 64;
constexpr size_t kCacheMin = 256 * 1024;  // below this glibc's own bins are fast enough

// Size classes for cached blocks: 4 steps per power of two, so a reused block wastes < 25%.
size_t size_class(size_t n) {
  if (n < kCacheMin) return (n + kAlign - 1) / kAlign * kAlign;
  size_t p = 1;
  while (p * 2 <= n) p *= 2;
  size_t step = p / 4;
  return (n + step - 1) / step * step;
}

struct Cache {
  std::mutex mu;
  std::multimap<size_t, void*> free_blocks;  // class size -> block
  CpuAllocatorStats stats;
  size_t limit = 0;
  Cache() {
    limit = size_t(4) << 30;
    if (const char* env = std::getenv("KILN_CPU_CACHE_MB")) limit = size_t(std::strtoull(env, nullptr, 10)) << 20;
  }
  ~Cache() {
    for (auto& [sz, p] : free_blocks) std::free(p);
  }
};

Cache& cache() {
  static Cache* c = new Cache();  // leaked on purpose: tensors may die during static destruction
  return *c;
}

void* system_alloc(size_t cls) {
  void* p = std::aligned_alloc(kAlign, cls == 0 ? kAlign : cls);
  KILN_CHECK(p != nullptr, "[alloc] out of memory allocating ", cls, " bytes on cpu");
  return p;
}

// Returns the block; `how` says where it came from: "small" (uncached size), "cache hit" or
// "cache miss" (a cacheable size the system provided).
void* cached_alloc(size_t cls, const char** how) {
  Cache& c = cache();
  *how = "small";
  if (cls >= kCacheMin) {
    std::lock_guard<std::mutex> lock(c.mu);
    auto it = c.free_blocks.find(cls);
    if (it != c.free_blocks.end()) {
      void* p = it->second;
      c.free_blocks.erase(it);
      c.stats.cached_bytes -= cls;
      c.stats.allocated_bytes += cls;
      ++c.stats.cache_hits;
      *how = "cache hit";
      return p;
    }
    ++c.stats.cache_misses;
    c.stats.allocated_bytes += cls;
    *how = "cache miss";
  }
  return system_alloc(cls);
}

// Returns how the block went: "small" (uncached size), "to the cache" or "to the system".
const char* cached_free(void* ptr, size_t cls) {
  if (cls < kCacheMin) {
    std::free(ptr);
    return "small";
  }
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mu);
    c.stats.allocated_bytes -= cls;
    if (c.stats.cached_bytes + cls <= c.limit) {
      c.free_blocks.emplace(cls, ptr);
      c.stats.cached_bytes += cls;
      return "to the cache";
    }
  }
  std::free(ptr);
  return "to the system";
}

}  // namespace

void* cpu_alloc(size_t nbytes) {
  const char* how;
  void* p = cached_alloc(size_class(nbytes), &how);
  if (profiler::enabled()) [[unlikely]]
    profiler::detail::record_alloc(nbytes, how);
  return p;
}

void cpu_free(void* ptr, size_t nbytes) {
  if (!ptr) return;
  const char* how = cached_free(ptr, size_class(nbytes));
  if (profiler::enabled()) [[unlikely]]
    profiler::detail::record_free(nbytes, how);
}

CpuAllocatorStats cpu_allocator_stats() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.stats;
}

void cpu_empty_cache() {
  Cache& c = cache();
  std::multimap<size_t, void*> blocks;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    blocks.swap(c.free_blocks);
    c.stats.cached_bytes = 0;
  }
  for (auto& [sz, p] : blocks) std::free(p);
}

void set_cpu_cache_limit(size_t bytes) {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.limit = bytes;
}

}  // namespace kiln
