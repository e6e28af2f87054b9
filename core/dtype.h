#pragma once
#include <cstdint>
#include <ostream>
#include <string_view>

#include "core/error.h"
#include "core/half.h"

namespace kiln {

enum class DType : uint8_t {
  Bool, UInt8, Int8, Int16, Int32, Int64, Float16, BFloat16, Float32, Float64,
};
inline constexpr int kNumDTypes = 10;

inline constexpr DType kBool = DType::Bool;
inline constexpr DType kUInt8 = DType::UInt8;
inline constexpr DType kInt8 = DType::Int8;
inline constexpr DType kInt16 = DType::Int16;
inline constexpr DType kInt32 = DType::Int32;
inline constexpr DType kInt = DType::Int32;
inline constexpr DType kInt64 = DType::Int64;
inline constexpr DType kLong = DType::Int64;
inline constexpr DType kFloat16 = DType::Float16;
inline constexpr DType kHalf = DType::Float16;
inline constexpr DType kBFloat16 = DType::BFloat16;
inline constexpr DType kFloat32 = DType::Float32;
inline constexpr DType kFloat = DType::Float32;
inline constexpr DType kFloat64 = DType::Float64;
inline constexpr DType kDouble = DType::Float64;

size_t itemsize(DType t);
std::string_view dtype_name(DType t);  // "float32", as PyTorch prints torch.float32
inline bool is_floating_point(DType t) {
  return t == DType::Float16 || t == DType::BFloat16 || t == DType::Float32 || t == DType::Float64;
}
inline bool is_integral(DType t, bool include_bool = false) {
  return (t != DType::Bool || include_bool) && !is_floating_point(t);
}
inline bool is_signed(DType t) { return t != DType::Bool && t != DType::UInt8; }

// PyTorch's promote_types table (bool < integers < floats; u8+i8 -> i16; f16+bf16 -> f32).
DType promote_types(DType a, DType b);
// Whether a value of type `from` may be written into `to` by an in-place op (no category demotion).
bool can_cast(DType from, DType to);

// Default dtype for floating factories and Python-style float scalars.
DType default_dtype();
void set_default_dtype(DType t);

std::ostream& operator<<(std::ostream& os, DType t);

// C++ storage type for each dtype, and the type arithmetic runs in.
template <DType D> struct dtype_cpp;
template <> struct dtype_cpp<DType::Bool> { using type = bool; };
template <> struct dtype_cpp<DType::UInt8> { using type = uint8_t; };
template <> struct dtype_cpp<DType::Int8> { using type = int8_t; };
template <> struct dtype_cpp<DType::Int16> { using type = int16_t; };
template <> struct dtype_cpp<DType::Int32> { using type = int32_t; };
template <> struct dtype_cpp<DType::Int64> { using type = int64_t; };
template <> struct dtype_cpp<DType::Float16> { using type = Half; };
template <> struct dtype_cpp<DType::BFloat16> { using type = BFloat16; };
template <> struct dtype_cpp<DType::Float32> { using type = float; };
template <> struct dtype_cpp<DType::Float64> { using type = double; };

template <class T> struct cpp_dtype;
template <> struct cpp_dtype<bool> { static constexpr DType value = DType::Bool; };
template <> struct cpp_dtype<uint8_t> { static constexpr DType value = DType::UInt8; };
template <> struct cpp_dtype<int8_t> { static constexpr DType value = DType::Int8; };
template <> struct cpp_dtype<int16_t> { static constexpr DType value = DType::Int16; };
template <> struct cpp_dtype<int32_t> { static constexpr DType value = DType::Int32; };
template <> struct cpp_dtype<int64_t> { static constexpr DType value = DType::Int64; };
template <> struct cpp_dtype<Half> { static constexpr DType value = DType::Float16; };
template <> struct cpp_dtype<BFloat16> { static constexpr DType value = DType::BFloat16; };
template <> struct cpp_dtype<float> { static constexpr DType value = DType::Float32; };
template <> struct cpp_dtype<double> { static constexpr DType value = DType::Float64; };
template <class T> inline constexpr DType dtype_of = cpp_dtype<T>::value;

template <class T> struct opmath { using type = T; };
template <> struct opmath<Half> { using type = float; };
template <> struct opmath<BFloat16> { using type = float; };
template <class T> using opmath_t = typename opmath<T>::type;

// Value conversion between storage types: float->int saturates and maps NaN to 0 so that a
// cast is never undefined behaviour.
template <class To, class From>
inline To convert(From v) {
  if constexpr (std::is_same_v<To, From>) {
    return v;
  } else if constexpr (std::is_same_v<To, bool>) {
    return static_cast<opmath_t<From>>(v) != static_cast<opmath_t<From>>(0);
  } else if constexpr (std::is_integral_v<To> && !std::is_integral_v<From>) {
    double d = static_cast<double>(static_cast<opmath_t<From>>(v));
    if (!(d == d)) return To(0);
    constexpr double lo = static_cast<double>(std::numeric_limits<To>::min());
    constexpr double hi = static_cast<double>(std::numeric_limits<To>::max());
    if (d <= lo) return std::numeric_limits<To>::min();
    if (d >= hi) return std::numeric_limits<To>::max();
    return static_cast<To>(d);
  } else if constexpr (std::is_same_v<To, Half> || std::is_same_v<To, BFloat16>) {
    return To(static_cast<float>(static_cast<opmath_t<From>>(v)));
  } else {
    return static_cast<To>(static_cast<opmath_t<From>>(v));
  }
}

}  // namespace kiln

// Run `__VA_ARGS__` (a lambda-body-like statement list using `scalar_t`) for the runtime dtype.
#define KILN_DTYPE_CASE(D, ...) \
  case D: {                     \
    using scalar_t = typename ::kiln::dtype_cpp<D>::type; \
    __VA_ARGS__;                \
    break;                      \
  }

#define KILN_DISPATCH_ALL_TYPES(DT, OPNAME, ...)                                          \
  switch (DT) {                                                                           \
    KILN_DTYPE_CASE(::kiln::DType::Bool, __VA_ARGS__)                                     \
    KILN_DTYPE_CASE(::kiln::DType::UInt8, __VA_ARGS__)                                    \
    KILN_DTYPE_CASE(::kiln::DType::Int8, __VA_ARGS__)                                     \
    KILN_DTYPE_CASE(::kiln::DType::Int16, __VA_ARGS__)                                    \
    KILN_DTYPE_CASE(::kiln::DType::Int32, __VA_ARGS__)                                    \
    KILN_DTYPE_CASE(::kiln::DType::Int64, __VA_ARGS__)                                    \
    KILN_DTYPE_CASE(::kiln::DType::Float16, __VA_ARGS__)                                  \
    KILN_DTYPE_CASE(::kiln::DType::BFloat16, __VA_ARGS__)                                 \
    KILN_DTYPE_CASE(::kiln::DType::Float32, __VA_ARGS__)                                  \
    KILN_DTYPE_CASE(::kiln::DType::Float64, __VA_ARGS__)                                  \
    default: KILN_FAIL("[", OPNAME, "] unsupported dtype ", DT);                          \
  }

#define KILN_DISPATCH_FLOATING_TYPES(DT, OPNAME, ...)                                     \
  switch (DT) {                                                                           \
    KILN_DTYPE_CASE(::kiln::DType::Float16, __VA_ARGS__)                                  \
    KILN_DTYPE_CASE(::kiln::DType::BFloat16, __VA_ARGS__)                                 \
    KILN_DTYPE_CASE(::kiln::DType::Float32, __VA_ARGS__)                                  \
    KILN_DTYPE_CASE(::kiln::DType::Float64, __VA_ARGS__)                                  \
    default: KILN_FAIL("[", OPNAME, "] expected a floating point tensor but got ", DT);   \
  }
