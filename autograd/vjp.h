#pragma once
// What a vjp sees: the forward op's attributes, its saved inputs/outputs and their metadata.
// A vjp is written with public kiln ops only, so the JIT can trace and fuse backward graphs.
//
//   TensorList vjp_exp(const VjpContext& ctx, const TensorList& g) {
//     return {g[0] * ctx.output(0)};
//   }
//
// Returned gradients may be in the broadcast shape or the promoted dtype; the node reduces
// them (sum_to) to each input's shape and casts them to its dtype. Return an undefined tensor
// for an input that gets no gradient. For multi-output ops, g[i] is undefined when no gradient
// flowed into output i.
#include "core/op.h"

namespace kiln::autograd {

struct InputGeometry {
  Shape sizes, strides;
  int64_t offset = 0;
  DType dtype = DType::Float32;
  Device device;
};

class VjpContext {
 public:
  virtual ~VjpContext() = default;
  virtual const OpDef& op() const = 0;
  virtual const Attrs& attrs() const = 0;
  virtual size_t num_inputs() const = 0;
  // Saved forward values; raise kiln::Error when modified in place since, or already freed.
  virtual Tensor input(size_t i) const = 0;
  virtual Tensor output(size_t i) const = 0;
  virtual const InputGeometry& input_geometry(size_t i) const = 0;
  IntArrayRef input_sizes(size_t i) const { return input_geometry(i).sizes; }
  DType input_dtype(size_t i) const { return input_geometry(i).dtype; }
  // Whether input i needs a gradient (a vjp may skip work for the others).
  virtual bool needs_grad(size_t i) const = 0;
};

// Reduces a broadcast gradient to `sizes` by summing the broadcast dimensions.
Tensor sum_to(const Tensor& grad, IntArrayRef sizes);

}  // namespace kiln::autograd
