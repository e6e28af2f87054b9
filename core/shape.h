#pragma once
// Shape arithmetic shared by ops, views and (later) the JIT's symbolic shapes.
#include <cstdint>
#include <optional>
#include <string_view>

#include "core/int_array.h"

namespace kiln {

int64_t shape_numel(IntArrayRef sizes);
Shape contiguous_strides(IntArrayRef sizes);
bool is_contiguous_strides(IntArrayRef sizes, IntArrayRef strides);

// Wraps a possibly negative dim into [0, ndim); raises "[op] dim d out of range ..." otherwise.
int64_t wrap_dim(std::string_view op, int64_t dim, int64_t ndim);
// Wraps and de-duplicates a dim list; an empty list means "all dims" when empty_is_all.
std::vector<int64_t> wrap_dims(std::string_view op, IntArrayRef dims, int64_t ndim);

// NumPy/PyTorch broadcasting; raises "[op] shapes [2, 3] and [4] cannot be broadcast".
Shape broadcast_shapes(std::string_view op, IntArrayRef a, IntArrayRef b);

// Strides for viewing (sizes, strides) as new_sizes without copying, if possible (PyTorch's
// computeStride); nullopt when the memory layout forbids it.
std::optional<Shape> view_strides(IntArrayRef old_sizes, IntArrayRef old_strides, IntArrayRef new_sizes);

// Resolves a single -1 and checks the element count: "[view] shape [3, -1] is invalid for input of size 10".
Shape infer_size(std::string_view op, IntArrayRef shape, int64_t numel);

void check_sizes_nonnegative(std::string_view op, IntArrayRef sizes);

}  // namespace kiln
