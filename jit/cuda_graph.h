#pragma once
// CompileOptions::cuda_graphs: a native plan over CUDA tensors replayed as one CUDA graph.
//
// The runner executes the plan's nodes itself over buffers it owns (one per graph storage,
// allocated when it is made): fused kernels with those buffers, extern nodes (cuBLAS, cuDNN, the
// eager CUDA kernels) with tensors over them. Every call copies the inputs into its buffers on a
// stream of its own (after the caller's stream's pending work), runs, then — on the caller's
// stream, after the run — copies the inputs the plan wrote (in-place updates) back into the
// caller's tensors and the outputs into fresh memory. The first call runs the nodes on that stream
// (warming the caches: kernels loaded, cuBLAS/cuDNN workspaces and temporaries allocated); the
// second captures the same run as a CUDA graph; later calls launch the graph. Temporaries the
// kernels allocate while captured stay reserved for the runner's stream (the allocator never
// returns them to the driver while the runner lives). A capture that fails (a kernel that
// synchronises: an index range check, an item(), a host fallback) is logged and the plan runs node
// by node from then on.
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
  // when the plan must run node by node instead (the capture failed).
  bool run(const std::vector<Tensor>& bindings, const std::vector<Storage>* adopt, std::vector<Storage>* produced);
  int64_t replays() const { return replays_; }

 private:
  void execute();  // the plan's nodes over the runner's buffers, on the current stream
  Tensor tensor(int value);

  const Graph& graph_;
  int device_ = 0;
  std::vector<Storage> storage_;      // per graph storage: the runner's memory (a constant's own)
  std::vector<size_t> storage_bytes_;
  std::vector<char> written_;         // per graph storage: some node writes it
  std::vector<Tensor> values_;        // per value: a tensor over storage_, made on first use
  std::mutex mu_;
  cuda::Stream stream_;
  void* exec_ = nullptr;
  int calls_ = 0;
  bool broken_ = false;
  int64_t replays_ = 0;
};

}  // namespace kiln::jit
