#pragma once
// The trace recorder: while active on a thread, dispatched ops append nodes to the pending
// segment's graph and return lazy tensors (a storage with no memory yet). Realised tensors
// reached from the call (arguments, parameters, optimizer state) become graph inputs, bound by
// reference. The segment ends — is flushed — at the end of the call, or earlier when host code
// reads a pending tensor's memory (item(), data_ptr(), printing, an op that needs values to know
// its output shape): that is a graph break. Flushing hands the segment to a runner that executes
// it and gives every still-referenced lazy storage its memory.
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/trace_hook.h"
#include "jit/graph.h"

namespace kiln::jit {

// One flushed segment: the graph and what its inputs bind to.
struct Segment {
  Graph graph;
  std::vector<Tensor> bindings;  // realised tensor per graph input
  // Per graph storage: the lazy storage to materialise (set for output storages only).
  std::vector<Storage> outputs;
  std::string break_reason;  // why the segment ended early ("" at the end of the call)
};

class Tracer final : public kiln::detail::TraceHook, public LazyOwner {
 public:
  // `run` executes a segment and adopts memory into every `outputs` entry.
  using Runner = std::function<void(Segment&)>;
  explicit Tracer(Runner run);
  ~Tracer() override;
  Tracer(const Tracer&) = delete;
  Tracer& operator=(const Tracer&) = delete;

  // Ends the pending segment (if it holds anything) and runs it.
  void flush(const std::string& reason = "");
  // After a failure: lazy tensors still referenced raise a clear error when read.
  void abandon(const std::string& why);
  // Breaks so far (one per early flush), with reasons.
  const std::vector<std::string>& breaks() const { return breaks_; }
  int segments_run() const { return segments_run_; }

  // --- detail::TraceHook ---
  TensorList record_op(const OpDef& op, const TensorList& inputs, const Attrs& attrs,
                       const std::vector<TensorMeta>& metas) override;
  void record_view(const OpDef& op, const Tensor& input, const Attrs& attrs, const Tensor& view) override;
  bool record_mutation(const OpDef& op, const Tensor& out, const TensorList& inputs, const Attrs& attrs,
                       DType result) override;
  Storage new_storage(size_t nbytes, Device device) override;
  void note_data_access(const char* what) override { access_ = what; }
  void note_host_read(const Tensor& t) override;
  // What host code read from a realised tensor during the call ("" when nothing): such a call
  // depends on values the graph does not recompute (one_hot's class count, an integer divisor
  // check), so it is never replayed.
  const std::string& host_read() const { return host_read_; }
  void guard_state(const void* addr, size_t nbytes, const char* what) override;
  struct StateGuard {
    const void* addr;
    std::string bytes;  // the value read
    std::string what;
    bool operator==(const StateGuard& o) const { return addr == o.addr && bytes == o.bytes; }
  };
  const std::vector<StateGuard>& state_guards() const { return state_guards_; }
  // The graph value a tensor has in the pending segment (a view is added for a tensor over
  // pending memory that no recorded op made, such as detach()), or -1.
  int lookup(const Tensor& t);
  uint32_t segment_id() const { return segment_id_; }
  // The realised tensors the pending segment reads, by graph input.
  const std::vector<Tensor>& pending_bindings() const { return seg_.bindings; }

  // --- LazyOwner ---
  void realize(StorageImpl& s) override;

 private:
  struct LazyEntry {
    std::weak_ptr<StorageImpl> storage;
    int graph_storage = -1;  // -1 while no node has touched it (a bare empty())
    int root = -1;           // the value that first defined it
  };
  int value_of(const Tensor& t);  // graph value for t; adds an Input or a geometry view
  TensorList record_op_checked(const OpDef& op, const TensorList& inputs, const Attrs& attrs,
                               const std::vector<TensorMeta>& metas);
  void record_view_checked(const OpDef& op, const Tensor& input, const Attrs& attrs, const Tensor& view);
  void record_mutation_checked(const OpDef& op, const Tensor& out, const TensorList& inputs, const Attrs& attrs,
                               DType result);
  void capture_failed(const OpDef& op, const char* what);
  template <class F, class R>
  R guarded(const OpDef& op, F&& record, R on_failure);
  int add_lazy_storage(const Storage& s, Device device);
  void reset_segment();
  // Realised storages the pending segment writes (in-place ops on arguments, parameters...):
  // while pending they are marked lazy with this tracer as owner, so that host code reading
  // them (item(), an infer that reads values) flushes the segment first and sees the write.
  bool is_pending_write(const StorageImpl* s) const;
  void release_pending_writes();

  Runner run_;
  uint32_t segment_id_ = 0;
  Segment seg_;
  std::unordered_map<const StorageImpl*, LazyEntry> lazy_;       // storages created in this segment
  std::unordered_map<const StorageImpl*, int> external_storage_;  // realised storage -> graph storage
  std::unordered_map<const TensorImpl*, int> external_value_;     // bound tensor -> its Input value
  std::vector<Storage> pending_writes_;  // realised storages written by the pending segment
  // Reason of the next break: what host code said it reads. call_op names each op before its
  // infer (a data-dependent infer reads); once the op is recorded that name is stale, so it goes
  // back to a bare memory read.
  static constexpr const char* kHostRead = "data_ptr()";
  const char* access_ = kHostRead;
  std::string failure_;
  std::string host_read_;
  std::vector<StateGuard> state_guards_;
  std::vector<std::string> breaks_;
  int segments_run_ = 0;
  bool flushing_ = false;
};

// Makes `tracer` the thread's recorder for a scope; restores the previous one after.
class TraceScope {
 public:
  explicit TraceScope(kiln::detail::TraceHook* tracer) : prev_(kiln::detail::t_trace_hook) {
    kiln::detail::t_trace_hook = tracer;
  }
  ~TraceScope() { kiln::detail::t_trace_hook = prev_; }
  TraceScope(const TraceScope&) = delete;
  TraceScope& operator=(const TraceScope&) = delete;

 private:
  kiln::detail::TraceHook* prev_;
};

}  // namespace kiln::jit
