#include "jit/tracer.h"

#include <atomic>

#include "core/error.h"
#include "core/shape.h"

namespace kiln::jit {

namespace {

std::atomic<uint32_t> g_next_segment{1};

// Owner of lazy storages whose trace failed: reading them explains instead of crashing.
class AbandonedOwner final : public LazyOwner {
 public:
  void realize(StorageImpl&) override {
    KILN_CHECK(false, "[jit] this tensor was produced inside a compiled call that failed before computing it; "
                      "its value does not exist (see the error raised by that call)");
  }
};
AbandonedOwner g_abandoned;

bool same_geometry(const Value& v, const Tensor& t) {
  return v.dtype == t.dtype() && v.offset == t.storage_offset() && IntArrayRef(v.sizes) == t.sizes() &&
         IntArrayRef(v.strides) == t.strides();
}

Value value_like(const Tensor& t, int storage) {
  Value v;
  v.sizes = t.sizes().vec();
  v.strides = t.strides().vec();
  v.offset = t.storage_offset();
  v.dtype = t.dtype();
  v.device = t.device();
  v.storage = storage;
  v.wrapped = t.impl()->is_wrapped_number();
  return v;
}

}  // namespace

Tracer::Tracer(Runner run) : run_(std::move(run)), segment_id_(g_next_segment.fetch_add(1)) {}

Tracer::~Tracer() {
  if (!lazy_.empty()) abandon("the tracer was destroyed with work pending");
  release_pending_writes();
}

bool Tracer::is_pending_write(const StorageImpl* s) const {
  for (const Storage& p : pending_writes_)
    if (p.get() == s) return true;
  return false;
}

void Tracer::release_pending_writes() {
  for (const Storage& p : pending_writes_)
    if (p->lazy_owner() == this) p->set_lazy_owner(nullptr);
  pending_writes_.clear();
}

void Tracer::reset_segment() {
  seg_ = Segment{};
  segment_id_ = g_next_segment.fetch_add(1);
  // Bare empty() storages no node used yet get their (uninitialised) memory now, as eager's
  // empty() has; later segments read them as inputs.
  for (auto& [ptr, e] : lazy_) {
    if (e.graph_storage >= 0) continue;
    if (Storage sp = e.storage.lock()) {
      StorageImpl fresh(sp->nbytes(), sp->device());
      sp->adopt(fresh);
    }
  }
  lazy_.clear();
  external_storage_.clear();
  external_value_.clear();
}

int Tracer::add_lazy_storage(const Storage& s, Device device) {
  StorageInfo info;
  info.nbytes = s->nbytes();
  info.device = device;
  int gs = seg_.graph.add_storage(info);
  LazyEntry& e = lazy_[s.get()];
  e.storage = s;
  e.graph_storage = gs;
  e.root = -1;
  return gs;
}

int Tracer::value_of(const Tensor& t) {
  if (!t.defined()) return -1;
  TensorImpl* impl = t.impl();
  Graph& g = seg_.graph;
  if (impl->jit_segment() == segment_id_ && impl->jit_value() >= 0 && same_geometry(g.value(impl->jit_value()), t)) {
    // wrap_scalar() flags its tensor after filling it, i.e. after the value was made.
    g.values[static_cast<size_t>(impl->jit_value())].wrapped = impl->is_wrapped_number();
    return impl->jit_value();
  }
  const StorageImpl* st = impl->storage().get();
  const bool pending_write = st->lazy_owner() == this && is_pending_write(st);
  if (st->lazy_owner() == this && !pending_write) {
    auto it = lazy_.find(st);
    KILN_INTERNAL_ASSERT(it != lazy_.end(), "jit: a pending storage unknown to its tracer");
    LazyEntry& e = it->second;
    if (e.graph_storage < 0) {
      // First use of a bare empty(): the allocation becomes a node.
      StorageInfo info;
      info.nbytes = st->nbytes();
      info.device = t.device();
      e.graph_storage = g.add_storage(info);
      int v = g.add_value(value_like(t, e.graph_storage));
      Node n;
      n.kind = NodeKind::Alloc;
      n.outputs = {v};
      g.add_node(std::move(n));
      e.root = v;
      impl->set_jit_value(segment_id_, v);
      return v;
    }
    // A tensor over pending memory that no recorded op made (detach(), a fresh TensorImpl):
    // an as_strided view of the storage's first value.
    KILN_INTERNAL_ASSERT(e.root >= 0 && g.value(e.root).dtype == t.dtype(),
                         "jit: a pending storage viewed with another dtype");
    int v = g.add_value(value_like(t, e.graph_storage));
    Node n;
    n.kind = NodeKind::View;
    n.op = &KILN_ROW("as_strided");
    n.inputs = {e.root};
    n.outputs = {v};
    n.attrs = Attrs{t.sizes().vec(), t.strides().vec(), t.storage_offset()};
    g.add_node(std::move(n));
    impl->set_jit_value(segment_id_, v);
    return v;
  }
  KILN_INTERNAL_ASSERT(!st->is_lazy() || pending_write, "jit: a tensor pending in another capture reached this one");
  if (auto it = external_value_.find(impl); it != external_value_.end()) return it->second;
  int gs;
  if (auto it = external_storage_.find(st); it != external_storage_.end()) {
    gs = it->second;
  } else {
    StorageInfo info;
    info.nbytes = st->nbytes();
    info.device = t.device();
    info.input = static_cast<int>(g.inputs.size());
    gs = g.add_storage(info);
    external_storage_.emplace(st, gs);
  }
  int v = g.add_value(value_like(t, gs));
  Node n;
  n.kind = NodeKind::Input;
  n.outputs = {v};
  g.add_node(std::move(n));
  seg_.bindings.push_back(t);
  external_value_.emplace(impl, v);
  return v;
}

void Tracer::note_host_read(const Tensor& t) {
  if (!host_read_.empty() || flushing_) return;
  const StorageImpl* st = t.impl()->storage().get();
  if (st->lazy_owner() == this && !is_pending_write(st)) {
    auto it = lazy_.find(st);
    if (it == lazy_.end() || it->second.graph_storage >= 0) return;  // pending: a graph break follows
  }
  host_read_ = access_;
}

void Tracer::guard_state(const void* addr, size_t nbytes, const char* what) {
  for (const StateGuard& g : state_guards_)
    if (g.addr == addr) return;  // the first read is what the traced code saw
  state_guards_.push_back({addr, std::string(static_cast<const char*>(addr), nbytes), what});
}

int Tracer::lookup(const Tensor& t) {
  if (!t.defined()) return -1;
  const TensorImpl* impl = t.impl();
  if (impl->jit_segment() == segment_id_ && impl->jit_value() >= 0 && same_geometry(seg_.graph.value(impl->jit_value()), t))
    return impl->jit_value();
  const StorageImpl* st = t.impl()->storage().get();
  if (st->lazy_owner() == this && !is_pending_write(st)) {
    auto it = lazy_.find(st);
    return it != lazy_.end() && it->second.graph_storage >= 0 ? value_of(t) : -1;
  }
  if (auto it = external_value_.find(t.impl()); it != external_value_.end()) return it->second;
  return -1;
}

void Tracer::capture_failed(const OpDef& op, const char* what) {
  // Never the user's fault and never fatal: the op runs eagerly after the segment so far.
  failure_ = "capture of " + op.name + " failed (" + what + "); it runs eagerly";
  flush(failure_);
}

// Runs a recording step; a failure that is not the user's (a kiln bug, an unsupported case)
// becomes a break and the op runs eagerly. User errors propagate, as eager raises them too.
template <class F, class R>
R Tracer::guarded(const OpDef& op, F&& record, R on_failure) {
  try {
    return record();
  } catch (const InternalError& e) {
    capture_failed(op, e.what());
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    capture_failed(op, e.what());
  }
  return on_failure;
}

TensorList Tracer::record_op(const OpDef& op, const TensorList& inputs, const Attrs& attrs,
                             const std::vector<TensorMeta>& metas) {
  return guarded(op, [&] { return record_op_checked(op, inputs, attrs, metas); }, TensorList{});
}

void Tracer::record_view(const OpDef& op, const Tensor& input, const Attrs& attrs, const Tensor& view) {
  guarded(op, [&] { return record_view_checked(op, input, attrs, view), true; }, false);
}

bool Tracer::record_mutation(const OpDef& op, const Tensor& out, const TensorList& inputs, const Attrs& attrs,
                             DType result) {
  return guarded(op, [&] { return record_mutation_checked(op, out, inputs, attrs, result), true; }, false);
}

TensorList Tracer::record_op_checked(const OpDef& op, const TensorList& inputs, const Attrs& attrs,
                                     const std::vector<TensorMeta>& metas) {
  Node n;
  n.kind = NodeKind::Op;
  n.op = &op;
  n.attrs = attrs;
  n.inputs.reserve(inputs.size());
  for (const Tensor& in : inputs) n.inputs.push_back(value_of(in));
  TensorList out;
  out.reserve(metas.size());
  Graph& g = seg_.graph;
  for (const TensorMeta& m : metas) {
    const size_t nbytes = static_cast<size_t>(shape_numel(m.sizes)) * itemsize(m.dtype);
    auto st = std::make_shared<StorageImpl>(nbytes, m.device, this);
    int gs = add_lazy_storage(st, m.device);
    Value v;
    v.sizes = m.sizes;
    v.strides = contiguous_strides(m.sizes);
    v.dtype = m.dtype;
    v.device = m.device;
    v.storage = gs;
    auto impl = std::make_shared<TensorImpl>(st, m.dtype, m.sizes, v.strides, 0);
    int vid = g.add_value(std::move(v));
    lazy_[st.get()].root = vid;
    impl->set_jit_value(segment_id_, vid);
    n.outputs.push_back(vid);
    out.emplace_back(std::move(impl));
  }
  g.add_node(std::move(n));
  access_ = kHostRead;
  return out;
}

void Tracer::record_view_checked(const OpDef& op, const Tensor& input, const Attrs& attrs, const Tensor& view) {
  int in = value_of(input);
  Graph& g = seg_.graph;
  int v = g.add_value(value_like(view, g.value(in).storage));
  Node n;
  n.kind = NodeKind::View;
  n.op = &op;
  n.attrs = attrs;
  n.inputs = {in};
  n.outputs = {v};
  g.add_node(std::move(n));
  view.impl()->set_jit_value(segment_id_, v);
}

void Tracer::record_mutation_checked(const OpDef& op, const Tensor& out, const TensorList& inputs,
                                     const Attrs& attrs, DType result) {
  Node n;
  n.kind = NodeKind::Mutate;
  n.op = &op;
  n.attrs = attrs;
  n.result = result;
  n.inputs.reserve(inputs.size());
  for (const Tensor& in : inputs) n.inputs.push_back(value_of(in));
  n.target = value_of(out);
  seg_.graph.add_node(std::move(n));
  const Storage& st = out.impl()->storage();
  if (!st->is_lazy()) {
    st->set_lazy_owner(this);
    pending_writes_.push_back(st);
  }
  access_ = kHostRead;
}

Storage Tracer::new_storage(size_t nbytes, Device device) {
  auto st = std::make_shared<StorageImpl>(nbytes, device, this);
  LazyEntry& e = lazy_[st.get()];
  e.storage = st;
  e.graph_storage = -1;
  e.root = -1;
  return st;
}

void Tracer::realize(StorageImpl& s) {
  KILN_INTERNAL_ASSERT(!flushing_, "jit: the segment runner read a pending tensor");
  if (is_pending_write(&s)) {
    flush(access_);  // host code reads a realised tensor the segment writes: run the write first
    return;
  }
  auto it = lazy_.find(&s);
  KILN_INTERNAL_ASSERT(it != lazy_.end(), "jit: realize of a storage this tracer does not own");
  if (it->second.graph_storage < 0) {
    // A bare empty() that host code is about to fill (tensor({...}), arange): it gets memory
    // now and enters the graph as an input when an op uses it. No break.
    StorageImpl fresh(s.nbytes(), s.device());
    s.adopt(fresh);
    lazy_.erase(it);
    return;
  }
  flush(access_);
  KILN_INTERNAL_ASSERT(!s.is_lazy(), "jit: a live pending storage was not materialised by its segment");
}

void Tracer::flush(const std::string& reason) {
  if (flushing_) return;
  Graph& g = seg_.graph;
  release_pending_writes();  // the runner reads and writes them for real
  if (g.num_ops() == 0) {
    reset_segment();
    return;
  }
  seg_.outputs.assign(g.storages.size(), nullptr);
  for (auto& [ptr, e] : lazy_) {
    if (e.graph_storage < 0) continue;
    if (Storage sp = e.storage.lock()) {
      g.storages[static_cast<size_t>(e.graph_storage)].output = true;
      seg_.outputs[static_cast<size_t>(e.graph_storage)] = std::move(sp);
    }
  }
  seg_.break_reason = reason;
  if (!reason.empty()) breaks_.push_back(reason);
  flushing_ = true;
  try {
    TraceScope off(nullptr);
    run_(seg_);
  } catch (...) {
    flushing_ = false;
    abandon("its segment failed");
    throw;
  }
  flushing_ = false;
  ++segments_run_;
  for (const Storage& s : seg_.outputs)
    KILN_INTERNAL_ASSERT(!s || !s->is_lazy(), "jit: the segment runner left an output storage without memory");
  reset_segment();
}

void Tracer::abandon(const std::string&) {
  release_pending_writes();
  for (auto& [ptr, e] : lazy_)
    if (Storage sp = e.storage.lock()) sp->set_lazy_owner(&g_abandoned);
  lazy_.clear();
  seg_ = Segment{};
  external_storage_.clear();
  external_value_.clear();
  segment_id_ = g_next_segment.fetch_add(1);
}

}  // namespace kiln::jit
