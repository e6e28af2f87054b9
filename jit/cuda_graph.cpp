#include "jit/cuda_graph.h"

#include <algorithm>
#include <map>

#include "core/logging.h"
#include "core/ops.h"
#include "fusion/partition.h"

namespace kiln::jit {

std::string CudaGraphRunner::ineligible(const Graph& g, bool dynamic) {
  if (dynamic) return "its sizes are dynamic (kernel parameters change between calls)";
  int device = -1, fused = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    switch (n.kind) {
      case NodeKind::Input:
      case NodeKind::View:
      case NodeKind::Alloc:
        break;
      case NodeKind::Constant:
        if (!n.constant.is_cuda()) return "node " + g.node_str(i) + " is a CPU constant";
        break;
      case NodeKind::Fused:
        if (n.fused->cuda_device < 0 || !n.fused->cuda_code) return "node " + g.node_str(i) + " is not a CUDA kernel";
        if (device >= 0 && n.fused->cuda_device != device) return "its kernels run on several devices";
        device = n.fused->cuda_device;
        ++fused;
        break;
      default:
        return "node " + g.node_str(i) + " runs through an eager kernel, not a fused one";
    }
  }
  if (fused == 0) return "it has no fused kernel";
  std::vector<char> used(g.storages.size(), 0);
  for (const Node& n : g.nodes)
    if (n.kind == NodeKind::Fused)
      for (int v : n.fused->buffer_values) used[static_cast<size_t>(g.value(v).storage)] = 1;
  for (size_t s = 0; s < g.storages.size(); ++s) {
    if (g.storages[s].output && g.storages[s].input >= 0) return "an output aliases an input";
    if (g.storages[s].output && !used[s]) return "an output is not written by a kernel";
  }
  return "";
}

CudaGraphRunner::CudaGraphRunner(const Graph& g) : graph_(g) {
  std::map<int, size_t> index;  // graph storage -> buffers_
  std::map<int, Tensor> constants;
  for (const Node& n : g.nodes) {
    if (n.kind == NodeKind::Constant) constants[g.value(n.outputs[0]).storage] = n.constant;
    if (n.kind != NodeKind::Fused) continue;
    device_ = n.fused->cuda_device;
    std::vector<char*> ptrs;
    for (size_t b = 0; b < n.fused->buffer_values.size(); ++b) {
      const int s = g.value(n.fused->buffer_values[b]).storage;
      auto it = index.find(s);
      if (it == index.end()) {
        const StorageInfo& info = g.storages[static_cast<size_t>(s)];
        Buffer buf;
        buf.storage = s;
        buf.input = info.input;
        buf.nbytes = info.nbytes;
        buf.output = info.output;
        if (auto c = constants.find(s); c != constants.end()) buf.memory = c->second;
        else buf.memory = empty({static_cast<int64_t>(std::max<size_t>(info.nbytes, 1))},
                                TensorOptions(kUInt8).device(Device(kCUDA, device_)));
        it = index.emplace(s, buffers_.size()).first;
        buffers_.push_back(std::move(buf));
      }
      if (n.fused->ir.buffers[b].written) buffers_[it->second].written = true;
      ptrs.push_back(static_cast<char*>(buffers_[it->second].memory.impl()->storage()->data()));
    }
    call_buffers_.push_back(std::move(ptrs));
    calls_.push_back(&n);
  }
  stream_ = cuda::create_stream(device_);
}

CudaGraphRunner::~CudaGraphRunner() {
  try {
    if (exec_) cuda::destroy_graph(exec_);
    cuda::synchronize(stream_);
    cuda::destroy_stream(stream_);
  } catch (const Error&) {
  }
}

bool CudaGraphRunner::run(const std::vector<Tensor>& bindings, const std::vector<Storage>* adopt,
                          std::vector<Storage>* produced) {
  std::lock_guard<std::mutex> lock(mu_);
  if (broken_) return false;
  const cuda::Stream caller = cuda::current_stream(device_);
  cuda::wait(stream_, caller);  // the inputs' producers, and the last call's copies out
  // A later binding may sit in a smaller storage than the captured one (same geometry): copy what
  // both have; the kernels read no further.
  auto bytes_of = [&](const Buffer& b) {
    return std::min(b.nbytes, bindings.at(static_cast<size_t>(b.input)).impl()->storage()->nbytes());
  };
  for (const Buffer& b : buffers_)
    if (b.input >= 0)
      cuda::memcpy_async(b.memory.impl()->storage()->data(),
                         bindings.at(static_cast<size_t>(b.input)).impl()->storage()->data(), bytes_of(b), stream_, false);
  if (!exec_) {
    cuda::begin_capture(stream_);
    try {
      cuda::StreamGuard guard(stream_);
      for (size_t i = 0; i < calls_.size(); ++i) fusion::run_fused(*calls_[i]->fused, call_buffers_[i].data());
    } catch (const Error& e) {
      try {
        cuda::destroy_graph(cuda::end_capture(stream_));
      } catch (const Error&) {
      }
      broken_ = true;
      KILN_LOG(fusion, "CUDA graph capture failed, the plan runs kernel by kernel: {}", e.what());
      return false;
    }
    exec_ = cuda::end_capture(stream_);
  }
  cuda::launch_graph(exec_, stream_);
  ++replays_;
  cuda::wait(caller, stream_);
  if (produced) produced->assign(graph_.storages.size(), nullptr);
  for (const Buffer& b : buffers_) {
    const void* from = b.memory.impl()->storage()->data();
    if (b.input >= 0 && b.written) {
      cuda::memcpy_async(bindings.at(static_cast<size_t>(b.input)).impl()->storage()->data(), from, bytes_of(b), caller,
                         false);
    } else if (b.output) {
      auto fresh = std::make_shared<StorageImpl>(b.nbytes, Device(kCUDA, device_));
      cuda::memcpy_async(fresh->data(), from, b.nbytes, caller, false);
      if (adopt) {
        if (const Storage& target = (*adopt)[static_cast<size_t>(b.storage)]) target->adopt(*fresh);
      }
      else (*produced)[static_cast<size_t>(b.storage)] = std::move(fresh);
    }
  }
  return true;
}

}  // namespace kiln::jit
