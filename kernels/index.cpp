// Registry rows of the structure and indexing ops: cat, index_select, gather, scatter,
// scatter_add, embedding, one_hot, tril, triu. The infer functions hold PyTorch's argument checks;
// index values are range-checked by the kernels (one_hot's by its infer, which needs them anyway).
#include <algorithm>

#include "core/op.h"
#include "core/shape.h"
#include "kernels/cpu/index_kernel.h"

namespace kiln {
namespace {

using Metas = std::vector<TensorMeta>;

void check_defined(const OpDef& op, const TensorList& in) {
  for (size_t i = 0; i < in.size(); ++i)
    KILN_CHECK(in[i].defined(), "[", op.name, "] argument ", i, " is an undefined tensor");
}

void check_index_dtype(const OpDef& op, const Tensor& index, const char* what = "index") {
  KILN_CHECK(index.dtype() == DType::Int64 || index.dtype() == DType::Int32, "[", op.name, "] expected ", what,
             " of dtype int64 or int32, but got ", index.dtype());
}

// Sizes as PyTorch's ensure_nonempty_dim/size see them: a 0-dim tensor counts as [1].
int64_t nonempty_dim(const Tensor& t) { return std::max<int64_t>(t.dim(), 1); }
int64_t nonempty_size(const Tensor& t, int64_t d) { return t.dim() == 0 ? 1 : t.size(d); }

Metas cat_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  KILN_CHECK(!in.empty(), "[cat] expected a non-empty list of Tensors");
  check_defined(op, in);
  for (size_t i = 0; i < in.size(); ++i)
    KILN_CHECK(in[i].dim() > 0, "[cat] zero-dimensional tensor (at position ", i, ") cannot be concatenated");
  const Device dev = common_device(op, in);
  const DType dt = result_type(in);
  auto first = std::find_if(in.begin(), in.end(), [](const Tensor& t) { return !cpu::cat_should_skip(t); });
  if (first == in.end()) return {TensorMeta{Shape{0}, dt, dev}};
  const int64_t dim = wrap_dim(op.name, a.i(0), first->dim());
  Shape sizes = first->sizes().vec();
  sizes[dim] = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    const Tensor& t = in[i];
    if (cpu::cat_should_skip(t)) continue;
    KILN_CHECK(t.dim() == first->dim(), "[cat] tensors must have the same number of dimensions: got ", first->dim(),
               " and ", t.dim(), " (tensor number ", i, " in the list)");
    for (int64_t d = 0; d < t.dim(); ++d)
      KILN_CHECK(d == dim || t.size(d) == first->size(d), "[cat] sizes of tensors must match except in dimension ",
                 dim, ". Expected size ", first->size(d), " but got size ", t.size(d), " for tensor number ", i,
                 " in the list");
    sizes[dim] += t.size(dim);
  }
  return {TensorMeta{std::move(sizes), dt, dev}};
}

// inputs: self, index; attrs: dim
Metas index_select_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  check_defined(op, in);
  const Tensor& x = in[0];
  const Tensor& index = in[1];
  const int64_t dim = wrap_dim(op.name, a.i(0), x.dim());
  KILN_CHECK(index.dim() <= 1, "[index_select] index is supposed to be a vector, but got a tensor of shape ",
             index.sizes());
  check_index_dtype(op, index);
  KILN_CHECK(x.dim() > 0 || index.numel() == 1, "[index_select] index to a 0-dim tensor can have only 1 value, got ",
             index.numel(), " values");
  Shape sizes = x.sizes().vec();
  if (x.dim() > 0) sizes[dim] = index.numel();
  return {TensorMeta{std::move(sizes), x.dtype(), common_device(op, in)}};
}

// inputs: weight [V, D], indices (any shape); attrs: padding_idx (None or int; affects gradients only)
Metas embedding_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  check_defined(op, in);
  const Tensor& w = in[0];
  const Tensor& idx = in[1];
  KILN_CHECK(w.dim() == 2, "[embedding] 'weight' must be 2-D, but got a tensor of shape ", w.sizes());
  check_index_dtype(op, idx, "indices");
  const int64_t V = w.size(0);
  if (!a.is_none(0)) {
    const int64_t p = a.i(0);
    KILN_CHECK(p == 0 || (p >= -V && p < V), "[embedding] padding_idx ", p,
               " must be within num_embeddings (weight has ", V, " rows)");
  }
  Shape sizes = idx.sizes().vec();
  sizes.push_back(w.size(1));
  return {TensorMeta{std::move(sizes), w.dtype(), common_device(op, in)}};
}

// Shape rules of gather (no src) and scatter/scatter_add (src or a scalar value). As in PyTorch,
// an empty index skips them.
void check_scatter_gather(const OpDef& op, const Tensor& self, int64_t dim, const Tensor& index, const Tensor* src,
                          bool is_gather) {
  if (index.numel() == 0) return;
  check_index_dtype(op, index);
  const char* self_name = is_gather ? "input" : "self";
  KILN_CHECK(nonempty_dim(self) == nonempty_dim(index), "[", op.name,
             "] index tensor must have the same number of dimensions as ", self_name, " tensor (index has ",
             index.dim(), ", ", self_name, " has ", self.dim(), ")");
  if (src)
    KILN_CHECK(nonempty_dim(*src) == nonempty_dim(index), "[", op.name,
               "] index tensor must have the same number of dimensions as src tensor (index has ", index.dim(),
               ", src has ", src->dim(), ")");
  for (int64_t d = 0; d < nonempty_dim(self); ++d) {
    const int64_t n = nonempty_size(index, d);
    if (d != dim)
      KILN_CHECK(n <= nonempty_size(self, d), "[", op.name, "] size does not match at dimension ", d,
                 ": expected index ", index.sizes(), " to be smaller than ", self_name, " ", self.sizes(),
                 " apart from dimension ", dim);
    if (src)
      KILN_CHECK(n <= nonempty_size(*src, d), "[", op.name, "] size does not match at dimension ", d,
                 ": expected index ", index.sizes(), " to be smaller than src ", src->sizes());
  }
}

// inputs: self, index; attrs: dim
Metas gather_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  check_defined(op, in);
  const Tensor& x = in[0];
  const Tensor& index = in[1];
  const int64_t dim = wrap_dim(op.name, a.i(0), x.dim());
  check_scatter_gather(op, x, dim, index, nullptr, true);
  return {TensorMeta{index.sizes().vec(), x.dtype(), common_device(op, in)}};
}

// inputs: self, index, [src]; attrs: dim, value (scatter without src)
Metas scatter_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  check_defined(op, in);
  KILN_INTERNAL_ASSERT(in.size() == 3 || (in.size() == 2 && !a.is_none(1)), op.name, " needs src or a value");
  const Tensor& x = in[0];
  const Tensor& index = in[1];
  const Tensor* src = in.size() == 3 ? &in[2] : nullptr;
  const int64_t dim = wrap_dim(op.name, a.i(0), x.dim());
  if (src)
    KILN_CHECK(x.dtype() == src->dtype(), "[", op.name, "] expected self.dtype to be equal to src.dtype, but got ",
               x.dtype(), " and ", src->dtype());
  check_scatter_gather(op, x, dim, index, src, false);
  return {TensorMeta{x.sizes().vec(), x.dtype(), common_device(op, in)}};
}

// inputs: indices; attrs: num_classes (-1: max + 1). The class count may depend on the values,
// which are checked here (as PyTorch does with min()/max()).
Metas one_hot_infer(const OpDef& op, const TensorList& in, const Attrs& a) {
  check_defined(op, in);
  const Tensor& idx = in[0];
  KILN_CHECK(idx.dtype() == DType::Int64 || idx.dtype() == DType::Int32,
             "[one_hot] is only applicable to index tensors of dtype int64 (or int32), but got ", idx.dtype());
  int64_t classes = a.i(0);
  KILN_CHECK(classes >= -1, "[one_hot] num_classes must be -1 (infer) or non-negative, but got ", classes);
  if (idx.numel() == 0) {
    KILN_CHECK(classes > 0, "[one_hot] can not infer the total number of classes from an empty tensor (num_classes=",
               classes, ")");
  } else {
    const Tensor c = idx.to(Device(kCPU), DType::Int64).contiguous();
    const int64_t* p = c.data_ptr<int64_t>();
    const auto [lo, hi] = std::minmax_element(p, p + c.numel());
    KILN_CHECK(*lo >= 0, "[one_hot] class values must be non-negative, but got ", *lo);
    if (classes == -1) classes = *hi + 1;
    KILN_CHECK(*hi < classes, "[one_hot] class values must be smaller than num_classes (", classes, "), but got ", *hi);
  }
  Shape sizes = idx.sizes().vec();
  sizes.push_back(classes);
  return {TensorMeta{std::move(sizes), DType::Int64, idx.device()}};
}

// inputs: self [..., M, N]; attrs: diagonal
Metas tri_infer(const OpDef& op, const TensorList& in, const Attrs&) {
  check_defined(op, in);
  const Tensor& x = in[0];
  KILN_CHECK(x.dim() >= 2, "[", op.name, "] input tensor must have at least 2 dimensions, but got a tensor of shape ",
             x.sizes());
  return {TensorMeta{x.sizes().vec(), x.dtype(), x.device()}};
}

void add_row(OpRegistry& r, const char* name, InferFn infer, KernelFn cpu, std::vector<std::string> attrs,
             bool differentiable = true) {
  OpDef d;
  d.name = name;
  d.kind = OpKind::Opaque;
  d.infer = infer;
  d.kernels[static_cast<int>(DeviceType::CPU)] = cpu;
  d.differentiable = differentiable;
  d.attr_names = std::move(attrs);
  r.add(std::move(d));
}

}  // namespace

namespace ops_registration {
void register_index_ops(OpRegistry& r) {
  add_row(r, "cat", &cat_infer, &cpu::cat_kernel, {"dim"});
  add_row(r, "index_select", &index_select_infer, &cpu::index_select_kernel, {"dim"});
  add_row(r, "gather", &gather_infer, &cpu::gather_kernel, {"dim"});
  add_row(r, "scatter", &scatter_infer, &cpu::scatter_kernel, {"dim", "value"});
  add_row(r, "scatter_add", &scatter_infer, &cpu::scatter_add_kernel, {"dim"});
  add_row(r, "embedding", &embedding_infer, &cpu::embedding_kernel, {"padding_idx"});
  add_row(r, "one_hot", &one_hot_infer, &cpu::one_hot_kernel, {"num_classes"}, false);
  add_row(r, "tril", &tri_infer, &cpu::tril_kernel, {"diagonal"});
  add_row(r, "triu", &tri_infer, &cpu::triu_kernel, {"diagonal"});
}
}  // namespace ops_registration

}  // namespace kiln
