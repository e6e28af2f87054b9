#pragma once
// CPU memory. Large blocks are cached by size class and reused: glibc returns big blocks to the
// OS on free, so without a cache every fresh 64 MiB temporary page-faults again (2-3x on eager chains).
#include <cstddef>
#include <cstdint>

namespace kiln {

struct CpuAllocatorStats {
  size_t allocated_bytes = 0;   // live blocks handed out
  size_t cached_bytes = 0;      // free blocks kept for reuse
  uint64_t cache_hits = 0;
  uint64_t cache_misses = 0;    // allocations that went to the system
};

void* cpu_alloc(size_t nbytes);            // 64-byte aligned; nbytes may be 0
void cpu_free(void* ptr, size_t nbytes);   // nbytes must be what was asked for
CpuAllocatorStats cpu_allocator_stats();
void cpu_empty_cache();                    // release cached blocks to the system
// Upper bound on cached bytes (default 4 GiB or $KILN_CPU_CACHE_MB).
void set_cpu_cache_limit(size_t bytes);

}  // namespace kiln
