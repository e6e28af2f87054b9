// Front ends of the random ops: check arguments, reserve counters of the default generator and
// dispatch the rows of kernels/random.cpp with the resolved (seed, offset) as attributes.
#include <cmath>
#include <limits>

#include "core/op.h"
#include "core/ops.h"
#include "core/random.h"
#include "core/shape.h"

namespace kiln {
namespace {

// Digits of exactly representable integers per floating dtype.
int float_digits(DType t) {
  switch (t) {
    case DType::Float16: return 11;
    case DType::BFloat16: return 8;
    case DType::Float32: return 24;
    default: return 53;
  }
}

// Largest finite value of a floating dtype.
double float_max(DType t) {
  switch (t) {
    case DType::Float16: return 65504.0;
    case DType::BFloat16: return 3.3895313892515355e38;
    case DType::Float32: return std::numeric_limits<float>::max();
    default: return std::numeric_limits<double>::max();
  }
}

// [min, max] of the integers a dtype holds exactly (as __int128 to compare with int64 bounds).
std::pair<__int128, __int128> int_range(DType t) {
  if (is_floating_point(t)) {
    __int128 m = __int128(1) << float_digits(t);
    return {-m, m};
  }
  auto lim = [](auto v) { using T = decltype(v);
    return std::pair<__int128, __int128>{std::numeric_limits<T>::min(), std::numeric_limits<T>::max()}; };
  switch (t) {
    case DType::Bool: return {0, 1};
    case DType::UInt8: return lim(uint8_t{});
    case DType::Int8: return lim(int8_t{});
    case DType::Int16: return lim(int16_t{});
    case DType::Int32: return lim(int32_t{});
    default: return lim(int64_t{});
  }
}

Attrs factory_attrs(const char* op, IntArrayRef sizes, DType dt) {
  check_sizes_nonnegative(op, sizes);
  PhiloxKey k = default_generator().reserve(static_cast<uint64_t>(shape_numel(sizes)));
  return Attrs{Shape(sizes.vec()), dt, static_cast<int64_t>(k.seed), static_cast<int64_t>(k.offset)};
}

Tensor finish(Tensor t, const TensorOptions& o) {
  if (t.device() != o.device_) t = t.to(o.device_);
  if (o.requires_grad_) t.requires_grad_(true);
  return t;
}

DType floating_dtype(const char* op, const TensorOptions& o) {
  DType dt = o.dtype_or(default_dtype());
  KILN_CHECK(is_floating_point(dt), "[", op, "] expected a floating point dtype, but got ", dt);
  return dt;
}

void check_uniform_args(const char* op, DType dt, double from, double to) {
  KILN_CHECK(std::isfinite(from) && std::isfinite(to), "[", op, "] expects finite bounds, but got from=", from,
             ", to=", to);
  KILN_CHECK(from <= to, "[", op, "] expects a range [from, to) with from <= to, but got from=", from, " > to=", to);
  KILN_CHECK(to - from <= float_max(dt), "[", op, "] expects to - from to be representable in ", dt,
             ", but got from=", from, ", to=", to);
}

void check_normal_args(const char* op, double mean, double std) {
  KILN_CHECK(std::isfinite(mean), "[", op, "] expects a finite mean, but got mean=", mean);
  KILN_CHECK(std >= 0.0 && std::isfinite(std), "[", op, "] expects std >= 0.0, but got std=", std);
}

void check_probability(const char* op, double p) {
  KILN_CHECK(p >= 0.0 && p <= 1.0, "[", op, "] expects 0 <= p <= 1, but got p=", p);
}

Tensor uniform_impl(const char* op, IntArrayRef sizes, DType dt, double from, double to) {
  Attrs a = factory_attrs(op, sizes, dt);
  a.push(from);
  a.push(to);
  return call_op1(KILN_ROW("uniform"), {}, a);
}

Tensor normal_impl(const char* op, IntArrayRef sizes, DType dt, double mean, double std) {
  Attrs a = factory_attrs(op, sizes, dt);
  a.push(mean);
  a.push(std);
  return call_op1(KILN_ROW("normal"), {}, a);
}

}  // namespace

void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

Tensor rand(IntArrayRef sizes, const TensorOptions& opts) {
  return finish(uniform_impl("rand", sizes, floating_dtype("rand", opts), 0.0, 1.0), opts);
}

Tensor randn(IntArrayRef sizes, const TensorOptions& opts) {
  return finish(normal_impl("randn", sizes, floating_dtype("randn", opts), 0.0, 1.0), opts);
}

Tensor normal(double mean, double std, IntArrayRef sizes, const TensorOptions& opts) {
  DType dt = floating_dtype("normal", opts);
  check_normal_args("normal", mean, std);
  return finish(normal_impl("normal", sizes, dt, mean, std), opts);
}

Tensor randint(int64_t low, int64_t high, IntArrayRef sizes, const TensorOptions& opts) {
  DType dt = opts.dtype_or(DType::Int64);
  KILN_CHECK(low < high, "[randint] expects low < high, but got low=", low, ", high=", high);
  auto [lo, hi] = int_range(dt);
  KILN_CHECK(low >= lo && __int128(high) - 1 <= hi, "[randint] range [", low, ", ", high,
             ") is not representable in dtype ", dt);
  Attrs a = factory_attrs("randint", sizes, dt);
  a.push(low);
  a.push(high);
  return finish(call_op1(KILN_ROW("randint"), {}, a), opts);
}

Tensor randint(int64_t high, IntArrayRef sizes, const TensorOptions& opts) { return randint(0, high, sizes, opts); }

Tensor randperm(int64_t n, const TensorOptions& opts) {
  KILN_CHECK(n >= 0, "[randperm] n must be non-negative, but got n=", n);
  DType dt = opts.dtype_or(DType::Int64);
  KILN_CHECK(dt != DType::Bool, "[randperm] is not supported for dtype bool");
  KILN_CHECK(n == 0 || __int128(n) - 1 <= int_range(dt).second, "[randperm] n=", n,
             " is too large for dtype ", dt, " (n - 1 must be representable)");
  return finish(call_op1(KILN_ROW("randperm"), {}, factory_attrs("randperm", {n}, dt)), opts);
}

Tensor bernoulli(const Tensor& p) {
  KILN_CHECK(p.defined(), "[bernoulli] p is an undefined tensor");
  PhiloxKey k = default_generator().reserve(static_cast<uint64_t>(p.numel()));
  return call_op1(KILN_ROW("bernoulli"), {p}, Attrs{static_cast<int64_t>(k.seed), static_cast<int64_t>(k.offset)});
}

// --- in place (Tensor methods declared in core/tensor.h) ------------------------------------

Tensor& Tensor::uniform_(double from, double to) {
  KILN_CHECK(is_floating_point(), "[uniform_] expected a floating point tensor, but got dtype ", dtype());
  check_uniform_args("uniform_", dtype(), from, to);
  Attrs a = factory_attrs("uniform_", sizes(), dtype());
  a.push(from);
  a.push(to);
  return call_op_inplace(KILN_ROW("uniform"), *this, {}, a);
}

Tensor& Tensor::normal_(double mean, double std) {
  KILN_CHECK(is_floating_point(), "[normal_] expected a floating point tensor, but got dtype ", dtype());
  check_normal_args("normal_", mean, std);
  Attrs a = factory_attrs("normal_", sizes(), dtype());
  a.push(mean);
  a.push(std);
  return call_op_inplace(KILN_ROW("normal"), *this, {}, a);
}

Tensor& Tensor::bernoulli_(double p) {
  check_probability("bernoulli_", p);
  Attrs a = factory_attrs("bernoulli_", sizes(), dtype());
  a.push(p);
  return call_op_inplace(KILN_ROW("bernoulli_scalar"), *this, {}, a);
}

}  // namespace kiln
