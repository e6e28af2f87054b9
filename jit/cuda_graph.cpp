#include "jit/cuda_graph.h"

#include <algorithm>

#include "autograd/grad_mode.h"
#include "core/cuda_allocator.h"
#include "core/logging.h"
#include "core/ops.h"
#include "core/tensor_impl.h"
#include "fusion/partition.h"
#include "jit/backend.h"
#include "jit/interpreter.h"
#include "jit/tracer.h"

namespace kiln::jit {
namespace {

KernelFn cuda_kernel(const OpDef& op) {
  KernelFn k = op.kernels[static_cast<int>(DeviceType::CUDA)];
  KILN_CHECK(k != nullptr, "[", op.name, "] has no CUDA implementation");
  return k;
}

}  // namespace

std::string CudaGraphRunner::ineligible(const Graph& g, bool dynamic) {
  if (dynamic) return "its sizes are dynamic (kernel parameters change between calls)";
  int device = -1;
  for (const Value& v : g.values) {
    if (!v.device.is_cuda()) return "a value (" + std::string(v.device.str()) + ") is not on a CUDA device";
    const int d = v.device.index() < 0 ? 0 : v.device.index();
    if (device >= 0 && d != device) return "its values are on several devices";
    device = d;
  }
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (n.runtime_slot >= 0) return "node " + g.node_str(i) + " takes a scalar that changes between calls";
    if (n.op && rng_attr_indices(*n.op).first >= 0)
      return "node " + g.node_str(i) + " draws random numbers (a new key every call)";
    if (n.kind == NodeKind::Fused && (n.fused->cuda_device < 0 || !n.fused->cuda_code))
      return "node " + g.node_str(i) + " is not a compiled CUDA kernel";
  }
  for (const StorageInfo& s : g.storages)
    if (s.output && s.input >= 0) return "an output aliases an input";
  return "";
}

CudaGraphRunner::CudaGraphRunner(const Graph& g) : graph_(g) {
  for (const Value& v : g.values) device_ = v.device.index() < 0 ? 0 : v.device.index();
  const Device dev(kCUDA, device_);
  storage_.resize(g.storages.size());
  storage_bytes_.resize(g.storages.size());
  written_.assign(g.storages.size(), 0);
  values_.resize(g.values.size());
  for (const Node& n : g.nodes) {
    if (n.kind == NodeKind::Constant) storage_[static_cast<size_t>(g.value(n.outputs[0]).storage)] = n.constant.impl()->storage();
    if (n.kind == NodeKind::Mutate) written_[static_cast<size_t>(g.value(n.target).storage)] = 1;
    if (n.kind == NodeKind::Op)
      for (int v : n.outputs) written_[static_cast<size_t>(g.value(v).storage)] = 1;
    if (n.kind == NodeKind::Fused)
      for (size_t b = 0; b < n.fused->buffer_values.size(); ++b)
        if (n.fused->ir.buffers[b].written) written_[static_cast<size_t>(g.value(n.fused->buffer_values[b]).storage)] = 1;
  }
  for (size_t s = 0; s < g.storages.size(); ++s) {
    storage_bytes_[s] = g.storages[s].nbytes;
    if (!storage_[s]) storage_[s] = std::make_shared<StorageImpl>(std::max<size_t>(g.storages[s].nbytes, 1), dev);
  }
  stream_ = cuda::create_stream(device_);
  cuda::retain_stream_memory(stream_, true);
}

CudaGraphRunner::~CudaGraphRunner() {
  try {
    if (exec_) cuda::destroy_graph(exec_);
    cuda::synchronize(stream_);
    values_.clear();
    cuda::retain_stream_memory(stream_, false);
    cuda::destroy_stream(stream_);
  } catch (const Error&) {
  }
}

Tensor CudaGraphRunner::tensor(int value) {
  Tensor& t = values_[static_cast<size_t>(value)];
  if (!t.defined()) {
    const Value& v = graph_.value(value);
    auto impl = std::make_shared<TensorImpl>(storage_[static_cast<size_t>(v.storage)], v.dtype, v.sizes, v.strides, v.offset);
    impl->set_wrapped_number(v.wrapped);
    t = Tensor(std::move(impl));
  }
  return t;
}

void CudaGraphRunner::execute() {
  TraceScope no_trace(nullptr);  // the eager kernels' inner ops run, never recorded
  NoGradGuard no_grad;
  const Graph& g = graph_;
  for (const Node& n : g.nodes) {
    switch (n.kind) {
      case NodeKind::Input:
      case NodeKind::View:
      case NodeKind::Alloc:
      case NodeKind::Constant:
        break;
      case NodeKind::Fused: {
        std::vector<char*> ptrs;
        for (int v : n.fused->buffer_values)
          ptrs.push_back(static_cast<char*>(storage_[static_cast<size_t>(g.value(v).storage)]->data()));
        fusion::run_fused(*n.fused, ptrs.data());
        break;
      }
      case NodeKind::Op: {
        TensorList ins, outs;
        for (int v : n.inputs) ins.push_back(v >= 0 ? tensor(v) : Tensor());
        for (int v : n.outputs) outs.push_back(tensor(v));
        cuda_kernel(*n.op)(*n.op, ins, outs, n.attrs);
        break;
      }
      case NodeKind::Mutate: {
        Tensor target = tensor(n.target);
        TensorList ins;
        for (int v : n.inputs) ins.push_back(v >= 0 ? tensor(v) : Tensor());
        const Value& t = g.value(n.target);
        bool direct = n.result == t.dtype;
        for (int v : n.inputs) {
          if (v < 0 || g.value(v).storage != t.storage) continue;
          const Value& x = g.value(v);
          const bool same = x.offset == t.offset && x.sizes == t.sizes && x.strides == t.strides;
          if (!same || n.op->kind != OpKind::Pointwise) direct = false;
        }
        if (direct) {
          TensorList outs{target};
          cuda_kernel(*n.op)(*n.op, ins, outs, n.attrs);
        } else {
          Tensor tmp = empty(target.sizes(), n.result, target.device());
          TensorList outs{tmp};
          cuda_kernel(*n.op)(*n.op, ins, outs, n.attrs);
          const OpDef& copy = op_def("copy");
          TensorList dst{target};
          cuda_kernel(copy)(copy, {tmp}, dst, Attrs{target.dtype()});
        }
        break;
      }
    }
  }
}

bool CudaGraphRunner::run(const std::vector<Tensor>& bindings, const std::vector<Storage>* adopt,
                          std::vector<Storage>* produced) {
  std::lock_guard<std::mutex> lock(mu_);
  if (broken_) return false;
  const Graph& g = graph_;
  const cuda::Stream caller = cuda::current_stream(device_);
  // A later binding may sit in a smaller storage than the captured one (same geometry): copy what
  // both have; the kernels read no further.
  auto bound = [&](size_t s) -> StorageImpl& { return *bindings.at(static_cast<size_t>(g.storages[s].input)).impl()->storage(); };
  auto bytes_of = [&](size_t s) { return std::min(storage_bytes_[s], bound(s).nbytes()); };
  cuda::wait(stream_, caller);  // the inputs' producers, and the last call's copies out
  for (size_t s = 0; s < g.storages.size(); ++s)
    if (g.storages[s].input >= 0) cuda::memcpy_async(storage_[s]->data(), bound(s).data(), bytes_of(s), stream_, false);
  ++calls_;
  try {
    cuda::StreamGuard guard(stream_);
    if (calls_ == 1) {
      execute();  // warm-up: loads, workspaces and temporaries, so that the capture allocates nothing new
    } else {
      if (!exec_) {
        cuda::begin_capture(stream_);
        try {
          execute();
        } catch (...) {
          try {
            cuda::destroy_graph(cuda::end_capture(stream_));
          } catch (const Error&) {
          }
          throw;
        }
        exec_ = cuda::end_capture(stream_);
      }
      cuda::launch_graph(exec_, stream_);
      ++replays_;
      update_stats([](Stats& st) { ++st.cuda_graph_launches; });
    }
  } catch (const Error& e) {
    broken_ = true;
    KILN_LOG(fusion, "CUDA graph capture failed; the plan runs node by node from now on: {}", e.what());
    return false;  // the caller runs this call the usual way (its inputs are untouched)
  }
  cuda::wait(caller, stream_);
  if (produced) produced->assign(g.storages.size(), nullptr);
  for (size_t s = 0; s < g.storages.size(); ++s) {
    if (g.storages[s].input >= 0 && written_[s]) {
      cuda::memcpy_async(bound(s).data(), storage_[s]->data(), bytes_of(s), caller, false);
    } else if (g.storages[s].output) {
      auto fresh = std::make_shared<StorageImpl>(storage_bytes_[s], Device(kCUDA, device_));
      cuda::memcpy_async(fresh->data(), storage_[s]->data(), storage_bytes_[s], caller, false);
      if (adopt) {
        if (const Storage& target = (*adopt)[s]) target->adopt(*fresh);
      } else {
        (*produced)[s] = std::move(fresh);
      }
    }
  }
  return true;
}

}  // namespace kiln::jit
