// Eager CUDA kernels of the pointwise rows, the reductions and the row-wise normalisations, made by
// the fusion backend: the call is captured as a one-node graph over the arguments' exact layouts,
// partitioned and lowered to kernel IR (the same scalar formulas and reductions as the CPU's fused
// kernels, so one definition per op), rendered to CUDA C and compiled by NVRTC (cached in memory
// and on disk). A cache keyed on the op, its attributes and the arguments' geometry makes every
// later call with the same layouts a lookup and a launch on the current stream.
//
// Pointwise ops write their output in place (a Mutate node), whatever its strides: `out=`,
// in-place ops and copies into views need no temporary. Reductions produce a fresh contiguous
// result (an Op node), copied into `out` when that is not the plain contiguous tensor call_op made.
// The rows fusion does not lower but can be written with those it does are in compositions.cpp.
#include <cstring>
#include <mutex>
#include <set>
#include <sstream>
#include <unordered_map>

#include "autograd/grad_mode.h"
#include "core/cuda_allocator.h"
#include "core/op.h"
#include "core/ops.h"
#include "core/shape.h"
#include "core/tensor_impl.h"
#include "fusion/cuda_launch.h"
#include "fusion/nvrtc.h"
#include "fusion/partition.h"
#include "kernels/cuda/cuda_kernels.h"

namespace kiln {
namespace {

constexpr int kCudaIdx = static_cast<int>(DeviceType::CUDA);

struct Bind {
  enum Kind : uint8_t { Input, Output, Temp } kind;
  int index;
};
struct Launch {
  std::shared_ptr<const fusion::CudaFunction> fn;
  fusion::Kernel ir;
  std::vector<int64_t> params;
  std::vector<Bind> buffers;
};
struct CudaPlan {
  std::vector<Launch> launches;
  std::vector<size_t> temp_bytes;
  bool host = false;  // fusion could not lower the call: it runs through host_fallback
};

int device_index(const Device& d) { return d.index() < 0 ? 0 : d.index(); }

// A 0-dim CPU tensor next to CUDA tensors (a wrapped number, a CPU scalar): its bytes are written
// into a one-element device tensor with memsets on the stream, so the kernel reads it like any
// buffer and a changing value needs no new kernel.
Tensor upload_scalar(const Tensor& t, const Device& dev) {
  Tensor d = empty({}, t.dtype(), dev);
  const size_t n = itemsize(t.dtype());
  const auto* src = static_cast<const unsigned char*>(t.data_ptr());
  uint64_t bits = 0;
  std::memcpy(&bits, src, n);
  const uint64_t addr = reinterpret_cast<uint64_t>(d.data_ptr());
  const cuda::Stream s = cuda::current_stream(device_index(dev));
  if (n == 8) {
    cuda::memset_async(addr, static_cast<uint32_t>(bits), 1, 4, s);
    cuda::memset_async(addr + 4, static_cast<uint32_t>(bits >> 32), 1, 4, s);
  } else {
    cuda::memset_async(addr, static_cast<uint32_t>(bits), 1, static_cast<int>(n), s);
  }
  d.impl()->set_wrapped_number(t.impl()->is_wrapped_number());
  return d;
}

bool plain_contiguous(const Tensor& t) { return t.is_contiguous() && t.impl()->storage_offset() == 0; }

void describe(std::ostringstream& os, const Tensor& t) {
  if (!t.defined()) {
    os << "-|";
    return;
  }
  os << t.dtype() << t.sizes() << t.strides() << '+' << t.impl()->storage_offset() << (t.impl()->is_wrapped_number() ? "w" : "")
     << '|';
}

// The graph of one call: inputs (and, for pointwise ops, the outputs) bound as graph inputs on
// storages shared where the tensors share memory.
struct Capture {
  jit::Graph g;
  std::vector<int> storage_of_input, storage_of_output;  // graph storage per tensor (-1: absent)
};

std::shared_ptr<CudaPlan> build_plan(const OpDef& op, const TensorList& in, const TensorList& out, const Attrs& attrs,
                                     bool mutate, DType result, const Device& dev, bool load = true) {
  Capture c;
  jit::Graph& g = c.g;
  std::vector<const StorageImpl*> seen;
  auto bind = [&](const Tensor& t) -> int {
    const StorageImpl* s = t.impl()->storage().get();
    int sid = -1;
    for (size_t i = 0; i < seen.size(); ++i)
      if (seen[i] == s) sid = static_cast<int>(i);
    if (sid < 0) {
      jit::StorageInfo info;
      info.nbytes = s->nbytes();
      info.device = dev;
      info.input = static_cast<int>(g.inputs.size());
      sid = g.add_storage(info);
      seen.push_back(s);
    }
    jit::Value v;
    v.sizes = t.sizes().vec();
    v.strides = t.strides().vec();
    v.offset = t.impl()->storage_offset();
    v.dtype = t.dtype();
    v.device = dev;
    v.storage = sid;
    v.wrapped = t.impl()->is_wrapped_number();
    const int vid = g.add_value(v);
    jit::Node n;
    n.kind = jit::NodeKind::Input;
    n.outputs = {vid};
    n.input_index = static_cast<int>(g.inputs.size());  // add_node appends it to g.inputs
    g.add_node(std::move(n));
    return vid;
  };
  std::vector<int> ins;
  for (const Tensor& t : in) {
    ins.push_back(t.defined() ? bind(t) : -1);
    c.storage_of_input.push_back(t.defined() ? g.value(ins.back()).storage : -1);
  }
  jit::Node n;
  n.op = &op;
  n.inputs = ins;
  n.attrs = attrs;
  if (mutate) {
    const int target = bind(out[0]);
    g.storages[static_cast<size_t>(g.value(target).storage)].output = true;
    c.storage_of_output.push_back(g.value(target).storage);
    n.kind = jit::NodeKind::Mutate;
    n.target = target;
    n.result = result;
  } else {
    n.kind = jit::NodeKind::Op;
    for (const Tensor& t : out) {
      jit::StorageInfo info;
      info.nbytes = static_cast<size_t>(t.numel()) * itemsize(t.dtype());
      info.device = dev;
      info.output = true;
      jit::Value v;
      v.sizes = t.sizes().vec();
      v.strides = contiguous_strides(t.sizes());
      v.dtype = t.dtype();
      v.device = dev;
      v.storage = g.add_storage(info);
      c.storage_of_output.push_back(v.storage);
      n.outputs.push_back(g.add_value(v));
    }
  }
  g.add_node(std::move(n));

  fusion::FusionOptions fo;
  fo.symbolic_sizes = true;  // one kernel source for every shape of this layout class
  fo.reduced_float = true;   // the CUDA renderer has float16/bfloat16 code
  fusion::FusionResult r = fusion::fuse(g, fo);
  auto plan = std::make_shared<CudaPlan>();
  std::vector<const fusion::Kernel*> kernels;
  std::unordered_map<int, int> temp_of_storage;
  for (const jit::Node& node : r.graph.nodes) {
    if (node.kind == jit::NodeKind::Input || node.kind == jit::NodeKind::View || node.kind == jit::NodeKind::Alloc) continue;
    if (node.kind != jit::NodeKind::Fused) {  // e.g. integer pow/fmod/remainder (operand checks)
      plan->launches.clear();
      plan->host = true;
      return plan;
    }
    Launch l;
    l.ir = node.fused->ir;
    l.params = node.fused->params;
    for (int v : node.fused->buffer_values) {
      const int sid = r.graph.value(v).storage;
      Bind b{Bind::Temp, -1};
      for (size_t i = 0; i < c.storage_of_output.size() && b.index < 0; ++i)
        if (c.storage_of_output[i] == sid) b = Bind{Bind::Output, static_cast<int>(i)};
      for (size_t i = 0; i < c.storage_of_input.size() && b.index < 0; ++i)
        if (c.storage_of_input[i] == sid) b = Bind{Bind::Input, static_cast<int>(i)};
      if (b.index < 0) {
        auto [it, fresh] = temp_of_storage.emplace(sid, static_cast<int>(plan->temp_bytes.size()));
        if (fresh) plan->temp_bytes.push_back(r.graph.storages[static_cast<size_t>(sid)].nbytes);
        b.index = it->second;
      }
      l.buffers.push_back(b);
    }
    plan->launches.push_back(std::move(l));
  }
  if (!load) return plan;
  for (const Launch& l : plan->launches) kernels.push_back(&l.ir);
  auto fns = fusion::load_cuda_kernels(kernels, device_index(dev), "eager_" + op.name);
  for (size_t i = 0; i < fns.size(); ++i) plan->launches[i].fn = fns[i];
  return plan;
}

// Bounded: a program cycling through endless shapes must not grow it forever.
class PlanCache {
 public:
  std::shared_ptr<const CudaPlan> find(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    return it == map_.end() ? nullptr : it->second;
  }
  void put(const std::string& key, std::shared_ptr<const CudaPlan> p) {
    std::lock_guard<std::mutex> lock(mu_);
    if (map_.size() >= 8192) map_.clear();
    map_[key] = std::move(p);
  }

 private:
  std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<const CudaPlan>> map_;
};

PlanCache& plan_cache() {
  static auto* c = new PlanCache();  // leaked with the modules it refers to
  return *c;
}

void run_plan(const CudaPlan& plan, const TensorList& in, const TensorList& out, const Device& dev) {
  std::vector<Tensor> temps;
  for (size_t b : plan.temp_bytes) temps.push_back(empty({static_cast<int64_t>(b)}, kUInt8, dev));
  const cuda::Stream s = cuda::current_stream(device_index(dev));
  uint64_t addr[64];
  for (const Launch& l : plan.launches) {
    for (size_t i = 0; i < l.buffers.size() && i < 64; ++i) {
      const Bind& b = l.buffers[i];
      const Tensor& t = b.kind == Bind::Input ? in[static_cast<size_t>(b.index)]
                        : b.kind == Bind::Output ? out[static_cast<size_t>(b.index)]
                                                 : temps[static_cast<size_t>(b.index)];
      addr[i] = reinterpret_cast<uint64_t>(t.impl()->storage()->data());
    }
    fusion::launch_cuda_kernel(*l.fn, l.ir, l.params, addr, s);
  }
}

// A reduction of every element of a long tensor: one block would do all the work (see
// split_full_reduction).
bool long_full_reduction(const OpDef& op, const TensorList& in, const TensorList& out) {
  static const std::set<std::string> ops = {"sum", "mean", "amax", "amin"};
  constexpr int64_t kLong = int64_t{1} << 16;
  return ops.count(op.name) && in.size() == 1 && in[0].defined() && in[0].numel() >= kLong && out[0].numel() == 1;
}

void fused_kernel(const OpDef& op, const TensorList& inputs, TensorList& out, const Attrs& attrs) {
  // A driver without NVRTC (the toolkit's runtime libraries absent): every op still runs.
  if (!fusion::nvrtc_available()) return host_fallback(op, inputs, out, attrs);
  if (long_full_reduction(op, inputs, out)) return split_full_reduction(op, inputs[0], out[0], attrs);
  const Device dev = out.at(0).device();
  KILN_CHECK(dev.is_cuda(), "[", op.name, "] CUDA kernel called for a ", dev, " output");
  TensorList in;
  in.reserve(inputs.size());
  for (const Tensor& t : inputs)
    in.push_back(t.defined() && t.is_cpu() && t.dim() == 0 ? upload_scalar(t, dev) : t);
  const bool mutate = op.kind == OpKind::Pointwise;
  // The dtype the op computes in (in-place and out= targets may be of another dtype).
  const DType result = mutate ? op.infer(op, in, attrs)[0].dtype : out[0].dtype();
  TensorList targets = out;
  bool staged = false;
  if (!mutate)
    for (Tensor& t : targets)
      if (!plain_contiguous(t)) {
        t = empty(t.sizes(), t.dtype(), dev);
        staged = true;
      }
  std::ostringstream key;
  key << op.name << '|' << device_index(dev) << '|' << result << '|';
  for (const Attr& a : attrs.values()) key << a << ';';
  key << '|';
  for (const Tensor& t : in) describe(key, t);
  for (const Tensor& t : targets) describe(key, t);
  // Which tensors share memory changes the graph (in-place ops read what they write).
  for (size_t i = 0; i < in.size() + targets.size(); ++i) {
    const Tensor& a = i < in.size() ? in[i] : targets[i - in.size()];
    if (!a.defined()) continue;
    for (size_t j = 0; j < i; ++j) {
      const Tensor& b = j < in.size() ? in[j] : targets[j - in.size()];
      if (b.defined() && a.impl()->storage() == b.impl()->storage()) key << i << '=' << j << ',';
    }
  }
  const std::string k = key.str();
  std::shared_ptr<const CudaPlan> plan = plan_cache().find(k);
  if (!plan) {
    plan = build_plan(op, in, targets, attrs, mutate, result, dev);
    plan_cache().put(k, plan);
  }
  if (plan->host) {
    host_fallback(op, inputs, out, attrs);
    return;
  }
  run_plan(*plan, in, targets, dev);
  if (staged)
    for (size_t i = 0; i < out.size(); ++i)
      if (!targets[i].is_same(out[i])) cuda_copy(targets[i], out[i]);
}

}  // namespace

std::vector<fusion::Kernel> eager_cuda_kernels(const OpDef& op, const TensorList& in, const TensorList& out,
                                               const Attrs& attrs) {
  const bool mutate = op.kind == OpKind::Pointwise;
  const DType result = mutate ? op.infer(op, in, attrs)[0].dtype : out.at(0).dtype();
  std::vector<fusion::Kernel> ks;
  const std::shared_ptr<CudaPlan> plan = build_plan(op, in, out, attrs, mutate, result, Device(kCUDA, 0), false);
  for (const Launch& l : plan->launches) ks.push_back(l.ir);
  return ks;
}

void cuda_copy(const Tensor& src, const Tensor& dst) {
  const OpDef& op = KILN_ROW("copy");
  TensorList outs{dst};
  fused_kernel(op, {src}, outs, Attrs{dst.dtype()});
}

namespace ops_registration {
void register_cuda_fused_kernels(OpRegistry& r) {
  // Every pointwise and reduction row (and layer_norm, which fusion lowers too): what the
  // partitioner cannot lower for a call goes to the host, and the rows it never lowers get
  // their composed kernels after this (register_cuda_kernels) — no second list of fusable ops.
  for (const OpDef* d : r.all()) {
    OpDef& row = r.mutable_get(d->name);
    if (row.kind == OpKind::Pointwise || row.kind == OpKind::Reduction || row.name == "layer_norm")
      row.kernels[kCudaIdx] = &fused_kernel;
  }
}
}  // namespace ops_registration

}  // namespace kiln
