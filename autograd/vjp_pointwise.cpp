// vjps of the pointwise ops (kernels/formulas.h) and of copy. Broadcast reduction and the cast
// back to each input's dtype are done by the node, so these are the plain derivatives.
#include <cmath>

#include "autograd/vjp_families.h"
#include "core/ops.h"

namespace kiln::autograd {

namespace {

using G = const TensorList&;
using C = const VjpContext&;

Tensor x0(C c) { return c.input(0); }
Tensor y0(C c) { return c.output(0); }
Tensor zero_grad(G g) { return zeros_like(g[0]); }
Tensor if_need(C c, size_t i, auto&& f) { return c.needs_grad(i) ? f() : Tensor(); }

constexpr double kLn2 = 0.69314718055994530942;
constexpr double kLn10 = 2.30258509299404568402;
constexpr double kTwoOverSqrtPi = 1.12837916709551257390;
constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;

TensorList vjp_copy(C, G g) { return {g[0]}; }
TensorList vjp_neg(C, G g) { return {-g[0]}; }
TensorList vjp_zero(C, G g) { return {zero_grad(g)}; }
TensorList vjp_abs(C c, G g) { return {g[0] * sign(x0(c))}; }
TensorList vjp_exp(C c, G g) { return {g[0] * y0(c)}; }
TensorList vjp_exp2(C c, G g) { return {g[0] * y0(c) * kLn2}; }
TensorList vjp_log(C c, G g) { return {g[0] / x0(c)}; }
TensorList vjp_log2(C c, G g) { return {g[0] / (x0(c) * kLn2)}; }
TensorList vjp_log10(C c, G g) { return {g[0] / (x0(c) * kLn10)}; }
TensorList vjp_log1p(C c, G g) { return {g[0] / (x0(c) + 1)}; }
TensorList vjp_expm1(C c, G g) { return {g[0] * (y0(c) + 1)}; }
TensorList vjp_sqrt(C c, G g) { return {g[0] / (y0(c) * 2)}; }
TensorList vjp_rsqrt(C c, G g) { Tensor y = y0(c); return {g[0] * y * y * y * -0.5}; }
TensorList vjp_reciprocal(C c, G g) { Tensor y = y0(c); return {-g[0] * y * y}; }
TensorList vjp_square(C c, G g) { return {g[0] * x0(c) * 2}; }
TensorList vjp_sin(C c, G g) { return {g[0] * cos(x0(c))}; }
TensorList vjp_cos(C c, G g) { return {-g[0] * sin(x0(c))}; }
TensorList vjp_tan(C c, G g) { Tensor y = y0(c); return {g[0] * (y * y + 1)}; }
TensorList vjp_tanh(C c, G g) { Tensor y = y0(c); return {g[0] * (1 - y * y)}; }
TensorList vjp_sigmoid(C c, G g) { Tensor y = y0(c); return {g[0] * y * (1 - y)}; }
TensorList vjp_relu(C c, G g) { return {where(y0(c) > 0, g[0], 0)}; }
TensorList vjp_gelu(C c, G g) {
  Tensor x = x0(c);
  Tensor cdf = (erf(x * kInvSqrt2) + 1) * 0.5;
  Tensor pdf = exp(x * x * -0.5) * kInvSqrt2Pi;
  return {g[0] * (cdf + x * pdf)};
}
TensorList vjp_gelu_tanh(C c, G g) {
  constexpr double k = 0.79788456080286535588, a = 0.044715;
  Tensor x = x0(c);
  Tensor x2 = x * x;
  Tensor t = tanh((x + x2 * x * a) * k);
  Tensor dinner = (x2 * (3 * a) + 1) * k;
  return {g[0] * ((t + 1) * 0.5 + x * 0.5 * (1 - t * t) * dinner)};
}
TensorList vjp_silu(C c, G g) {
  Tensor x = x0(c);
  Tensor s = sigmoid(x);
  return {g[0] * s * (x * (1 - s) + 1)};
}
TensorList vjp_softplus(C c, G g) {
  // inputs: x, beta, threshold (wrapped scalars); linear above the threshold, as the forward.
  Tensor x = x0(c), beta = c.input(1), threshold = c.input(2);
  Tensor bx = x * beta;
  return {where(bx > threshold, g[0], g[0] * sigmoid(bx))};
}
TensorList vjp_erf(C c, G g) { Tensor x = x0(c); return {g[0] * exp(-(x * x)) * kTwoOverSqrtPi}; }

TensorList vjp_add(C, G g) { return {g[0], g[0]}; }
TensorList vjp_sub(C c, G g) { return {g[0], if_need(c, 1, [&] { return -g[0]; })}; }
TensorList vjp_mul(C c, G g) {
  return {if_need(c, 0, [&] { return g[0] * c.input(1); }), if_need(c, 1, [&] { return g[0] * c.input(0); })};
}
TensorList vjp_div(C c, G g) {
  Tensor b = c.input(1);
  return {if_need(c, 0, [&] { return g[0] / b; }), if_need(c, 1, [&] { return -g[0] * c.input(0) / (b * b); })};
}
TensorList vjp_pow(C c, G g) {
  Tensor a = c.input(0), b = c.input(1);
  return {if_need(c, 0, [&] { return where(b == 0, zeros_like(g[0]), g[0] * b * pow(a, b - 1)); }),
          if_need(c, 1, [&] {
            // d/db a^b = a^b log a, taken as 0 where a == 0 and b >= 0 (PyTorch's convention).
            return where(logical_and(a == 0, b >= 0), zeros_like(g[0]), g[0] * c.output(0) * log(a));
          })};
}
TensorList vjp_fmod(C c, G g) {
  return {g[0], if_need(c, 1, [&] { return -g[0] * trunc(c.input(0) / c.input(1)); })};
}
TensorList vjp_remainder(C c, G g) {
  return {g[0], if_need(c, 1, [&] { return -g[0] * floor(c.input(0) / c.input(1)); })};
}
// Ties split the gradient evenly, as PyTorch does.
TensorList max_min(C c, G g, bool is_max) {
  Tensor a = c.input(0), b = c.input(1);
  Tensor a_wins = is_max ? a > b : a < b;
  Tensor half = g[0] * 0.5;
  Tensor tie = a == b;
  return {if_need(c, 0, [&] { return where(a_wins, g[0], where(tie, half, 0)); }),
          if_need(c, 1, [&] { return where(logical_or(a_wins, tie), where(tie, half, 0), g[0]); })};
}
TensorList vjp_maximum(C c, G g) { return max_min(c, g, true); }
TensorList vjp_minimum(C c, G g) { return max_min(c, g, false); }
TensorList vjp_clamp_min(C c, G g) {
  Tensor x = c.input(0), lo = c.input(1);
  return {where(x >= lo, g[0], 0), if_need(c, 1, [&] { return where(x < lo, g[0], 0); })};
}
TensorList vjp_clamp_max(C c, G g) {
  Tensor x = c.input(0), hi = c.input(1);
  return {where(x <= hi, g[0], 0), if_need(c, 1, [&] { return where(x > hi, g[0], 0); })};
}
// clamp is min(max(x, lo), hi): where lo > hi the result is hi whatever x is (PyTorch's rule).
TensorList vjp_clamp(C c, G g) {
  Tensor x = c.input(0), lo = c.input(1), hi = c.input(2);
  return {where(logical_and(x >= lo, x <= hi), g[0], 0),
          if_need(c, 1, [&] { return where(logical_and(x < lo, lo < hi), g[0], 0); }),
          if_need(c, 2, [&] { return where(logical_or(x > hi, hi < lo), g[0], 0); })};
}
TensorList vjp_where(C c, G g) {
  Tensor cond = c.input(0);
  return {Tensor(), if_need(c, 1, [&] { return where(cond, g[0], 0); }),
          if_need(c, 2, [&] { return where(cond, 0, g[0]); })};
}

}  // namespace

void register_pointwise_vjps(OpRegistry& r) {
  set_vjp(r, "copy", vjp_copy, kSaveNothing);
  set_vjp(r, "neg", vjp_neg, kSaveNothing);
  for (const char* n : {"sign", "floor", "ceil", "round", "trunc"}) set_vjp(r, n, vjp_zero, kSaveNothing);
  set_vjp(r, "abs", vjp_abs, kSaveInputs);
  set_vjp(r, "exp", vjp_exp, kSaveOutputs);
  set_vjp(r, "exp2", vjp_exp2, kSaveOutputs);
  set_vjp(r, "log", vjp_log, kSaveInputs);
  set_vjp(r, "log2", vjp_log2, kSaveInputs);
  set_vjp(r, "log10", vjp_log10, kSaveInputs);
  set_vjp(r, "log1p", vjp_log1p, kSaveInputs);
  set_vjp(r, "expm1", vjp_expm1, kSaveOutputs);
  set_vjp(r, "sqrt", vjp_sqrt, kSaveOutputs);
  set_vjp(r, "rsqrt", vjp_rsqrt, kSaveOutputs);
  set_vjp(r, "reciprocal", vjp_reciprocal, kSaveOutputs);
  set_vjp(r, "square", vjp_square, kSaveInputs);
  set_vjp(r, "sin", vjp_sin, kSaveInputs);
  set_vjp(r, "cos", vjp_cos, kSaveInputs);
  set_vjp(r, "tan", vjp_tan, kSaveOutputs);
  set_vjp(r, "tanh", vjp_tanh, kSaveOutputs);
  set_vjp(r, "sigmoid", vjp_sigmoid, kSaveOutputs);
  set_vjp(r, "relu", vjp_relu, kSaveOutputs);
  set_vjp(r, "gelu", vjp_gelu, kSaveInputs);
  set_vjp(r, "gelu_tanh", vjp_gelu_tanh, kSaveInputs);
  set_vjp(r, "silu", vjp_silu, kSaveInputs);
  set_vjp(r, "softplus", vjp_softplus, kSaveInputs);
  set_vjp(r, "erf", vjp_erf, kSaveInputs);
  set_vjp(r, "add", vjp_add, kSaveNothing);
  set_vjp(r, "sub", vjp_sub, kSaveNothing);
  set_vjp(r, "mul", vjp_mul, kSaveInputs);
  set_vjp(r, "div", vjp_div, kSaveInputs);
  set_vjp(r, "pow", vjp_pow, kSaveAll);
  set_vjp(r, "fmod", vjp_fmod, kSaveInputs);
  set_vjp(r, "remainder", vjp_remainder, kSaveInputs);
  set_vjp(r, "maximum", vjp_maximum, kSaveInputs);
  set_vjp(r, "minimum", vjp_minimum, kSaveInputs);
  set_vjp(r, "clamp_min", vjp_clamp_min, kSaveInputs);
  set_vjp(r, "clamp_max", vjp_clamp_max, kSaveInputs);
  set_vjp(r, "clamp", vjp_clamp, kSaveInputs);
  set_vjp(r, "where", vjp_where, kSaveInputs);
}

}  // namespace kiln::autograd
