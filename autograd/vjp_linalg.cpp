// vjps of mm, bmm, matmul and linear. Batch broadcasting in matmul is undone by the node's
// sum_to, so the formulas are the plain matrix ones.
#include "autograd/vjp_families.h"
#include "core/ops.h"

namespace kiln::autograd {

namespace {

using G = const TensorList&;
using C = const VjpContext&;

Tensor if_need(C c, size_t i, auto&& f) { return c.needs_grad(i) ? f() : Tensor(); }

TensorList vjp_mm(C c, G g) {
  return {if_need(c, 0, [&] { return mm(g[0], c.input(1).t()); }),
          if_need(c, 1, [&] { return mm(c.input(0).t(), g[0]); })};
}

TensorList vjp_bmm(C c, G g) {
  return {if_need(c, 0, [&] { return bmm(g[0], c.input(1).transpose(1, 2)); }),
          if_need(c, 1, [&] { return bmm(c.input(0).transpose(1, 2), g[0]); })};
}

TensorList vjp_matmul(C c, G g) {
  Tensor a = c.input(0), b = c.input(1);
  int64_t da = a.dim(), db = b.dim();
  if (da == 1 && db == 1) return {if_need(c, 0, [&] { return g[0] * b; }), if_need(c, 1, [&] { return g[0] * a; })};
  // Promote vectors to matrices as matmul does, differentiate, then drop the added dim.
  Tensor a2 = da == 1 ? a.unsqueeze(0) : a;
  Tensor b2 = db == 1 ? b.unsqueeze(-1) : b;
  Tensor g2 = g[0];
  if (da == 1) g2 = g2.unsqueeze(-2);
  if (db == 1) g2 = g2.unsqueeze(-1);
  Tensor ga = if_need(c, 0, [&] {
    Tensor r = matmul(g2, b2.mT());
    if (da == 1) r = sum_to(r, a2.sizes()).squeeze(0);
    return r;
  });
  Tensor gb = if_need(c, 1, [&] {
    Tensor r = matmul(a2.mT(), g2);
    if (db == 1) r = sum_to(r, b2.sizes()).squeeze(-1);
    return r;
  });
  return {ga, gb};
}

TensorList vjp_linear(C c, G g) {
  // y = x W^T + b, over any number of leading dims of x.
  Tensor x = c.input(0), w = c.input(1);
  int64_t out_f = w.size(0), in_f = w.size(1);
  Tensor g2 = g[0].reshape({-1, out_f});
  Tensor gx = if_need(c, 0, [&] { return matmul(g[0], w); });
  Tensor gw = if_need(c, 1, [&] { return mm(g2.t(), x.reshape({-1, in_f})); });
  if (c.num_inputs() < 3) return {gx, gw};
  return {gx, gw, if_need(c, 2, [&] { return g2.sum({0}); })};
}

}  // namespace

void register_linalg_vjps(OpRegistry& r) {
  set_vjp(r, "mm", vjp_mm, kSaveInputs);
  set_vjp(r, "bmm", vjp_bmm, kSaveInputs);
  set_vjp(r, "matmul", vjp_matmul, kSaveInputs);
  set_vjp(r, "linear", vjp_linear, kSaveInputs);
}

}  // namespace kiln::autograd
