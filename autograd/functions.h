#pragma once
// The node types of the graph: OpNode (a recorded registry op, running its row's vjp),
// AccumulateGrad (a leaf's sink into .grad) and CopySlices (an in-place write through a view).
#include "autograd/node.h"
#include "autograd/vjp.h"

namespace kiln::autograd {

// A forward value kept for the backward pass, with the storage version it had when saved.
class SavedTensor {
 public:
  SavedTensor() = default;
  // Outputs are saved without their grad_fn (which would be a cycle); unpack re-attaches it
  // when differentiating the backward pass itself (create_graph).
  void save(const Tensor& t, bool is_output, const std::shared_ptr<Node>& owner, uint32_t output_nr);
  Tensor unpack(const OpDef& op, const char* what, size_t index) const;
  bool saved() const { return saved_; }
  void release() { data_ = Tensor(); released_ = true; }

 private:
  Tensor data_;
  uint32_t version_ = 0;
  bool saved_ = false, absent_ = false, released_ = false, is_output_ = false;
  std::weak_ptr<Node> owner_;
  uint32_t output_nr_ = 0;
};

class OpNode final : public Node, public VjpContext {
 public:
  // `edge_inputs` give the edges (the values before an in-place write); `saved_inputs` the
  // values the vjp will read (a copy where the in-place write destroys the original).
  OpNode(const OpDef& op, const Attrs& attrs, const TensorList& edge_inputs, uint32_t num_outputs);
  void save_inputs(const TensorList& saved_inputs);
  void save_outputs(const TensorList& outputs);

  TensorList apply(TensorList&& grads) override;
  std::string name() const override;
  uint32_t num_outputs() const override { return num_outputs_; }
  void release_saved() override;

  const OpDef& op() const override { return op_; }
  const Attrs& attrs() const override { return attrs_; }
  size_t num_inputs() const override { return geometry_.size(); }
  Tensor input(size_t i) const override;
  Tensor output(size_t i) const override;
  const InputGeometry& input_geometry(size_t i) const override { return geometry_.at(i); }
  bool needs_grad(size_t i) const override { return next_edges.at(i).valid(); }

 private:
  const OpDef& op_;
  Attrs attrs_;
  std::vector<InputGeometry> geometry_;
  std::vector<SavedTensor> saved_inputs_, saved_outputs_;
  uint32_t num_outputs_;
};

class AccumulateGrad final : public Node {
 public:
  explicit AccumulateGrad(std::shared_ptr<AutogradMeta> meta, InputGeometry geometry)
      : meta_(std::move(meta)), geometry_(std::move(geometry)) {}
  TensorList apply(TensorList&& grads) override;
  std::string name() const override { return "AccumulateGrad"; }
  const std::shared_ptr<AutogradMeta>& meta() const { return meta_; }
  const InputGeometry& geometry() const { return geometry_; }

 private:
  std::shared_ptr<AutogradMeta> meta_;
  InputGeometry geometry_;
};

// An in-place op `fn` wrote through a view of `base`: the gradient of the old base is the
// incoming gradient with the view's region replaced by fn's gradient for the old view values.
class CopySlices final : public Node {
 public:
  CopySlices(InputGeometry base, InputGeometry view, std::shared_ptr<OpNode> fn, int self_index, Edge base_edge);
  TensorList apply(TensorList&& grads) override;
  std::string name() const override { return "CopySlices(" + fn_->name() + ")"; }
  void release_saved() override { fn_->release_saved(); }

 private:
  InputGeometry base_, view_;
  std::shared_ptr<OpNode> fn_;
  int self_index_;  // fn's input that was the view itself, or -1
};

InputGeometry geometry_of(const Tensor& t);

}  // namespace kiln::autograd
