// Tensor's autograd methods (declared in core/tensor.h).
#include "autograd/autograd.h"
#include "autograd/functions.h"
#include "core/ops.h"

namespace kiln {

using autograd::meta_if;
using autograd::meta_of;

Tensor& Tensor::requires_grad_(bool r) {
  KILN_CHECK(!r || is_floating_point(), "[requires_grad_] only tensors of floating point dtype can require gradients, got ",
             dtype());
  KILN_CHECK(r || is_leaf(), "[requires_grad_] you can only change requires_grad flags of leaf tensors; use detach() "
             "to get a tensor outside the graph");
  checked()->set_requires_grad(r);
  return *this;
}

Tensor Tensor::detach() const {
  const TensorImpl& i = *checked();
  return Tensor(std::make_shared<TensorImpl>(i.storage(), i.dtype(), i.sizes(), i.strides(), i.storage_offset()));
}

Tensor& Tensor::detach_() {
  autograd::AutogradMeta* m = meta_if(*this);
  KILN_CHECK(!(m && m->is_view), "[detach_] can't detach a view in place; use detach()");
  if (m) { m->grad_fn.reset(); m->output_nr = 0; }
  checked()->set_requires_grad(false);
  return *this;
}

namespace {
const Tensor& undefined_tensor() {
  static const Tensor t;
  return t;
}
}  // namespace

const Tensor& Tensor::grad() const {
  autograd::AutogradMeta* m = meta_if(*this);
  return m ? m->grad : undefined_tensor();
}

Tensor& Tensor::mutable_grad() { return meta_of(*this).grad; }

void Tensor::set_grad(const Tensor& g) {
  if (g.defined()) {
    KILN_CHECK(g.sizes() == sizes(), "[set_grad] assigned grad has shape ", g.sizes(), " but the tensor has shape ", sizes());
    KILN_CHECK(g.dtype() == dtype(), "[set_grad] assigned grad has dtype ", g.dtype(), " but the tensor has dtype ", dtype());
    KILN_CHECK(g.device() == device(), "[set_grad] assigned grad is on ", g.device(), " but the tensor is on ", device());
  }
  meta_of(*this).grad = g;
}

void Tensor::backward(const Tensor& gradient, std::optional<bool> retain_graph, bool create_graph) const {
  autograd::backward({*this}, gradient.defined() ? TensorList{gradient} : TensorList{}, retain_graph, create_graph);
}

bool Tensor::is_leaf() const {
  autograd::AutogradMeta* m = meta_if(*this);
  if (m && m->is_view) {
    (void)grad_fn();  // a view whose base was written since takes the base's history first
    m = meta_if(*this);
  }
  return !m || !m->grad_fn;
}

std::shared_ptr<autograd::Node> Tensor::grad_fn() const {
  autograd::Edge e = autograd::gradient_edge(*this);  // refreshes a stale view
  return dynamic_cast<autograd::AccumulateGrad*>(e.fn.get()) ? nullptr : e.fn;
}

uint32_t Tensor::output_nr() const {
  autograd::AutogradMeta* m = meta_if(*this);
  return m ? m->output_nr : 0;
}

int64_t Tensor::register_hook(GradHook hook) const {
  KILN_CHECK(requires_grad(), "[register_hook] cannot register a hook on a tensor that doesn't require gradient");
  int64_t id = autograd::next_hook_id();
  if (is_leaf()) {
    meta_of(*this).leaf_hooks.emplace_back(id, std::move(hook));
  } else {
    autograd::Edge e = autograd::gradient_edge(*this);
    e.fn->hooks.push_back({e.input_nr, {id, std::move(hook)}});
  }
  return id;
}

void Tensor::remove_hook(int64_t handle) const {
  autograd::AutogradMeta* m = meta_if(*this);
  if (!m) return;
  std::erase_if(m->leaf_hooks, [&](const auto& h) { return h.first == handle; });
  if (m->grad_fn) std::erase_if(m->grad_fn->hooks, [&](const auto& h) { return h.second.first == handle; });
}

void Tensor::retain_grad() const {
  KILN_CHECK(requires_grad(), "[retain_grad] can't retain_grad on a tensor that has requires_grad=false");
  if (is_leaf()) return;  // leaves keep their grad anyway
  autograd::AutogradMeta& m = meta_of(*this);
  if (m.retains_grad) return;
  autograd::Edge e = autograd::gradient_edge(*this);  // refreshes a stale view first
  m.retains_grad = true;  // the engine fills .grad after the tensor's hooks
  e.fn->retains_grad.push_back({e.input_nr, checked()->autograd_meta()});
}

bool Tensor::retains_grad() const {
  autograd::AutogradMeta* m = meta_if(*this);
  return m && m->retains_grad;
}

namespace autograd {

Tensor sum_to(const Tensor& grad, IntArrayRef sizes) {
  if (grad.sizes() == sizes) return grad;
  int64_t lead = grad.dim() - static_cast<int64_t>(sizes.size());
  KILN_INTERNAL_ASSERT(lead >= 0, "sum_to: gradient of shape ", grad.sizes(), " has fewer dims than ", sizes);
  Shape dims;
  for (int64_t d = 0; d < lead; ++d) dims.push_back(d);
  for (size_t d = 0; d < sizes.size(); ++d)
    if (sizes[d] == 1 && grad.size(lead + static_cast<int64_t>(d)) != 1) dims.push_back(lead + static_cast<int64_t>(d));
  Tensor r = dims.empty() ? grad : grad.sum(dims, /*keepdim=*/true);
  if (lead > 0 || r.sizes() != sizes) r = r.reshape(sizes);
  return r;
}

}  // namespace autograd
}  // namespace kiln
