#pragma once
// kiln::profiler — what kiln did while a Profile was alive: eager ops, JIT phases, compiled
// kernel runs, extern calls (matmul, conv, BLAS) and allocator events, from every thread.
//
//   kiln::profiler::Profile prof;                 // records from here (one Profile at a time)
//   step(x, y);
//   prof.stop();
//   prof.save_chrome_trace("kiln_trace.json");    // open in https://ui.perfetto.dev
//   std::cout << prof.table();                    // like PyTorch's key_averages().table()
//
// With no Profile alive each instrumented point costs one relaxed load and one predictable
// branch (enabled() below). docs/profiling.md has the event fields and the measured costs.
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln {
class Tensor;
}

namespace kiln::profiler {

namespace detail {
extern std::atomic<bool> g_enabled;  // a Profile is recording
}
// True while a Profile records. The only cost instrumented code pays when profiling is off.
inline bool enabled() noexcept { return detail::g_enabled.load(std::memory_order_relaxed); }

enum class Category : uint8_t {
  Op,        // an eager op dispatched through the op registry (name: the op; "add_" for in-place)
  Jit,       // a JIT phase: capture, compile, a graph pass, fusion, codegen, render, optimise, ...
  Run,       // a compiled graph run by its plan ("<function>.<entry>") or a compiled call's replay
  Node,      // one node of a running plan; a flow arrow leads to the kernel or extern that ran it
  Kernel,    // a fused kernel (its name as in jit::stats() and KILN_DUMP_DIR/<plan>.kernels.txt)
  Extern,    // an eager kernel run by a plan (matmul, conv, ops that do not fuse)
  Blas,      // one GEMM call (oneDNN sgemm, or kiln's blocked GEMM for other dtypes)
  Autograd,  // backward() / grad(), and each grad_fn node's vjp
  User,      // a Scope opened by user code
  Alloc,     // instant: a CPU allocation of `bytes`
  Free,      // instant: a CPU free of `bytes`
};
std::string_view category_name(Category c);  // "op", "jit", "run", "node", "kernel", ...

struct Event {
  Category category = Category::User;
  std::string name;
  int tid = 0;              // the profile's thread number (1, 2, ... in order of first event)
  int depth = 0;            // scopes open on the thread when it began
  int parent = -1;          // index in events() of the enclosing event on its thread, or -1
  int64_t start_ns = 0;     // from the start of the profile
  int64_t dur_ns = 0;       // 0 for instants (Alloc, Free)
  int64_t self_ns = 0;      // dur_ns minus the dur_ns of its children
  std::string shapes;       // input sizes, "[[64, 2], [64]]" (Options::record_shapes)
  std::string dtype, device;  // of the first input (or output)
  int64_t bytes = 0;        // bytes read + written (estimate: each tensor once); Alloc/Free: size
  double flops = 0;         // arithmetic operations (estimate; 0 when not estimated)
  std::string detail;       // kernel: the ops it fused; node: its graph text; run: backend; ...
  std::vector<std::pair<std::string, std::string>> args;  // more facts ("nodes", "function", ...)
  int64_t flow_out = 0;     // Node: id of the arrow to the kernel or extern that ran it
  int64_t flow_in = 0;      // Kernel / Extern: id of the arrow from its graph node
  uint64_t seq = 0;         // order of beginning on its thread

  bool instant() const { return category == Category::Alloc || category == Category::Free; }
  double gb_per_s() const { return dur_ns > 0 ? static_cast<double>(bytes) / static_cast<double>(dur_ns) : 0; }
  double gflop_per_s() const { return dur_ns > 0 ? flops / static_cast<double>(dur_ns) : 0; }
};

struct Options {
  bool record_shapes = true;        // input shapes of ops and externs
  bool record_allocations = false;  // Alloc / Free instants
  bool record_memory = false;       // a counter track: bytes allocated minus freed since the start
};

enum class SortBy : uint8_t { SelfTime, TotalTime, Calls, AvgTime, Bytes, Name };
enum class GroupBy : uint8_t {
  Name,           // one row per (category, name): an op, a kernel, a JIT phase
  NameAndShapes,  // ... and per input shapes
  Category,       // one row per category
};

// One row of the summary (events of one group; instants are not rows).
struct Row {
  std::string name;
  Category category = Category::User;
  std::string shapes;
  int64_t calls = 0;
  int64_t self_ns = 0, total_ns = 0;
  int64_t bytes = 0;
  double flops = 0;
  double avg_ns() const { return calls ? static_cast<double>(total_ns) / static_cast<double>(calls) : 0; }
  double gb_per_s() const { return total_ns > 0 ? static_cast<double>(bytes) / static_cast<double>(total_ns) : 0; }
  double gflop_per_s() const { return total_ns > 0 ? flops / static_cast<double>(total_ns) : 0; }
};

class Profile {
 public:
  explicit Profile(Options options = {});  // raises kiln::Error if another Profile is recording
  ~Profile();
  Profile(const Profile&) = delete;
  Profile& operator=(const Profile&) = delete;

  // Stops recording and gathers every thread's events (the outputs below stop it too).
  void stop();
  bool recording() const;

  // Every event, grouped by thread and in order of beginning within a thread.
  const std::vector<Event>& events();
  // Names of the threads by tid (index 0 unused).
  const std::vector<std::string>& thread_names();
  // Wall time of the top-level events of all threads: equals the sum of every event's self_ns.
  int64_t total_ns();

  std::vector<Row> summary(GroupBy group_by = GroupBy::Name, SortBy sort_by = SortBy::SelfTime);
  // Columns: name, kind, calls, self, self %, total, avg, bytes, GB/s, GFLOP/s; a footer with
  // the totals and the allocator events. row_limit 0: every row.
  std::string table(SortBy sort_by = SortBy::SelfTime, GroupBy group_by = GroupBy::Name, size_t row_limit = 40);
  // Chrome trace event format (JSON object with "traceEvents"), for chrome://tracing and Perfetto.
  std::string to_chrome_trace();
  void save_chrome_trace(const std::string& path);  // raises kiln::Error when it cannot write

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A named range on the calling thread (user code, and kiln's own instrumentation).
class Scope {
 public:
  explicit Scope(std::string_view name, Category category = Category::User) {
    if (enabled()) [[unlikely]]
      begin(name, category);
  }
  ~Scope() {
    if (ev_) [[unlikely]]
      end();
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;
  bool active() const { return ev_ != nullptr; }
  // The event being recorded (null when inactive): fill in shapes, bytes, flops, args...
  Event* event() const { return ev_.get(); }
  // Ends the range now; returns its duration in ns (0 when inactive).
  int64_t close();

 private:
  void begin(std::string_view name, Category category);
  void end();
  std::unique_ptr<Event> ev_;
  uint64_t session_ = 0;
};

namespace detail {
// Instrumentation helpers (called only when enabled()).
void describe_inputs(Event& e, const std::vector<Tensor>& inputs);  // shapes, dtype, device, bytes read
void add_written(Event& e, const std::vector<Tensor>& outputs);     // bytes written
void add_written(Event& e, const Tensor& output);
int64_t new_flow_id();
// CPU allocator events; `how`: "cache hit", "cache miss" (went to the system), "small" (uncached size).
void record_alloc(size_t nbytes, const char* how);
void record_free(size_t nbytes, const char* how);
}  // namespace detail

}  // namespace kiln::profiler
