#pragma once
// A caching block allocator over a raw backend (cuMemAlloc for device memory, cuMemHostAlloc for
// pinned host memory). Raw allocations cost tens of microseconds and synchronise the device, so
// freed blocks are kept by size class and handed out again, as PyTorch's CUDA allocator does.
//
// Blocks belong to the stream they were allocated on: a block freed on stream S is reused only
// for S, where work runs in issue order, so a kernel still reading the block on S finishes before
// the next user's kernel starts. A block also used on other streams (record_stream) returns to the
// pool only once events recorded on those streams at free time have completed.
//
// Sizes: below 1 MiB rounded up to 512 bytes, from there to 2 MiB; a cached block serves a request
// of at least half its size. When the backend is out of memory the allocator returns what it
// caches to the backend and tries once more, then raises kiln::Error with the sizes.
//
// Device-agnostic and thread-safe; tests drive it with a fake backend (tests/cuda_runtime_test.cpp).
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace kiln::detail {

struct BlockBackend {
  std::function<uint64_t(size_t)> alloc;  // 0 when out of memory; other failures raise
  std::function<void(uint64_t)> free;
  // Stream awareness: record an event on a stream now, ask whether it completed, destroy it.
  std::function<void*(uint64_t stream)> record_event;
  std::function<bool(void*)> event_done;
  std::function<void(void*)> destroy_event;
  // Appended to the out-of-memory message ("the device has 80.0 GiB, 0.2 GiB free").
  std::function<std::string()> describe;
};

struct CachingAllocatorStats {
  size_t allocated_bytes = 0;       // live blocks (rounded sizes)
  size_t requested_bytes = 0;       // what the live allocations asked for
  size_t reserved_bytes = 0;        // live + cached + pending: all memory taken from the backend
  size_t cached_bytes = 0;          // free blocks ready for reuse
  size_t peak_allocated_bytes = 0;  // since construction or reset_peak()
  size_t peak_reserved_bytes = 0;
  int64_t allocations = 0, frees = 0;
  int64_t cache_hits = 0, cache_misses = 0;  // misses went to the backend
  int64_t backend_frees = 0;        // blocks returned to the backend (empty_cache, out-of-memory retries)
  int64_t oom_retries = 0;          // backend out of memory, cache released, tried again
  int64_t ooms = 0;                 // raised out-of-memory errors
  int64_t pending_blocks = 0;       // freed, waiting for other streams' events
};

class CachingAllocator {
 public:
  // `what` names the memory in errors: "cuda:0", "pinned host memory".
  CachingAllocator(std::string what, BlockBackend backend);
  ~CachingAllocator();  // returns every cached block (live blocks are the owners' to free)
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // A block of at least `nbytes` for `stream`; nbytes 0 gets a minimal block (a distinct address).
  uint64_t allocate(size_t nbytes, uint64_t stream);
  // `ptr` must be a live block's address; raises kiln::Error naming it otherwise.
  void free(uint64_t ptr);
  // `ptr` (an address inside a live block) is also used by work on `stream`.
  void record_stream(uint64_t ptr, uint64_t stream);
  // The live block containing `address`: {base, size}, or {0, 0} when none does.
  std::pair<uint64_t, size_t> find(uint64_t address) const;
  // Returns cached free blocks to the backend (live ones stay). Pending blocks whose events have
  // completed are cached first.
  void empty_cache();
  // Blocks cached for `stream` are never returned to the backend (empty_cache, out-of-memory
  // retries) while retained: a CUDA graph captured on that stream still addresses them.
  void retain_stream(uint64_t stream, bool retain);
  CachingAllocatorStats stats() const;
  void reset_peak();
  static size_t round_size(size_t nbytes);

 private:
  struct Block {
    size_t size = 0;       // rounded
    size_t requested = 0;
    uint64_t stream = 0;
    std::vector<uint64_t> other_streams;
  };
  struct Pending {
    uint64_t ptr;
    Block block;
    std::vector<void*> events;
  };
  void collect_pending_locked();
  void release_cached_locked();
  uint64_t backend_alloc_locked(size_t size, size_t requested);

  std::string what_;
  BlockBackend backend_;
  mutable std::mutex mu_;
  std::map<uint64_t, Block> live_;                            // by address (find() of inner addresses)
  std::multimap<std::pair<uint64_t, size_t>, uint64_t> free_;  // (stream, size) -> address
  std::vector<Pending> pending_;
  std::vector<uint64_t> retained_;  // streams whose cached blocks stay
  CachingAllocatorStats stats_;
};

std::string format_bytes(size_t bytes);  // "1.50 GiB (1610612736 bytes)"

}  // namespace kiln::detail
