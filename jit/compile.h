#pragma once
// kiln::jit::compile(f) — a drop-in wrapper that captures what f does to tensors, caches the
// captured graphs behind guards, and runs them through a compiled plan. See docs/jit.md for the
// contract: what is guarded, when f is re-run, and how to read recompile and break lines.
//
//   auto step = kiln::jit::compile([&](const Tensor& x, const Tensor& y) {
//     opt.zero_grad();
//     Tensor loss = kiln::mse_loss(model->forward(x), y);
//     loss.backward();
//     opt.step();
//     return loss;
//   });
//   for (...) step(x, y);   // same results as eager, parameters and grads included
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "core/trace_hook.h"
#include "nn/module.h"

namespace kiln::jit {

enum class Mode : uint8_t {
  Default,    // trace on every call; after two identical clean traces, replay without running f
  Segmented,  // always run f (functions with hidden state); each segment still runs compiled
};

enum class Backend : uint8_t {
  Native,       // fused kernels compiled to machine code (LLVM ORC); the interpreter when unavailable
  Interpreter,  // every node through the eager kernels (no code generation)
};

struct CompileOptions {
  std::string name;          // in logs, stats and dump file names (default: fn<N> / module name)
  bool dynamic = false;      // every input dim symbolic from the first compile
  bool fullgraph = false;    // a graph break raises kiln::Error naming its cause
  Mode mode = Mode::Default;
  bool verify = false;       // also run eagerly; raise at the first node that diverges
  double verify_rtol = 1e-4, verify_atol = 1e-5;
  int recompile_limit = 8;   // further misses run eagerly, with a warning
  bool optimize = true;      // run the graph passes (off: interpret the captured graph as is)
  Backend backend = Backend::Native;
  // Compile kernels on a background thread; until they are ready calls run on the interpreter.
  bool async = false;
  // CUDA: replay a plan as one CUDA graph (torch.compile's "reduce-overhead"): one launch per
  // call instead of one per kernel. Inputs are copied into the graph's own buffers and in-place
  // updates and outputs out of them on every call (docs/cuda.md); plans with random nodes or
  // dynamic sizes run as usual and say why in KILN_LOG=fusion.
  bool cuda_graphs = false;
};

// Names a dim that varies between calls, so the first compile already treats it as symbolic.
void mark_dynamic(const Tensor& t, int64_t dim);

struct RecompileEvent {
  std::string function;
  std::string reason;  // "input[0].sizes[0]: 64 -> 32 (now dynamic)"
};
// A fused kernel of the plans built so far. `name` ("<plan>/k<group>_<first op>") is the name
// the profiler's trace gives its runs and the one KILN_DUMP_DIR/<plan>.kernels.txt lists its code
// under; <plan>.graph.txt ("after passes") has the values it computes (docs/profiling.md).
struct KernelStats {
  std::string name;
  std::string plan;     // "<function>.<entry>": the prefix of its dump files
  std::string ops;      // the ops it fused, in order: "mul add relu"
  std::string values;   // the values of the graph after passes its ops define: "%5 %6 %9"
  int64_t calls = 0;    // runs (plans holding a kernel of this name count together)
  int64_t profiled_calls = 0;  // runs while a profiler::Profile recorded ...
  double profiled_ms = 0;      // ... and their time
  int64_t bytes = 0;    // moved per run (estimate; fusion::estimate_cost)
  double flops = 0;     // per run (estimate)
};

struct Stats {
  int64_t calls = 0;        // calls of compiled functions
  int64_t captures = 0;     // calls that ran f under capture (trace mode)
  int64_t replays = 0;      // calls served without running f
  int64_t compiles = 0;     // cache entries created (first compile + recompiles)
  int64_t cache_hits = 0;   // segments served by an existing entry
  int64_t cache_misses = 0;
  int64_t shared_graph_hits = 0;  // compiles satisfied by another function's identical graph
  int64_t eager_fallbacks = 0;
  std::vector<RecompileEvent> recompiles;
  std::vector<RecompileEvent> graph_breaks;
  std::vector<RecompileEvent> fallbacks;
  double capture_ms = 0, passes_ms = 0, compile_ms = 0, run_ms = 0;
  // Native backend (docs/fusion.md): kernels in the plans built, and where their code came from.
  int64_t fused_kernels = 0;      // kernels in plans built (cache hits included)
  int64_t kernels_compiled = 0;   // compiled by LLVM in this process
  int64_t kernel_cache_hits = 0;  // from the in-memory or disk kernel cache
  int64_t codegen_fallbacks = 0;  // graphs run on the interpreter because fusion/codegen failed
  int64_t async_compiles = 0;     // plans compiled in the background (options.async)
  int64_t cuda_graph_plans = 0;     // plans replayed as CUDA graphs (options.cuda_graphs)
  int64_t cuda_graph_refusals = 0;  // plans that asked and could not be (KILN_LOG=fusion says why)
  int64_t cuda_graph_launches = 0;  // calls served by launching a captured CUDA graph
  double fusion_ms = 0, codegen_ms = 0;
  std::vector<KernelStats> kernels;  // in the order their plans were built
  std::string str() const;
};
Stats stats();
// Blocks until the kernels being compiled in the background (options.async) are ready.
void wait_for_compiles();
// Clears every cache, entry and counter (compiled functions start over on their next call).
void reset();

// One call explained, like torch._dynamo.explain: the graphs, the breaks and the guards.
struct Explanation {
  std::vector<std::string> graphs;  // IR text of each segment, in order
  std::vector<std::string> breaks;  // the reason of each break
  std::vector<std::string> guards;  // what a cache entry for this call would check
  int graph_count() const { return static_cast<int>(graphs.size()); }
  int break_count() const { return static_cast<int>(breaks.size()); }
  int op_count = 0;
  int kernel_count = 0;  // fused kernels the native backend made of these graphs
  int extern_count = 0;  // nodes it left to the eager kernels (matmul, conv, ops it cannot fuse)
  std::vector<std::string> fused_graphs;  // each graph after passes and fusion
  std::string str() const;
};

namespace detail {

// A call's arguments, flattened: tensors (vectors expanded) and printable facts of the rest.
struct CallArgs {
  TensorList tensors;
  std::vector<std::string> facts;  // "arg[1] = 0.5"
  bool replayable = true;          // false when an argument could hide state (a pointer...)
  int next_arg = 0;
};

void add_arg(CallArgs& a, const Tensor& t);
void add_arg(CallArgs& a, const std::vector<Tensor>& v);
void add_arg(CallArgs& a, double v);
void add_arg(CallArgs& a, int64_t v);
void add_arg(CallArgs& a, bool v);
void add_arg(CallArgs& a, const std::string& v);
template <class T>
void add_arg(CallArgs& a, const T& v) {
  if constexpr (std::is_integral_v<T>) {
    add_arg(a, static_cast<int64_t>(v));
  } else if constexpr (std::is_floating_point_v<T>) {
    add_arg(a, static_cast<double>(v));
  } else if constexpr (std::is_convertible_v<const T&, std::string>) {
    add_arg(a, std::string(v));
  } else {
    a.replayable = false;  // opaque: f runs on every call
    ++a.next_arg;
  }
}

// Flattens a result into tensors (and back, for replay). `layout` records vector lengths.
// Other result types (numbers, structs) are returned as f made them; such functions always run f.
template <class R, class = void>
struct Result {
  static constexpr bool replayable = false;
  static void flatten(const R&, TensorList&, std::vector<int64_t>&) {}
};
template <>
struct Result<Tensor> {
  static constexpr bool replayable = true;
  static void flatten(const Tensor& t, TensorList& out, std::vector<int64_t>&) { out.push_back(t); }
  static Tensor rebuild(const TensorList& t, const std::vector<int64_t>&, size_t& i, size_t&) { return t.at(i++); }
};
template <>
struct Result<std::vector<Tensor>> {
  static constexpr bool replayable = true;
  static void flatten(const std::vector<Tensor>& v, TensorList& out, std::vector<int64_t>& layout) {
    layout.push_back(static_cast<int64_t>(v.size()));
    out.insert(out.end(), v.begin(), v.end());
  }
  static std::vector<Tensor> rebuild(const TensorList& t, const std::vector<int64_t>& layout, size_t& i, size_t& l) {
    size_t n = static_cast<size_t>(layout.at(l++));
    std::vector<Tensor> v(t.begin() + static_cast<std::ptrdiff_t>(i), t.begin() + static_cast<std::ptrdiff_t>(i + n));
    i += n;
    return v;
  }
};
template <class... Ts>
struct Result<std::tuple<Ts...>> {
  static constexpr bool replayable = (Result<Ts>::replayable && ...);
  static void flatten(const std::tuple<Ts...>& r, TensorList& out, std::vector<int64_t>& layout) {
    std::apply([&](const auto&... e) { (Result<std::decay_t<decltype(e)>>::flatten(e, out, layout), ...); }, r);
  }
  static std::tuple<Ts...> rebuild(const TensorList& t, const std::vector<int64_t>& layout, size_t& i, size_t& l) {
    return std::tuple<Ts...>{Result<Ts>::rebuild(t, layout, i, l)...};  // braces: left to right
  }
};
template <class A, class B>
struct Result<std::pair<A, B>> {
  static constexpr bool replayable = Result<A>::replayable && Result<B>::replayable;
  static void flatten(const std::pair<A, B>& r, TensorList& out, std::vector<int64_t>& layout) {
    Result<A>::flatten(r.first, out, layout);
    Result<B>::flatten(r.second, out, layout);
  }
  static std::pair<A, B> rebuild(const TensorList& t, const std::vector<int64_t>& layout, size_t& i, size_t& l) {
    A a = Result<A>::rebuild(t, layout, i, l);
    B b = Result<B>::rebuild(t, layout, i, l);
    return {std::move(a), std::move(b)};
  }
};

class Function;  // per compiled function: entries, guards, replay program (jit/compile.cpp)
std::shared_ptr<Function> make_function(CompileOptions options, std::shared_ptr<nn::Module> module);

// Runs `body` (f, then flattening its result) under capture, segment by segment.
void traced_call(Function& fn, const CallArgs& args, bool result_replayable,
                 const std::function<void(TensorList& outs, std::vector<int64_t>& layout)>& body);
// Serves the call without running f when the function was promoted and every guard holds.
bool try_replay(Function& fn, const CallArgs& args, TensorList& outs, std::vector<int64_t>& layout);

Explanation explain_call(const std::function<void()>& body);

}  // namespace detail

template <class F>
class Compiled {
 public:
  Compiled(F f, std::shared_ptr<detail::Function> fn) : f_(std::move(f)), fn_(std::move(fn)) {}

  template <class... A>
  decltype(auto) operator()(A&&... args) {
    using R = std::invoke_result_t<F&, A&&...>;
    // Called from inside another capture: inline into it.
    if (kiln::detail::trace_hook()) return std::invoke(f_, std::forward<A>(args)...);
    detail::CallArgs call;
    call.tensors.reserve(sizeof...(A));
    (detail::add_arg(call, args), ...);
    if constexpr (std::is_void_v<R>) {
      TensorList outs;
      std::vector<int64_t> layout;
      if (detail::try_replay(*fn_, call, outs, layout)) return;
      detail::traced_call(*fn_, call, true, [&](TensorList&, std::vector<int64_t>&) {
        std::invoke(f_, std::forward<A>(args)...);
      });
    } else {
      using D = std::decay_t<R>;
      constexpr bool replayable = detail::Result<D>::replayable;
      if constexpr (replayable) {
        TensorList outs;
        std::vector<int64_t> layout;
        if (detail::try_replay(*fn_, call, outs, layout)) {
          size_t i = 0, l = 0;
          return D(detail::Result<D>::rebuild(outs, layout, i, l));
        }
      }
      std::optional<D> result;
      detail::traced_call(*fn_, call, replayable, [&](TensorList& outs, std::vector<int64_t>& layout) {
        result.emplace(std::invoke(f_, std::forward<A>(args)...));
        detail::Result<D>::flatten(*result, outs, layout);
      });
      return D(std::move(*result));
    }
  }

  const std::shared_ptr<detail::Function>& function() const { return fn_; }

 private:
  F f_;
  std::shared_ptr<detail::Function> fn_;
};

// A free function, lambda or functor.
template <class F>
auto compile(F f, CompileOptions options = {}) {
  return Compiled<F>(std::move(f), detail::make_function(std::move(options), nullptr));
}

// An nn::Module: the callable runs module->forward(args...); its training flags are guarded.
template <class M, class = std::enable_if_t<std::is_base_of_v<nn::Module, M>>>
auto compile(std::shared_ptr<M> module, CompileOptions options = {}) {
  auto fwd = [module](auto&&... a) { return module->forward(std::forward<decltype(a)>(a)...); };
  return Compiled<decltype(fwd)>(std::move(fwd), detail::make_function(std::move(options), module));
}

// What one call of f does under capture: its graphs, breaks and the guards an entry would hold.
template <class F, class... A>
Explanation explain(F&& f, A&&... args) {
  using R = std::invoke_result_t<F, A...>;
  if constexpr (std::is_void_v<R>) {
    return detail::explain_call([&] { std::invoke(std::forward<F>(f), std::forward<A>(args)...); });
  } else {
    // The result stays alive until the graph is explained: it is what the graph computes.
    std::optional<std::decay_t<R>> result;
    return detail::explain_call([&] { result.emplace(std::invoke(std::forward<F>(f), std::forward<A>(args)...)); });
  }
}

}  // namespace kiln::jit
