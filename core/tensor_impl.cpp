#include "core/tensor_impl.h"

#include "core/shape.h"

namespace kiln {

TensorImpl::TensorImpl(Storage storage, DType dtype, Shape sizes, Shape strides, int64_t offset)
    : storage_(std::move(storage)), sizes_(std::move(sizes)), strides_(std::move(strides)), offset_(offset), dtype_(dtype) {
  KILN_INTERNAL_ASSERT(storage_ != nullptr);
  KILN_INTERNAL_ASSERT(sizes_.size() == strides_.size());
  refresh();
}

void TensorImpl::set_sizes_strides(Shape sizes, Shape strides, int64_t offset) {
  KILN_INTERNAL_ASSERT(sizes.size() == strides.size());
  sizes_ = std::move(sizes);
  strides_ = std::move(strides);
  offset_ = offset;
  refresh();
}

void TensorImpl::refresh() {
  numel_ = shape_numel(sizes_);
  contiguous_ = is_contiguous_strides(sizes_, strides_);
}

}  // namespace kiln
