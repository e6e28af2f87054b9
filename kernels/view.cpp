// Registry rows of the view ops: each computes new (sizes, strides, offset) over the input's
// storage; no data moves, and writes through the view reach the base.
#include <algorithm>

#include "core/op.h"
#include "core/shape.h"

namespace kiln {
namespace {

using G = ViewGeometry;

G view_geom(const OpDef& op, const Tensor& x, const Attrs& a) {
  Shape sizes = infer_size(op.name, a.ints(0), x.numel());
  auto st = view_strides(x.sizes(), x.strides(), sizes);
  KILN_CHECK(st.has_value(), "[view] view size ", sizes, " is not compatible with input tensor's size ", x.sizes(),
             " and stride ", x.strides(),
             " (at least one dimension spans across two contiguous subspaces); use reshape instead");
  return {std::move(sizes), std::move(*st), x.storage_offset()};
}

G permute_geom(const OpDef& op, const Tensor& x, const Attrs& a) {
  const Shape& dims = a.ints(0);
  KILN_CHECK(static_cast<int64_t>(dims.size()) == x.dim(), "[permute] number of dims don't match: input has ",
             x.dim(), " dims but dims ", dims, " has ", dims.size());
  std::vector<int64_t> w = wrap_dims(op.name, dims, x.dim());
  G g{Shape(w.size()), Shape(w.size()), x.storage_offset()};
  for (size_t i = 0; i < w.size(); ++i) {
    g.sizes[i] = x.size(w[i]);
    g.strides[i] = x.stride(w[i]);
  }
  return g;
}

G transpose_geom(const OpDef& op, const Tensor& x, const Attrs& a) {
  G g{x.sizes().vec(), x.strides().vec(), x.storage_offset()};
  if (x.dim() == 0) {
    wrap_dim(op.name, a.i(0), 0);
    wrap_dim(op.name, a.i(1), 0);
    return g;
  }
  int64_t d0 = wrap_dim(op.name, a.i(0), x.dim()), d1 = wrap_dim(op.name, a.i(1), x.dim());
  std::swap(g.sizes[d0], g.sizes[d1]);
  std::swap(g.strides[d0], g.strides[d1]);
  return g;
}

G unsqueeze_geom(const OpDef& op, const Tensor& x, const Attrs& a) {
  int64_t d = wrap_dim(op.name, a.i(0), x.dim() + 1);
  G g{x.sizes().vec(), x.strides().vec(), x.storage_offset()};
  int64_t st = d < x.dim() ? x.size(d) * x.stride(d) : 1;
  g.sizes.insert(g.sizes.begin() + d, 1);
  g.strides.insert(g.strides.begin() + d, st);
  return g;
}

// attrs: dims (empty = every size-1 dim)
G squeeze_geom(const OpDef& op, const Tensor& x, const Attrs& a) {
  std::vector<int64_t> dims = wrap_dims(op.name, a.ints(0), x.dim());
  G g{{}, {}, x.storage_offset()};
  for (int64_t d = 0; d < x.dim(); ++d) {
    bool named = a.ints(0).empty() || std::find(dims.begin(), dims.end(), d) != dims.end();
    if (named && x.size(d) == 1) continue;
    g.sizes.push_back(x.size(d));
    g.strides.push_back(x.stride(d));
  }
  return g;
}

G expand_geom(const OpDef& op, const Tensor& x, const Attrs& a) {
  const Shape& target = a.ints(0);
  KILN_CHECK(static_cast<int64_t>(target.size()) >= x.dim(), "[expand] the number of sizes provided (", target.size(),
             ") must be greater or equal to the number of dimensions in the tensor (", x.dim(), ")");
  size_t n = target.size(), off = n - static_cast<size_t>(x.dim());
  G g{Shape(n), Shape(n), x.storage_offset()};
  for (size_t i = 0; i < n; ++i) {
    int64_t want = target[i];
    if (i < off) {
      KILN_CHECK(want >= 0, "[expand] the expanded size ", want, " is not allowed in a leading, non-existing dimension ", i);
      g.sizes[i] = want;
      g.strides[i] = 0;
      continue;
    }
    int64_t have = x.size(static_cast<int64_t>(i - off));
    if (want == -1) want = have;
    KILN_CHECK(want == have || have == 1, "[expand] the expanded size of the tensor (", want,
               ") must match the existing size (", have, ") at non-singleton dimension ", i, ". Target sizes: ",
               target, ". Tensor sizes: ", x.sizes());
    KILN_CHECK(want >= 0, "[expand] invalid size ", want, " at dimension ", i);
    g.sizes[i] = want;
    g.strides[i] = have == want ? x.stride(static_cast<int64_t>(i - off)) : 0;
  }
  return g;
}

G select_geom(const OpDef& op, const Tensor& x, const Attrs& a) {
  KILN_CHECK(x.dim() > 0, "[select] cannot be applied to a 0-dim tensor");
  int64_t d = wrap_dim(op.name, a.i(0), x.dim());
  int64_t idx = a.i(1), n = x.size(d);
  KILN_CHECK(idx >= -n && idx < n, "[select] index ", idx, " out of range for tensor of size ", x.sizes(),
             " at dimension ", d);
  if (idx < 0) idx += n;
  G g{x.sizes().vec(), x.strides().vec(), x.storage_offset() + idx * x.stride(d)};
  g.sizes.erase(g.sizes.begin() + d);
  g.strides.erase(g.strides.begin() + d);
  return g;
}

// attrs: dim, start (None ok), end (None ok), step. Python slicing semantics, clamped.
G slice_geom(const OpDef& op, const Tensor& x, const Attrs& a) {
  KILN_CHECK(x.dim() > 0, "[slice] cannot be applied to a 0-dim tensor");
  int64_t d = wrap_dim(op.name, a.i(0), x.dim());
  int64_t step = a.i(3);
  KILN_CHECK(step > 0, "[slice] step must be positive, got ", step);
  int64_t n = x.size(d);
  int64_t start = a.is_none(1) ? 0 : a.i(1);
  int64_t end = a.is_none(2) ? n : a.i(2);
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  G g{x.sizes().vec(), x.strides().vec(), x.storage_offset() + start * x.stride(d)};
  g.sizes[d] = (end - start + step - 1) / step;
  g.strides[d] = x.stride(d) * step;
  return g;
}

// narrow is a checked slice: start/length must lie inside the dim.
G narrow_geom(const OpDef& op, const Tensor& x, const Attrs& a) {
  KILN_CHECK(x.dim() > 0, "[narrow] cannot be applied to a 0-dim tensor");
  int64_t d = wrap_dim(op.name, a.i(0), x.dim());
  int64_t n = x.size(d), start = a.i(1), length = a.i(2);
  KILN_CHECK(start >= -n && start <= n, "[narrow] start ", start, " out of range for dimension ", d, " of size ", n);
  if (start < 0) start += n;
  KILN_CHECK(length >= 0 && start + length <= n, "[narrow] start (", start, ") + length (", length,
             ") exceeds dimension size (", n, ")");
  G g{x.sizes().vec(), x.strides().vec(), x.storage_offset() + start * x.stride(d)};
  g.sizes[d] = length;
  return g;
}

G unfold_geom(const OpDef& op, const Tensor& x, const Attrs& a) {
  int64_t d = wrap_dim(op.name, a.i(0), x.dim());
  int64_t size = a.i(1), step = a.i(2);
  int64_t n = x.dim() == 0 ? 1 : x.size(d);
  KILN_CHECK(size >= 0 && size <= n, "[unfold] maximum size for tensor at dimension ", d, " is ", n, " but size is ", size);
  KILN_CHECK(step > 0, "[unfold] step is ", step, " but must be > 0");
  G g{x.sizes().vec(), x.strides().vec(), x.storage_offset()};
  int64_t st = x.dim() == 0 ? 1 : x.stride(d);
  if (x.dim() == 0) {
    g.sizes = {size};
    g.strides = {1};
    return g;
  }
  g.sizes[d] = (n - size) / step + 1;
  g.strides[d] = st * step;
  g.sizes.push_back(size);
  g.strides.push_back(st);
  return g;
}

// attrs: sizes, strides, offset. Checked against the storage so it can never read out of bounds.
G as_strided_geom(const OpDef& op, const Tensor& x, const Attrs& a) {
  const Shape& sizes = a.ints(0);
  const Shape& strides = a.ints(1);
  int64_t offset = a.i(2);
  KILN_CHECK(sizes.size() == strides.size(), "[as_strided] mismatch in length of strides (", strides.size(),
             ") and sizes (", sizes.size(), ")");
  check_sizes_nonnegative(op.name, sizes);
  KILN_CHECK(offset >= 0, "[as_strided] negative storage offset ", offset);
  int64_t max_index = offset;
  bool empty = false;
  for (size_t i = 0; i < sizes.size(); ++i) {
    KILN_CHECK(strides[i] >= 0, "[as_strided] negative strides are not supported, got ", strides);
    if (sizes[i] == 0) empty = true;
    else max_index += (sizes[i] - 1) * strides[i];
  }
  int64_t capacity = static_cast<int64_t>(x.impl()->storage()->nbytes() / x.element_size());
  KILN_CHECK(empty || max_index < capacity, "[as_strided] setStorage: sizes ", sizes, ", strides ", strides,
             ", storage offset ", offset, " require a storage of ", max_index + 1,
             " elements, but the storage holds only ", capacity);
  return {sizes, strides, offset};
}

G diagonal_geom(const OpDef& op, const Tensor& x, const Attrs& a) {
  KILN_CHECK(x.dim() >= 2, "[diagonal] expected a tensor with at least 2 dims, got ", x.dim());
  int64_t off = a.i(0);
  int64_t d1 = wrap_dim(op.name, a.i(1), x.dim()), d2 = wrap_dim(op.name, a.i(2), x.dim());
  KILN_CHECK(d1 != d2, "[diagonal] dimensions cannot be identical ", a.i(1), ", ", a.i(2));
  int64_t len, start = x.storage_offset();
  if (off >= 0) {
    len = std::max<int64_t>(std::min(x.size(d1), x.size(d2) - off), 0);
    if (len > 0) start += off * x.stride(d2);
  } else {
    len = std::max<int64_t>(std::min(x.size(d1) + off, x.size(d2)), 0);
    if (len > 0) start -= off * x.stride(d1);
  }
  G g{{}, {}, start};
  for (int64_t d = 0; d < x.dim(); ++d)
    if (d != d1 && d != d2) {
      g.sizes.push_back(x.size(d));
      g.strides.push_back(x.stride(d));
    }
  g.sizes.push_back(len);
  g.strides.push_back(x.stride(d1) + x.stride(d2));
  return g;
}

G alias_geom(const OpDef&, const Tensor& x, const Attrs&) {
  return {x.sizes().vec(), x.strides().vec(), x.storage_offset()};
}

void add_view(OpRegistry& r, const char* name, ViewFn fn, std::vector<std::string> attr_names) {
  OpDef d;
  d.name = name;
  d.kind = OpKind::View;
  d.view = fn;
  d.attr_names = std::move(attr_names);
  r.add(std::move(d));
}

}  // namespace

namespace ops_registration {
void register_view_ops(OpRegistry& r) {
  add_view(r, "view", &view_geom, {"sizes"});
  add_view(r, "permute", &permute_geom, {"dims"});
  add_view(r, "transpose", &transpose_geom, {"dim0", "dim1"});
  add_view(r, "unsqueeze", &unsqueeze_geom, {"dim"});
  add_view(r, "squeeze", &squeeze_geom, {"dims"});
  add_view(r, "expand", &expand_geom, {"sizes"});
  add_view(r, "select", &select_geom, {"dim", "index"});
  add_view(r, "slice", &slice_geom, {"dim", "start", "end", "step"});
  add_view(r, "narrow", &narrow_geom, {"dim", "start", "length"});
  add_view(r, "unfold", &unfold_geom, {"dim", "size", "step"});
  add_view(r, "as_strided", &as_strided_geom, {"sizes", "strides", "offset"});
  add_view(r, "diagonal", &diagonal_geom, {"offset", "dim1", "dim2"});
  add_view(r, "alias", &alias_geom, {});
}
}  // namespace ops_registration

}  // namespace kiln
