#pragma once
// The interpreter backend: runs a graph node by node through the eager kernels, with no
// per-op dispatch work left (shapes, dtypes, aliasing and buffers were settled when the plan
// was built). Internal buffers come from the liveness-based buffer plan and are reused across
// runs; storages that outlive the graph get fresh memory each run.
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "jit/graph.h"
#include "jit/passes.h"

namespace kiln::jit {

class CudaGraphRunner;

// Attribute indices of a random op's (seed, offset), or (-1, -1) for a deterministic op.
std::pair<int, int> rng_attr_indices(const OpDef& op);

class Plan {
 public:
  explicit Plan(Graph g);
  const Graph& graph() const { return graph_; }
  const BufferPlan& buffers() const { return buffers_; }
  // Native backend: the graph before fusion and each node's fusion group (for dumps), and the
  // fused kernels' count. Empty for interpreter plans.
  struct Fusion {
    Graph unfused;
    std::vector<int> group_of_node;
    std::vector<std::string> group_names;
    int kernels = 0, externs = 0;
  };
  const Fusion* fusion() const { return fusion_.get(); }
  void set_fusion(std::shared_ptr<const Fusion> f) { fusion_ = std::move(f); }
  // Runs become replays of one CUDA graph (jit/cuda_graph.h); set before the plan is shared.
  void set_cuda_graph(std::shared_ptr<CudaGraphRunner> r) { cuda_graph_ = std::move(r); }
  bool uses_cuda_graph() const { return cuda_graph_ != nullptr; }
  // "<function>.<entry>": names its runs in profiler traces (empty: "graph").
  const std::string& label() const { return label_; }
  void set_label(std::string label) { label_ = std::move(label); }
  // Later runs go to `better` (a fused plan of the same graph compiled in the background).
  // Set once; every run checks a plain atomic pointer (no shared_ptr traffic on the hot path).
  void upgrade(std::shared_ptr<const Plan> better) const {
    std::lock_guard<std::mutex> lock(pool_mutex_);
    upgrade_owner_ = std::move(better);
    upgrade_.store(upgrade_owner_.get(), std::memory_order_release);
  }
  // Runs the graph. `bindings`: a realised tensor per graph input (same geometry as traced).
  // `outputs`: per graph storage, the lazy storage that receives the result (null for storages
  // nobody outside needs). Thread-safe: concurrent runs use separate workspaces.
  // `rng`: (seed, offset) for each random node in program order (null: as traced).
  // `snapshots`: when given, receives a copy of every Op output, by value id (verify mode).
  using RngKeys = std::vector<std::pair<int64_t, int64_t>>;
  // `scalars`: values of the nodes with a runtime_slot (dynamic scalars), by slot.
  void run(const std::vector<Tensor>& bindings, const std::vector<Storage>& outputs, const RngKeys* rng = nullptr,
           std::vector<Tensor>* snapshots = nullptr, const std::vector<Scalar>* scalars = nullptr) const;
  // The replay path: as run(), but the memory of each graph output storage is handed over in
  // `produced` (resized to the graph's storages; null where a storage is not an output) rather
  // than adopted by lazy storages made beforehand.
  void run_fresh(const std::vector<Tensor>& bindings, std::vector<Storage>& produced, const RngKeys* rng = nullptr) const;

 private:
  struct Workspace {
    std::vector<Storage> slots;
    // Tensors of the run; those over planned slots keep their TensorImpl from run to run.
    std::vector<Tensor> vals;
    std::vector<char> cached;  // per value: vals[v] is reused (its storage is a slot)
    TensorList ins, outs;      // scratch argument lists
    std::vector<char*> ptrs;   // scratch kernel buffers
    std::vector<Storage> storage, fresh;  // per graph storage: its memory in this run; new output memory
  };
  void run_impl(const std::vector<Tensor>& bindings, const std::vector<Storage>* adopt, std::vector<Storage>* produced,
                const RngKeys* rng, std::vector<Tensor>* snapshots, const std::vector<Scalar>* scalars) const;
  std::unique_ptr<Workspace> take_workspace() const;
  void give_back(std::unique_ptr<Workspace> ws) const;

  Graph graph_;
  BufferPlan buffers_;
  std::vector<char> direct_;
  std::vector<std::pair<int, int>> rng_attr_;  // per node: indices of its seed/offset attrs, or -1  // per node: a Mutate can write its target without a temporary
  std::shared_ptr<const Fusion> fusion_;
  std::shared_ptr<CudaGraphRunner> cuda_graph_;  // CompileOptions::cuda_graphs, when the plan allows
  std::string label_;
  // Each node's IR line, for the profiler's node events (made on the first profiled run).
  mutable std::once_flag node_text_once_;
  mutable std::vector<std::string> node_text_;
  mutable std::shared_ptr<const Plan> upgrade_owner_;  // keeps upgrade_ alive; written once
  mutable std::atomic<const Plan*> upgrade_{nullptr};
  mutable std::mutex pool_mutex_;
  mutable std::vector<std::unique_ptr<Workspace>> pool_;
};

}  // namespace kiln::jit
