#include "core/cuda_allocator.h"

#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "core/error.h"
#include "core/ops.h"
#include "core/shape.h"
#include "core/tensor_impl.h"

namespace kiln {
namespace cuda {
namespace {

// Stream handles are user-space pointers (below 2^48); the device rides in the top bits, so the
// default streams of two devices are distinct keys.
uint64_t stream_key(const Stream& s) {
  return reinterpret_cast<uint64_t>(s.handle) | (static_cast<uint64_t>(s.device) << 48);
}
Stream stream_of_key(uint64_t key) {
  return Stream{static_cast<int>(key >> 48), reinterpret_cast<void*>(key & ((uint64_t{1} << 48) - 1))};
}

detail::BlockBackend event_backend() {
  detail::BlockBackend b;
  b.record_event = [](uint64_t key) { return record_event(stream_of_key(key)); };
  b.event_done = [](void* e) { return event_done(e); };
  b.destroy_event = [](void* e) { destroy_event(e); };
  return b;
}

std::unique_ptr<detail::CachingAllocator> make_device_allocator(int device) {
  detail::BlockBackend b = event_backend();
  b.alloc = [device](size_t n) { return raw_alloc(device, n); };
  b.free = [device](uint64_t p) { raw_free(device, p); };
  b.describe = [device] {
    MemoryInfo m = memory_info(device);
    return "the device has " + detail::format_bytes(m.total) + ", " + detail::format_bytes(m.free) + " free";
  };
  return std::make_unique<detail::CachingAllocator>("cuda:" + std::to_string(device), std::move(b));
}

struct Allocators {
  std::mutex mu;
  std::vector<std::unique_ptr<detail::CachingAllocator>> devices;
  std::unique_ptr<detail::CachingAllocator> pinned;
};

// Leaked: storages may be freed during static destruction.
Allocators& allocators() {
  static auto* a = new Allocators();
  return *a;
}

detail::CachingAllocator& device_allocator(int device) {
  if (device < 0) device = 0;
  KILN_CHECK(is_available(), "[cuda] CUDA is not available: ", unavailable_reason());
  KILN_CHECK(device < device_count(), "[cuda] device ", device, " does not exist (", device_count(), " device(s) visible)");
  Allocators& a = allocators();
  std::lock_guard<std::mutex> lock(a.mu);
  if (a.devices.size() <= static_cast<size_t>(device)) a.devices.resize(static_cast<size_t>(device) + 1);
  auto& slot = a.devices[static_cast<size_t>(device)];
  if (!slot) slot = make_device_allocator(device);
  return *slot;
}

// Null when nothing was ever pinned (is_pinned must not need a driver).
detail::CachingAllocator* pinned_allocator(bool create) {
  Allocators& a = allocators();
  std::lock_guard<std::mutex> lock(a.mu);
  if (!a.pinned && create) {
    KILN_CHECK(is_available(), "[pin_memory] CUDA is not available: ", unavailable_reason());
    detail::BlockBackend b = event_backend();
    b.alloc = [](size_t n) { return reinterpret_cast<uint64_t>(host_alloc(n)); };
    b.free = [](uint64_t p) { host_free(reinterpret_cast<void*>(p)); };
    a.pinned = std::make_unique<detail::CachingAllocator>("pinned host memory", std::move(b));
  }
  return a.pinned.get();
}

// Pinned blocks are not tied to a stream: every copy records the stream it ran on.
constexpr uint64_t kHostStream = ~uint64_t{0};

void copy_hook(void* dst, Device dst_dev, const void* src, Device src_dev, size_t nbytes) {
  if (nbytes == 0) return;
  const bool to_host = dst_dev.is_cpu();
  const Device gpu = to_host ? src_dev : dst_dev;
  const Stream s = current_stream(gpu.index() < 0 ? 0 : gpu.index());
  if (to_host) {
    // The caller reads the data as soon as this returns, pinned or not.
    memcpy_async(dst, src, nbytes, s, /*host_destination_pageable=*/true);
    return;
  }
  if (src_dev.is_cuda() && src_dev != dst_dev)
    synchronize(current_stream(src_dev.index() < 0 ? 0 : src_dev.index()));  // the source's producers
  memcpy_async(dst, src, nbytes, s, false);
  if (src_dev.is_cpu()) {
    // From pinned memory the copy runs after this returns: keep the block until it has.
    if (detail::CachingAllocator* p = pinned_allocator(false); p && p->find(reinterpret_cast<uint64_t>(src)).first)
      p->record_stream(reinterpret_cast<uint64_t>(src), stream_key(s));
  } else if (src_dev != dst_dev) {
    synchronize(s);  // peer copy: the source device's stream does not order it
  }
}

}  // namespace

MemoryStats memory_stats(int device) { return device_allocator(device).stats(); }
void reset_peak_memory_stats(int device) { device_allocator(device).reset_peak(); }
size_t memory_allocated(int device) { return memory_stats(device).allocated_bytes; }
size_t memory_reserved(int device) { return memory_stats(device).reserved_bytes; }

MemoryStats pinned_memory_stats() {
  detail::CachingAllocator* p = pinned_allocator(false);
  return p ? p->stats() : MemoryStats{};
}

void empty_cache() {
  Allocators& a = allocators();
  std::vector<detail::CachingAllocator*> all;
  {
    std::lock_guard<std::mutex> lock(a.mu);
    for (auto& d : a.devices)
      if (d) all.push_back(d.get());
    if (a.pinned) all.push_back(a.pinned.get());
  }
  for (detail::CachingAllocator* c : all) c->empty_cache();
}

void record_stream(const Tensor& t, const Stream& s) {
  KILN_CHECK(t.defined() && t.is_cuda(), "[record_stream] expects a CUDA tensor, got ",
             t.defined() ? t.device().str() : std::string("an undefined tensor"));
  KILN_CHECK(s.device == (t.device().index() < 0 ? 0 : t.device().index()), "[record_stream] the stream is on cuda:",
             s.device, " but the tensor is on ", t.device());
  device_allocator(s.device).record_stream(reinterpret_cast<uint64_t>(t.impl()->storage()->data()), stream_key(s));
}

void retain_stream_memory(const Stream& s, bool retain) { device_allocator(s.device).retain_stream(stream_key(s), retain); }

DeviceAllocator device_allocator_hooks() {
  DeviceAllocator a;
  a.alloc = [](size_t n, int device) -> void* {
    const int d = device < 0 ? 0 : device;
    return reinterpret_cast<void*>(device_allocator(d).allocate(n, stream_key(current_stream(d))));
  };
  a.free = [](void* p, size_t, int device) { device_allocator(device).free(reinterpret_cast<uint64_t>(p)); };
  a.copy = &copy_hook;
  return a;
}

}  // namespace cuda

bool is_pinned(const Tensor& t) {
  if (!t.defined() || !t.is_cpu() || t.impl()->storage()->is_lazy()) return false;
  detail::CachingAllocator* p = cuda::pinned_allocator(false);
  return p && p->find(reinterpret_cast<uint64_t>(t.impl()->storage()->data())).first != 0;
}

Tensor pin_memory(const Tensor& t) {
  KILN_CHECK(t.defined(), "[pin_memory] undefined tensor");
  KILN_CHECK(t.is_cpu(), "[pin_memory] cannot pin a ", t.device(), " tensor: only CPU memory can be pinned");
  if (is_pinned(t)) return t;
  detail::CachingAllocator& p = *cuda::pinned_allocator(true);
  const size_t nbytes = static_cast<size_t>(t.numel()) * itemsize(t.dtype());
  void* mem = reinterpret_cast<void*>(p.allocate(nbytes, cuda::kHostStream));
  auto storage = std::make_shared<StorageImpl>(mem, nbytes, Device(kCPU), [&p](void* m) {
    p.free(reinterpret_cast<uint64_t>(m));
  });
  Tensor out(std::make_shared<TensorImpl>(storage, t.dtype(), t.sizes().vec(), contiguous_strides(t.sizes()), 0));
  out.copy_(t);
  return out;
}

}  // namespace kiln
