// The compiled-function runtime: per-function cache entries behind guards, automatic dynamic
// dims and scalars, the recompile limit, graph breaks, eager fallback, replay promotion, stats.
#include "jit/compile.h"

#include <atomic>
#include <cmath>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <unordered_map>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "core/logging.h"
#include "core/profiler.h"
#include "core/random.h"
#include "core/shape.h"
#include "fusion/partition.h"
#include "jit/backend.h"
#include "jit/interpreter.h"
#include "jit/key.h"
#include "jit/passes.h"
#include "jit/tracer.h"

namespace kiln::jit {

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

struct Global {
  std::mutex mu;
  Stats stats;
  // Plans by the concrete hash of the graph they run: functions with identical graphs share.
  std::unordered_map<uint64_t, std::shared_ptr<const Plan>> graph_cache;
  std::atomic<uint64_t> epoch{1};  // reset() bumps it; functions then drop their entries
  std::atomic<int> next_function{0};
  // Kernels of the plans built, by name (Stats::kernels); plans whose kernels share a name
  // (the per-shape plans of a dynamic entry) share the counters.
  struct Kernel {
    KernelStats info;
    std::shared_ptr<fusion::KernelCounters> counters;
  };
  std::vector<Kernel> kernels;
  std::unordered_map<std::string, size_t> kernel_index;
};
Global& global() {
  static Global* g = new Global();  // leaked: compiled functions may outlive static destruction
  return *g;
}

template <class F>
void with_stats(F&& f) {
  Global& g = global();
  std::lock_guard<std::mutex> lock(g.mu);
  f(g.stats);
}

}  // namespace

void update_stats(const std::function<void(Stats&)>& f) { with_stats(f); }

void register_kernels(Graph& g, const std::string& plan) {
  Global& gl = global();
  std::lock_guard<std::mutex> lock(gl.mu);
  for (Node& n : g.nodes) {
    if (n.kind != NodeKind::Fused) continue;
    fusion::FusedCall& call = *n.fused;
    auto [it, fresh] = gl.kernel_index.emplace(call.ir.name, gl.kernels.size());
    if (!fresh) {
      call.counters = gl.kernels[it->second].counters;
      continue;
    }
    KernelStats k;
    k.name = call.ir.name;
    k.plan = plan;
    k.ops = call.summary;
    k.values = call.sources;
    k.bytes = call.cost.bytes;
    k.flops = call.cost.flops;
    gl.kernels.push_back({std::move(k), call.counters});
  }
}

namespace {

// mark_dynamic: dims named by hand, per tensor.
struct DynamicMarks {
  std::mutex mu;
  std::unordered_map<const TensorImpl*, std::pair<std::weak_ptr<TensorImpl>, std::set<int64_t>>> marks;
};
DynamicMarks& dynamic_marks() {
  static DynamicMarks* m = new DynamicMarks();
  return *m;
}
std::set<int64_t> marked_dims(const Tensor& t) {
  DynamicMarks& m = dynamic_marks();
  std::lock_guard<std::mutex> lock(m.mu);
  if (m.marks.empty()) return {};
  auto it = m.marks.find(t.impl());
  if (it == m.marks.end() || it->second.first.lock() != t.impl_ptr()) return {};
  return it->second.second;
}

// verify mode: the captured graph runs as is on copies of the inputs (the eager reference), the
// plan runs for real; the first Op output that differs beyond tolerance raises.
void verify_segment(Segment& seg, const Plan& plan, const Plan::RngKeys& rng, const std::vector<Scalar>& scalars,
                    double rtol, double atol, const std::string& name) {
  std::vector<Tensor> copies;
  {
    NoGradGuard no_grad;
    for (const Tensor& b : seg.bindings) copies.push_back(b.clone());
  }
  std::vector<Tensor> want, got;
  Plan reference(seg.graph);
  reference.run(copies, std::vector<Storage>(seg.graph.storages.size()), &rng, &want);
  plan.run(seg.bindings, seg.outputs, &rng, &got, &scalars);
  NoGradGuard no_grad;
  // A fused kernel hands out a storage's final contents: values overwritten later in the graph
  // (by in-place ops) cannot be compared at their definition.
  std::vector<int> last_write(seg.graph.storages.size(), -1);
  if (plan.fusion())
    for (size_t i = 0; i < seg.graph.nodes.size(); ++i)
      if (seg.graph.nodes[i].kind == NodeKind::Mutate)
        last_write[static_cast<size_t>(seg.graph.value(seg.graph.nodes[i].target).storage)] = static_cast<int>(i);
  for (size_t ni = 0; ni < seg.graph.nodes.size(); ++ni) {
    const Node& n = seg.graph.nodes[ni];
    if (n.kind != NodeKind::Op) continue;
    for (int v : n.outputs) {
      if (last_write[static_cast<size_t>(seg.graph.value(v).storage)] > static_cast<int>(ni)) continue;
      const Tensor& a = got[static_cast<size_t>(v)];
      const Tensor& b = want[static_cast<size_t>(v)];
      if (!a.defined() || !b.defined() || a.numel() == 0) continue;
      Tensor x = a.to(DType::Float64).contiguous(), y = b.to(DType::Float64).contiguous();
      const double* px = x.data_ptr<double>();
      const double* py = y.data_ptr<double>();
      for (int64_t i = 0; i < x.numel(); ++i) {
        const bool both_nan = std::isnan(px[i]) && std::isnan(py[i]);
        if (both_nan || std::abs(px[i] - py[i]) <= atol + rtol * std::abs(py[i])) continue;
        KILN_CHECK(false, "[jit] verify (", name, "): %", v, " = ", n.op->name, "(...) : ",
                   meta_str(a.dtype(), a.sizes()), " diverges from eager at flat index ", i, ": compiled ", px[i],
                   " vs eager ", py[i], " (rtol ", rtol, ", atol ", atol, ")");
      }
    }
  }
}

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}

}  // namespace

void mark_dynamic(const Tensor& t, int64_t dim) {
  KILN_CHECK(t.defined(), "[mark_dynamic] tensor is undefined");
  KILN_CHECK(dim >= -t.dim() && dim < t.dim(), "[mark_dynamic] dim ", dim, " out of range for a tensor of rank ",
             t.dim());
  if (dim < 0) dim += t.dim();
  DynamicMarks& m = dynamic_marks();
  std::lock_guard<std::mutex> lock(m.mu);
  if (m.marks.size() > 4096)  // forget tensors that died
    for (auto it = m.marks.begin(); it != m.marks.end();) it = it->second.first.expired() ? m.marks.erase(it) : std::next(it);
  auto& e = m.marks[t.impl()];
  if (e.first.lock() != t.impl_ptr()) e = {t.impl_ptr(), {}};
  e.second.insert(dim);
}

std::string Stats::str() const {
  std::ostringstream os;
  os << "calls=" << calls << " captures=" << captures << " replays=" << replays << " compiles=" << compiles
     << " cache_hits=" << cache_hits << " cache_misses=" << cache_misses << " shared_graph_hits=" << shared_graph_hits
     << " recompiles=" << recompiles.size() << " graph_breaks=" << graph_breaks.size()
     << " eager_fallbacks=" << eager_fallbacks << "\n";
  os << "time: capture " << capture_ms << " ms, passes " << passes_ms << " ms, compile " << compile_ms << " ms, run "
     << run_ms << " ms\n";
  os << "native: kernels=" << fused_kernels << " compiled=" << kernels_compiled << " cached=" << kernel_cache_hits
     << " fallbacks=" << codegen_fallbacks << " async=" << async_compiles << " cuda_graphs=" << cuda_graph_plans
     << "/" << cuda_graph_plans + cuda_graph_refusals << " (" << cuda_graph_launches << " launches); fusion " << fusion_ms << " ms, codegen "
     << codegen_ms << " ms\n";
  for (const auto& r : recompiles) os << "  recompile " << r.function << ": " << r.reason << "\n";
  for (const auto& r : graph_breaks) os << "  break " << r.function << ": " << r.reason << "\n";
  for (const auto& r : fallbacks) os << "  fallback " << r.function << ": " << r.reason << "\n";
  for (const KernelStats& k : kernels) {
    os << "  kernel " << k.name << " [" << k.ops << "]: " << k.calls << " call(s)";
    if (k.profiled_calls) os << ", " << k.profiled_calls << " profiled in " << k.profiled_ms << " ms";
    os << "\n";
  }
  return os.str();
}

Stats stats() {
  Global& g = global();
  std::lock_guard<std::mutex> lock(g.mu);
  Stats s = g.stats;
  s.kernels.reserve(g.kernels.size());
  for (const Global::Kernel& k : g.kernels) {
    KernelStats ks = k.info;
    ks.calls = k.counters->calls.load(std::memory_order_relaxed);
    ks.profiled_calls = k.counters->profiled_calls.load(std::memory_order_relaxed);
    ks.profiled_ms = static_cast<double>(k.counters->profiled_ns.load(std::memory_order_relaxed)) / 1e6;
    s.kernels.push_back(std::move(ks));
  }
  return s;
}

void reset() {
  Global& g = global();
  std::lock_guard<std::mutex> lock(g.mu);
  g.stats = Stats{};
  g.graph_cache.clear();
  g.kernels.clear();
  g.kernel_index.clear();
  g.epoch.fetch_add(1);
}

std::string Explanation::str() const {
  std::ostringstream os;
  os << graph_count() << " graph(s), " << break_count() << " break(s), " << op_count << " op(s), " << kernel_count
     << " fused kernel(s), " << extern_count << " extern node(s)\n";
  for (size_t i = 0; i < graphs.size(); ++i) {
    os << "--- graph " << i << " ---\n" << graphs[i];
    if (i < fused_graphs.size()) os << "--- fused ---\n" << fused_graphs[i];
    if (i < breaks.size()) os << "--- break: " << breaks[i] << "\n";
  }
  os << "--- guards ---\n";
  for (const auto& g : guards) os << "  " << g << "\n";
  return os.str();
}

namespace detail {

void add_arg(CallArgs& a, const Tensor& t) {
  a.tensors.push_back(t);
  ++a.next_arg;
}
void add_arg(CallArgs& a, const std::vector<Tensor>& v) {
  a.facts.push_back("len(arg[" + std::to_string(a.next_arg) + "]) == " + std::to_string(v.size()));
  a.tensors.insert(a.tensors.end(), v.begin(), v.end());
  ++a.next_arg;
}
void add_arg(CallArgs& a, double v) {
  std::ostringstream os;
  os.precision(17);
  os << "arg[" << a.next_arg++ << "] == " << v;
  a.facts.push_back(os.str());
}
void add_arg(CallArgs& a, int64_t v) { a.facts.push_back("arg[" + std::to_string(a.next_arg++) + "] == " + std::to_string(v)); }
void add_arg(CallArgs& a, bool v) {
  a.facts.push_back("arg[" + std::to_string(a.next_arg++) + "] == " + (v ? "true" : "false"));
}
void add_arg(CallArgs& a, const std::string& v) {
  a.facts.push_back("arg[" + std::to_string(a.next_arg++) + "] == \"" + v + "\"");
}

// --- per-function state ------------------------------------------------------------------------

namespace {

// What a call's context looked like, beyond its tensors (guarded; part of every entry).
struct CallFacts {
  bool grad_mode = true;
  std::vector<char> training;  // per module in the compiled module's tree
  std::vector<std::string> args;
  bool operator==(const CallFacts&) const = default;
};

struct Entry {
  int id = 0;
  int segment = 0;  // which segment of the call (0 unless the function has graph breaks)
  uint64_t key = 0, skeleton = 0;
  Graph graph;  // as captured, for diffs, dumps and explain
  GraphFacts facts;
  CallFacts call;
  bool dynamic = false;
  std::shared_ptr<const Plan> plan;  // static entries
  std::map<uint64_t, std::shared_ptr<const Plan>> plans;  // dynamic entries: per concrete graph
  std::vector<std::string> guards;
  std::vector<std::string> input_names;
  std::vector<char> requires_grad;  // per graph input, as traced (names the cause of a miss)
};

// Where a replayed graph input comes from.
struct InputSource {
  int arg = -1;                      // index into CallArgs::tensors
  std::weak_ptr<TensorImpl> captured;  // otherwise: the tensor captured at trace time
  Storage storage;                   // ... and its storage then (guarded: still the same)
};
struct OutputSource {
  int input = -1;  // a graph input returned as is
  int value = -1;  // or a value of the graph
};
struct GradEffect {
  int input = -1;   // graph input whose .grad is set
  int value = -1;   // the value it is set to; -1: left unchanged; -2: set to none
  TensorImpl* last = nullptr;  // the .grad after the previous call (guard: nobody replaced it)
};

struct Replay {
  std::shared_ptr<const Plan> plan;
  Entry* entry = nullptr;
  CallFacts call;
  std::vector<InputSource> inputs;
  std::vector<OutputSource> outputs;
  std::vector<int64_t> layout;
  std::vector<GradEffect> grads;
  // Argument tensors as traced: dtype, sizes, strides, offset, requires_grad.
  struct ArgMeta {
    DType dtype;
    Device device = Device(kCPU);
    Shape sizes, strides;
    int64_t offset;
    bool requires_grad;
  };
  std::vector<ArgMeta> args;
  std::vector<int64_t> rng_rel;  // random nodes' offsets relative to the generator at call start
  int64_t rng_advance = 0;
  std::vector<Tracer::StateGuard> state;  // C++ state the traced code read (optimizer lr...)
  std::vector<char> written;  // per graph storage: some node writes it
};

// The replay-relevant description of one traced call; two equal in a row promote.
struct CallSignature {
  uint64_t key = 0;
  CallFacts call;
  std::vector<std::pair<int, const TensorImpl*>> sources;  // per graph input: arg index or captured impl
  std::vector<int64_t> layout;
  std::vector<std::string> arg_meta;
  std::vector<int64_t> rng_rel;
  int64_t rng_advance = 0;
  std::vector<Tracer::StateGuard> state;
  bool operator==(const CallSignature&) const = default;
};

}  // namespace

class Function {
 public:
  Function(CompileOptions o, std::shared_ptr<nn::Module> module) : opts(std::move(o)), module_(std::move(module)) {
    if (opts.name.empty())
      opts.name = module_ ? module_->name() : "fn" + std::to_string(global().next_function.fetch_add(1));
    if (module_)
      for (const auto& m : module_->modules()) modules_.push_back(m.get());
    epoch_ = global().epoch.load();
  }

  CompileOptions opts;

  CallFacts call_facts(const CallArgs& args) const {
    CallFacts f;
    f.grad_mode = GradMode::is_enabled();
    for (const nn::Module* m : modules_) f.training.push_back(m->is_training());
    f.args = args.facts;
    return f;
  }

  void sync_epoch() {
    uint64_t e = global().epoch.load();
    if (e == epoch_.load()) return;
    std::lock_guard<std::mutex> lock(mu_);
    entries_.clear();
    by_key_.clear();
    dyn_dims_.clear();
    dyn_fills_.clear();
    dyn_offsets_.clear();
    compiles_ = 0;
    replay_.reset();
    last_sig_.reset();
    replay_sig_.reset();
    same_count_ = 0;
    had_break_ = false;
    epoch_ = e;
  }

  // --- trace mode ---
  struct SegmentRun {
    Entry* entry = nullptr;
    std::vector<Tensor> bindings;
    std::vector<char> output_storages;
    Plan::RngKeys rng;
  };
  struct CallState {
    const CallArgs* args = nullptr;
    CallFacts facts;
    std::vector<SegmentRun> segments;
    bool failed = false;  // f raised: the work captured so far runs, but is never cached
  };

  void run_segment(Segment& seg, CallState& cs);
  // `out_values` / `grad_values`: graph values of the results and of each bound leaf's .grad in
  // the last segment (-1: none), looked up before it ran.
  void after_call(CallState& cs, Tracer& tracer, const std::vector<int>& out_values, const std::vector<int>& grad_values,
                  const TensorList& outs, const std::vector<int64_t>& layout, bool result_replayable, int64_t rng_start);
  bool try_replay(const CallArgs& args, TensorList& outs, std::vector<int64_t>& layout);
  std::string name_of_input(const Tensor& t, const CallArgs& args) const;

 private:
  // Finds or makes the entry and plan for a segment; `scalars` receives its dynamic scalars.
  Entry* lookup_or_compile(const Segment& seg, const CallState& cs, std::shared_ptr<const Plan>& plan,
                           std::vector<Scalar>& scalars);
  std::string miss_reason(const Graph& g, const GraphFacts& facts, const CallFacts& call,
                          const std::vector<char>& requires_grad, uint64_t skeleton, int segment);
  std::shared_ptr<const Plan> build_plan(const Graph& g, uint64_t concrete, const std::string& label, int segment,
                                         bool dynamic);
  std::vector<std::string> guards_of(const Entry& e) const;
  KeySpec key_spec(const GraphFacts& facts, int segment) const;
  // The 0-dim fills of `g` whose value is dynamic, in node order (their runtime slots).
  std::vector<int> runtime_fills(const Graph& g, int segment) const {
    std::vector<int> r;
    auto it = dyn_fills_.find(segment);
    if (it == dyn_fills_.end()) return r;
    for (int i : it->second) {
      if (static_cast<size_t>(i) >= g.nodes.size()) break;
      const Node& n = g.nodes[static_cast<size_t>(i)];
      if (n.kind == NodeKind::Mutate && n.op->name == "fill" && g.value(n.target).sizes.empty()) r.push_back(i);
    }
    return r;
  }
  void dump(const Entry& e, const Plan& plan) const;

  std::shared_ptr<nn::Module> module_;
  std::vector<const nn::Module*> modules_;
  mutable std::mutex mu_;
  std::atomic<uint64_t> epoch_{0};
  std::vector<std::unique_ptr<Entry>> entries_;
  std::unordered_map<uint64_t, Entry*> by_key_;
  // Per segment of the call: inputs and node indices only mean something within one segment
  // (a scalar made dynamic after a break must not change the key of the segment before it).
  std::map<int, std::set<std::pair<int, int64_t>>> dyn_dims_;  // (graph input, dim)
  std::map<int, std::set<int>> dyn_fills_;                     // node index of a scalar fill
  std::map<int, std::set<int>> dyn_offsets_;                   // graph inputs whose storage offset varies
  int compiles_ = 0;
  bool limit_warned_ = false;
  std::atomic<bool> had_break_{false};  // set by any thread's call, read by all
  std::optional<CallSignature> last_sig_;
  std::optional<CallSignature> replay_sig_;  // the signature replay_ was promoted from
  int same_count_ = 0;
  std::shared_ptr<Replay> replay_;
};

std::shared_ptr<Function> make_function(CompileOptions options, std::shared_ptr<nn::Module> module) {
  return std::make_shared<Function>(std::move(options), std::move(module));
}

std::string Function::name_of_input(const Tensor& t, const CallArgs& args) const {
  for (size_t i = 0; i < args.tensors.size(); ++i)
    if (args.tensors[i].is_same(t)) return "input[" + std::to_string(i) + "]";
  if (module_) {
    for (const auto& [name, p] : module_->named_parameters())
      if (p.is_same(t)) return "param " + name;
    for (const auto& [name, b] : module_->named_buffers())
      if (b.is_same(t)) return "buffer " + name;
  }
  return "";
}

KeySpec Function::key_spec(const GraphFacts& facts, int segment) const {
  KeySpec spec;
  static const auto& kNoDims = *new std::set<std::pair<int, int64_t>>();  // never destroyed (used at exit)
  auto dd = dyn_dims_.find(segment);
  for (const auto& [input, dim] : dd == dyn_dims_.end() ? kNoDims : dd->second) {
    if (static_cast<size_t>(input) >= facts.input_sizes.size()) continue;
    const Shape& s = facts.input_sizes[static_cast<size_t>(input)];
    if (dim < static_cast<int64_t>(s.size()) && s[static_cast<size_t>(dim)] >= 2)
      spec.symbols.push_back(s[static_cast<size_t>(dim)]);
    spec.dynamic_dims.insert({input, dim});
  }
  if (auto df = dyn_fills_.find(segment); df != dyn_fills_.end()) spec.dynamic_fills = df->second;
  if (auto d = dyn_offsets_.find(segment); d != dyn_offsets_.end()) spec.dynamic_offsets = d->second;
  return spec;
}

std::vector<std::string> Function::guards_of(const Entry& e) const {
  std::vector<std::string> g;
  g.push_back(std::string("grad_mode == ") + (e.call.grad_mode ? "true" : "false"));
  for (size_t i = 0; i < e.call.training.size(); ++i)
    g.push_back("module " + (modules_[i]->name().empty() ? std::to_string(i) : modules_[i]->name()) +
                ".training == " + (e.call.training[i] ? "true" : "false"));
  for (const std::string& a : e.call.args) g.push_back(a);
  for (size_t i = 0; i < e.graph.inputs.size(); ++i) {
    const Value& v = e.graph.value(e.graph.inputs[i]);
    std::string name = i < e.input_names.size() && !e.input_names[i].empty() ? e.input_names[i]
                                                                           : "captured[" + std::to_string(i) + "]";
    if (name.rfind("input[", 0) != 0) g.push_back(name + " is the tensor captured when traced (replay binds it by reference)");
    g.push_back(name + ".dtype == " + std::string(dtype_name(v.dtype)));
    g.push_back(name + ".device == " + v.device.str());
    g.push_back(name + ".dim() == " + std::to_string(v.sizes.size()));
    for (size_t d = 0; d < v.sizes.size(); ++d) {
      auto dd = dyn_dims_.find(e.segment);
      bool dyn = dd != dyn_dims_.end() && dd->second.count({static_cast<int>(i), static_cast<int64_t>(d)}) > 0;
      g.push_back(name + ".sizes[" + std::to_string(d) + "] " +
                  (dyn ? "is dynamic (>= 2)" : "== " + std::to_string(v.sizes[d])));
    }
    std::ostringstream st;
    st << name << ".strides == " << IntArrayRef(v.strides) << ", storage_offset == " << v.offset;
    g.push_back(e.dynamic ? name + ".is_contiguous() == " + (is_contiguous_strides(v.sizes, v.strides) ? "true" : "false")
                          : st.str());
  }
  return g;
}

std::string Function::miss_reason(const Graph& g, const GraphFacts& facts, const CallFacts& call,
                                  const std::vector<char>& requires_grad, uint64_t skeleton, int segment) {
  const Entry* near = nullptr;  // the newest entry for the same segment of the call
  for (const auto& e : entries_)
    if (e->segment == segment) near = e.get();
  if (!near) return "";
  // 1. Same structure, other sizes or scalar values: those facts become dynamic.
  for (const auto& e : entries_) {
    if (e->skeleton != skeleton || e->segment != segment) continue;
    std::vector<std::string> why;
    for (size_t i = 0; i < facts.input_sizes.size(); ++i) {
      const Shape& a = e->facts.input_sizes[i];
      const Shape& b = facts.input_sizes[i];
      for (size_t d = 0; d < a.size() && d < b.size(); ++d) {
        if (a[d] == b[d]) continue;
        std::string nm = i < e->input_names.size() && !e->input_names[i].empty() ? e->input_names[i]
                                                                                 : "captured[" + std::to_string(i) + "]";
        bool was = !dyn_dims_[segment].insert({static_cast<int>(i), static_cast<int64_t>(d)}).second;
        if (was && a[d] >= 2 && b[d] >= 2) continue;  // already symbolic: not why this missed
        why.push_back(nm + ".sizes[" + std::to_string(d) + "]: " + std::to_string(a[d]) + " -> " + std::to_string(b[d]) +
                      (was ? " (sizes 0 and 1 are specialised)" : " (now dynamic)"));
      }
    }
    for (size_t i = 0; i < facts.input_offsets.size() && i < e->facts.input_offsets.size(); ++i) {
      if (facts.input_offsets[i] == e->facts.input_offsets[i] || !dyn_offsets_[segment].insert(static_cast<int>(i)).second)
        continue;
      std::string nm = i < e->input_names.size() && !e->input_names[i].empty() ? e->input_names[i]
                                                                               : "captured[" + std::to_string(i) + "]";
      why.push_back(nm + ".storage_offset(): " + std::to_string(e->facts.input_offsets[i]) + " -> " +
                    std::to_string(facts.input_offsets[i]) + " (now dynamic)");
    }
    for (size_t k = 0; k < facts.fills.size() && k < e->facts.fills.size(); ++k) {
      if (facts.fills[k].second == e->facts.fills[k].second) continue;
      bool was = !dyn_fills_[segment].insert(facts.fills[k].first).second;
      if (was) continue;  // already bound at run time: not why this missed
      std::ostringstream os;
      os << "scalar filled at node " << facts.fills[k].first << ": " << e->facts.fills[k].second << " -> "
         << facts.fills[k].second << " (now dynamic)";
      why.push_back(os.str());
    }
    if (!why.empty()) return join(why, "; ");
  }
  // 2. Otherwise name the first guard of the nearest entry that fails.
  if (call.grad_mode != near->call.grad_mode)
    return std::string("grad_mode: ") + (near->call.grad_mode ? "true" : "false") + " -> " + (call.grad_mode ? "true" : "false");
  for (size_t i = 0; i < call.training.size() && i < near->call.training.size(); ++i)
    if (call.training[i] != near->call.training[i])
      return "module " + modules_[i]->name() + ".training: " + (near->call.training[i] ? "true" : "false") + " -> " +
             (call.training[i] ? "true" : "false");
  for (size_t i = 0; i < call.args.size() && i < near->call.args.size(); ++i)
    if (call.args[i] != near->call.args[i]) return "guard `" + near->call.args[i] + "` failed: now `" + call.args[i] + "`";
  if (g.inputs.size() != near->graph.inputs.size())
    return "the graph reads " + std::to_string(g.inputs.size()) + " tensors instead of " +
           std::to_string(near->graph.inputs.size()) + " (state created by an earlier call, such as optimizer buffers, "
           "or another code path)";
  for (size_t i = 0; i < g.inputs.size(); ++i) {
    const Value& a = near->graph.value(near->graph.inputs[i]);
    const Value& b = g.value(g.inputs[i]);
    std::string nm = i < near->input_names.size() && !near->input_names[i].empty() ? near->input_names[i]
                                                                                  : "captured[" + std::to_string(i) + "]";
    if (a.dtype != b.dtype)
      return nm + ".dtype: " + std::string(dtype_name(a.dtype)) + " -> " + std::string(dtype_name(b.dtype));
    if (a.device != b.device) return nm + ".device: " + a.device.str() + " -> " + b.device.str();
    if (a.sizes.size() != b.sizes.size())
      return nm + ".dim(): " + std::to_string(a.sizes.size()) + " -> " + std::to_string(b.sizes.size());
    if (a.strides != b.strides || a.offset != b.offset) {
      std::ostringstream os;
      os << nm << ".strides: " << IntArrayRef(a.strides) << " -> " << IntArrayRef(b.strides);
      if (a.offset != b.offset) os << ", storage_offset: " << a.offset << " -> " << b.offset;
      return os.str();
    }
    // Same inputs but autograd now (or no longer) keeps intermediates alive: the graph differs.
    if (i < near->requires_grad.size() && i < requires_grad.size() && near->requires_grad[i] != requires_grad[i])
      return nm + ".requires_grad: " + (near->requires_grad[i] ? "true" : "false") + " -> " +
             (requires_grad[i] ? "true" : "false");
  }
  return "the traced graph differs from entry " + std::to_string(near->id) + ": " + first_difference(near->graph, g);
}

std::shared_ptr<const Plan> Function::build_plan(const Graph& captured, uint64_t concrete, const std::string& label,
                                                 int segment, bool dynamic) {
  // Plans differ by backend and by whether sizes are kernel parameters.
  concrete = concrete * 1000003u + static_cast<uint64_t>(opts.backend) * 8u + (opts.optimize ? 4u : 0u) +
             (opts.async ? 2u : 0u) + (dynamic ? 1u : 0u);
  Graph g = captured;
  int slot = 0;
  for (int i : runtime_fills(g, segment)) g.nodes[static_cast<size_t>(i)].runtime_slot = slot++;
  Global& gl = global();
  {
    std::lock_guard<std::mutex> lock(gl.mu);
    if (auto it = gl.graph_cache.find(concrete); it != gl.graph_cache.end()) {
      ++gl.stats.shared_graph_hits;
      return it->second;
    }
  }
  profiler::Scope scope("compile", profiler::Category::Jit);
  if (profiler::Event* e = scope.event()) e->name += " " + label;
  auto t0 = Clock::now();
  PassDumpHook hook;
  if (logging::enabled(logging::Category::graph))
    hook = [&](std::string_view pass, const Graph& after) {
      KILN_LOG(graph, "{} after {}:\n{}", label, pass, after.str());
    };
  PassPipeline which;
  if (!opts.optimize) which = PassPipeline{false, false, false, false};
  Graph optimized = run_pipeline(g, which, hook);
  double passes = ms_since(t0);
  auto t1 = Clock::now();
  PlanRequest request;
  request.backend = opts.backend;
  request.async = opts.async;
  request.dynamic = dynamic;
  request.cuda_graphs = opts.cuda_graphs;
  request.label = label;
  if (const char* dir = std::getenv("KILN_DUMP_DIR"); dir && *dir) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    request.dump_base = std::string(dir) + "/" + label;
  }
  auto plan = make_plan(std::move(optimized), request);
  double compile = ms_since(t1);
  std::lock_guard<std::mutex> lock(gl.mu);
  gl.stats.passes_ms += passes;
  gl.stats.compile_ms += compile;
  // Bounded: dynamic entries add a plan per concrete shape; old ones are rebuilt if needed.
  if (gl.graph_cache.size() >= 512) gl.graph_cache.clear();
  gl.graph_cache.emplace(concrete, plan);
  return plan;
}

void Function::dump(const Entry& e, const Plan& plan) const {
  const char* dir = std::getenv("KILN_DUMP_DIR");
  if (!dir || !*dir) return;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  std::string base = std::string(dir) + "/" + opts.name + "." + std::to_string(e.id);
  if (const Plan::Fusion* f = plan.fusion())
    std::ofstream(base + ".graph.txt") << "# captured\n" << e.graph.str() << "\n# after passes\n" << f->unfused.str()
                                       << "\n# after fusion (" << f->kernels << " kernels, " << f->externs
                                       << " extern nodes; kernels in " << opts.name << "." << e.id << ".kernels.txt)\n"
                                       << plan.graph().str();
  else
    std::ofstream(base + ".graph.txt") << "# captured\n" << e.graph.str() << "\n# after passes\n" << plan.graph().str();
  std::ofstream(base + ".dot") << plan.graph().dot(opts.name + "." + std::to_string(e.id));
  std::ofstream(base + ".guards.txt") << join(e.guards, "\n") << "\n";
}

Entry* Function::lookup_or_compile(const Segment& seg, const CallState& cs, std::shared_ptr<const Plan>& plan,
                                   std::vector<Scalar>& scalars) {
  const Graph& g = seg.graph;
  GraphFacts facts = graph_facts(g);
  const int segment = static_cast<int>(cs.segments.size());
  std::lock_guard<std::mutex> lock(mu_);
  // Dims declared dynamic up front: options.dynamic (every argument dim) and mark_dynamic().
  for (size_t i = 0; i < seg.bindings.size(); ++i) {
    const Tensor& b = seg.bindings[i];
    bool is_arg = false;
    for (const Tensor& a : cs.args->tensors) is_arg |= a.is_same(b);
    if (opts.dynamic && is_arg)
      for (int64_t d = 0; d < b.dim(); ++d) dyn_dims_[segment].insert({static_cast<int>(i), d});
    for (int64_t d : marked_dims(b)) dyn_dims_[segment].insert({static_cast<int>(i), d});
  }
  uint64_t key = graph_key(g, key_spec(facts, segment), cs.facts.grad_mode, cs.facts.training, cs.facts.args);
  auto it = by_key_.find(key);
  Entry* e = it == by_key_.end() ? nullptr : it->second;
  if (!e) {
    with_stats([](Stats& s) { ++s.cache_misses; });
    if (compiles_ >= opts.recompile_limit) {
      if (!limit_warned_) {
        limit_warned_ = true;
        logging::logger().warn("[jit] {} hit its recompile limit ({}); further misses run eagerly", opts.name,
                               opts.recompile_limit);
      }
      return nullptr;
    }
    uint64_t skeleton = graph_key(g, KeySpec::all_dynamic(), cs.facts.grad_mode, cs.facts.training, cs.facts.args);
    std::vector<char> requires_grad;
    for (const Tensor& b : seg.bindings) requires_grad.push_back(b.requires_grad());
    std::string reason = miss_reason(g, facts, cs.facts, requires_grad, skeleton, segment);
    KeySpec spec = key_spec(facts, segment);  // the miss may have made dims or scalars dynamic
    key = graph_key(g, spec, cs.facts.grad_mode, cs.facts.training, cs.facts.args);
    auto owned = std::make_unique<Entry>();
    e = owned.get();
    e->id = static_cast<int>(entries_.size());
    e->segment = segment;
    e->key = key;
    e->skeleton = skeleton;
    e->graph = g;
    e->requires_grad = std::move(requires_grad);
    e->facts = std::move(facts);
    e->call = cs.facts;
    // Plans of a dynamic entry are built per concrete graph (they hold sizes, scalars, offsets).
    e->dynamic = !spec.dynamic_dims.empty() || !spec.dynamic_fills.empty() || !spec.dynamic_offsets.empty();
    for (const Tensor& b : seg.bindings) e->input_names.push_back(name_of_input(b, *cs.args));
    e->guards = guards_of(*e);
    bool recompile = !reason.empty();
    entries_.push_back(std::move(owned));
    by_key_[key] = e;
    ++compiles_;
    with_stats([&](Stats& s) {
      ++s.compiles;
      if (recompile) s.recompiles.push_back({opts.name, reason});
    });
    if (recompile) KILN_LOG(recompiles, "{} recompiling (entry {}): {}", opts.name, e->id, reason);
    KILN_LOG(guards, "{} entry {} guards:\n  {}", opts.name, e->id, join(e->guards, "\n  "));
  } else {
    with_stats([](Stats& s) { ++s.cache_hits; });
  }
  // Dynamic scalars are bound at each run, so one plan serves all their values.
  KeySpec concrete_spec;
  if (auto df = dyn_fills_.find(segment); df != dyn_fills_.end()) concrete_spec.dynamic_fills = df->second;
  for (int i : runtime_fills(g, segment)) scalars.push_back(g.nodes[static_cast<size_t>(i)].attrs.scalar(0));
  uint64_t concrete = graph_key(g, concrete_spec, cs.facts.grad_mode, {}, {});
  if (!e->dynamic) {
    if (!e->plan) {
      e->plan = build_plan(g, concrete, opts.name + "." + std::to_string(e->id), segment, false);
      dump(*e, *e->plan);
    }
    plan = e->plan;
  } else {
    auto pit = e->plans.find(concrete);
    if (pit == e->plans.end()) {
      if (e->plans.size() >= 64) e->plans.clear();  // bound memory for a dim that takes many values
      pit = e->plans.emplace(concrete, build_plan(g, concrete, opts.name + "." + std::to_string(e->id), segment, true)).first;
      if (e->plans.size() == 1) dump(*e, *pit->second);
    }
    plan = pit->second;
  }
  return e;
}

void Function::run_segment(Segment& seg, CallState& cs) {
  if (!seg.break_reason.empty()) {
    had_break_ = true;
    KILN_CHECK(!opts.fullgraph, "[jit] ", opts.name, ": graph break in fullgraph mode at `", seg.break_reason,
               "` (it needs a tensor's value on the host); remove it or compile without fullgraph");
    with_stats([&](Stats& s) { s.graph_breaks.push_back({opts.name, seg.break_reason}); });
    KILN_LOG(breaks, "{} graph break: {} (segment of {} ops runs now, capture resumes)", opts.name, seg.break_reason,
             seg.graph.num_ops());
  }
  SegmentRun run;
  run.rng = rng_keys(seg.graph);
  std::vector<Scalar> scalars;
  if (cs.failed) {
    // The partial trace of a call that raised runs as captured (state matches eager up to the
    // error) without becoming a cache entry: the next valid call must not see it as a recompile.
    Plan eager(seg.graph);
    eager.run(seg.bindings, seg.outputs, &run.rng);
    return;
  }
  std::shared_ptr<const Plan> plan;
  Entry* e = nullptr;
  std::string failure;
  try {
    e = lookup_or_compile(seg, cs, plan, scalars);
  } catch (const std::exception& ex) {
    failure = ex.what();  // a pass or plan bug: never cached, the graph runs as captured
  }
  auto t0 = Clock::now();
  if (!plan) {
    std::string reason = failure.empty() ? "recompile limit reached" : "compilation failed: " + failure;
    with_stats([&](Stats& s) {
      ++s.eager_fallbacks;
      if (s.fallbacks.size() < 1000) s.fallbacks.push_back({opts.name, reason});
    });
    KILN_LOG(recompiles, "{} runs eagerly: {}", opts.name, reason);
    Plan eager(seg.graph);
    eager.run(seg.bindings, seg.outputs, &run.rng);
  } else if (opts.verify) {
    verify_segment(seg, *plan, run.rng, scalars, opts.verify_rtol, opts.verify_atol, opts.name);
  } else {
    plan->run(seg.bindings, seg.outputs, &run.rng, nullptr, &scalars);
  }
  double ms = ms_since(t0);
  with_stats([&](Stats& s) { s.run_ms += ms; });
  run.entry = e;
  run.bindings = seg.bindings;
  for (const Storage& s : seg.outputs) run.output_storages.push_back(s != nullptr);
  cs.segments.push_back(std::move(run));
}

void Function::after_call(CallState& cs, Tracer& tracer, const std::vector<int>& out_values,
                          const std::vector<int>& grad_values, const TensorList& outs, const std::vector<int64_t>& layout,
                          bool result_replayable, int64_t rng_start) {
  auto not_replayable = [&](const std::string& why) {
    KILN_LOG(guards, "{} keeps tracing: {}", opts.name, why);
    std::lock_guard<std::mutex> lock(mu_);  // other threads' calls read and replace last_sig_
    last_sig_.reset();
    same_count_ = 0;
  };
  if (opts.mode == Mode::Segmented) return;
  if (had_break_) return not_replayable("its capture hit a graph break (segmented mode)");
  if (!cs.args->replayable) return not_replayable("an argument is not a tensor, number or string");
  if (!result_replayable) return not_replayable("its result is not tensors");
  if (!tracer.host_read().empty())
    return not_replayable("host code read tensor values during the call (at " + tracer.host_read() +
                          "); a replay would skip that read");
  if (cs.segments.size() != 1 || !cs.segments[0].entry) return not_replayable("it did not run as one compiled graph");
  const SegmentRun& sr = cs.segments[0];
  Entry* e = sr.entry;
  if (e->dynamic) return not_replayable("its entry has dynamic dims or scalars");
  const Graph& g = e->graph;

  auto rp = std::make_shared<Replay>();
  CallSignature sig;
  sig.key = e->key;
  sig.call = cs.facts;
  std::set<int> covered;  // storages a replay hands out
  for (size_t i = 0; i < sr.bindings.size(); ++i) {
    const Tensor& b = sr.bindings[i];
    InputSource src;
    for (size_t a = 0; a < cs.args->tensors.size(); ++a)
      if (cs.args->tensors[a].is_same(b)) {
        src.arg = static_cast<int>(a);
        break;
      }
    if (src.arg < 0) {
      src.captured = b.impl_ptr();
      src.storage = b.impl()->storage();
    }
    sig.sources.emplace_back(src.arg, src.arg < 0 ? b.impl() : nullptr);
    rp->inputs.push_back(std::move(src));
  }
  for (size_t k = 0; k < outs.size(); ++k) {
    const Tensor& t = outs[k];
    OutputSource o;
    if (!t.defined()) return not_replayable("it returns an undefined tensor");
    if (t.requires_grad() && t.grad_fn()) return not_replayable("its result carries autograd history");
    if (out_values[k] >= 0) {
      const Value& v = g.value(out_values[k]);
      if (g.nodes[static_cast<size_t>(v.node)].kind == NodeKind::Input) o.input = g.nodes[static_cast<size_t>(v.node)].input_index;
      else o.value = out_values[k];
      if (o.value >= 0) covered.insert(v.storage);
    } else {
      return not_replayable("it returns a tensor made outside its graph");
    }
    rp->outputs.push_back(o);
  }
  // .grad written by backward() inside the call.
  for (size_t i = 0; i < sr.bindings.size(); ++i) {
    const Tensor& b = sr.bindings[i];
    if (!b.requires_grad() || !b.is_leaf()) continue;
    GradEffect ge;
    ge.input = static_cast<int>(i);
    const Tensor& grad = b.grad();
    ge.last = grad.defined() ? grad.impl() : nullptr;
    const int v = i < grad_values.size() ? grad_values[i] : -1;
    if (!grad.defined()) {
      ge.value = -2;
    } else if (v >= 0 && g.nodes[static_cast<size_t>(g.value(v).node)].kind != NodeKind::Input) {
      ge.value = v;
      covered.insert(g.value(v).storage);
    } else {
      bool bound = false;
      for (const Tensor& x : sr.bindings) bound |= x.is_same(grad);
      if (!bound) return not_replayable("a .grad was set to a tensor made outside the graph");
    }
    rp->grads.push_back(ge);
  }
  for (size_t s = 0; s < sr.output_storages.size(); ++s)
    if (sr.output_storages[s] && !covered.count(static_cast<int>(s)))
      return not_replayable("a tensor it made stays referenced elsewhere (module state, saved for backward)");
  for (size_t a = 0; a < cs.args->tensors.size(); ++a) {
    const Tensor& t = cs.args->tensors[a];
    if (!t.defined()) return not_replayable("an argument tensor is undefined");
    rp->args.push_back({t.dtype(), t.device(), t.sizes().vec(), t.strides().vec(), t.storage_offset(), t.requires_grad()});
    std::ostringstream os;
    os << dtype_name(t.dtype()) << IntArrayRef(t.sizes()) << IntArrayRef(t.strides()) << t.storage_offset()
       << t.requires_grad() << t.device().str();
    sig.arg_meta.push_back(os.str());
  }
  Generator& gen = default_generator();
  for (const auto& [seed, off] : sr.rng) {
    if (static_cast<uint64_t>(seed) != gen.seed()) return not_replayable("a random op used another generator seed");
    rp->rng_rel.push_back(off - rng_start);
  }
  rp->rng_advance = static_cast<int64_t>(gen.offset()) - rng_start;
  rp->state = tracer.state_guards();
  sig.state = rp->state;
  sig.rng_rel = rp->rng_rel;
  sig.rng_advance = rp->rng_advance;
  sig.layout = layout;

  std::lock_guard<std::mutex> lock(mu_);
  if (last_sig_ && *last_sig_ == sig) ++same_count_;
  else same_count_ = 1;
  last_sig_ = std::move(sig);
  // Promote, or re-promote when the calls settled on another signature after a replay guard
  // failed (a captured tensor replaced, lr changed): otherwise such a function traced forever.
  if (same_count_ >= 2 && (!replay_ || !(*replay_sig_ == *last_sig_))) {
    replay_sig_ = last_sig_;
    rp->plan = e->plan;
    rp->entry = e;
    const Graph& pg = e->plan->graph();
    rp->written.assign(pg.storages.size(), 0);
    for (const Node& n : pg.nodes) {
      if (n.kind == NodeKind::Mutate) rp->written[static_cast<size_t>(pg.value(n.target).storage)] = 1;
      if (n.kind == NodeKind::Fused)
        for (size_t b = 0; b < n.fused->buffer_values.size(); ++b)
          if (n.fused->ir.buffers[b].written) rp->written[static_cast<size_t>(pg.value(n.fused->buffer_values[b]).storage)] = 1;
    }
    rp->call = cs.facts;
    rp->layout = layout;
    replay_ = std::move(rp);
    KILN_LOG(graph, "{} promoted to replay: later calls run entry {} without running the function", opts.name, e->id);
  } else if (replay_) {
    // A traced call after a failed replay guard: refresh what the grads are now.
    for (GradEffect& ge : replay_->grads)
      for (const GradEffect& now : rp->grads)
        if (now.input == ge.input) ge.last = now.last;
  }
}

bool Function::try_replay(const CallArgs& args, TensorList& outs, std::vector<int64_t>& layout) {
  std::shared_ptr<Replay> rp;
  {
    std::lock_guard<std::mutex> lock(mu_);
    rp = replay_;
  }
  if (!rp || global().epoch.load() != epoch_) return false;
  auto fail = [&](const std::string& why) {
    KILN_LOG(guards, "{} replay guard failed: {}; tracing this call", opts.name, why);
    return false;
  };
  if (GradMode::is_enabled() != rp->call.grad_mode) return fail("grad_mode");
  for (size_t i = 0; i < modules_.size(); ++i)
    if (modules_[i]->is_training() != static_cast<bool>(rp->call.training[i])) return fail("module training flag");
  if (args.facts != rp->call.args) return fail("a non-tensor argument changed");
  for (const Tracer::StateGuard& s : rp->state)
    if (std::memcmp(s.addr, s.bytes.data(), s.bytes.size()) != 0) return fail(s.what + std::string(" changed"));
  if (args.tensors.size() != rp->args.size()) return fail("number of tensor arguments");
  for (size_t a = 0; a < args.tensors.size(); ++a) {
    const Tensor& t = args.tensors[a];
    const Replay::ArgMeta& m = rp->args[a];
    if (!t.defined() || t.dtype() != m.dtype || t.device() != m.device || t.sizes() != IntArrayRef(m.sizes) ||
        t.strides() != IntArrayRef(m.strides) || t.storage_offset() != m.offset || t.requires_grad() != m.requires_grad)
      return fail("input[" + std::to_string(a) + "] dtype/device/sizes/strides/requires_grad");
    if (t.impl()->storage()->is_lazy()) return fail("input[" + std::to_string(a) + "] is pending");
  }
  std::vector<Tensor> bindings;
  bindings.reserve(rp->inputs.size());
  for (size_t i = 0; i < rp->inputs.size(); ++i) {
    const InputSource& src = rp->inputs[i];
    if (src.arg >= 0) {
      bindings.push_back(args.tensors[static_cast<size_t>(src.arg)]);
    } else {
      auto impl = src.captured.lock();
      if (!impl || impl->storage() != src.storage) return fail("captured tensor " + std::to_string(i) + " was replaced");
      bindings.emplace_back(std::move(impl));
    }
  }
  if (!rp->grads.empty()) {
    std::lock_guard<std::mutex> lock(mu_);
    for (const GradEffect& ge : rp->grads) {
      const Tensor& grad = bindings[static_cast<size_t>(ge.input)].grad();
      if ((grad.defined() ? grad.impl() : nullptr) != ge.last) return fail(".grad was replaced outside the call");
    }
  }
  const Graph& g = rp->plan->graph();
  std::vector<Storage> out_storages;
  Generator& gen = default_generator();
  Plan::RngKeys rng;
  if (!rp->rng_rel.empty() || rp->rng_advance) {
    const int64_t base = static_cast<int64_t>(gen.offset());
    for (int64_t rel : rp->rng_rel) rng.emplace_back(static_cast<int64_t>(gen.seed()), base + rel);
    gen.set_offset(static_cast<uint64_t>(base + rp->rng_advance));
  }
  auto t0 = Clock::now();
  rp->plan->run_fresh(bindings, out_storages, &rng);
  double ms = ms_since(t0);
  auto tensor_of = [&](int v) {
    const Value& val = g.value(v);
    const StorageInfo& info = g.storages[static_cast<size_t>(val.storage)];
    // A view of an input (return x.t()) lives in the input's memory.
    const Storage& st = info.input >= 0 ? bindings[static_cast<size_t>(info.input)].impl()->storage()
                                        : out_storages[static_cast<size_t>(val.storage)];
    return Tensor(std::make_shared<TensorImpl>(st, val.dtype, val.sizes, val.strides, val.offset));
  };
  // Eager bumps the version of every tensor an in-place op writes; autograd checks rely on it.
  for (size_t s = 0; s < g.storages.size(); ++s)
    if (g.storages[s].input >= 0 && rp->written[s]) bindings[static_cast<size_t>(g.storages[s].input)].impl()->storage()->bump_version();
  outs.clear();
  outs.reserve(rp->outputs.size());
  for (const OutputSource& o : rp->outputs) outs.push_back(o.input >= 0 ? bindings[static_cast<size_t>(o.input)] : tensor_of(o.value));
  if (!rp->grads.empty()) {
    std::lock_guard<std::mutex> lock(mu_);
    for (GradEffect& ge : rp->grads) {
      Tensor& leaf = bindings[static_cast<size_t>(ge.input)];
      // value -2 (none after the traced call) needs no write: the guard above found the grad
      // still none, and writing it anyway raced with other threads reading shared parameters.
      if (ge.value >= 0) leaf.set_grad(tensor_of(ge.value));
      const Tensor& now = leaf.grad();
      ge.last = now.defined() ? now.impl() : nullptr;
    }
  }
  layout = rp->layout;
  with_stats([&](Stats& s) {
    ++s.calls;
    ++s.replays;
    s.run_ms += ms;
  });
  return true;
}

// --- entry points ---------------------------------------------------------------------------------

namespace {
// Runs `body` with `tracer` recording. If it raises, what was captured up to the error still runs
// (state then matches eager's at the error) and the error propagates.
void capture(Tracer& tracer, const std::function<void()>& body, const std::function<void()>& on_error) {
  try {
    TraceScope scope(&tracer);
    body();
  } catch (...) {
    on_error();
    try {
      tracer.flush();
    } catch (...) {
      tracer.abandon("failed call");
    }
    throw;
  }
}
}  // namespace

void traced_call(Function& fn, const CallArgs& args, bool result_replayable,
                 const std::function<void(TensorList& outs, std::vector<int64_t>& layout)>& body) {
  profiler::Scope scope("capture", profiler::Category::Jit);  // the call under capture, segments run included
  if (profiler::Event* e = scope.event()) e->name += " " + fn.opts.name;
  fn.sync_epoch();
  Function::CallState cs;
  cs.args = &args;
  cs.facts = fn.call_facts(args);
  const int64_t rng_start = static_cast<int64_t>(default_generator().offset());
  Tracer tracer([&](Segment& seg) { fn.run_segment(seg, cs); });
  TensorList outs;
  std::vector<int64_t> layout;
  std::vector<int> out_values, grad_values;
  auto t0 = Clock::now();
  capture(tracer, [&] {
    body(outs, layout);
    for (const Tensor& t : outs) out_values.push_back(tracer.lookup(t));
    for (const Tensor& b : tracer.pending_bindings())
      grad_values.push_back(b.requires_grad() && b.is_leaf() ? tracer.lookup(b.grad()) : -1);
  }, [&] { cs.failed = true; });
  double capture = ms_since(t0);
  tracer.flush();
  with_stats([&](Stats& s) {
    ++s.calls;
    ++s.captures;
    s.capture_ms += capture;
  });
  fn.after_call(cs, tracer, out_values, grad_values, outs, layout, result_replayable, rng_start);
}

bool try_replay(Function& fn, const CallArgs& args, TensorList& outs, std::vector<int64_t>& layout) {
  if (profiler::enabled()) [[unlikely]] {
    profiler::Scope scope("replay", profiler::Category::Run);
    if (profiler::Event* e = scope.event()) e->name += " " + fn.opts.name;
    const bool replayed = fn.try_replay(args, outs, layout);
    if (profiler::Event* e = scope.event(); e && !replayed) e->detail = "not replayed (no replay yet, or a guard failed): traced";
    return replayed;
  }
  return fn.try_replay(args, outs, layout);
}

Explanation explain_call(const std::function<void()>& body) {
  Explanation ex;
  Tracer tracer([&](Segment& seg) {
    ex.graphs.push_back(seg.graph.str());
    ex.op_count += seg.graph.num_ops();
    Graph optimized = run_pipeline(seg.graph);
    try {
      fusion::FusionResult fr = fusion::fuse(optimized);
      ex.kernel_count += fr.kernels;
      ex.extern_count += fr.externs;
      ex.fused_graphs.push_back(fr.graph.str());
    } catch (const std::exception& e) {
      ex.fused_graphs.push_back(std::string("(fusion failed: ") + e.what() + ")\n" + optimized.str());
    }
    if (!seg.break_reason.empty()) ex.breaks.push_back(seg.break_reason);
    for (size_t i = 0; i < seg.graph.inputs.size(); ++i) {
      const Value& v = seg.graph.value(seg.graph.inputs[i]);
      std::ostringstream os;
      os << "input " << i << ": dtype == " << dtype_name(v.dtype) << ", sizes == " << IntArrayRef(v.sizes)
         << ", strides == " << IntArrayRef(v.strides);
      ex.guards.push_back(os.str());
    }
    Plan eager(seg.graph);
    eager.run(seg.bindings, seg.outputs);
  });
  ex.guards.push_back(std::string("grad_mode == ") + (GradMode::is_enabled() ? "true" : "false"));
  capture(tracer, body, [] {});
  tracer.flush();
  return ex;
}

}  // namespace detail
}  // namespace kiln::jit
