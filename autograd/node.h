#pragma once
// The grad_fn graph: a Node per recorded op, Edges to the nodes that produced its inputs, and
// the per-tensor AutogradMeta that ties a tensor to its node (or, for a leaf, to its .grad).
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace kiln::autograd {

struct Node;

// Where a gradient goes: input `input_nr` of `fn` (a node's output index, in forward terms).
struct Edge {
  std::shared_ptr<Node> fn;
  uint32_t input_nr = 0;
  bool valid() const { return fn != nullptr; }
};

struct AutogradMeta;

struct Node : std::enable_shared_from_this<Node> {
  Node();
  // Frees the nodes only this one references iteratively: a recursive release of a long chain
  // (an RNN unrolled over many steps) overflows the stack.
  virtual ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // grads[i] is the gradient of forward output i (undefined: no gradient flowed there).
  // Returns one gradient per next edge (undefined: none).
  virtual TensorList apply(TensorList&& grads) = 0;
  virtual std::string name() const = 0;
  virtual uint32_t num_outputs() const { return 1; }
  // Frees saved tensors after a backward pass that does not retain the graph.
  virtual void release_saved() {}

  std::vector<Edge> next_edges;
  // Tensor hooks registered on this node's outputs (non-leaf tensors), by output index.
  std::vector<std::pair<uint32_t, std::pair<int64_t, Tensor::GradHook>>> hooks;
  // Tensors that retain_grad() on an output of this node; run after `hooks` (as PyTorch does),
  // and only while the tensor's grad_fn is still this node (an in-place op moves them on).
  std::vector<std::pair<uint32_t, std::weak_ptr<AutogradMeta>>> retains_grad;
  // Later nodes run first among those ready, so the engine walks the graph in reverse order.
  const uint64_t sequence_nr;
};

struct AutogradMeta {
  Tensor grad;
  std::shared_ptr<Node> grad_fn;
  uint32_t output_nr = 0;
  // The leaf's accumulator; weak so that the graph, not the tensor, keeps it alive.
  std::weak_ptr<Node> grad_accumulator;
  // Hooks of a leaf (those of a non-leaf live on its grad_fn).
  std::vector<std::pair<int64_t, Tensor::GradHook>> leaf_hooks;
  bool retains_grad = false;
  // A differentiable view: the root tensor whose storage it views, and the storage version at
  // which its grad_fn was last made current (an in-place write through the base or another
  // view changes the version, and the grad_fn is then regenerated from the base).
  bool is_view = false;
  Tensor base;
  uint32_t view_version = 0;
};

// The meta of a tensor, created on demand.
AutogradMeta& meta_of(const Tensor& t);
inline AutogradMeta* meta_if(const Tensor& t) { return t.impl()->autograd_meta().get(); }

// The edge a gradient for `t` should flow into: its grad_fn, or its leaf accumulator.
// Invalid for tensors that do not require grad.
Edge gradient_edge(const Tensor& t);

int64_t next_hook_id();

}  // namespace kiln::autograd
