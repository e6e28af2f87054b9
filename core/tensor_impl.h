#pragma once
#include <cstdint>
#include <memory>

#include "core/device.h"
#include "core/dtype.h"
#include "core/int_array.h"
#include "core/storage.h"

namespace kiln {

namespace autograd {
struct AutogradMeta;  // defined by the autograd layer
struct Node;
}

// Sizes, strides (in elements), offset and dtype over a shared Storage.
class TensorImpl {
 public:
  TensorImpl(Storage storage, DType dtype, Shape sizes, Shape strides, int64_t offset);

  const Shape& sizes() const { return sizes_; }
  const Shape& strides() const { return strides_; }
  int64_t dim() const { return static_cast<int64_t>(sizes_.size()); }
  int64_t numel() const { return numel_; }
  int64_t storage_offset() const { return offset_; }
  DType dtype() const { return dtype_; }
  const Device& device() const { return storage_->device(); }
  const Storage& storage() const { return storage_; }
  bool is_contiguous() const { return contiguous_; }
  // Address of element [0, 0, ...]; valid even when numel() == 0.
  void* data() const { return static_cast<char*>(storage_->data()) + offset_ * static_cast<int64_t>(itemsize(dtype_)); }

  void set_sizes_strides(Shape sizes, Shape strides, int64_t offset);

  bool requires_grad() const { return requires_grad_; }
  void set_requires_grad(bool r) { requires_grad_ = r; }
  // A tensor made from a Python-style number (x + 2): promotion treats it as a scalar.
  bool is_wrapped_number() const { return wrapped_number_; }
  void set_wrapped_number(bool w) { wrapped_number_ = w; }

  // Set by the JIT's trace recorder: this tensor is graph value `jit_value` of segment
  // `jit_segment` (segments are numbered from 1, so 0 never matches).
  int32_t jit_value() const { return jit_value_; }
  uint32_t jit_segment() const { return jit_segment_; }
  void set_jit_value(uint32_t segment, int32_t value) {
    jit_segment_ = segment;
    jit_value_ = value;
  }

  std::shared_ptr<autograd::AutogradMeta>& autograd_meta() { return autograd_meta_; }
  const std::shared_ptr<autograd::AutogradMeta>& autograd_meta() const { return autograd_meta_; }

 private:
  void refresh();

  Storage storage_;
  Shape sizes_;
  Shape strides_;
  int64_t offset_;
  int64_t numel_ = 1;
  DType dtype_;
  bool contiguous_ = true;
  bool requires_grad_ = false;
  bool wrapped_number_ = false;
  int32_t jit_value_ = -1;
  uint32_t jit_segment_ = 0;
  std::shared_ptr<autograd::AutogradMeta> autograd_meta_;
};

}  // namespace kiln
