#include "kernels/cpu/loops.h"

#include "core/error.h"

namespace kiln::cpu {

StridedIter make_iter(const Tensor& out, const TensorList& inputs) {
  StridedIter it;
  it.nops = 1 + static_cast<int>(inputs.size());
  const int64_t nd = out.dim();
  it.numel = out.numel();
  std::vector<std::vector<int64_t>> st(it.nops, std::vector<int64_t>(nd, 0));
  it.data.resize(it.nops);
  auto fill = [&](int k, const Tensor& t) {
    KILN_INTERNAL_ASSERT(t.dim() <= nd, "operand has more dims than the output");
    const int64_t off = nd - t.dim();
    const int64_t es = static_cast<int64_t>(t.element_size());
    for (int64_t d = 0; d < t.dim(); ++d) {
      KILN_INTERNAL_ASSERT(t.size(d) == out.size(d + off) || t.size(d) == 1, "operand not broadcastable");
      st[k][d + off] = t.size(d) == 1 ? 0 : t.stride(d) * es;
    }
    it.data[k] = static_cast<char*>(t.impl()->data());
  };
  fill(0, out);
  for (size_t i = 0; i < inputs.size(); ++i) fill(static_cast<int>(i) + 1, inputs[i]);

  // Drop size-1 dims, then merge an outer dim into its inner neighbour when every operand
  // steps through them as one.
  std::vector<int64_t> shape;
  std::vector<std::vector<int64_t>> strides(it.nops);
  for (int64_t d = 0; d < nd; ++d) {
    if (out.size(d) == 1) continue;
    if (!shape.empty()) {
      bool merge = true;
      for (int k = 0; k < it.nops; ++k)
        if (strides[k].back() != st[k][d] * out.size(d)) { merge = false; break; }
      if (merge) {
        shape.back() *= out.size(d);
        for (int k = 0; k < it.nops; ++k) strides[k].back() = st[k][d];
        continue;
      }
    }
    shape.push_back(out.size(d));
    for (int k = 0; k < it.nops; ++k) strides[k].push_back(st[k][d]);
  }
  if (shape.empty()) {
    shape.push_back(1);
    for (int k = 0; k < it.nops; ++k) strides[k].push_back(0);
  }
  it.shape = std::move(shape);
  it.strides = std::move(strides);
  return it;
}

}  // namespace kiln::cpu
