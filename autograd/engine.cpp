// The backward engine: counts dependencies over the nodes reachable from the roots, then runs
// each node once all gradients for it have arrived, latest-recorded first.
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "autograd/autograd.h"
#include "autograd/functions.h"
#include "core/ops.h"
#include "core/profiler.h"

namespace kiln::autograd {

namespace {

struct Buffer {
  TensorList grads;
  int pending = 0;
};

struct ByLatest {
  bool operator()(const Node* a, const Node* b) const { return a->sequence_nr < b->sequence_nr; }
};

void accumulate(Tensor& slot, Tensor g) {
  if (!g.defined()) return;
  if (!slot.defined()) slot = std::move(g);
  else slot = slot + g;
}

// Runs a tensor hook on g; a defined result replaces g and must keep its size and dtype.
void run_hook(const Tensor::GradHook& hook, Tensor& g) {
  Tensor r = hook(g);
  if (!r.defined()) return;
  KILN_CHECK(r.sizes() == g.sizes(), "[autograd] a tensor hook has changed the size of the gradient (was ", g.sizes(),
             ", got ", r.sizes(), ")");
  KILN_CHECK(r.dtype() == g.dtype(), "[autograd] a tensor hook has changed the dtype of the gradient (was ", g.dtype(),
             ", got ", r.dtype(), ")");
  g = std::move(r);
}

// Targets of grad(): (node, input_nr) -> index into the result.
using TargetMap = std::unordered_map<const Node*, std::vector<std::pair<uint32_t, size_t>>>;

TensorList run(const std::vector<Edge>& roots, TensorList root_grads, bool keep_graph, bool create_graph,
               const TargetMap* targets, size_t num_targets) {
  std::unordered_map<Node*, Buffer> buffers;
  // Dependency counts over the reachable graph (iterative DFS: graphs can be deep).
  std::vector<Node*> stack;
  std::unordered_set<Node*> seen;
  for (const Edge& e : roots)
    if (e.fn && seen.insert(e.fn.get()).second) stack.push_back(e.fn.get());
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const Edge& e : n->next_edges) {
      if (!e.fn) continue;
      buffers[e.fn.get()].pending++;
      if (seen.insert(e.fn.get()).second) stack.push_back(e.fn.get());
    }
  }
  // grad() runs only the nodes from which a target is reachable.
  std::unordered_set<Node*> needed;
  if (targets) {
    std::unordered_map<Node*, std::vector<Node*>> parents;
    for (Node* n : seen)
      for (const Edge& e : n->next_edges)
        if (e.fn) parents[e.fn.get()].push_back(n);
    std::vector<Node*> work;
    for (Node* n : seen)
      if (targets->count(n)) { needed.insert(n); work.push_back(n); }
    while (!work.empty()) {
      Node* n = work.back();
      work.pop_back();
      for (Node* p : parents[n])
        if (needed.insert(p).second) work.push_back(p);
    }
  }

  std::priority_queue<Node*, std::vector<Node*>, ByLatest> ready;
  for (size_t i = 0; i < roots.size(); ++i) {
    if (!roots[i].fn) continue;
    Buffer& b = buffers[roots[i].fn.get()];
    if (b.grads.size() < roots[i].fn->num_outputs()) b.grads.resize(roots[i].fn->num_outputs());
    accumulate(b.grads[roots[i].input_nr], root_grads[i]);
  }
  for (Node* n : seen)
    if (buffers[n].pending == 0) ready.push(n);

  TensorList captured(num_targets);
  struct Restore {
    bool prev;
    ~Restore() { GradMode::set_enabled(prev); }
  } restore{GradMode::is_enabled()};
  GradMode::set_enabled(create_graph);  // vjps record only when differentiating the backward pass
  while (!ready.empty()) {
    Node* n = ready.top();
    ready.pop();
    // grad(): a node no target is reached from neither runs nor fires its hooks.
    if (targets && !needed.count(n)) continue;
    Buffer& b = buffers[n];
    TensorList grads = std::move(b.grads);
    grads.resize(n->num_outputs());
    // Copies: a hook may register or remove hooks.
    auto hooks = n->hooks;
    for (auto& [nr, hook] : hooks)
      if (nr < grads.size() && grads[nr].defined()) run_hook(hook.second, grads[nr]);
    // A leaf's hooks run here rather than in AccumulateGrad, so grad() sees them too.
    if (auto* acc = dynamic_cast<AccumulateGrad*>(n); acc && !grads.empty() && grads[0].defined()) {
      auto leaf_hooks = acc->meta()->leaf_hooks;
      for (auto& [id, hook] : leaf_hooks) run_hook(hook, grads[0]);
    }
    for (auto& [nr, weak] : n->retains_grad) {
      auto meta = weak.lock();
      if (!meta || meta->grad_fn.get() != n || meta->output_nr != nr || nr >= grads.size() || !grads[nr].defined())
        continue;
      NoGradGuard no_grad;
      meta->grad = meta->grad.defined() ? meta->grad + grads[nr] : grads[nr].detach().clone();
    }
    if (targets) {
      auto it = targets->find(n);
      if (it != targets->end())
        for (auto [nr, idx] : it->second) captured[idx] = nr < grads.size() ? grads[nr] : Tensor();
      if (dynamic_cast<AccumulateGrad*>(n)) continue;
      bool feeds_target = false;
      for (const Edge& e : n->next_edges)
        if (e.fn && needed.count(e.fn.get())) feeds_target = true;
      if (!feeds_target) continue;
    }
    bool any = false;
    for (const Tensor& g : grads) any = any || g.defined();
    TensorList out;
    if (any) {
      if (profiler::enabled()) [[unlikely]] {
        profiler::Scope scope(n->name(), profiler::Category::Autograd);
        out = n->apply(std::move(grads));
      } else {
        out = n->apply(std::move(grads));
      }
    }
    if (!keep_graph) n->release_saved();
    for (size_t i = 0; i < n->next_edges.size(); ++i) {
      const Edge& e = n->next_edges[i];
      if (!e.fn) continue;
      Buffer& nb = buffers[e.fn.get()];
      if (nb.grads.size() < e.fn->num_outputs()) nb.grads.resize(e.fn->num_outputs());
      if (i < out.size()) accumulate(nb.grads[e.input_nr], std::move(out[i]));
      if (--nb.pending == 0) ready.push(e.fn.get());
    }
  }
  return captured;
}

// Roots and their seed gradients, with PyTorch's checks.
void prepare_roots(const char* api, const TensorList& outputs, const TensorList& grad_outputs, std::vector<Edge>& edges,
                   TensorList& grads) {
  KILN_CHECK(grad_outputs.empty() || grad_outputs.size() == outputs.size(), "[", api, "] got ", outputs.size(),
             " outputs but ", grad_outputs.size(), " grad_outputs");
  for (size_t i = 0; i < outputs.size(); ++i) {
    const Tensor& t = outputs[i];
    KILN_CHECK(t.defined(), "[", api, "] output ", i, " is an undefined tensor");
    Edge edge = gradient_edge(t);  // also valid for a view whose base came to require grad
    KILN_CHECK(edge.valid(), "[", api, "] element ", i, " of tensors does not require grad and does not have a grad_fn");
    Tensor g = grad_outputs.empty() ? Tensor() : grad_outputs[i];
    if (!g.defined()) {
      KILN_CHECK(t.numel() == 1, "[", api, "] grad can be implicitly created only for scalar outputs, but output ", i,
                 " has shape ", t.sizes());
      g = ones_like(t);
    } else {
      KILN_CHECK(g.sizes() == t.sizes(), "[", api, "] mismatch in shape: grad_output ", i, " has a shape of ",
                 g.sizes(), " and output ", i, " has a shape of ", t.sizes());
      KILN_CHECK(g.device() == t.device(), "[", api, "] grad_output ", i, " is on ", g.device(), " but output ", i,
                 " is on ", t.device());
      if (g.dtype() != t.dtype()) g = g.to(t.dtype());
    }
    edges.push_back(std::move(edge));
    grads.push_back(std::move(g));
  }
}

}  // namespace

void backward(const TensorList& outputs, const TensorList& grad_outputs, std::optional<bool> retain_graph,
              bool create_graph) {
  std::vector<Edge> edges;
  TensorList grads;
  profiler::Scope scope("backward", profiler::Category::Autograd);
  prepare_roots("backward", outputs, grad_outputs, edges, grads);
  run(edges, std::move(grads), retain_graph.value_or(create_graph), create_graph, nullptr, 0);
}

TensorList grad(const TensorList& outputs, const TensorList& inputs, const TensorList& grad_outputs,
                std::optional<bool> retain_graph, bool create_graph, bool allow_unused) {
  std::vector<Edge> edges;
  TensorList grads;
  profiler::Scope scope("grad", profiler::Category::Autograd);
  prepare_roots("grad", outputs, grad_outputs, edges, grads);
  TargetMap targets;
  for (size_t i = 0; i < inputs.size(); ++i) {
    KILN_CHECK(inputs[i].defined(), "[grad] input ", i, " is an undefined tensor");
    Edge e = gradient_edge(inputs[i]);
    KILN_CHECK(e.valid(), "[grad] input ", i, " does not require grad");
    targets[e.fn.get()].push_back({e.input_nr, i});
  }
  // Keep accumulators of leaf inputs alive for the run (the graph may hold them only weakly).
  std::vector<std::shared_ptr<Node>> hold;
  for (const Tensor& t : inputs) hold.push_back(gradient_edge(t).fn);
  TensorList r = run(edges, std::move(grads), retain_graph.value_or(create_graph), create_graph, &targets, inputs.size());
  for (size_t i = 0; i < r.size(); ++i) {
    KILN_CHECK(r[i].defined() || allow_unused, "[grad] one of the differentiated tensors (input ", i,
               ", shape ", inputs[i].sizes(), ") appears to not have been used in the graph; pass allow_unused=true "
               "if this is intended");
    if (r[i].defined() && !create_graph) r[i] = r[i].detach();
  }
  return r;
}

}  // namespace kiln::autograd
