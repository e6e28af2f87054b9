#pragma once
// The op table: one OpCase row per op (or op variant) with a sample-input generator, an
// independent float64 reference and tolerances per dtype. check_case() runs each row on every
// shape set x dtype x layout (contiguous, transposed, sliced, broadcast) and compares the
// kiln result with the reference computed from the very same input values.
#include <functional>
#include <string>
#include <vector>

#include "test_util.h"

namespace kiln::optable {

struct Domain {
  double lo = -2.0, hi = 2.0;  // floats uniform in [lo, hi]; integers uniform in [ceil(lo), floor(hi)]
};

enum class Layout { Contiguous, Transposed, Sliced, Broadcast };
const char* layout_name(Layout l);

using RunFn = std::function<Tensor(const TensorList& inputs)>;
// Computes the expected result from float64, contiguous copies of the inputs. Write it with plain
// loops over data_ptr<double>() (never with the kiln op under test).
using RefFn = std::function<Tensor(const TensorList& f64_inputs)>;
// Makes input `index` of the given shape and dtype (default: uniform in the domain).
using InputFn = std::function<Tensor(size_t index, const Shape& shape, DType dtype)>;

struct OpCase {
  std::string name;
  std::vector<std::vector<Shape>> shape_sets;  // one shape per input, per set
  std::vector<DType> dtypes;                   // dtype of the inputs, one run each
  RunFn run;
  RefFn ref;
  Domain domain{};
  InputFn make_input{};                           // optional custom generator
  std::vector<int> fixed_dtype_inputs{};          // inputs that make_input types itself (indices, masks)
  std::function<DType(DType)> out_dtype{};        // optional expected result dtype per input dtype
  double tol_scale = 1.0;                         // widens the default tolerances
  bool layouts = true;                            // exercise non-contiguous layouts
};

// Default tolerances by result dtype (rtol, atol).
std::pair<double, double> tolerance(DType result, double scale);

Tensor random_input(const Shape& shape, DType dtype, Domain d, uint64_t seed);
Tensor apply_layout(const Tensor& t, Layout l);  // same logical shape; values may repeat (broadcast)
void check_case(const OpCase& c);

// --- reference helpers (float64, plain loops) -----------------------------------------------
// Broadcasts float64 inputs and applies f elementwise.
Tensor ref_pointwise(const TensorList& in, const std::function<double(const std::vector<double>&)>& f);
// Reduces `dims` (empty = all) of a float64 tensor with a function of the reduced values.
Tensor ref_reduce(const Tensor& x, std::vector<int64_t> dims, bool keepdim,
                  const std::function<double(const std::vector<double>&)>& f);

inline std::vector<DType> float_dtypes() { return {kFloat32, kFloat64, kFloat16, kBFloat16}; }
inline std::vector<DType> numeric_dtypes() {
  return {kFloat32, kFloat64, kFloat16, kBFloat16, kInt32, kInt64, kInt16, kInt8, kUInt8};
}
inline std::vector<DType> all_dtypes() {
  auto v = numeric_dtypes();
  v.push_back(kBool);
  return v;
}

}  // namespace kiln::optable
