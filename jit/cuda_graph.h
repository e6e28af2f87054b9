#pragma once
// CompileOptions::cuda_graphs: a native plan made only of fused CUDA kernels, replayed as one CUDA
// graph. The graph's kernels read and write buffers it owns (one per graph storage, allocated when
// the runner is made): each call copies the inputs in on a stream of the plan's own, launches the
// graph, then — on the caller's stream, after the graph — copies inputs the graph wrote back to
// the caller's tensors and the outputs into fresh memory. The first call captures the graph.
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/cuda_driver.h"
#include "jit/graph.h"

namespace kiln::jit {

class CudaGraphRunner {
 public:
  // Why `g` (a native plan's graph, kernels compiled) cannot be replayed as a CUDA graph; empty
  // when it can.
  static std::string ineligible(const Graph& g, bool dynamic);
  explicit CudaGraphRunner(const Graph& g);
  ~CudaGraphRunner();
  CudaGraphRunner(const CudaGraphRunner&) = delete;
  CudaGraphRunner& operator=(const CudaGraphRunner&) = delete;
  // Runs the plan (as Plan::run / run_fresh: `adopt` or `produced` receives the outputs). False
  // when the graph could not be captured; the caller then runs the plan as usual.
  bool run(const std::vector<Tensor>& bindings, const std::vector<Storage>* adopt, std::vector<Storage>* produced);
  int64_t replays() const { return replays_; }

 private:
  struct Buffer {
    int storage = -1, input = -1;  // graph storage; graph input bound to it (-1: internal)
    size_t nbytes = 0;
    bool written = false, output = false;
    Tensor memory;  // the graph's own copy (a constant's tensor for constants)
  };
  const Graph& graph_;
  int device_ = 0;
  std::vector<Buffer> buffers_;
  std::vector<std::vector<char*>> call_buffers_;  // per Fused node, in order
  std::vector<const Node*> calls_;
  std::mutex mu_;
  cuda::Stream stream_;
  void* exec_ = nullptr;
  bool broken_ = false;
  int64_t replays_ = 0;
};

}  // namespace kiln::jit
