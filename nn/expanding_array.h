#pragma once
// An argument that is either one number or N numbers (torch::ExpandingArray): kernel_size = 3
// means {3, 3}.
#include <array>
#include <cstddef>
#include <initializer_list>
#include <ostream>

#include "core/error.h"
#include "core/int_array.h"

namespace kiln::nn {

template <size_t N>
class ExpandingArray {
 public:
  ExpandingArray(int64_t v) { values_.fill(v); }      // NOLINT: implicit, as in LibTorch
  ExpandingArray(std::initializer_list<int64_t> l) {  // NOLINT
    KILN_CHECK(l.size() == N || l.size() == 1, "[ExpandingArray] expected 1 or ", N, " values, got ", l.size());
    if (l.size() == 1) {
      values_.fill(*l.begin());
    } else {
      size_t i = 0;
      for (int64_t v : l) values_[i++] = v;
    }
  }
  ExpandingArray(const std::array<int64_t, N>& a) : values_(a) {}  // NOLINT

  int64_t operator[](size_t i) const { return values_[i]; }
  IntArrayRef ref() const { return IntArrayRef(values_.data(), N); }
  operator IntArrayRef() const { return ref(); }  // NOLINT
  const std::array<int64_t, N>& values() const { return values_; }
  bool operator==(const ExpandingArray& o) const { return values_ == o.values_; }

 private:
  std::array<int64_t, N> values_{};
};

// Printed as a tuple, "(3, 3)", as PyTorch's reprs do.
template <size_t N>
std::ostream& operator<<(std::ostream& os, const ExpandingArray<N>& a) {
  os << '(';
  for (size_t i = 0; i < N; ++i) os << (i ? ", " : "") << a[i];
  return os << ')';
}

}  // namespace kiln::nn
