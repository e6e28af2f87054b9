#include "autograd/record.h"

#include "autograd/functions.h"
#include "autograd/grad_mode.h"

namespace kiln {

namespace {
thread_local bool t_grad_enabled = true;
}
bool GradMode::is_enabled() { return t_grad_enabled; }
void GradMode::set_enabled(bool enabled) { t_grad_enabled = enabled; }

namespace autograd {

AutogradMeta& meta_of(const Tensor& t) {
  auto& m = t.impl()->autograd_meta();
  if (!m) m = std::make_shared<AutogradMeta>();
  return *m;
}

namespace {

bool is_floating_output(const Tensor& t) { return t.defined() && t.is_floating_point(); }

// Points t's history at a new node; a retain_grad() on t follows it there.
void set_history(const Tensor& t, AutogradMeta& m, std::shared_ptr<Node> fn, uint32_t output_nr) {
  m.grad_fn = std::move(fn);
  m.output_nr = output_nr;
  t.impl()->set_requires_grad(true);
  if (m.retains_grad) m.grad_fn->retains_grad.push_back({output_nr, t.impl()->autograd_meta()});
}

// After an in-place write through the base or a sibling view, a view's values derive from
// the base's new history: its grad_fn becomes as_strided of the base.
void refresh_view(const Tensor& view, AutogradMeta& m) {
  uint32_t now = view._version();
  if (m.view_version == now) return;
  m.view_version = now;
  if (!m.base.requires_grad()) return;
  const OpDef& op = KILN_ROW("as_strided");
  Attrs attrs{view.sizes().vec(), view.strides().vec(), view.storage_offset()};
  set_history(view, m, std::make_shared<OpNode>(op, attrs, TensorList{m.base}, 1), 0);
}

// Whether t requires grad now. A view taken before its base came to require grad (through an
// in-place write) follows the base, as PyTorch's views do, though its own flag is still unset.
bool requires_grad_now(const Tensor& t) {
  if (t.requires_grad()) return true;
  AutogradMeta* m = meta_if(t);
  if (!m || !m->is_view || !m->base.requires_grad()) return false;
  refresh_view(t, *m);
  return t.requires_grad();
}

}  // namespace

Edge gradient_edge(const Tensor& t) {
  if (!requires_grad_now(t)) return {};
  AutogradMeta& m = meta_of(t);
  if (m.is_view) refresh_view(t, m);
  if (m.grad_fn) return {m.grad_fn, m.output_nr};
  auto acc = m.grad_accumulator.lock();
  if (!acc) {
    acc = std::make_shared<AccumulateGrad>(t.impl()->autograd_meta(), geometry_of(t));
    m.grad_accumulator = acc;
  }
  return {acc, 0};
}

bool should_record(const OpDef& op, const TensorList& inputs) {
  if (!GradMode::is_enabled() || !op.differentiable) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && requires_grad_now(t)) return true;
  return false;
}

namespace {
std::shared_ptr<OpNode> make_node(const OpDef& op, const TensorList& inputs, const Attrs& attrs,
                                  const TensorList& outputs) {
  auto node = std::make_shared<OpNode>(op, attrs, inputs, static_cast<uint32_t>(outputs.size()));
  if (op.vjp_saves & kSaveInputs) node->save_inputs(inputs);
  if (op.vjp_saves & kSaveOutputs) node->save_outputs(outputs);
  return node;
}
void attach(const std::shared_ptr<Node>& node, const TensorList& outputs) {
  for (size_t j = 0; j < outputs.size(); ++j) {
    if (!is_floating_output(outputs[j])) continue;
    AutogradMeta& m = meta_of(outputs[j]);
    m.grad_fn = node;
    m.output_nr = static_cast<uint32_t>(j);
    outputs[j].impl()->set_requires_grad(true);
  }
}
}  // namespace

void record(const OpDef& op, const TensorList& inputs, const Attrs& attrs, const TensorList& outputs) {
  attach(make_node(op, inputs, attrs, outputs), outputs);
}

void record_view(const OpDef& op, const Tensor& input, const Attrs& attrs, const Tensor& view) {
  // Views are tracked whenever grad mode is on, so that an in-place write through a view of a
  // tensor that does not require grad (buffer.narrow(...).copy_(x)) still reaches the buffer.
  AutogradMeta& m = meta_of(view);
  m.is_view = true;
  AutogradMeta* in = meta_if(input);
  m.base = in && in->is_view ? in->base : input;
  m.view_version = view._version();
  if (op.differentiable && requires_grad_now(input)) attach(make_node(op, {input}, attrs, {view}), {view});
}

// --- in place -------------------------------------------------------------------------------------

struct InplaceRecord {
  std::shared_ptr<OpNode> node;
  int self_index = -1;
  bool through_view = false;
  Edge base_edge;
  InputGeometry base_geometry;
};

namespace {
void delete_record(InplaceRecord* r) { delete r; }
bool shares_storage(const Tensor& a, const Tensor& b) {
  return a.defined() && b.defined() && a.impl()->storage() == b.impl()->storage();
}
}  // namespace

std::unique_ptr<InplaceRecord, void (*)(InplaceRecord*)> begin_inplace(const OpDef& op, const Tensor& self,
                                                                        const TensorList& inputs,
                                                                        const Attrs& attrs) {
  std::unique_ptr<InplaceRecord, void (*)(InplaceRecord*)> none(nullptr, delete_record);
  // An integer or bool result cannot require grad (x.to(kInt64) is a cut, as in PyTorch).
  if (!GradMode::is_enabled() || !self.is_floating_point()) return none;
  AutogradMeta* sm = meta_if(self);
  bool view = sm && sm->is_view;
  bool inputs_need = op.differentiable && should_record(op, inputs);
  bool base_needs = view && sm->base.requires_grad();
  if (!inputs_need && !self.requires_grad() && !base_needs) return none;

  // A view made a leaf by requires_grad_() (buf.narrow(...).requires_grad_()) is a leaf too.
  bool self_is_leaf = self.requires_grad() && !(sm && sm->grad_fn);
  KILN_CHECK(!self_is_leaf, "[", op.name, "_] a leaf tensor that requires grad is being used in an in-place "
             "operation; wrap the update in kiln::NoGradGuard or write to a clone");
  if (view) {
    bool base_is_leaf = sm->base.requires_grad() && !meta_of(sm->base).grad_fn;
    KILN_CHECK(!base_is_leaf, "[", op.name, "_] a view of a leaf tensor that requires grad is being used in an "
               "in-place operation; wrap the update in kiln::NoGradGuard");
  }

  auto rec = std::unique_ptr<InplaceRecord, void (*)(InplaceRecord*)>(new InplaceRecord, delete_record);
  if (view) {
    rec->through_view = true;
    rec->base_edge = gradient_edge(sm->base);
    rec->base_geometry = geometry_of(sm->base);
  }
  TensorList edge_inputs = op.differentiable ? inputs : TensorList{};
  rec->node = std::make_shared<OpNode>(op, attrs, edge_inputs, 1);
  for (size_t i = 0; i < edge_inputs.size(); ++i)
    if (edge_inputs[i].defined() && edge_inputs[i].is_same(self)) rec->self_index = static_cast<int>(i);
  if (op.differentiable && (op.vjp_saves & kSaveInputs)) {
    // The write destroys the old values the vjp may read: keep a copy of those. The copy is
    // recorded, so that differentiating the vjp (create_graph) reaches the old values' history.
    TensorList saved = inputs;
    for (Tensor& t : saved)
      if (shares_storage(t, self)) t = t.clone();
    rec->node->save_inputs(saved);
  }
  return rec;
}

void finish_inplace(InplaceRecord* rec, const Tensor& self) {
  if (!rec) return;
  if (rec->node->op().vjp_saves & kSaveOutputs) rec->node->save_outputs({self});
  AutogradMeta& m = meta_of(self);
  if (!rec->through_view) {
    set_history(self, m, rec->node, 0);
    return;
  }
  Tensor base = m.base;
  auto cs = std::make_shared<CopySlices>(rec->base_geometry, geometry_of(self), rec->node, rec->self_index,
                                         std::move(rec->base_edge));
  set_history(base, meta_of(base), std::move(cs), 0);
  m.view_version = self._version() - 1;  // force refresh_view to rebuild from the base now
  self.impl()->set_requires_grad(true);
  refresh_view(self, m);
}

}  // namespace autograd
}  // namespace kiln
