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

// cuLaunchKernel of `function` on the device's default stream with a 1-D grid and block.
// `args` holds one pointer per kernel parameter, pointing at its value (the driver's convention).
void launch(int device, void* function, uint32_t grid, uint32_t block, uint32_t shared_bytes, void** args);

}  // namespace kiln::cuda
