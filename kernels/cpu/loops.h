#pragma once
// Strided N-d iteration for CPU kernels (a small TensorIterator): operands are broadcast to
// the output shape, dims of size 1 dropped, mergeable dims coalesced, and the work is split
// across threads. Kernels supply an inner loop over one run of the innermost dim.
#include <cstdint>
#include <vector>

#include "core/ops.h"
#include "core/tensor.h"
#include "kernels/cpu/parallel.h"

namespace kiln::cpu {

struct StridedIter {
  int nops = 0;                              // operand 0 is the output
  std::vector<int64_t> shape;                // outermost first; at least one dim
  std::vector<std::vector<int64_t>> strides; // [op][dim], in bytes
  std::vector<char*> data;
  int64_t numel = 0;

  int ndim() const { return static_cast<int>(shape.size()); }
};

// `out` must have the broadcast shape of `inputs`.
StridedIter make_iter(const Tensor& out, const TensorList& inputs);

// fn(char** ptrs, const int64_t* inner_strides_bytes, int64_t n) for each inner run.
template <class Fn>
void for_each_run(const StridedIter& it, Fn&& fn, int64_t grain = kParallelGrain) {
  if (it.numel == 0) return;
  const int nd = it.ndim(), nops = it.nops;
  const int64_t inner = it.shape[nd - 1];
  parallel_for(it.numel, grain, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> idx(nd, 0);
    int64_t rem = begin;
    for (int d = nd - 1; d >= 0; --d) {
      idx[d] = rem % it.shape[d];
      rem /= it.shape[d];
    }
    std::vector<char*> ptrs(nops);
    std::vector<int64_t> inner_strides(nops);
    for (int k = 0; k < nops; ++k) inner_strides[k] = it.strides[k][nd - 1];
    int64_t pos = begin;
    while (pos < end) {
      for (int k = 0; k < nops; ++k) {
        char* p = it.data[k];
        for (int d = 0; d < nd; ++d) p += idx[d] * it.strides[k][d];
        ptrs[k] = p;
      }
      int64_t n = inner - idx[nd - 1];
      if (n > end - pos) n = end - pos;
      fn(ptrs.data(), inner_strides.data(), n);
      pos += n;
      idx[nd - 1] += n;
      for (int d = nd - 1; d > 0 && idx[d] >= it.shape[d]; --d) {
        idx[d] = 0;
        ++idx[d - 1];
      }
    }
  });
}

// Kernels that write contiguous outputs: runs fn(t) on `out` itself when contiguous, else on a
// contiguous temporary copied into `out` afterwards (a strided out= or in-place target).
template <class Fn>
void with_contiguous_output(Tensor& out, Fn&& fn) {
  if (out.is_contiguous()) {
    fn(out);
    return;
  }
  Tensor tmp = empty(out.sizes(), out.dtype(), out.device());
  fn(tmp);
  out.copy_(tmp);
}

}  // namespace kiln::cpu
