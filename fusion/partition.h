#pragma once
// The partitioner: groups the nodes of an optimised graph into kernels and lowers each group
// to kernel IR (docs/fusion.md has the rules). The result is the same graph with each group
// replaced by one Fused node; nodes it cannot fuse (matmul, conv, indexing, random ops...)
// stay as they are and run through the eager kernels ("extern" nodes).
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "fusion/codegen.h"
#include "fusion/kernel_ir.h"
#include "jit/graph.h"

namespace kiln::fusion {

// Runs of one kernel (shared by the plans that hold a kernel of the same name; jit::stats()).
struct KernelCounters {
  std::atomic<int64_t> calls{0};
  std::atomic<int64_t> profiled_calls{0}, profiled_ns{0};  // runs while a profiler::Profile recorded
};

struct FusedCall {
  Kernel ir;                       // with the current values of its parameters
  std::vector<int> buffer_values;  // per kernel buffer: a value of the graph on its storage
  std::vector<int64_t> params;     // ir.param_values()
  int64_t grain = 1;               // fewest dims[0] items worth a thread
  std::string summary;             // the ops it was made of: "mul add relu mul tanh add"
  int group = -1;
  std::string sources;              // values of the input graph its nodes define or write: "%5 %6 %9"
  KernelCost cost;                 // estimate_cost(ir)
  std::shared_ptr<const CompiledKernel> code;  // set by compile_fused (CPU kernels)
  // A kernel over CUDA storages: the device, and its loaded function (a fusion::CudaFunction,
  // fusion/cuda_launch.h; type-erased so that this header needs no CUDA one), set by compile_fused.
  int cuda_device = -1;
  std::shared_ptr<const void> cuda_code;
  std::shared_ptr<KernelCounters> counters = std::make_shared<KernelCounters>();
};

struct FusionOptions {
  // Sizes, strides and offsets other than 0 and 1 become kernel parameters, so that a kernel
  // built for one batch size serves every batch size (dynamic entries).
  bool symbolic_sizes = false;
  // float16/bfloat16 values fuse (computed in float32, rounded once per op, as the eager kernels
  // do). For CUDA kernels only: the LLVM renderer has no float16/bfloat16 code.
  bool reduced_float = false;
};

struct FusionResult {
  jit::Graph graph;                 // with Fused nodes
  int kernels = 0;                  // Fused nodes
  int externs = 0;                  // nodes left to the eager kernels (Op and Mutate)
  std::vector<int> group_of_node;   // per node of the input graph: its group, or -1
  std::vector<std::string> group_names;  // per group: the kernel name
};

// Partitions `g` and lowers each group; the kernels are not compiled yet.
FusionResult fuse(const jit::Graph& g, const FusionOptions& options = {});
// Compiles every kernel of `g` in one batch (cache hits cost nothing): LLVM for kernels over CPU
// storages, NVRTC for those over CUDA storages (one translation unit per device). Raises
// kiln::Error on a codegen failure. Returns how many came from the CPU kernel cache.
int compile_fused(jit::Graph& g, const CodegenOptions& options = {});
// Runs one kernel over buffers (storage base pointers, in kernel buffer order), splitting
// dims[0] across the thread pool; a CUDA kernel is launched on its device's current stream.
void run_fused(const FusedCall& call, char* const* buffers);

// Pointwise kernels that write at least this many bytes stream their stores past the cache
// (Kernel::stream_stores): the last-level cache size, or $KILN_STREAM_STORE_BYTES.
int64_t stream_store_bytes();
// Sets that threshold for kernels fused from now on (tests, tuning); returns the previous one.
int64_t set_stream_store_bytes(int64_t bytes);
// The input graph in Graphviz, each node coloured by its fusion group.
std::string fusion_dot(const jit::Graph& g, const FusionResult& r, const std::string& name);

}  // namespace kiln::fusion
