#pragma once
// The CUDA driver API, loaded at run time: libcuda.so.1 is dlopen'ed on first use and the entry
// points kiln needs are resolved by name. libkiln has no link dependency on libcuda, so one build
// runs on machines with and without a driver; is_available() tells which. Built without the CUDA
// toolkit (KILN_WITH_CUDA=OFF or none found), is_available() is false and the rest raises.
//
// Every call that touches a device makes that device's primary context current on the calling
// thread first (contexts are retained once and kept for the life of the process).
// Errors are kiln::Error naming the driver call and its result ("[cuda] cuMemAlloc(64 bytes) on
// device 0 failed: CUDA_ERROR_OUT_OF_MEMORY (out of memory)").
#include <cstddef>
#include <cstdint>
#include <string>

namespace kiln::cuda {

// A driver was loaded, cuInit succeeded and at least one device exists.
bool is_available();
// Devices the driver sees; 0 without a driver (never raises).
int device_count();
// Why is_available() is false ("libcuda.so.1 could not be loaded: ...", "built without the CUDA
// toolkit", "cuInit failed: ..."); empty when it is true.
std::string unavailable_reason();

// The following raise kiln::Error when !is_available() or `device` is out of range.
int driver_version();                // 13000 for CUDA 13.0
int device_arch(int device);         // compute capability as 10 * major + minor: 90 on Hopper
std::string device_name(int device);
int multiprocessor_count(int device);
void synchronize(int device);        // cuCtxSynchronize: waits for every launch on the device
// Makes the device's primary context current on this thread (for libraries such as cuBLAS and
// cuDNN, which use the current context).
void make_current(int device);

// Device memory from cuMemAlloc, freed when the buffer dies. Copies are synchronous.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(int device, size_t nbytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  uint64_t address() const { return ptr_; }  // a CUdeviceptr
  size_t size() const { return size_; }
  int device() const { return device_; }
  void copy_from_host(const void* src, size_t nbytes);
  void copy_to_host(void* dst, size_t nbytes) const;

 private:
  void release() noexcept;
  int device_ = -1;
  uint64_t ptr_ = 0;
  size_t size_ = 0;
};

// A module loaded from a cubin or PTX image (cuModuleLoadData), unloaded when it dies; the
// functions taken from it are valid while it lives.
class Module {
 public:
  Module(int device, const std::string& image);
  ~Module();
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // The __global__ function `name` (a CUfunction); raises naming it when the module lacks it.
  void* function(const std::string& name) const;
  int device() const { return device_; }

 private:
  int device_ = -1;
  void* module_ = nullptr;  // CUmodule
};

// ---- streams ---------------------------------------------------------------------------------------
// A CUstream of one device. A null handle is the device's default (legacy) stream, which is every
// thread's current stream until it sets another: work on one stream runs in issue order, so eager
// ops need no synchronisation among themselves; copies to pageable host memory wait for the stream.
struct Stream {
  int device = 0;
  void* handle = nullptr;  // CUstream
  bool operator==(const Stream& o) const { return device == o.device && handle == o.handle; }
  bool operator!=(const Stream& o) const { return !(*this == o); }
};
Stream create_stream(int device);  // a non-blocking stream; destroy it with destroy_stream
void destroy_stream(const Stream& s);
void synchronize(const Stream& s);  // waits for the stream's work
bool query(const Stream& s);        // true when the stream has no pending work
// The calling thread's current stream of `device` (the default stream unless set).
Stream current_stream(int device = 0);
void set_current_stream(const Stream& s);
// Makes `s` current on this thread for a scope, then restores the previous one.
class StreamGuard {
 public:
  explicit StreamGuard(const Stream& s) : previous_(current_stream(s.device)) { set_current_stream(s); }
  ~StreamGuard() { set_current_stream(previous_); }
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  Stream previous_;
};

// ---- raw memory (core/cuda_allocator.h caches it) --------------------------------------------------
// cuMemAlloc; returns 0 when the device is out of memory (other failures raise).
uint64_t raw_alloc(int device, size_t nbytes);
void raw_free(int device, uint64_t ptr);  // never raises (a failure here cannot be reported)
struct MemoryInfo {
  size_t free = 0, total = 0;
};
MemoryInfo memory_info(int device);  // cuMemGetInfo
// cuMemcpyAsync between any two addresses (unified addressing: host, pinned or device) on `s`.
// With a pageable host destination the call returns once the data has arrived.
void memcpy_async(void* dst, const void* src, size_t nbytes, const Stream& s, bool host_destination_pageable);
// Sets `count` elements of `element_bytes` (1, 2 or 4) at `dst` to the low bits of `value`.
void memset_async(uint64_t dst, uint32_t value, size_t count, int element_bytes, const Stream& s);
// Page-locked host memory (cuMemHostAlloc, portable): copies from and to it run asynchronously.
void* host_alloc(size_t nbytes);  // raises when it fails
void host_free(void* ptr);

// ---- events and graphs -----------------------------------------------------------------------------
// An event recorded on `s` now (timing disabled); query it, wait for it, destroy it.
void* record_event(const Stream& s);
bool event_done(void* event);
void event_synchronize(void* event);
void destroy_event(void* event);
// Work issued on `waiter` from now on starts after the work queued on `on` so far (an event).
void wait(const Stream& waiter, const Stream& on);
// Stream capture into a CUDA graph: launches between begin and end are recorded, not run. The
// graph is instantiated at the end; launch it any number of times, then destroy it.
void begin_capture(const Stream& s);
void* end_capture(const Stream& s);  // a CUgraphExec
void launch_graph(void* graph_exec, const Stream& s);
void destroy_graph(void* graph_exec);

// cuLaunchKernel of `function` with a 1-D grid and block on `s` (default: the current stream).
// `args` holds one pointer per kernel parameter, pointing at its value (the driver's convention).
void launch(int device, void* function, uint32_t grid, uint32_t block, uint32_t shared_bytes, void** args);
void launch(const Stream& s, void* function, uint32_t grid, uint32_t block, uint32_t shared_bytes, void** args);

}  // namespace kiln::cuda
