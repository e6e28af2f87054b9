#include "core/cuda_driver.h"

#include "core/error.h"

#if KILN_HAS_CUDA_TOOLKIT

#include <cuda.h>
#include <dlfcn.h>

#include <array>
#include <mutex>
#include <vector>

namespace kiln::cuda {
namespace {

// cuda.h maps most entry points to versioned symbols (`#define cuMemAlloc cuMemAlloc_v2`):
// stringifying after expansion gives the symbol the header's prototype belongs to, so every
// pointer below has exactly the type of the function it is resolved to.
#define KILN_CU_SYMBOL(fn) KILN_CU_STR(fn)
#define KILN_CU_STR(fn) #fn
#define KILN_CU_ENTRY_POINTS(X)                                                                              \
  X(cuGetErrorName) X(cuGetErrorString) X(cuInit) X(cuDriverGetVersion) X(cuDeviceGetCount) X(cuDeviceGet) \
  X(cuDeviceGetAttribute) X(cuDeviceGetName) X(cuDevicePrimaryCtxRetain) X(cuCtxSetCurrent)                \
  X(cuCtxSynchronize) X(cuModuleLoadData) X(cuModuleUnload) X(cuModuleGetFunction) X(cuLaunchKernel)       \
  X(cuMemAlloc) X(cuMemFree) X(cuMemcpyHtoD) X(cuMemcpyDtoH)

struct Driver {
#define KILN_CU_MEMBER(fn) decltype(&fn) fn##_ = nullptr;
  KILN_CU_ENTRY_POINTS(KILN_CU_MEMBER)
#undef KILN_CU_MEMBER
  void* handle = nullptr;
  std::string error;  // why the driver is unusable; empty when it loaded and initialised
  int devices = 0;
  std::vector<CUdevice> device;
  std::vector<CUcontext> context;  // primary contexts, retained on first use
  std::mutex mu;                   // guards `context`
};

std::string result_text(const Driver& d, CUresult r) {
  const char* name = nullptr;
  const char* text = nullptr;
  if (d.cuGetErrorName_) d.cuGetErrorName_(r, &name);
  if (d.cuGetErrorString_) d.cuGetErrorString_(r, &text);
  return detail::str_cat(name ? name : "CUDA error ", name ? "" : std::to_string(static_cast<int>(r)),
                         text ? std::string(" (") + text + ")" : std::string());
}

Driver& load() {
  // Leaked: kernels and buffers may be released during static destruction.
  static Driver* driver = [] {
    auto* d = new Driver();
    d->handle = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!d->handle) {
      const char* why = ::dlerror();
      d->error = std::string("libcuda.so.1 could not be loaded (no NVIDIA driver on this machine?): ") + (why ? why : "");
      return d;
    }
#define KILN_CU_RESOLVE(fn)                                                           \
  d->fn##_ = reinterpret_cast<decltype(&fn)>(::dlsym(d->handle, KILN_CU_SYMBOL(fn))); \
  if (!d->fn##_ && d->error.empty()) d->error = std::string("libcuda.so.1 lacks ") + KILN_CU_SYMBOL(fn);
    KILN_CU_ENTRY_POINTS(KILN_CU_RESOLVE)
#undef KILN_CU_RESOLVE
    if (!d->error.empty()) return d;
    if (CUresult r = d->cuInit_(0); r != CUDA_SUCCESS) {
      d->error = "cuInit failed: " + result_text(*d, r);
      return d;
    }
    if (CUresult r = d->cuDeviceGetCount_(&d->devices); r != CUDA_SUCCESS) {
      d->error = "cuDeviceGetCount failed: " + result_text(*d, r);
      d->devices = 0;
      return d;
    }
    for (int i = 0; i < d->devices; ++i) {
      CUdevice dev = 0;
      if (CUresult r = d->cuDeviceGet_(&dev, i); r != CUDA_SUCCESS) {
        d->error = "cuDeviceGet(" + std::to_string(i) + ") failed: " + result_text(*d, r);
        d->devices = 0;
        d->device.clear();
        return d;
      }
      d->device.push_back(dev);
    }
    d->context.assign(d->device.size(), nullptr);
    if (d->devices == 0) d->error = "the CUDA driver sees no device";
    return d;
  }();
  return *driver;
}

void check_result(const Driver& d, CUresult r, const std::string& what) {
  KILN_CHECK(r == CUDA_SUCCESS, "[cuda] ", what, " failed: ", result_text(d, r));
}

Driver& usable_driver() {
  Driver& d = load();
  KILN_CHECK(d.error.empty(), "[cuda] CUDA is not available: ", d.error);
  return d;
}

// The loaded driver, after checking that `device` exists.
Driver& driver_for(int device) {
  Driver& d = usable_driver();
  KILN_CHECK(device >= 0 && device < d.devices, "[cuda] device ", device, " does not exist (", d.devices,
             " device(s) visible)");
  return d;
}

// Makes the device's primary context current on this thread.
Driver& use_device(int device) {
  Driver& d = driver_for(device);
  CUcontext ctx = nullptr;
  {
    std::lock_guard<std::mutex> lock(d.mu);
    CUcontext& slot = d.context[static_cast<size_t>(device)];
    if (!slot)
      check_result(d, d.cuDevicePrimaryCtxRetain_(&slot, d.device[static_cast<size_t>(device)]),
                   "cuDevicePrimaryCtxRetain(device " + std::to_string(device) + ")");
    ctx = slot;
  }
  check_result(d, d.cuCtxSetCurrent_(ctx), "cuCtxSetCurrent(device " + std::to_string(device) + ")");
  return d;
}

int attribute(int device, CUdevice_attribute attr, const char* what) {
  Driver& d = driver_for(device);
  int v = 0;
  check_result(d, d.cuDeviceGetAttribute_(&v, attr, d.device[static_cast<size_t>(device)]),
               std::string("cuDeviceGetAttribute(") + what + ", device " + std::to_string(device) + ")");
  return v;
}

}  // namespace

bool is_available() { return load().error.empty(); }

int device_count() { return load().devices; }

std::string unavailable_reason() { return load().error; }

int driver_version() {
  Driver& d = usable_driver();
  int v = 0;
  check_result(d, d.cuDriverGetVersion_(&v), "cuDriverGetVersion");
  return v;
}

int device_arch(int device) {
  return 10 * attribute(device, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, "compute capability major") +
         attribute(device, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, "compute capability minor");
}

int multiprocessor_count(int device) {
  return attribute(device, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, "multiprocessor count");
}

std::string device_name(int device) {
  Driver& d = driver_for(device);
  std::array<char, 256> name{};
  check_result(d, d.cuDeviceGetName_(name.data(), static_cast<int>(name.size()), d.device[static_cast<size_t>(device)]),
               "cuDeviceGetName(device " + std::to_string(device) + ")");
  return std::string(name.data());
}

void synchronize(int device) {
  Driver& d = use_device(device);
  check_result(d, d.cuCtxSynchronize_(), "cuCtxSynchronize(device " + std::to_string(device) + ")");
}

DeviceBuffer::DeviceBuffer(int device, size_t nbytes) : device_(device), size_(nbytes) {
  Driver& d = use_device(device);
  CUdeviceptr p = 0;
  // cuMemAlloc rejects 0 bytes; an empty buffer holds one byte so that it has an address.
  check_result(d, d.cuMemAlloc_(&p, nbytes ? nbytes : 1),
               "cuMemAlloc(" + std::to_string(nbytes) + " bytes) on device " + std::to_string(device));
  ptr_ = static_cast<uint64_t>(p);
}

DeviceBuffer::~DeviceBuffer() { release(); }

DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept : device_(o.device_), ptr_(o.ptr_), size_(o.size_) {
  o.ptr_ = 0;
  o.size_ = 0;
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    release();
    device_ = o.device_;
    ptr_ = o.ptr_;
    size_ = o.size_;
    o.ptr_ = 0;
    o.size_ = 0;
  }
  return *this;
}

void DeviceBuffer::release() noexcept {
  if (!ptr_) return;
  try {
    Driver& d = use_device(device_);
    d.cuMemFree_(static_cast<CUdeviceptr>(ptr_));  // a failure here (a dead context) cannot be reported
  } catch (const Error&) {
  }
  ptr_ = 0;
}

void DeviceBuffer::copy_from_host(const void* src, size_t nbytes) {
  KILN_CHECK(nbytes <= size_, "[cuda] copy of ", nbytes, " bytes into a device buffer of ", size_, " bytes");
  if (nbytes == 0) return;
  Driver& d = use_device(device_);
  check_result(d, d.cuMemcpyHtoD_(static_cast<CUdeviceptr>(ptr_), src, nbytes),
               "cuMemcpyHtoD(" + std::to_string(nbytes) + " bytes)");
}

void DeviceBuffer::copy_to_host(void* dst, size_t nbytes) const {
  KILN_CHECK(nbytes <= size_, "[cuda] copy of ", nbytes, " bytes out of a device buffer of ", size_, " bytes");
  if (nbytes == 0) return;
  Driver& d = use_device(device_);
  check_result(d, d.cuMemcpyDtoH_(dst, static_cast<CUdeviceptr>(ptr_), nbytes),
               "cuMemcpyDtoH(" + std::to_string(nbytes) + " bytes)");
}

Module::Module(int device, const std::string& image) : device_(device) {
  KILN_CHECK(!image.empty(), "[cuda] cuModuleLoadData: the module image is empty");
  Driver& d = use_device(device);
  CUmodule m = nullptr;
  check_result(d, d.cuModuleLoadData_(&m, image.data()),
               "cuModuleLoadData(" + std::to_string(image.size()) + " bytes) on device " + std::to_string(device));
  module_ = m;
}

Module::~Module() {
  if (!module_) return;
  try {
    Driver& d = use_device(device_);
    d.cuModuleUnload_(static_cast<CUmodule>(module_));
  } catch (const Error&) {
  }
}

void* Module::function(const std::string& name) const {
  Driver& d = use_device(device_);
  CUfunction f = nullptr;
  check_result(d, d.cuModuleGetFunction_(&f, static_cast<CUmodule>(module_), name.c_str()),
               "cuModuleGetFunction(\"" + name + "\")");
  return f;
}

void launch(int device, void* function, uint32_t grid, uint32_t block, uint32_t shared_bytes, void** args) {
  KILN_CHECK(function != nullptr, "[cuda] launch of a null function");
  KILN_CHECK(grid > 0 && block > 0, "[cuda] launch with an empty grid (", grid, " blocks of ", block, " threads)");
  Driver& d = use_device(device);
  check_result(d,
               d.cuLaunchKernel_(static_cast<CUfunction>(function), grid, 1, 1, block, 1, 1, shared_bytes, nullptr, args,
                                 nullptr),
               "cuLaunchKernel(" + std::to_string(grid) + " blocks of " + std::to_string(block) + " threads)");
}

}  // namespace kiln::cuda

#else  // !KILN_HAS_CUDA_TOOLKIT

namespace kiln::cuda {
namespace {
constexpr const char* kNoToolkit = "kiln was built without the CUDA toolkit (KILN_WITH_CUDA=OFF, or none found)";
[[noreturn]] void no_cuda() { KILN_FAIL("[cuda] CUDA is not available: ", kNoToolkit); }
}  // namespace

bool is_available() { return false; }
int device_count() { return 0; }
std::string unavailable_reason() { return kNoToolkit; }
int driver_version() { no_cuda(); }
int device_arch(int) { no_cuda(); }
std::string device_name(int) { no_cuda(); }
int multiprocessor_count(int) { no_cuda(); }
void synchronize(int) { no_cuda(); }
DeviceBuffer::DeviceBuffer(int, size_t) { no_cuda(); }
DeviceBuffer::~DeviceBuffer() = default;
DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept : device_(o.device_), ptr_(o.ptr_), size_(o.size_) {}
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&&) noexcept { return *this; }
void DeviceBuffer::release() noexcept {}
void DeviceBuffer::copy_from_host(const void*, size_t) { no_cuda(); }
void DeviceBuffer::copy_to_host(void*, size_t) const { no_cuda(); }
Module::Module(int, const std::string&) { no_cuda(); }
Module::~Module() = default;
void* Module::function(const std::string&) const { no_cuda(); }
void launch(int, void*, uint32_t, uint32_t, uint32_t, void**) { no_cuda(); }

}  // namespace kiln::cuda

#endif
