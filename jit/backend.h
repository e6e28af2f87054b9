#pragma once
// Turns an optimised graph into the plan that runs it: the native backend (fusion + LLVM
// codegen, fusion/) or the interpreter. Native failures fall back to the interpreter, logged
// and counted; with `async`, the interpreter serves until the native plan is ready.
#include <functional>
#include <memory>
#include <string>

#include "jit/compile.h"
#include "jit/interpreter.h"

namespace kiln::jit {

struct PlanRequest {
  Backend backend = Backend::Native;
  bool async = false;
  bool dynamic = false;    // sizes become kernel parameters (one kernel serves every size)
  bool cuda_graphs = false;  // CompileOptions::cuda_graphs
  std::string label;       // "fn0.3": function and entry, for logs
  std::string dump_base;   // KILN_DUMP_DIR/<name>.<entry> when dumps are on, else empty
};

std::shared_ptr<const Plan> make_plan(Graph optimized, const PlanRequest& request);
// Writes <base>.fusion.dot and <base>.kernels.txt for a native plan (nothing for others).
void dump_fusion(const std::string& base, const Plan& plan);
// Defined in compile.cpp: updates the process-wide stats under their lock.
void update_stats(const std::function<void(Stats&)>& f);
// Defined in compile.cpp: lists the Fused nodes' kernels in Stats::kernels; a kernel whose
// name is already listed takes over that entry's counters.
void register_kernels(Graph& g, const std::string& plan);

}  // namespace kiln::jit
