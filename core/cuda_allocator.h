#pragma once
// CUDA memory as tensors see it: one caching allocator per device (core/caching_allocator.h) behind
// the kCUDA storage hooks, a caching allocator of pinned host memory, and the copies between host
// and device that Tensor::to / copy_ use. All of it runs on the calling thread's current stream
// (cuda::current_stream, core/cuda_driver.h).
//
// Present in every build; without the CUDA toolkit or a driver every call that needs a device
// raises kiln::Error saying why (cuda::unavailable_reason()).
#include <cstddef>
#include <cstdint>

#include "core/caching_allocator.h"
#include "core/cuda_driver.h"
#include "core/storage.h"
#include "core/tensor.h"

namespace kiln {

// A copy of a CPU tensor in page-locked memory: copies from it to a GPU run asynchronously.
// A tensor already pinned is returned as is.
Tensor pin_memory(const Tensor& t);
bool is_pinned(const Tensor& t);

namespace cuda {

using MemoryStats = detail::CachingAllocatorStats;
MemoryStats memory_stats(int device = 0);
void reset_peak_memory_stats(int device = 0);
size_t memory_allocated(int device = 0);  // bytes held by live tensors
size_t memory_reserved(int device = 0);   // bytes taken from the driver (live + cached)
MemoryStats pinned_memory_stats();
// Returns the cached blocks of every device and of pinned host memory to the driver.
void empty_cache();
// The memory of `t` (a CUDA tensor) is also used by work on `s`: it is not reused after the
// tensor dies until the work queued on `s` by then has finished.
void record_stream(const Tensor& t, const Stream& s);

// Blocks cached for stream `s` stay reserved (empty_cache and out-of-memory retries skip them)
// while retained: a CUDA graph captured on `s` addresses them (jit/cuda_graph.h).
void retain_stream_memory(const Stream& s, bool retain);

// The kCUDA storage hooks (core/storage.h): allocation on the current stream, and copies.
DeviceAllocator device_allocator_hooks();

}  // namespace cuda
}  // namespace kiln
