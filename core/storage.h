#pragma once
// Refcounted memory shared by a tensor and all its views. The version counter lives here, so
// every view of one buffer sees in-place writes made through any other (autograd checks it).
#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>

#include "core/device.h"

namespace kiln {

class StorageImpl;
// Owns lazy storages (the JIT's pending trace): asked to produce their memory when read.
class LazyOwner {
 public:
  virtual void realize(StorageImpl& s) = 0;

 protected:
  ~LazyOwner() = default;
};

class StorageImpl {
 public:
  using Deleter = std::function<void(void*)>;
  // Owns `nbytes` fresh bytes from the device allocator.
  StorageImpl(size_t nbytes, Device device);
  // Wraps external memory (from_blob); `deleter` may be empty for non-owning.
  StorageImpl(void* data, size_t nbytes, Device device, Deleter deleter);
  // Lazy: no memory until the owner's trace runs; reading data() first asks the owner.
  StorageImpl(size_t nbytes, Device device, LazyOwner* owner);
  ~StorageImpl();
  StorageImpl(const StorageImpl&) = delete;
  StorageImpl& operator=(const StorageImpl&) = delete;

  void* data() const {
    if (lazy_) [[unlikely]] lazy_->realize(const_cast<StorageImpl&>(*this));
    return data_;
  }
  bool is_lazy() const { return lazy_ != nullptr; }
  LazyOwner* lazy_owner() const { return lazy_; }
  void set_lazy_owner(LazyOwner* owner) { lazy_ = owner; }
  // Makes a lazy storage real by taking the memory of `from` (same size and device), which is
  // left empty. Every tensor and view of this storage sees the data at once.
  void adopt(StorageImpl& from);
  size_t nbytes() const { return nbytes_; }
  const Device& device() const { return device_; }
  uint32_t version() const { return version_.load(std::memory_order_relaxed); }
  void bump_version() { version_.fetch_add(1, std::memory_order_relaxed); }

 private:
  void* data_;
  size_t nbytes_;
  Device device_;
  Deleter deleter_;
  bool from_allocator_;
  LazyOwner* lazy_ = nullptr;
  std::atomic<uint32_t> version_{0};
};

using Storage = std::shared_ptr<StorageImpl>;

// Per-device allocation hooks, so a CUDA backend plugs in without touching core.
struct DeviceAllocator {
  void* (*alloc)(size_t nbytes, int device_index) = nullptr;
  void (*free)(void* ptr, size_t nbytes, int device_index) = nullptr;
  // Copies between host and this device (either side may be this device).
  void (*copy)(void* dst, Device dst_dev, const void* src, Device src_dev, size_t nbytes) = nullptr;
};
void register_device_allocator(DeviceType type, DeviceAllocator alloc);
const DeviceAllocator* device_allocator(DeviceType type);  // nullptr when the backend is absent

}  // namespace kiln
