#include "core/storage.h"

#include <array>

#include "core/allocator.h"
#include "core/cuda_allocator.h"
#include "core/error.h"

namespace kiln {
namespace {
std::array<DeviceAllocator, kNumDeviceTypes>& allocators() {
  static std::array<DeviceAllocator, kNumDeviceTypes> a = [] {
    std::array<DeviceAllocator, kNumDeviceTypes> init{};
    init[static_cast<int>(DeviceType::CPU)].alloc = [](size_t n, int) { return cpu_alloc(n); };
    init[static_cast<int>(DeviceType::CPU)].free = [](void* p, size_t n, int) { cpu_free(p, n); };
    // Without the toolkit or a driver the first allocation raises, saying why (cuda::unavailable_reason()).
    init[static_cast<int>(DeviceType::CUDA)] = cuda::device_allocator_hooks();
    return init;
  }();
  return a;
}
}  // namespace

void register_device_allocator(DeviceType type, DeviceAllocator alloc) {
  allocators()[static_cast<int>(type)] = alloc;
}

const DeviceAllocator* device_allocator(DeviceType type) {
  const DeviceAllocator& a = allocators()[static_cast<int>(type)];
  return a.alloc ? &a : nullptr;
}

StorageImpl::StorageImpl(size_t nbytes, Device device)
    : data_(nullptr), nbytes_(nbytes), device_(device), from_allocator_(true) {
  const DeviceAllocator* a = device_allocator(device.type());
  KILN_CHECK(a != nullptr, "[alloc] no backend for device ", device,
             " in this build (kiln was built without CUDA or no GPU is present)");
  data_ = a->alloc(nbytes, device.index());
}

StorageImpl::StorageImpl(void* data, size_t nbytes, Device device, Deleter deleter)
    : data_(data), nbytes_(nbytes), device_(device), deleter_(std::move(deleter)), from_allocator_(false) {}

StorageImpl::StorageImpl(size_t nbytes, Device device, LazyOwner* owner)
    : data_(nullptr), nbytes_(nbytes), device_(device), from_allocator_(false), lazy_(owner) {}

void StorageImpl::adopt(StorageImpl& from) {
  KILN_INTERNAL_ASSERT(data_ == nullptr && !from_allocator_ && !deleter_, "adopt into a storage that owns memory");
  KILN_INTERNAL_ASSERT(from.nbytes_ == nbytes_ && from.device_ == device_, "adopt of a storage of another size");
  data_ = from.data_;
  from_allocator_ = from.from_allocator_;
  deleter_ = std::move(from.deleter_);
  from.data_ = nullptr;
  from.from_allocator_ = false;
  from.deleter_ = nullptr;
  lazy_ = nullptr;
}

StorageImpl::~StorageImpl() {
  if (from_allocator_ && data_) {
    device_allocator(device_.type())->free(data_, nbytes_, device_.index());
  } else if (deleter_) {
    deleter_(data_);
  }
}

}  // namespace kiln
