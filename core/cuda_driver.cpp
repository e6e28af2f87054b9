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
  X(cuMemAlloc) X(cuMemFree) X(cuMemcpyHtoD) X(cuMemcpyDtoH) X(cuMemGetInfo) X(cuMemcpyAsync)                 \
  X(cuMemsetD8Async) X(cuMemsetD16Async) X(cuMemsetD32Async) X(cuMemHostAlloc) X(cuMemFreeHost)            \
  X(cuStreamCreate) X(cuStreamDestroy) X(cuStreamSynchronize) X(cuStreamQuery) X(cuEventCreate)           \
  X(cuEventRecord) X(cuEventQuery) X(cuEventSynchronize) X(cuEventDestroy) X(cuEventElapsedTime)          \
  X(cuStreamBeginCapture) X(cuStreamEndCapture) X(cuGraphInstantiate) X(cuGraphLaunch) X(cuGraphExecDestroy) \
  X(cuGraphDestroy) X(cuStreamWaitEvent)

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

void make_current(int device) { use_device(device); }

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
  launch(current_stream(device), function, grid, block, shared_bytes, args);
}

void launch(const Stream& s, void* function, uint32_t grid, uint32_t block, uint32_t shared_bytes, void** args) {
  KILN_CHECK(function != nullptr, "[cuda] launch of a null function");
  KILN_CHECK(grid > 0 && block > 0, "[cuda] launch with an empty grid (", grid, " blocks of ", block, " threads)");
  Driver& d = use_device(s.device);
  check_result(d,
               d.cuLaunchKernel_(static_cast<CUfunction>(function), grid, 1, 1, block, 1, 1, shared_bytes,
                                 static_cast<CUstream>(s.handle), args, nullptr),
               "cuLaunchKernel(" + std::to_string(grid) + " blocks of " + std::to_string(block) + " threads)");
}

// ---- streams ---------------------------------------------------------------------------------------

namespace {
// Per thread and device; devices beyond the vector use the default stream.
thread_local std::vector<Stream> t_current_streams;
}  // namespace

Stream create_stream(int device) {
  Driver& d = use_device(device);
  CUstream st = nullptr;
  check_result(d, d.cuStreamCreate_(&st, CU_STREAM_NON_BLOCKING), "cuStreamCreate(device " + std::to_string(device) + ")");
  return Stream{device, st};
}

void destroy_stream(const Stream& s) {
  if (!s.handle) return;
  Driver& d = use_device(s.device);
  check_result(d, d.cuStreamDestroy_(static_cast<CUstream>(s.handle)), "cuStreamDestroy");
}

void synchronize(const Stream& s) {
  Driver& d = use_device(s.device);
  check_result(d, d.cuStreamSynchronize_(static_cast<CUstream>(s.handle)),
               "cuStreamSynchronize(device " + std::to_string(s.device) + ")");
}

bool query(const Stream& s) {
  Driver& d = use_device(s.device);
  CUresult r = d.cuStreamQuery_(static_cast<CUstream>(s.handle));
  if (r == CUDA_ERROR_NOT_READY) return false;
  check_result(d, r, "cuStreamQuery");
  return true;
}

Stream current_stream(int device) {
  KILN_CHECK(device >= 0, "[cuda] current_stream: device index ", device, " is negative");
  if (static_cast<size_t>(device) < t_current_streams.size()) return t_current_streams[static_cast<size_t>(device)];
  return Stream{device, nullptr};
}

void set_current_stream(const Stream& s) {
  KILN_CHECK(s.device >= 0, "[cuda] set_current_stream: device index ", s.device, " is negative");
  if (static_cast<size_t>(s.device) >= t_current_streams.size()) {
    for (int i = static_cast<int>(t_current_streams.size()); i <= s.device; ++i) t_current_streams.push_back(Stream{i, nullptr});
  }
  t_current_streams[static_cast<size_t>(s.device)] = s;
}

// ---- raw memory -------------------------------------------------------------------------------------

uint64_t raw_alloc(int device, size_t nbytes) {
  Driver& d = use_device(device);
  CUdeviceptr p = 0;
  CUresult r = d.cuMemAlloc_(&p, nbytes ? nbytes : 1);
  if (r == CUDA_ERROR_OUT_OF_MEMORY) return 0;
  check_result(d, r, "cuMemAlloc(" + std::to_string(nbytes) + " bytes) on device " + std::to_string(device));
  return static_cast<uint64_t>(p);
}

void raw_free(int device, uint64_t ptr) {
  if (!ptr) return;
  try {
    Driver& d = use_device(device);
    d.cuMemFree_(static_cast<CUdeviceptr>(ptr));
  } catch (const Error&) {
  }
}

MemoryInfo memory_info(int device) {
  Driver& d = use_device(device);
  MemoryInfo m;
  check_result(d, d.cuMemGetInfo_(&m.free, &m.total), "cuMemGetInfo(device " + std::to_string(device) + ")");
  return m;
}

void memcpy_async(void* dst, const void* src, size_t nbytes, const Stream& s, bool host_destination_pageable) {
  if (nbytes == 0) return;
  Driver& d = use_device(s.device);
  check_result(d,
               d.cuMemcpyAsync_(reinterpret_cast<CUdeviceptr>(dst), reinterpret_cast<CUdeviceptr>(src), nbytes,
                                static_cast<CUstream>(s.handle)),
               "cuMemcpyAsync(" + std::to_string(nbytes) + " bytes)");
  // The caller reads pageable memory as soon as this returns.
  if (host_destination_pageable) synchronize(s);
}

void memset_async(uint64_t dst, uint32_t value, size_t count, int element_bytes, const Stream& s) {
  if (count == 0) return;
  Driver& d = use_device(s.device);
  CUstream st = static_cast<CUstream>(s.handle);
  CUresult r = CUDA_SUCCESS;
  switch (element_bytes) {
    case 1: r = d.cuMemsetD8Async_(dst, static_cast<unsigned char>(value), count, st); break;
    case 2: r = d.cuMemsetD16Async_(dst, static_cast<unsigned short>(value), count, st); break;
    case 4: r = d.cuMemsetD32Async_(dst, value, count, st); break;
    default: KILN_FAIL("[cuda] memset of ", element_bytes, "-byte elements (1, 2 or 4 are supported)");
  }
  check_result(d, r, "cuMemsetD" + std::to_string(8 * element_bytes) + "Async(" + std::to_string(count) + " elements)");
}

void* host_alloc(size_t nbytes) {
  Driver& d = use_device(0);
  void* p = nullptr;
  check_result(d, d.cuMemHostAlloc_(&p, nbytes ? nbytes : 1, CU_MEMHOSTALLOC_PORTABLE),
               "cuMemHostAlloc(" + std::to_string(nbytes) + " bytes of pinned host memory)");
  return p;
}

void host_free(void* ptr) {
  if (!ptr) return;
  try {
    Driver& d = use_device(0);
    d.cuMemFreeHost_(ptr);
  } catch (const Error&) {
  }
}

// ---- events and graphs ------------------------------------------------------------------------------

void* record_event(const Stream& s) {
  Driver& d = use_device(s.device);
  CUevent e = nullptr;
  check_result(d, d.cuEventCreate_(&e, CU_EVENT_DISABLE_TIMING), "cuEventCreate");
  CUresult r = d.cuEventRecord_(e, static_cast<CUstream>(s.handle));
  if (r != CUDA_SUCCESS) {
    d.cuEventDestroy_(e);
    check_result(d, r, "cuEventRecord");
  }
  return e;
}

bool event_done(void* event) {
  Driver& d = usable_driver();
  CUresult r = d.cuEventQuery_(static_cast<CUevent>(event));
  if (r == CUDA_ERROR_NOT_READY) return false;
  check_result(d, r, "cuEventQuery");
  return true;
}

void event_synchronize(void* event) {
  Driver& d = usable_driver();
  check_result(d, d.cuEventSynchronize_(static_cast<CUevent>(event)), "cuEventSynchronize");
}

void destroy_event(void* event) {
  if (!event) return;
  Driver& d = usable_driver();
  d.cuEventDestroy_(static_cast<CUevent>(event));
}

void wait(const Stream& waiter, const Stream& on) {
  if (waiter == on) return;
  void* e = record_event(on);
  Driver& d = use_device(waiter.device);
  CUresult r = d.cuStreamWaitEvent_(static_cast<CUstream>(waiter.handle), static_cast<CUevent>(e), 0);
  d.cuEventDestroy_(static_cast<CUevent>(e));  // released once the wait has happened
  check_result(d, r, "cuStreamWaitEvent");
}

void begin_capture(const Stream& s) {
  KILN_CHECK(s.handle != nullptr, "[cuda] graph capture needs a stream of its own, not the default stream");
  Driver& d = use_device(s.device);
  check_result(d, d.cuStreamBeginCapture_(static_cast<CUstream>(s.handle), CU_STREAM_CAPTURE_MODE_THREAD_LOCAL),
               "cuStreamBeginCapture");
}

void* end_capture(const Stream& s) {
  Driver& d = use_device(s.device);
  CUgraph g = nullptr;
  check_result(d, d.cuStreamEndCapture_(static_cast<CUstream>(s.handle), &g), "cuStreamEndCapture");
  CUgraphExec exec = nullptr;
  CUresult r = d.cuGraphInstantiate_(&exec, g, 0);
  d.cuGraphDestroy_(g);
  check_result(d, r, "cuGraphInstantiate");
  return exec;
}

void launch_graph(void* graph_exec, const Stream& s) {
  Driver& d = use_device(s.device);
  check_result(d, d.cuGraphLaunch_(static_cast<CUgraphExec>(graph_exec), static_cast<CUstream>(s.handle)), "cuGraphLaunch");
}

void destroy_graph(void* graph_exec) {
  if (!graph_exec) return;
  Driver& d = usable_driver();
  d.cuGraphExecDestroy_(static_cast<CUgraphExec>(graph_exec));
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
void make_current(int) { no_cuda(); }
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
void launch(const Stream&, void*, uint32_t, uint32_t, uint32_t, void**) { no_cuda(); }
Stream create_stream(int) { no_cuda(); }
void destroy_stream(const Stream&) { no_cuda(); }
void synchronize(const Stream&) { no_cuda(); }
bool query(const Stream&) { no_cuda(); }
Stream current_stream(int device) { return Stream{device, nullptr}; }
void set_current_stream(const Stream&) { no_cuda(); }
uint64_t raw_alloc(int, size_t) { no_cuda(); }
void raw_free(int, uint64_t) {}
MemoryInfo memory_info(int) { no_cuda(); }
void memcpy_async(void*, const void*, size_t, const Stream&, bool) { no_cuda(); }
void memset_async(uint64_t, uint32_t, size_t, int, const Stream&) { no_cuda(); }
void* host_alloc(size_t) { no_cuda(); }
void host_free(void*) {}
void* record_event(const Stream&) { no_cuda(); }
bool event_done(void*) { no_cuda(); }
void event_synchronize(void*) { no_cuda(); }
void destroy_event(void*) {}
void wait(const Stream&, const Stream&) { no_cuda(); }
void begin_capture(const Stream&) { no_cuda(); }
void* end_capture(const Stream&) { no_cuda(); }
void launch_graph(void*, const Stream&) { no_cuda(); }
void destroy_graph(void*) {}

}  // namespace kiln::cuda

#endif
