#include "jit/backend.h"

#include "jit/cuda_graph.h"

#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <mutex>
#include <thread>

#include "core/logging.h"
#include "core/profiler.h"
#include "fusion/partition.h"

namespace kiln::jit {

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

bool want_text(const PlanRequest& r) { return !r.dump_base.empty() || logging::enabled(logging::Category::code); }

std::string kernels_text(const Plan& plan) {
  std::string out;
  for (const Node& n : plan.graph().nodes) {
    if (n.kind != NodeKind::Fused) continue;
    const fusion::FusedCall& c = *n.fused;
    out += "=== " + c.ir.name + " [" + c.summary + "]\n";
    out += "--- kernel IR\n" + c.ir.str();
    if (!c.code) continue;
    out += "--- symbol " + c.code->symbol + (c.code->from_disk ? " (from the disk cache)" : "") + "\n";
    if (c.code->llvm_ir.empty()) {
      out += "--- LLVM IR: not kept (loaded from a cache)\n";
    } else {
      out += "--- LLVM IR before optimisation\n" + c.code->llvm_ir;
      out += "--- LLVM IR after optimisation\n" + c.code->llvm_ir_optimized;
    }
  }
  return out;
}

// Fuses and compiles; null (logged and counted) when any step fails.
std::shared_ptr<const Plan> native_plan(const Graph& g, const PlanRequest& r) {
  try {
    auto t0 = Clock::now();
    profiler::Scope fusion_scope("fusion", profiler::Category::Jit);
    fusion::FusionOptions fo;
    fo.symbolic_sizes = r.dynamic;
    // float16/bfloat16 fuse in CUDA graphs only (the LLVM renderer has no code for them).
    fo.reduced_float = !g.values.empty() && std::all_of(g.values.begin(), g.values.end(),
                                                         [](const Value& v) { return v.device.is_cuda(); });
    fusion::FusionResult fr = fusion::fuse(g, fo);
    // Kernel names carry their plan's label, as its dump files do: names in the profiler's
    // trace, in jit::stats() and in <label>.kernels.txt are then the same, and unique.
    if (!r.label.empty()) {
      for (Node& n : fr.graph.nodes)
        if (n.kind == NodeKind::Fused) n.fused->ir.name = r.label + "/" + n.fused->ir.name;
      for (std::string& name : fr.group_names)
        if (!name.empty()) name = r.label + "/" + name;
    }
    fusion_scope.close();
    const double fusion_ms = ms_since(t0);
    auto t1 = Clock::now();
    fusion::CodegenOptions co;
    co.keep_text = want_text(r);
    profiler::Scope codegen_scope("codegen", profiler::Category::Jit);
    const int hits = fusion::compile_fused(fr.graph, co);
    if (profiler::Event* e = codegen_scope.event())
      e->detail = std::to_string(fr.kernels) + " kernel(s), " + std::to_string(hits) + " from the kernel cache";
    codegen_scope.close();
    const double codegen_ms = ms_since(t1);
    register_kernels(fr.graph, r.label);
    auto info = std::make_shared<Plan::Fusion>();
    info->unfused = g;
    info->group_of_node = fr.group_of_node;
    info->group_names = fr.group_names;
    info->kernels = fr.kernels;
    info->externs = fr.externs;
    auto plan = std::make_shared<Plan>(std::move(fr.graph));
    plan->set_fusion(info);
    if (r.cuda_graphs) {
      const std::string why = CudaGraphRunner::ineligible(plan->graph(), r.dynamic);
      if (why.empty()) plan->set_cuda_graph(std::make_shared<CudaGraphRunner>(plan->graph()));
      else KILN_LOG(fusion, "{}: runs kernel by kernel, not as a CUDA graph: {}", r.label, why);
      update_stats([&](Stats& s) { why.empty() ? ++s.cuda_graph_plans : ++s.cuda_graph_refusals; });
    }
    plan->set_label(r.label);
    update_stats([&](Stats& s) {
      s.fused_kernels += info->kernels;
      s.kernel_cache_hits += hits;
      s.kernels_compiled += info->kernels - hits;
      s.fusion_ms += fusion_ms;
      s.codegen_ms += codegen_ms;
    });
    KILN_LOG(fusion, "{}: {} kernel(s), {} extern node(s); fusion {:.2f} ms, codegen {:.2f} ms ({} from cache)\n{}",
             r.label, info->kernels, info->externs, fusion_ms, codegen_ms, hits, plan->graph().str());
    KILN_LOG(perf, "{}: fusion {:.2f} ms, codegen {:.2f} ms for {} kernel(s) ({} cached)", r.label, fusion_ms,
             codegen_ms, info->kernels, hits);
    KILN_LOG(code, "{} kernels:\n{}", r.label, kernels_text(*plan));
    if (!r.dump_base.empty()) dump_fusion(r.dump_base, *plan);
    return plan;
  } catch (const std::exception& e) {
    std::string why = e.what();
    update_stats([&](Stats& s) {
      ++s.codegen_fallbacks;
      if (s.fallbacks.size() < 1000) s.fallbacks.push_back({r.label, "native backend failed (interpreter runs it): " + why});
    });
    logging::logger().warn("[jit] {}: native backend failed, the graph runs on the interpreter: {}", r.label, why);
    return nullptr;
  }
}

// One background thread compiles queued graphs in order (options.async).
class AsyncCompiler {
 public:
  ~AsyncCompiler() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (worker_.joinable()) worker_.join();
  }
  void submit(std::function<void()> job) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!worker_.joinable()) worker_ = std::thread([this] { loop(); });
    jobs_.push_back(std::move(job));
    cv_.notify_all();
  }
  void wait_idle() {
    std::unique_lock<std::mutex> lock(mu_);
    idle_cv_.wait(lock, [&] { return jobs_.empty() && !busy_; });
  }

 private:
  void loop() {
    pthread_setname_np(pthread_self(), "kiln-compile");  // its track in profiler traces
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
      // Stopping (static destruction at exit): queued compiles are dropped, since no call will use
      // their plans and every further job would run while the statics it needs are torn down.
      if (stop_) {
        jobs_.clear();
        idle_cv_.notify_all();
        return;
      }
      auto job = std::move(jobs_.front());
      jobs_.pop_front();
      busy_ = true;
      lock.unlock();
      job();
      lock.lock();
      busy_ = false;
      idle_cv_.notify_all();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_, idle_cv_;
  std::deque<std::function<void()>> jobs_;
  std::thread worker_;
  bool stop_ = false, busy_ = false;
};

AsyncCompiler& async_compiler() {
  static AsyncCompiler c;
  return c;
}

std::shared_ptr<const Plan> interpreter_plan(Graph g, const std::string& label) {
  auto p = std::make_shared<Plan>(std::move(g));
  p->set_label(label);
  return p;
}

}  // namespace

std::shared_ptr<const Plan> make_plan(Graph optimized, const PlanRequest& request) {
  if (request.backend != Backend::Native || !fusion::codegen_available())
    return interpreter_plan(std::move(optimized), request.label);
  if (request.async) {
    auto interp = interpreter_plan(optimized, request.label);
    std::weak_ptr<const Plan> weak = interp;
    async_compiler().submit([weak, g = std::move(optimized), request] {
      if (weak.expired()) return;  // the entry is gone
      profiler::Scope scope("async compile", profiler::Category::Jit);
      if (profiler::Event* e = scope.event()) e->name += " " + request.label;
      auto native = native_plan(g, request);
      update_stats([](Stats& s) { ++s.async_compiles; });
      if (auto p = weak.lock(); p && native) {
        p->upgrade(native);
        KILN_LOG(fusion, "{}: native plan ready, later calls use it", request.label);
      }
    });
    return interp;
  }
  if (auto native = native_plan(optimized, request)) return native;
  return interpreter_plan(std::move(optimized), request.label);
}

void wait_for_compiles() { async_compiler().wait_idle(); }

void dump_fusion(const std::string& base, const Plan& plan) {
  const Plan::Fusion* f = plan.fusion();
  if (!f) return;
  fusion::FusionResult r;
  r.group_of_node = f->group_of_node;
  r.group_names = f->group_names;
  std::ofstream(base + ".fusion.dot") << fusion::fusion_dot(f->unfused, r, base);
  std::ofstream(base + ".kernels.txt") << kernels_text(plan);
}

}  // namespace kiln::jit
