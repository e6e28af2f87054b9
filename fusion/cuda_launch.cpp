#include "fusion/cuda_launch.h"

#include <map>
#include <mutex>

#include "core/error.h"
#include "fusion/hash.h"
#include "fusion/nvrtc.h"

namespace kiln::fusion {
namespace {

struct DeviceInfo {
  int arch = 0, multiprocessors = 0;
};

const DeviceInfo& device_info(int device) {
  static std::mutex mu;
  static std::map<int, DeviceInfo> infos;
  std::lock_guard<std::mutex> lock(mu);
  auto it = infos.find(device);
  if (it == infos.end()) it = infos.emplace(device, DeviceInfo{cuda::device_arch(device), cuda::multiprocessor_count(device)}).first;
  return it->second;
}

}  // namespace

std::vector<std::shared_ptr<const CudaFunction>> load_cuda_kernels(const std::vector<const Kernel*>& kernels, int device,
                                                                   const std::string& name) {
  std::vector<CudaKernel> rendered;
  rendered.reserve(kernels.size());
  for (const Kernel* k : kernels) rendered.push_back(render_cuda(*k));
  const std::string source = cuda_translation_unit(rendered);
  const std::string key = std::to_string(device) + ":" + hex64(hash64(source, 1)) + hex64(hash64(source, 2));
  static std::mutex mu;
  static auto* modules = new std::map<std::string, std::shared_ptr<cuda::Module>>();  // leaked: see cuda_driver.cpp
  std::shared_ptr<cuda::Module> module;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (auto it = modules->find(key); it != modules->end()) module = it->second;
  }
  if (!module) {
    auto binary = nvrtc_compile(source, device_info(device).arch, {.name = name});
    module = std::make_shared<cuda::Module>(device, binary->cubin);
    std::lock_guard<std::mutex> lock(mu);
    module = modules->emplace(key, module).first->second;  // a racing thread's module wins
  }
  std::vector<std::shared_ptr<const CudaFunction>> out;
  for (CudaKernel& r : rendered) {
    auto f = std::make_shared<CudaFunction>();
    f->function = module->function(r.symbol);
    f->rendered = std::move(r);
    f->device = device;
    f->module = module;
    out.push_back(std::move(f));
  }
  return out;
}

void launch_cuda_kernel(const CudaFunction& f, const Kernel& kernel, const std::vector<int64_t>& params,
                        const uint64_t* buffers, const cuda::Stream& s) {
  KILN_CHECK(s.device == f.device, "[cuda] kernel ", kernel.name, " was loaded on cuda:", f.device,
             " but is launched on a stream of cuda:", s.device);
  KILN_CHECK(static_cast<int>(params.size()) == kernel.num_params, "[cuda] kernel ", kernel.name, " takes ",
             kernel.num_params, " parameters, launched with ", params.size());
  const CudaLaunch l = cuda_launch_config(kernel, f.rendered, params, device_info(f.device).multiprocessors);
  if (l.grid == 0) return;
  const size_t nb = kernel.buffers.size();
  // Small fixed arrays: a launch allocates nothing.
  constexpr size_t kMaxArgs = 64;
  KILN_CHECK(nb + params.size() <= kMaxArgs, "[cuda] kernel ", kernel.name, " has ", nb + params.size(),
             " arguments (at most ", kMaxArgs, ")");
  uint64_t addr[kMaxArgs];
  long long values[kMaxArgs];
  void* args[kMaxArgs];
  for (size_t b = 0; b < nb; ++b) {
    addr[b] = buffers[b];
    args[b] = &addr[b];
  }
  for (size_t p = 0; p < params.size(); ++p) {
    values[p] = static_cast<long long>(params[p]);
    args[nb + p] = &values[p];
  }
  cuda::launch(s, f.function, l.grid, l.block, 0, args);
}

}  // namespace kiln::fusion
