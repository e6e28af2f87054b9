#pragma once
// A Python-style number: bool, integer or floating. Kept apart from tensors so that
// `x + 2` promotes like PyTorch (a wrapped scalar does not upgrade a tensor's dtype category).
#include <cstdint>
#include <ostream>
#include <type_traits>

#include "core/dtype.h"

namespace kiln {

class Scalar {
 public:
  enum class Kind : uint8_t { Bool, Int, Float };

  Scalar() : kind_(Kind::Int), i_(0) {}
  template <class T, std::enable_if_t<std::is_same_v<T, bool>, int> = 0>
  Scalar(T v) : kind_(Kind::Bool), i_(v ? 1 : 0) {}  // NOLINT
  template <class T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>, int> = 0>
  Scalar(T v) : kind_(Kind::Int), i_(static_cast<int64_t>(v)) {}  // NOLINT
  template <class T, std::enable_if_t<std::is_floating_point_v<T>, int> = 0>
  Scalar(T v) : kind_(Kind::Float), d_(static_cast<double>(v)) {}  // NOLINT
  Scalar(Half v) : kind_(Kind::Float), d_(static_cast<float>(v)) {}  // NOLINT
  Scalar(BFloat16 v) : kind_(Kind::Float), d_(static_cast<float>(v)) {}  // NOLINT

  Kind kind() const { return kind_; }
  bool is_floating_point() const { return kind_ == Kind::Float; }
  bool is_integral() const { return kind_ == Kind::Int; }
  bool is_boolean() const { return kind_ == Kind::Bool; }

  double to_double() const { return kind_ == Kind::Float ? d_ : static_cast<double>(i_); }
  int64_t to_int() const { return kind_ == Kind::Float ? convert<int64_t>(d_) : i_; }
  bool to_bool() const { return kind_ == Kind::Float ? d_ != 0.0 : i_ != 0; }

  template <class T>
  T to() const {
    if constexpr (std::is_same_v<T, bool>) return to_bool();
    else if constexpr (std::is_integral_v<T>) return kind_ == Kind::Float ? convert<T>(d_) : static_cast<T>(i_);
    else return convert<T>(to_double());
  }

  // The dtype a wrapped number of this kind gets (PyTorch: float -> default dtype, int -> int64).
  DType wrapped_dtype() const {
    return kind_ == Kind::Float ? default_dtype() : kind_ == Kind::Int ? DType::Int64 : DType::Bool;
  }

  bool operator==(const Scalar& o) const {
    return kind_ == o.kind_ && (kind_ == Kind::Float ? d_ == o.d_ : i_ == o.i_);
  }

 private:
  Kind kind_;
  union {
    int64_t i_;
    double d_;
  };
};

// a * b keeping the kind (int * int stays int), for alpha-scaled scalar operands.
inline Scalar scalar_mul(const Scalar& a, const Scalar& b) {
  if (a.is_floating_point() || b.is_floating_point()) return Scalar(a.to_double() * b.to_double());
  if (a.is_boolean() && b.is_boolean()) return Scalar(a.to_bool() && b.to_bool());
  return Scalar(a.to_int() * b.to_int());
}

inline std::ostream& operator<<(std::ostream& os, const Scalar& s) {
  if (s.is_boolean()) return os << (s.to_bool() ? "True" : "False");
  if (s.is_integral()) return os << s.to_int();
  return os << s.to_double();
}

}  // namespace kiln
