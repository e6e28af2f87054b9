// Front ends of the reductions: pack dims/keepdim/dtype attributes and dispatch the rows of
// kernels/reduce.cpp, whose shape rules do the argument checking.
#include "core/op.h"
#include "core/ops.h"

namespace kiln {
namespace {
Attr dtype_attr(std::optional<DType> d) { return d ? Attr(*d) : Attr(); }
Attr dim_attr(std::optional<int64_t> d) { return d ? Attr(*d) : Attr(); }
std::tuple<Tensor, Tensor> pair(TensorList r) { return {std::move(r[0]), std::move(r[1])}; }
}  // namespace

Tensor sum(const Tensor& x, IntArrayRef dims, bool keepdim, std::optional<DType> dtype) {
  return call_op1(KILN_ROW("sum"), {x}, Attrs{dims.vec(), keepdim, dtype_attr(dtype)});
}
Tensor mean(const Tensor& x, IntArrayRef dims, bool keepdim, std::optional<DType> dtype) {
  return call_op1(KILN_ROW("mean"), {x}, Attrs{dims.vec(), keepdim, dtype_attr(dtype)});
}
Tensor prod(const Tensor& x, IntArrayRef dims, bool keepdim, std::optional<DType> dtype) {
  return call_op1(KILN_ROW("prod"), {x}, Attrs{dims.vec(), keepdim, dtype_attr(dtype)});
}
Tensor amax(const Tensor& x, IntArrayRef dims, bool keepdim) {
  return call_op1(KILN_ROW("amax"), {x}, Attrs{dims.vec(), keepdim});
}
Tensor amin(const Tensor& x, IntArrayRef dims, bool keepdim) {
  return call_op1(KILN_ROW("amin"), {x}, Attrs{dims.vec(), keepdim});
}
Tensor max(const Tensor& x) {
  KILN_CHECK(x.numel() > 0, "[max] Expected reduction dim to be specified for input.numel() == 0 (input shape ",
             x.sizes(), "); specify the reduction dim with the 'dim' argument");
  return amax(x);
}
Tensor min(const Tensor& x) {
  KILN_CHECK(x.numel() > 0, "[min] Expected reduction dim to be specified for input.numel() == 0 (input shape ",
             x.sizes(), "); specify the reduction dim with the 'dim' argument");
  return amin(x);
}
std::tuple<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim) {
  return pair(call_op(KILN_ROW("max_dim"), {x}, Attrs{dim, keepdim}));
}
std::tuple<Tensor, Tensor> min(const Tensor& x, int64_t dim, bool keepdim) {
  return pair(call_op(KILN_ROW("min_dim"), {x}, Attrs{dim, keepdim}));
}
Tensor argmax(const Tensor& x, std::optional<int64_t> dim, bool keepdim) {
  return call_op1(KILN_ROW("argmax"), {x}, Attrs{dim_attr(dim), keepdim});
}
Tensor argmin(const Tensor& x, std::optional<int64_t> dim, bool keepdim) {
  return call_op1(KILN_ROW("argmin"), {x}, Attrs{dim_attr(dim), keepdim});
}
Tensor var(const Tensor& x, IntArrayRef dims, int64_t correction, bool keepdim) {
  return call_op1(KILN_ROW("var"), {x}, Attrs{dims.vec(), correction, keepdim});
}
Tensor std(const Tensor& x, IntArrayRef dims, int64_t correction, bool keepdim) {
  return call_op1(KILN_ROW("std"), {x}, Attrs{dims.vec(), correction, keepdim});
}
std::tuple<Tensor, Tensor> var_mean(const Tensor& x, IntArrayRef dims, int64_t correction, bool keepdim) {
  return pair(call_op(KILN_ROW("var_mean"), {x}, Attrs{dims.vec(), correction, keepdim}));
}
Tensor logsumexp(const Tensor& x, IntArrayRef dims, bool keepdim) {
  return call_op1(KILN_ROW("logsumexp"), {x}, Attrs{dims.vec(), keepdim});
}
Tensor all(const Tensor& x, IntArrayRef dims, bool keepdim) {
  return call_op1(KILN_ROW("all"), {x}, Attrs{dims.vec(), keepdim});
}
Tensor any(const Tensor& x, IntArrayRef dims, bool keepdim) {
  return call_op1(KILN_ROW("any"), {x}, Attrs{dims.vec(), keepdim});
}
Tensor softmax(const Tensor& x, int64_t dim, std::optional<DType> dtype) {
  return call_op1(KILN_ROW("softmax"), {x}, Attrs{dim, dtype_attr(dtype)});
}
Tensor log_softmax(const Tensor& x, int64_t dim, std::optional<DType> dtype) {
  return call_op1(KILN_ROW("log_softmax"), {x}, Attrs{dim, dtype_attr(dtype)});
}
Tensor cumsum(const Tensor& x, int64_t dim, std::optional<DType> dtype) {
  return call_op1(KILN_ROW("cumsum"), {x}, Attrs{dim, dtype_attr(dtype)});
}
bool allclose(const Tensor& a, const Tensor& b, double rtol, double atol, bool equal_nan) {
  return call_op1(KILN_ROW("allclose"), {a, b}, Attrs{rtol, atol, equal_nan}).item<bool>();
}
bool equal(const Tensor& a, const Tensor& b) { return call_op1(KILN_ROW("equal"), {a, b}).item<bool>(); }

}  // namespace kiln
