#include "autograd/functions.h"

#include <sstream>

#include "autograd/grad_mode.h"
#include "core/ops.h"

namespace kiln::autograd {

namespace {
std::atomic<uint64_t> g_sequence{0};
std::atomic<int64_t> g_hook_id{0};

Tensor alias_without_meta(const Tensor& t) {
  const TensorImpl& i = *t.impl();
  return Tensor(std::make_shared<TensorImpl>(i.storage(), i.dtype(), i.sizes(), i.strides(), i.storage_offset()));
}
}  // namespace

Node::Node() : sequence_nr(g_sequence.fetch_add(1, std::memory_order_relaxed)) {}

Node::~Node() {
  std::vector<std::shared_ptr<Node>> doomed;
  auto take = [&doomed](std::vector<Edge>& edges) {
    for (Edge& e : edges)
      if (e.fn && e.fn.use_count() == 1) doomed.push_back(std::move(e.fn));
  };
  take(next_edges);
  while (!doomed.empty()) {
    std::shared_ptr<Node> n = std::move(doomed.back());
    doomed.pop_back();
    n->release_saved();  // saved inputs hold their producers' nodes too: drop those refs first
    take(n->next_edges);
  }  // each n dies here with no uniquely owned successor left to recurse into
}
int64_t next_hook_id() { return g_hook_id.fetch_add(1, std::memory_order_relaxed) + 1; }

InputGeometry geometry_of(const Tensor& t) {
  return {t.sizes().vec(), t.strides().vec(), t.storage_offset(), t.dtype(), t.device()};
}

// --- SavedTensor ---------------------------------------------------------------------------------

void SavedTensor::save(const Tensor& t, bool is_output, const std::shared_ptr<Node>& owner, uint32_t output_nr) {
  saved_ = true;
  if (!t.defined()) {  // an optional input the call left out: the vjp reads it back as undefined
    absent_ = true;
    return;
  }
  is_output_ = is_output;
  version_ = t._version();
  if (is_output) {
    data_ = alias_without_meta(t);
    owner_ = owner;
    output_nr_ = output_nr;
  } else {
    data_ = t;
  }
}

Tensor SavedTensor::unpack(const OpDef& op, const char* what, size_t index) const {
  if (absent_) return Tensor();
  KILN_CHECK(!released_, "[autograd] trying to backward through the graph a second time (the saved ", what, " ", index,
             " of ", op.name, " was already freed); pass retain_graph=true to the first backward call");
  KILN_INTERNAL_ASSERT(saved_, "vjp of ", op.name, " reads ", what, " ", index, " which its row does not save");
  uint32_t now = data_._version();
  KILN_CHECK(now == version_, "[autograd] one of the tensors needed for gradient computation has been modified by an "
             "in-place operation: ", what, " ", index, " of ", op.name, " (shape ", data_.sizes(), ", ", data_.dtype(),
             ") is at version ", now, "; expected version ", version_, " instead");
  // Only floating outputs have a history (an integer output such as max's indices never does).
  if (is_output_ && GradMode::is_enabled() && data_.is_floating_point()) {
    if (auto node = owner_.lock()) {  // differentiating the backward pass: reconnect the output
      Tensor t = alias_without_meta(data_);
      AutogradMeta& m = meta_of(t);
      m.grad_fn = std::move(node);
      m.output_nr = output_nr_;
      t.impl()->set_requires_grad(true);
      return t;
    }
  }
  return data_;
}

// --- OpNode ----------------------------------------------------------------------------------------

OpNode::OpNode(const OpDef& op, const Attrs& attrs, const TensorList& edge_inputs, uint32_t num_outputs)
    : op_(op), attrs_(attrs), num_outputs_(num_outputs) {
  geometry_.reserve(edge_inputs.size());
  next_edges.reserve(edge_inputs.size());
  for (const Tensor& t : edge_inputs) {
    geometry_.push_back(t.defined() ? geometry_of(t) : InputGeometry{});
    next_edges.push_back(t.defined() ? gradient_edge(t) : Edge{});
  }
}

void OpNode::save_inputs(const TensorList& saved_inputs) {
  saved_inputs_.resize(saved_inputs.size());
  for (size_t i = 0; i < saved_inputs.size(); ++i) saved_inputs_[i].save(saved_inputs[i], false, nullptr, 0);
}

void OpNode::save_outputs(const TensorList& outputs) {
  saved_outputs_.resize(outputs.size());
  auto self = shared_from_this();
  for (size_t i = 0; i < outputs.size(); ++i) saved_outputs_[i].save(outputs[i], true, self, static_cast<uint32_t>(i));
}

Tensor OpNode::input(size_t i) const {
  KILN_INTERNAL_ASSERT(i < saved_inputs_.size(), "vjp of ", op_.name, " reads input ", i, " which is not saved");
  return saved_inputs_[i].unpack(op_, "input", i);
}

Tensor OpNode::output(size_t i) const {
  KILN_INTERNAL_ASSERT(i < saved_outputs_.size(), "vjp of ", op_.name, " reads output ", i, " which is not saved");
  return saved_outputs_[i].unpack(op_, "output", i);
}

void OpNode::release_saved() {
  for (auto& s : saved_inputs_) if (s.saved()) s.release();
  for (auto& s : saved_outputs_) if (s.saved()) s.release();
}

std::string OpNode::name() const {
  std::string n = op_.name;
  n.append("Backward");
  return n;
}

TensorList OpNode::apply(TensorList&& grads) {
  bool any_edge = false;
  for (const Edge& e : next_edges) any_edge = any_edge || e.valid();
  if (!any_edge) return TensorList(next_edges.size());  // e.g. fill_ overwrote the values: no inputs to reach
  KILN_INTERNAL_ASSERT(op_.vjp != nullptr, "differentiable row ", op_.name, " has no vjp (register_vjps checks this)");
  TensorList r = op_.vjp(*this, grads);
  // Gradients past the recorded inputs may only be undefined: those of optional inputs the call
  // did not pass (linear without bias).
  for (size_t i = geometry_.size(); i < r.size(); ++i)
    KILN_INTERNAL_ASSERT(!r[i].defined(), "vjp of ", op_.name, " returned a gradient for input ", i, " of ",
                         geometry_.size());
  r.resize(geometry_.size());
  for (size_t i = 0; i < r.size(); ++i) {
    if (!next_edges[i].valid()) { r[i] = Tensor(); continue; }
    if (!r[i].defined()) continue;
    const InputGeometry& g = geometry_[i];
    if (r[i].sizes() != IntArrayRef(g.sizes)) r[i] = sum_to(r[i], g.sizes);
    if (r[i].dtype() != g.dtype) r[i] = r[i].to(g.dtype);
    // A copy across devices (x.to(kCUDA)) sends its gradient back to the input's device.
    if (r[i].device() != g.device) r[i] = r[i].to(g.device);
  }
  return r;
}

// --- AccumulateGrad ----------------------------------------------------------------------------------

TensorList AccumulateGrad::apply(TensorList&& grads) {
  Tensor g = std::move(grads.at(0));  // the leaf's hooks already ran (engine)
  if (!g.defined()) return {};
  Tensor& acc = meta_->grad;
  if (GradMode::is_enabled()) {  // create_graph: the accumulated grad stays differentiable
    // A clone, as the same gradient may reach several leaves (add passes it to both inputs).
    acc = acc.defined() ? acc + g : g.clone();
    return {};
  }
  if (!acc.defined()) {
    // Take the incoming buffer when nobody else can see it; otherwise own a copy, so that an
    // in-place update of one .grad (zero_, optimizer math) never shows through another.
    bool exclusive = g.impl_ptr().use_count() == 1 && g.impl()->storage().use_count() == 1 && g.is_contiguous();
    acc = exclusive ? g.detach() : g.detach().clone();
  } else {
    acc.add_(g.detach());
  }
  return {};
}

// --- CopySlices ----------------------------------------------------------------------------------------

CopySlices::CopySlices(InputGeometry base, InputGeometry view, std::shared_ptr<OpNode> fn, int self_index, Edge base_edge)
    : base_(std::move(base)), view_(std::move(view)), fn_(std::move(fn)), self_index_(self_index) {
  next_edges.push_back(std::move(base_edge));
  for (const Edge& e : fn_->next_edges) next_edges.push_back(e);
  if (self_index_ >= 0) next_edges[1 + self_index_] = Edge{};  // reaches the base through edge 0
}

TensorList CopySlices::apply(TensorList&& grads) {
  Tensor g = std::move(grads.at(0));
  TensorList out(next_edges.size());
  if (!g.defined()) return out;
  // Under create_graph the writes below are recorded like any others (through CopySlices of
  // `buf`), so the result is differentiable again.
  // A scratch buffer laid out like the base's storage, so base and view keep their geometry.
  auto extent = [](const InputGeometry& x, int64_t& lo, int64_t& hi) {
    lo = hi = x.offset;
    for (size_t d = 0; d < x.sizes.size(); ++d) {
      if (x.sizes[d] == 0) { hi = lo - 1; return; }
      int64_t e = (x.sizes[d] - 1) * x.strides[d];
      (e < 0 ? lo : hi) += e;
    }
  };
  int64_t blo, bhi, vlo, vhi;
  extent(base_, blo, bhi);
  extent(view_, vlo, vhi);
  int64_t lo = std::min(blo, vlo), hi = std::max(bhi, vhi);
  Tensor buf = zeros({std::max<int64_t>(hi - lo + 1, 0)}, g.dtype());
  Tensor base_in_buf = buf.as_strided(base_.sizes, base_.strides, base_.offset - lo);
  base_in_buf.copy_(g);
  Tensor view_in_buf = buf.as_strided(view_.sizes, view_.strides, view_.offset - lo);
  TensorList res = fn_->apply(TensorList{view_in_buf.clone()});
  if (self_index_ >= 0 && res.at(self_index_).defined()) view_in_buf.copy_(res[self_index_]);
  else view_in_buf.zero_();
  out[0] = base_in_buf;
  for (size_t k = 0; k < res.size(); ++k)
    if (static_cast<int>(k) != self_index_) out[1 + k] = res[k];
  return out;
}

}  // namespace kiln::autograd
