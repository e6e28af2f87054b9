#pragma once
// The CPU reduction engine. A ReducePlan sorts the kept and reduced dims by memory order and
// coalesces them; the engine then runs one of two loop shapes with an Op (see reduce_ops.h):
//   rows:    per output, walk the reduced space in runs along its innermost dim (op.row; a
//            run with stride 1 is the vectorised row reduction, any other stride the general path)
//   columns: the innermost kept dim is contiguous, so whole rows of it are accumulated at once
//            (op.cols, vectorised across the kept dim)
// Work is split over outputs, or, when there are too few outputs to balance the threads, over
// the reduced space with per-thread partials combined in a fixed order (deterministic for a
// given thread count).
#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/ops.h"
#include "core/tensor.h"
#include "kernels/cpu/loops.h"
#include "kernels/cpu/parallel.h"

namespace kiln::cpu {

inline constexpr int kMaxReduceDims = 64;
inline constexpr int64_t kColTile = 1024;   // kept columns per column-reduction unit
inline constexpr int64_t kCascade = 128;    // rows (or runs) per cascade level

struct ReducePlan {
  // Kept dims, outer to inner in memory order: size, input stride, output stride (elements).
  std::vector<int64_t> ksize, kin, kout;
  // Reduced dims, outer to inner: size, input stride (elements). Never empty.
  std::vector<int64_t> rsize, rin;
  int64_t n_out = 1, n_red = 1;
  bool columns() const { return rin.back() != 1 && !kin.empty() && kin.back() == 1; }
};

// `reduced[d]` marks the reduced dims of `in`; the output is contiguous over the kept dims in
// their logical order (size-1 dims inserted by keepdim do not change the layout).
ReducePlan make_reduce_plan(const Tensor& in, const std::vector<bool>& reduced);

// Walks the reduced flat range [b, e) as runs along the innermost reduced dim:
// fn(input offset, run length, flat index of the run's first element).
template <class Fn>
inline void walk_runs(const ReducePlan& p, int64_t b, int64_t e, Fn&& fn) {
  const int nr = static_cast<int>(p.rsize.size());
  if (nr == 1) {
    if (b < e) fn(b * p.rin[0], e - b, b);
    return;
  }
  std::array<int64_t, kMaxReduceDims> idx;
  int64_t rem = b, off = 0;
  for (int d = nr - 1; d >= 0; --d) {
    idx[d] = rem % p.rsize[d];
    rem /= p.rsize[d];
    off += idx[d] * p.rin[d];
  }
  const int64_t inner = p.rsize[nr - 1], s = p.rin[nr - 1];
  for (int64_t pos = b; pos < e;) {
    const int64_t len = std::min(inner - idx[nr - 1], e - pos);
    fn(off, len, pos);
    pos += len;
    idx[nr - 1] += len;
    off += len * s;
    for (int d = nr - 1; d > 0 && idx[d] == p.rsize[d]; --d) {
      off -= idx[d] * p.rin[d];
      idx[d] = 0;
      ++idx[d - 1];
      off += p.rin[d - 1];
    }
  }
}

// Input and output offsets of consecutive outputs over the kept dims `[0, nk)`.
class KeptCounter {
 public:
  KeptCounter(const ReducePlan& p, int nk, int64_t start) : p_(p), nk_(nk) {
    int64_t rem = start;
    for (int d = nk - 1; d >= 0; --d) {
      idx_[d] = rem % p.ksize[d];
      rem /= p.ksize[d];
      in += idx_[d] * p.kin[d];
      out += idx_[d] * p.kout[d];
    }
  }
  void next() {
    for (int d = nk_ - 1; d >= 0; --d) {
      in += p_.kin[d];
      out += p_.kout[d];
      if (++idx_[d] < p_.ksize[d]) return;
      in -= idx_[d] * p_.kin[d];
      out -= idx_[d] * p_.kout[d];
      idx_[d] = 0;
    }
  }
  int64_t in = 0, out = 0;

 private:
  const ReducePlan& p_;
  int nk_;
  std::array<int64_t, kMaxReduceDims> idx_{};
};

// Combines a stream of partial results pairwise-ish (levels of kCascade), so that long
// reductions of many short runs keep float sums accurate.
template <class Op>
struct Cascade {
  using A = typename Op::acc_t;
  const Op& op;
  A l0, l1, l2;
  int64_t c0 = 0, c1 = 0;
  explicit Cascade(const Op& o) : op(o), l0(o.identity()), l1(o.identity()), l2(o.identity()) {}
  void add(const A& a) {
    l0 = op.combine(l0, a);
    if (++c0 < kCascade) return;
    l1 = op.combine(l1, l0);
    l0 = op.identity();
    c0 = 0;
    if (++c1 < kCascade) return;
    l2 = op.combine(l2, l1);
    l1 = op.identity();
    c1 = 0;
  }
  A result() const { return op.combine(op.combine(l2, l1), l0); }
};

template <class Op>
typename Op::acc_t reduce_range(const Op& op, const ReducePlan& p, const typename Op::in_t* base, int64_t b,
                                int64_t e) {
  const int64_t s = p.rin.back();
  if (p.rsize.size() == 1) return op.row(base + b * s, e - b, s, b);
  Cascade<Op> c(op);
  walk_runs(p, b, e, [&](int64_t off, int64_t len, int64_t idx) { c.add(op.row(base + off, len, s, idx)); });
  return c.result();
}

// Accumulates columns [0, ncols) of the reduced flat range [b, e) into acc (cascaded by rows).
template <class Op>
void reduce_cols(const Op& op, const ReducePlan& p, const typename Op::in_t* base, int64_t ncols, int64_t b,
                 int64_t e, typename Op::acc_t* acc) {
  using A = typename Op::acc_t;
  std::array<A, kColTile> l0, l1, l2;
  for (int64_t j = 0; j < ncols; ++j) l0[j] = l1[j] = l2[j] = op.identity();
  int64_t c0 = 0, c1 = 0;
  const int64_t rs = p.rin.back();
  walk_runs(p, b, e, [&](int64_t off, int64_t len, int64_t idx) {
    while (len > 0) {
      const int64_t take = std::min(len, kCascade - c0);
      op.cols(l0.data(), base + off, take, rs, ncols, idx);
      off += take * rs;
      len -= take;
      idx += take;
      if ((c0 += take) < kCascade) continue;
      for (int64_t j = 0; j < ncols; ++j) {
        l1[j] = op.combine(l1[j], l0[j]);
        l0[j] = op.identity();
      }
      c0 = 0;
      if (++c1 < kCascade) continue;
      for (int64_t j = 0; j < ncols; ++j) {
        l2[j] = op.combine(l2[j], l1[j]);
        l1[j] = op.identity();
      }
      c1 = 0;
    }
  });
  for (int64_t j = 0; j < ncols; ++j) acc[j] = op.combine(op.combine(l2[j], l1[j]), l0[j]);
}


// Runs `op` over `in` (data pointer `base`) as planned; op.write(out_offset, acc) stores results.
// Reductions over an empty space write op.identity() to every output.
template <class Op>
void run_reduction(const Op& op, const ReducePlan& p, const typename Op::in_t* base) {
  using A = typename Op::acc_t;
  if (p.n_out == 0) return;
  const int nk = static_cast<int>(p.ksize.size());
  if (p.n_red == 0) {
    KeptCounter k(p, nk, 0);
    for (int64_t o = 0; o < p.n_out; ++o, k.next()) op.write(k.out, op.identity());
    return;
  }
  const int64_t work = p.n_out * p.n_red;
  const int nt = (work > kParallelGrain && !in_parallel_region()) ? max_threads() : 1;
  const bool cols = p.columns();
  // Units of output work: single outputs (rows) or (outer kept index, column tile) pairs.
  const int64_t ncol = cols ? p.ksize.back() : 1;
  const int64_t ntiles = (ncol + kColTile - 1) / kColTile;
  const int64_t units = cols ? (p.n_out / ncol) * ntiles : p.n_out;
  const int64_t unit_work = cols ? p.n_red * std::min(ncol, kColTile) : p.n_red;

  auto unit_geometry = [&](int64_t u, int64_t& in_off, int64_t& out_off, int64_t& c0, int64_t& nc) {
    KeptCounter k(p, nk - 1, u / ntiles);
    c0 = (u % ntiles) * kColTile;
    nc = std::min(kColTile, ncol - c0);
    in_off = k.in + c0;
    out_off = k.out + c0 * p.kout.back();
  };

  // Too few output units to balance the threads: split the reduced space instead.
  const bool split = nt > 1 && units < 4 * static_cast<int64_t>(nt) && p.n_red >= 64 * nt;
  if (!split) {
    const int64_t grain = std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(unit_work, 1));
    parallel_for(units, nt <= 1 ? units : grain, [&](int64_t ub, int64_t ue) {
      if (!cols) {
        KeptCounter k(p, nk, ub);
        for (int64_t o = ub; o < ue; ++o, k.next()) op.write(k.out, reduce_range(op, p, base + k.in, 0, p.n_red));
        return;
      }
      std::array<A, kColTile> acc;
      for (int64_t u = ub; u < ue; ++u) {
        int64_t in_off, out_off, c0, nc;
        unit_geometry(u, in_off, out_off, c0, nc);
        reduce_cols(op, p, base + in_off, nc, 0, p.n_red, acc.data());
        for (int64_t j = 0; j < nc; ++j) op.write(out_off + j * p.kout.back(), acc[j]);
      }
    });
    return;
  }

  // Few outputs: split the reduced space into nt chunks, combine the partials in chunk order.
  const int64_t chunk = (p.n_red + nt - 1) / nt;
  std::unique_ptr<A[]> partial(new A[static_cast<size_t>(nt) * p.n_out]);  // A may be bool
  for (int64_t i = 0; i < nt * p.n_out; ++i) partial[i] = op.identity();
  parallel_for(nt, 1, [&](int64_t tb, int64_t te) {
    for (int64_t t = tb; t < te; ++t) {
      const int64_t b = t * chunk, e = std::min(p.n_red, b + chunk);
      if (b >= e) continue;
      A* part = partial.get() + t * p.n_out;
      if (!cols) {
        KeptCounter k(p, nk, 0);
        for (int64_t o = 0; o < p.n_out; ++o, k.next()) part[o] = reduce_range(op, p, base + k.in, b, e);
        continue;
      }
      for (int64_t u = 0; u < units; ++u) {
        int64_t in_off, out_off, c0, nc;
        unit_geometry(u, in_off, out_off, c0, nc);
        reduce_cols(op, p, base + in_off, nc, b, e, part + (u / ntiles) * ncol + c0);
      }
    }
  });
  // Partials are indexed by output in iteration order: (outer kept, column) or kept order.
  KeptCounter k(p, cols ? nk - 1 : nk, 0);
  for (int64_t o = 0; o < p.n_out / ncol; ++o, k.next()) {
    for (int64_t j = 0; j < ncol; ++j) {
      const int64_t slot = o * ncol + j;
      A a = partial[slot];
      for (int t = 1; t < nt; ++t) a = op.combine(a, partial[static_cast<size_t>(t) * p.n_out + slot]);
      op.write(k.out + (cols ? j * p.kout.back() : 0), a);
    }
  }
}

}  // namespace kiln::cpu
