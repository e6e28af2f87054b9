// Front ends of the structure and indexing ops. split/chunk/unbind return views (narrow/select);
// stack is unsqueeze + cat; the rest dispatch their rows (kernels/index.cpp).
#include "core/op.h"
#include "core/ops.h"
#include "core/shape.h"

namespace kiln {

Tensor cat(const TensorList& tensors, int64_t dim) { return call_op1(KILN_ROW("cat"), tensors, {dim}); }

Tensor stack(const TensorList& tensors, int64_t dim) {
  KILN_CHECK(!tensors.empty(), "[stack] expected a non-empty list of Tensors");
  for (size_t i = 0; i < tensors.size(); ++i) {
    KILN_CHECK(tensors[i].defined(), "[stack] argument ", i, " is an undefined tensor");
    KILN_CHECK(tensors[i].sizes() == tensors[0].sizes(), "[stack] expects each tensor to be equal size, but got ",
               tensors[0].sizes(), " at entry 0 and ", tensors[i].sizes(), " at entry ", i);
  }
  const int64_t d = wrap_dim("stack", dim, tensors[0].dim() + 1);
  TensorList parts;
  parts.reserve(tensors.size());
  for (const Tensor& t : tensors) parts.push_back(t.unsqueeze(d));
  return cat(parts, d);
}

std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim) {
  KILN_CHECK(x.dim() > 0, "[split] expects at least a 1-dimensional tensor");
  KILN_CHECK(split_size >= 0, "[split] expects split_size be non-negative, but got split_size=", split_size);
  const int64_t d = wrap_dim("split", dim, x.dim());
  const int64_t n = x.size(d);
  KILN_CHECK(split_size > 0 || n == 0, "[split] split_size can only be 0 if dimension size is 0, but got dimension size of ",
             n);
  // split_size 0 on an empty dim gives one split; split_size > n gives one (shorter) split.
  const int64_t num = split_size == 0 ? 1 : std::max<int64_t>((n + split_size - 1) / split_size, 1);
  std::vector<Tensor> out;
  out.reserve(static_cast<size_t>(num));
  for (int64_t i = 0; i < num; ++i)
    out.push_back(x.narrow(d, i * split_size, i + 1 < num ? split_size : n - i * split_size));
  return out;
}

std::vector<Tensor> split_with_sizes(const Tensor& x, IntArrayRef sizes, int64_t dim) {
  KILN_CHECK(x.dim() > 0, "[split_with_sizes] expects at least a 1-dimensional tensor");
  const int64_t d = wrap_dim("split_with_sizes", dim, x.dim());
  int64_t total = 0;
  for (int64_t s : sizes) {
    KILN_CHECK(s >= 0, "[split_with_sizes] expects split_sizes to have only non-negative entries, but got split_sizes=",
               sizes);
    total += s;
  }
  KILN_CHECK(total == x.size(d), "[split_with_sizes] expects split_sizes to sum exactly to ", x.size(d),
             " (input tensor's size at dimension ", d, "), but got split_sizes=", sizes);
  std::vector<Tensor> out;
  out.reserve(sizes.size());
  int64_t start = 0;
  for (int64_t s : sizes) {
    out.push_back(x.narrow(d, start, s));
    start += s;
  }
  return out;
}

std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim) {
  KILN_CHECK(x.dim() > 0, "[chunk] expects at least a 1-dimensional tensor");
  KILN_CHECK(chunks > 0, "[chunk] expects `chunks` to be greater than 0, got: ", chunks);
  const int64_t d = wrap_dim("chunk", dim, x.dim());
  const int64_t n = x.size(d);
  const int64_t split_size = (n + chunks - 1) / chunks;
  // An empty dim still yields `chunks` empty pieces (torch.chunk goes through split_with_sizes).
  if (split_size == 0 && n == 0) return split_with_sizes(x, Shape(static_cast<size_t>(chunks), 0), d);
  return split(x, split_size, d);
}

std::vector<Tensor> unbind(const Tensor& x, int64_t dim) {
  KILN_CHECK(x.dim() > 0, "[unbind] dimension specified as ", dim, " but tensor has no dimensions");
  const int64_t d = wrap_dim("unbind", dim, x.dim());
  std::vector<Tensor> out;
  out.reserve(static_cast<size_t>(x.size(d)));
  for (int64_t i = 0; i < x.size(d); ++i) out.push_back(x.select(d, i));
  return out;
}

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  return call_op1(KILN_ROW("index_select"), {x, index}, {dim});
}

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  return call_op1(KILN_ROW("gather"), {x, index}, {dim});
}

Tensor scatter(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src) {
  return call_op1(KILN_ROW("scatter"), {x, index, src}, {dim, Attr()});
}

Tensor scatter(const Tensor& x, int64_t dim, const Tensor& index, const Scalar& value) {
  return call_op1(KILN_ROW("scatter"), {x, index}, {dim, Attr(value)});
}

Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src) {
  return call_op1(KILN_ROW("scatter_add"), {x, index, src}, {dim});
}

Tensor embedding(const Tensor& weight, const Tensor& indices, std::optional<int64_t> padding_idx) {
  return call_op1(KILN_ROW("embedding"), {weight, indices}, {padding_idx ? Attr(*padding_idx) : Attr()});
}

Tensor one_hot(const Tensor& indices, int64_t num_classes) {
  return call_op1(KILN_ROW("one_hot"), {indices}, {num_classes});
}

Tensor tril(const Tensor& x, int64_t diagonal) { return call_op1(KILN_ROW("tril"), {x}, {diagonal}); }
Tensor triu(const Tensor& x, int64_t diagonal) { return call_op1(KILN_ROW("triu"), {x}, {diagonal}); }

}  // namespace kiln
