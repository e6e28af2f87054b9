#include "jit/interpreter.h"

#include "jit/cuda_graph.h"

#include "autograd/grad_mode.h"
#include "core/ops.h"
#include "core/profiler.h"
#include "fusion/partition.h"
#include "jit/tracer.h"

namespace kiln::jit {

namespace {

bool same_geometry(const Value& a, const Value& b) {
  return a.storage == b.storage && a.offset == b.offset && a.sizes == b.sizes && a.strides == b.strides;
}

KernelFn kernel_of(const OpDef& op, const Device& dev) {
  KernelFn k = op.kernels[static_cast<int>(dev.type())];
  KILN_CHECK(k != nullptr, "[", op.name, "] has no ", dev.is_cuda() ? "CUDA" : "CPU", " implementation");
  return k;
}

}  // namespace

std::pair<int, int> rng_attr_indices(const OpDef& op) {
  int seed = -1, offset = -1;
  for (size_t i = 0; i < op.attr_names.size(); ++i) {
    if (op.attr_names[i] == "seed") seed = static_cast<int>(i);
    if (op.attr_names[i] == "offset" && seed >= 0) offset = static_cast<int>(i);
  }
  return seed >= 0 && offset >= 0 ? std::pair{seed, offset} : std::pair{-1, -1};
}

Plan::Plan(Graph g) : graph_(std::move(g)), buffers_(plan_buffers(graph_)) {
  direct_.assign(graph_.nodes.size(), 1);
  rng_attr_.assign(graph_.nodes.size(), {-1, -1});
  for (size_t i = 0; i < graph_.nodes.size(); ++i) {
    const Node& n = graph_.nodes[i];
    if (n.op) rng_attr_[i] = rng_attr_indices(*n.op);
    if (n.kind != NodeKind::Mutate) continue;
    const Value& t = graph_.value(n.target);
    bool direct = n.result == t.dtype;
    for (int in : n.inputs) {
      if (in < 0) continue;
      const Value& v = graph_.value(in);
      if (v.storage != t.storage) continue;
      // Pointwise kernels may read and write the same elements; anything else reads after write.
      if (!same_geometry(v, t) || n.op->kind != OpKind::Pointwise) direct = false;
    }
    direct_[i] = direct;
  }
}

std::unique_ptr<Plan::Workspace> Plan::take_workspace() const {
  {
    std::lock_guard<std::mutex> lock(pool_mutex_);
    if (!pool_.empty()) {
      auto ws = std::move(pool_.back());
      pool_.pop_back();
      return ws;
    }
  }
  auto ws = std::make_unique<Workspace>();
  ws->slots.resize(buffers_.slot_bytes.size());
  ws->vals.resize(graph_.values.size());
  ws->cached.assign(graph_.values.size(), 0);
  return ws;
}

void Plan::give_back(std::unique_ptr<Workspace> ws) const {
  std::lock_guard<std::mutex> lock(pool_mutex_);
  pool_.push_back(std::move(ws));
}

void Plan::run(const std::vector<Tensor>& bindings, const std::vector<Storage>& outputs, const RngKeys* rng,
               std::vector<Tensor>* snapshots, const std::vector<Scalar>* scalars) const {
  run_impl(bindings, &outputs, nullptr, rng, snapshots, scalars);
}

void Plan::run_fresh(const std::vector<Tensor>& bindings, std::vector<Storage>& produced, const RngKeys* rng) const {
  run_impl(bindings, nullptr, &produced, rng, nullptr, nullptr);
}

void Plan::run_impl(const std::vector<Tensor>& bindings, const std::vector<Storage>* adopt, std::vector<Storage>* produced,
                    const RngKeys* rng, std::vector<Tensor>* snapshots, const std::vector<Scalar>* scalars) const {
  // An asynchronously compiled plan takes over once it is ready.
  if (const Plan* up = upgrade_.load(std::memory_order_acquire)) return up->run_impl(bindings, adopt, produced, rng, snapshots, scalars);
  // Callers pass empty key and scalar lists for plans without random or per-call-scalar nodes
  // (CudaGraphRunner refuses plans with them).
  if (cuda_graph_ && !snapshots && (!rng || rng->empty()) && (!scalars || scalars->empty()) &&
      cuda_graph_->run(bindings, adopt, produced))
    return;
  const Graph& g = graph_;
  KILN_INTERNAL_ASSERT(bindings.size() == g.inputs.size(), "jit: plan bound with ", bindings.size(), " inputs, needs ",
                       g.inputs.size());
  TraceScope no_trace(nullptr);
  NoGradGuard no_grad;  // autograd history was recorded at capture time
  auto ws = take_workspace();
  // Kept in the workspace, so that a replay allocates nothing but its outputs.
  std::vector<Storage>& storage = ws->storage;
  std::vector<Storage>& fresh = ws->fresh;  // memory handed to the caller after the run
  storage.assign(g.storages.size(), nullptr);
  fresh.assign(g.storages.size(), nullptr);
  std::vector<Tensor>& vals = ws->vals;

  auto storage_for = [&](int s) -> const Storage& {
    Storage& st = storage[static_cast<size_t>(s)];
    if (st) return st;
    const StorageInfo& info = g.storages[static_cast<size_t>(s)];
    int slot = static_cast<size_t>(s) < buffers_.slot_of_storage.size() ? buffers_.slot_of_storage[static_cast<size_t>(s)] : -1;
    if (slot >= 0) {
      Storage& buf = ws->slots[static_cast<size_t>(slot)];
      if (!buf || buf->device() != info.device) buf = std::make_shared<StorageImpl>(buffers_.slot_bytes[static_cast<size_t>(slot)], info.device);
      st = buf;
    } else {
      st = std::make_shared<StorageImpl>(info.nbytes, info.device);
      if (info.output) fresh[static_cast<size_t>(s)] = st;
    }
    return st;
  };
  auto make = [&](int v) {
    if (ws->cached[static_cast<size_t>(v)]) return;
    const Value& val = g.value(v);
    const size_t s = static_cast<size_t>(val.storage);
    const bool slotted = s < buffers_.slot_of_storage.size() && buffers_.slot_of_storage[s] >= 0;
    auto impl = std::make_shared<TensorImpl>(storage_for(val.storage), val.dtype, val.sizes, val.strides, val.offset);
    impl->set_wrapped_number(val.wrapped);
    vals[static_cast<size_t>(v)] = Tensor(std::move(impl));
    ws->cached[static_cast<size_t>(v)] = slotted;
  };
  // Fused kernels need only their buffers' memory: the tensor of a value they write is made when
  // something reads it as a tensor.
  auto tensor = [&](int v) -> Tensor& {
    Tensor& t = vals[static_cast<size_t>(v)];
    if (!t.defined()) make(v);
    return t;
  };
  auto gather = [&](const std::vector<int>& ids) -> TensorList& {
    TensorList& t = ws->ins;
    t.clear();
    for (int v : ids) t.push_back(v >= 0 ? tensor(v) : Tensor());
    return t;
  };

  // Profiling: a Node event per node that runs a kernel, holding an Extern or Kernel event (the
  // end of a flow arrow `flow` from the node); off, `flow` is 0 and costs a predictable branch.
  auto run_node = [&](size_t i, const Node& n, const Attrs& node_attrs, int64_t flow) {
    const Attrs* attrs = &node_attrs;
    switch (n.kind) {
      case NodeKind::Input: {
        const Tensor& b = bindings[static_cast<size_t>(n.input_index)];
        vals[static_cast<size_t>(n.outputs[0])] = b;
        storage[static_cast<size_t>(g.value(n.outputs[0]).storage)] = b.impl()->storage();
        break;
      }
      case NodeKind::Constant:
        vals[static_cast<size_t>(n.outputs[0])] = n.constant;
        storage[static_cast<size_t>(g.value(n.outputs[0]).storage)] = n.constant.impl()->storage();
        break;
      case NodeKind::Alloc:
      case NodeKind::View:
        make(n.outputs[0]);
        break;
      case NodeKind::Op: {
        TensorList& ins = gather(n.inputs);
        TensorList& outs = ws->outs;
        outs.clear();
        for (int v : n.outputs) {
          make(v);
          outs.push_back(vals[static_cast<size_t>(v)]);
        }
        Device dev = outs.empty() ? Device(kCPU) : outs[0].device();
        if (flow) [[unlikely]] {
          profiler::Scope ext(n.op->name, profiler::Category::Extern);
          if (profiler::Event* e = ext.event()) {
            profiler::detail::describe_inputs(*e, ins);
            profiler::detail::add_written(*e, outs);
            e->flow_in = flow;
          }
          kernel_of(*n.op, dev)(*n.op, ins, outs, *attrs);
        } else {
          kernel_of(*n.op, dev)(*n.op, ins, outs, *attrs);
        }
        if (snapshots)
          for (int v : n.outputs) (*snapshots)[static_cast<size_t>(v)] = vals[static_cast<size_t>(v)].clone();
        break;
      }
      case NodeKind::Fused: {
        const fusion::FusedCall& call = *n.fused;
        std::vector<char*>& ptrs = ws->ptrs;
        ptrs.clear();
        for (int v : call.buffer_values) ptrs.push_back(static_cast<char*>(storage_for(g.value(v).storage)->data()));
        call.counters->calls.fetch_add(1, std::memory_order_relaxed);
        if (flow) [[unlikely]] {
          profiler::Scope kernel(call.ir.name, profiler::Category::Kernel);
          if (profiler::Event* e = kernel.event()) {
            e->detail = call.summary;
            e->bytes = call.cost.bytes;
            e->flops = call.cost.flops;
            e->flow_in = flow;
            e->args.emplace_back("values", call.sources);
            if (!label_.empty()) e->args.emplace_back("dump", label_ + ".kernels.txt");
          }
          fusion::run_fused(call, ptrs.data());
          if (const int64_t ns = kernel.close()) {
            call.counters->profiled_calls.fetch_add(1, std::memory_order_relaxed);
            call.counters->profiled_ns.fetch_add(ns, std::memory_order_relaxed);
          }
        } else {
          fusion::run_fused(call, ptrs.data());
        }
        if (snapshots)
          for (int v : n.outputs) (*snapshots)[static_cast<size_t>(v)] = tensor(v).clone();
        break;
      }
      case NodeKind::Mutate: {
        Tensor& target = tensor(n.target);
        TensorList& ins = gather(n.inputs);
        KernelFn k = kernel_of(*n.op, target.device());
        auto write = [&] {
          if (direct_[i]) {
            TensorList outs{target};
            k(*n.op, ins, outs, *attrs);
          } else {
            // Same as eager's out= path: compute into a temporary, then cast-copy into place.
            Tensor tmp = empty(target.sizes(), n.result, target.device());
            TensorList outs{tmp};
            k(*n.op, ins, outs, *attrs);
            const OpDef& copy = KILN_ROW("copy");
            TensorList dst{target};
            kernel_of(copy, target.device())(copy, {tmp}, dst, Attrs{target.dtype()});
          }
        };
        if (flow) [[unlikely]] {
          profiler::Scope ext(n.op->name, profiler::Category::Extern);
          if (profiler::Event* e = ext.event()) {
            e->name += "_";
            profiler::detail::describe_inputs(*e, ins);
            profiler::detail::add_written(*e, target);
            e->flow_in = flow;
          }
          write();
        } else {
          write();
        }
        break;
      }
    }
  };

  profiler::Scope run_scope(label_.empty() ? std::string_view("graph") : std::string_view(label_), profiler::Category::Run);
  const bool prof = run_scope.active();
  if (prof) [[unlikely]]
    run_scope.event()->detail = fusion_ ? "native plan" : "interpreter plan";
  auto run_node_profiled = [&](size_t i, const Node& n, const Attrs& node_attrs) {
    if (n.kind != NodeKind::Op && n.kind != NodeKind::Mutate && n.kind != NodeKind::Fused) return run_node(i, n, node_attrs, 0);
    profiler::Scope node(n.kind == NodeKind::Fused ? std::string_view("fused") : std::string_view(n.op->name),
                         profiler::Category::Node);
    int64_t flow = 0;
    if (profiler::Event* e = node.event()) {
      if (n.kind == NodeKind::Mutate) e->name += "_";
      std::call_once(node_text_once_, [&] {
        node_text_.resize(g.nodes.size());
        for (size_t k = 0; k < g.nodes.size(); ++k) node_text_[k] = g.node_str(k);
      });
      e->detail = node_text_[i];
      e->args.emplace_back("node", std::to_string(i));
      flow = e->flow_out = profiler::detail::new_flow_id();
    }
    run_node(i, n, node_attrs, flow);
  };
  if (snapshots) snapshots->assign(g.values.size(), Tensor());
  size_t next_rng = 0;
  Attrs rng_attrs;  // a node's attributes with those bound at run time
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    const Attrs* attrs = &n.attrs;
    if (rng_attr_[i].first >= 0) {
      if (rng) {
        KILN_INTERNAL_ASSERT(next_rng < rng->size(), "jit: fewer random keys than random nodes");
        std::vector<Attr> a = n.attrs.values();
        a[static_cast<size_t>(rng_attr_[i].first)] = (*rng)[next_rng].first;
        a[static_cast<size_t>(rng_attr_[i].second)] = (*rng)[next_rng].second;
        rng_attrs = Attrs();
        for (Attr& x : a) rng_attrs.push(std::move(x));
        attrs = &rng_attrs;
      }
      ++next_rng;
    }
    if (n.runtime_slot >= 0 && scalars) {
      std::vector<Attr> a = n.attrs.values();
      a.at(0) = scalars->at(static_cast<size_t>(n.runtime_slot));
      rng_attrs = Attrs();
      for (Attr& x : a) rng_attrs.push(std::move(x));
      attrs = &rng_attrs;
    }
    try {
      if (prof) [[unlikely]]
        run_node_profiled(i, n, *attrs);
      else
        run_node(i, n, *attrs, 0);
    } catch (const Error& e) {
      throw Error(std::string(e.what()) + "\n  (while running compiled node: " + g.node_str(i) + ")");
    } catch (const std::exception& e) {
      throw std::logic_error(std::string(e.what()) + "\n  (while running compiled node: " + g.node_str(i) + ")");
    }
  }

  // Drop this run's references (inputs, outputs) before handing memory over; keep the slots'.
  for (size_t v = 0; v < vals.size(); ++v)
    if (!ws->cached[v]) vals[v] = Tensor();
  ws->ins.clear();
  ws->outs.clear();
  if (adopt) {
    for (size_t s = 0; s < adopt->size(); ++s) {
      if (!(*adopt)[s]) continue;
      KILN_INTERNAL_ASSERT(fresh[s] != nullptr, "jit: output storage ", s, " was never written by its graph");
      (*adopt)[s]->adopt(*fresh[s]);
    }
  } else {
    produced->resize(g.storages.size());
    for (size_t s = 0; s < g.storages.size(); ++s) {
      if (!g.storages[s].output) continue;
      KILN_INTERNAL_ASSERT(fresh[s] != nullptr, "jit: output storage ", s, " was never written by its graph");
      (*produced)[s] = std::move(fresh[s]);
    }
  }
  std::fill(storage.begin(), storage.end(), nullptr);
  std::fill(fresh.begin(), fresh.end(), nullptr);
  give_back(std::move(ws));
}

}  // namespace kiln::jit
