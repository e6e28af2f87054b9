#pragma once
// Shared helpers for the test suites: float64 references and readable comparisons.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/ops.h"
#include "core/shape.h"
#include "core/tensor.h"

namespace kiln::testing {

// Copies a tensor's values into a flat float64 vector (row-major over its logical shape).
inline std::vector<double> to_vec(const Tensor& t) {
  Tensor c = t.to(DType::Float64).contiguous();
  const double* p = c.data_ptr<double>();
  return std::vector<double>(p, p + c.numel());
}

// Expects an error whose message contains every fragment (op name, argument, values).
#define EXPECT_KILN_ERROR(stmt, ...)                                                       \
  do {                                                                                      \
    bool thrown_ = false;                                                                   \
    try {                                                                                   \
      stmt;                                                                                 \
    } catch (const ::kiln::Error& e_) {                                                     \
      thrown_ = true;                                                                       \
      std::string msg_ = e_.what();                                                         \
      for (const char* frag_ : {__VA_ARGS__})                                               \
        EXPECT_NE(msg_.find(frag_), std::string::npos) << "message '" << msg_                \
                                                       << "' lacks '" << frag_ << "'";      \
    }                                                                                       \
    EXPECT_TRUE(thrown_) << "expected kiln::Error from: " #stmt;                            \
  } while (0)

// Elementwise |a - b| <= atol + rtol * |b|, NaNs equal, infinities equal by sign.
inline ::testing::AssertionResult close(const Tensor& actual, const Tensor& expected, double rtol = 1e-5,
                                        double atol = 1e-6) {
  if (actual.sizes() != expected.sizes()) {
    std::ostringstream os;
    os << "shape " << actual.sizes() << " vs expected " << expected.sizes();
    return ::testing::AssertionFailure() << os.str();
  }
  auto a = to_vec(actual), b = to_vec(expected);
  for (size_t i = 0; i < a.size(); ++i) {
    bool ok = (std::isnan(a[i]) && std::isnan(b[i])) || a[i] == b[i] ||
              std::fabs(a[i] - b[i]) <= atol + rtol * std::fabs(b[i]);
    if (!ok)
      return ::testing::AssertionFailure() << "element " << i << ": " << a[i] << " vs expected " << b[i]
                                           << " (rtol " << rtol << ", atol " << atol << ")";
  }
  return ::testing::AssertionSuccess();
}

}  // namespace kiln::testing
