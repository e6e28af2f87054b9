#pragma once
// The seam between dispatch and the JIT's trace recorder (jit/tracer.cpp implements it), so
// core does not depend on jit. Outside a capturing call the hook is null and dispatch runs the
// eager kernels; inside, ops append nodes and return lazy tensors (storage without memory).
#include <memory>
#include <type_traits>
#include <vector>

#include "core/tensor.h"

namespace kiln {

struct OpDef;
class Attrs;
struct TensorMeta;

namespace detail {

class TraceHook {
 public:
  virtual ~TraceHook() = default;
  // A non-view op: returns lazy outputs of the inferred metadata, or an empty list when the op
  // cannot be captured here (it then runs eagerly, after the pending trace is flushed).
  virtual TensorList record_op(const OpDef& op, const TensorList& inputs, const Attrs& attrs,
                               const std::vector<TensorMeta>& metas) = 0;
  // A view was made of `input` (no data moves; the view is already built).
  virtual void record_view(const OpDef& op, const Tensor& input, const Attrs& attrs, const Tensor& view) = 0;
  // `op(inputs)` written into `out` (in-place ops, out=, copy_, fill_). Returns false when the
  // write must run eagerly.
  // `result` is the dtype the op computes in before the cast into `out`.
  virtual bool record_mutation(const OpDef& op, const Tensor& out, const TensorList& inputs, const Attrs& attrs,
                               DType result) = 0;
  // empty()/empty_strided() inside a capture: a lazy storage.
  virtual Storage new_storage(size_t nbytes, Device device) = 0;
  // Something is about to read tensor memory on the host (item(), data_ptr(), printing): the
  // name goes into the graph-break reason if that memory is still pending.
  virtual void note_data_access(const char* what) = 0;
  // Host code is about to read (or write) `t`'s memory through data_ptr(). A pending tensor breaks
  // the graph anyway; a realised one (an argument, a parameter) means the traced code looked at
  // values the graph does not recompute, so the call must not be replayed without running f.
  virtual void note_host_read(const Tensor& t) = 0;
  // The traced code read `nbytes` of C++ state at `addr` (an optimizer's lr): a replay of the
  // call is valid only while those bytes are unchanged, so they become a guard.
  virtual void guard_state(const void* addr, size_t nbytes, const char* what) = 0;
};

inline thread_local TraceHook* t_trace_hook = nullptr;
inline TraceHook* trace_hook() { return t_trace_hook; }

// Names the reason of a graph break that the next memory read may cause.
inline void note_data_access(const char* what) {
  if (t_trace_hook) [[unlikely]] t_trace_hook->note_data_access(what);
}


inline void guard_state(const void* addr, size_t nbytes, const char* what) {
  if (t_trace_hook) [[unlikely]] t_trace_hook->guard_state(addr, nbytes, what);
}
template <class T>
void guard_state(const T& value, const char* what) {
  static_assert(std::is_trivially_copyable_v<T>);
  guard_state(&value, sizeof(T), what);
}

}  // namespace detail
}  // namespace kiln
