#include "core/shape.h"

#include <algorithm>

#include "core/error.h"

namespace kiln {

int64_t shape_numel(IntArrayRef sizes) {
  int64_t n = 1;
  for (int64_t s : sizes) n *= s;
  return n;
}

Shape contiguous_strides(IntArrayRef sizes) {
  Shape strides(sizes.size());
  int64_t acc = 1;
  for (size_t i = sizes.size(); i-- > 0;) {
    strides[i] = acc;
    acc *= std::max<int64_t>(sizes[i], 1);
  }
  return strides;
}

bool is_contiguous_strides(IntArrayRef sizes, IntArrayRef strides) {
  int64_t expected = 1;
  for (size_t i = sizes.size(); i-- > 0;) {
    if (sizes[i] == 0) return true;
    if (sizes[i] == 1) continue;
    if (strides[i] != expected) return false;
    expected *= sizes[i];
  }
  return true;
}

int64_t wrap_dim(std::string_view op, int64_t dim, int64_t ndim) {
  int64_t n = std::max<int64_t>(ndim, 1);  // scalars accept dim 0 and -1, as in PyTorch
  KILN_CHECK(dim >= -n && dim < n, "[", op, "] dim ", dim, " out of range for a tensor of ", ndim,
             " dims (expected to be in range of [", -n, ", ", n - 1, "])");
  return dim < 0 ? dim + n : dim;
}

std::vector<int64_t> wrap_dims(std::string_view op, IntArrayRef dims, int64_t ndim) {
  std::vector<int64_t> out;
  for (int64_t d : dims) {
    int64_t w = wrap_dim(op, d, ndim);
    KILN_CHECK(std::find(out.begin(), out.end(), w) == out.end(), "[", op, "] dim ", w,
               " appears multiple times in the list of dims ", dims);
    out.push_back(w);
  }
  return out;
}

Shape broadcast_shapes(std::string_view op, IntArrayRef a, IntArrayRef b) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    KILN_CHECK(da == db || da == 1 || db == 1, "[", op, "] shapes ", a, " and ", b,
               " cannot be broadcast together (dim ", i, ": ", da, " vs ", db, ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

std::optional<Shape> view_strides(IntArrayRef old_sizes, IntArrayRef old_strides, IntArrayRef new_sizes) {
  int64_t numel = shape_numel(old_sizes);
  if (old_sizes.empty()) return Shape(new_sizes.size(), 1);
  if (numel == 0) {
    if (old_sizes == new_sizes) return old_strides.vec();
    return contiguous_strides(new_sizes);
  }
  Shape new_strides(new_sizes.size());
  // Walk old dims from the back in "chunks" that are contiguous among themselves; each chunk
  // must be covered exactly by a run of new dims.
  int64_t view_d = static_cast<int64_t>(new_sizes.size()) - 1;
  int64_t chunk_base_stride = old_strides.size() ? old_strides[old_strides.size() - 1] : 1;
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t tensor_d = static_cast<int64_t>(old_sizes.size()) - 1; tensor_d >= 0; --tensor_d) {
    tensor_numel *= old_sizes[tensor_d];
    if (tensor_d == 0 ||
        (old_sizes[tensor_d - 1] != 1 && old_strides[tensor_d - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || new_sizes[view_d] == 1)) {
        new_strides[view_d] = view_numel * chunk_base_stride;
        view_numel *= new_sizes[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return std::nullopt;
      if (tensor_d > 0) {
        chunk_base_stride = old_strides[tensor_d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) return std::nullopt;
  return new_strides;
}

Shape infer_size(std::string_view op, IntArrayRef shape, int64_t numel) {
  Shape out = shape.vec();
  int64_t known = 1;
  std::optional<size_t> infer;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      KILN_CHECK(!infer, "[", op, "] only one dimension can be inferred, got shape ", shape);
      infer = i;
    } else {
      KILN_CHECK(out[i] >= 0, "[", op, "] invalid shape dimension ", out[i], " in shape ", shape);
      known *= out[i];
    }
  }
  if (infer) {
    KILN_CHECK(known != 0 && numel % known == 0, "[", op, "] shape ", shape, " is invalid for input of size ", numel);
    out[*infer] = numel / known;
  } else {
    KILN_CHECK(known == numel, "[", op, "] shape ", shape, " is invalid for input of size ", numel);
  }
  return out;
}

void check_sizes_nonnegative(std::string_view op, IntArrayRef sizes) {
  for (int64_t s : sizes)
    KILN_CHECK(s >= 0, "[", op, "] negative dimension ", s, " in size ", sizes);
}

}  // namespace kiln
