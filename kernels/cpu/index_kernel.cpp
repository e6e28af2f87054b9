#include "kernels/cpu/index_kernel.h"

#include <algorithm>
#include <array>
#include <climits>
#include <cstring>
#include <mutex>

#include "core/ops.h"
#include "core/shape.h"
#include "kernels/cpu/parallel.h"

namespace kiln::cpu {
namespace {

// --- shared helpers -----------------------------------------------------------------------------

// Sizes and element strides, with a 0-dim tensor seen as [1] (PyTorch's ensure_nonempty_dim).
struct Geom {
  Shape sizes, strides;
};
Geom nonempty_geom(const Tensor& t) {
  if (t.dim() == 0) return {{1}, {1}};
  return {t.sizes().vec(), t.strides().vec()};
}

// Walks a row-major multi-index over `sizes`, keeping each operand's element offset.
template <int N>
struct Odometer {
  const Shape& sizes;
  std::array<const Shape*, N> strides;
  Shape idx;
  std::array<int64_t, N> off{};

  Odometer(const Shape& s, std::array<const Shape*, N> st, int64_t start) : sizes(s), strides(st), idx(s.size(), 0) {
    for (int64_t d = static_cast<int64_t>(sizes.size()) - 1; d >= 0; --d) {
      idx[d] = start % sizes[d];
      start /= sizes[d];
      for (int k = 0; k < N; ++k) off[k] += idx[d] * (*strides[k])[d];
    }
  }
  void next() {
    for (int64_t d = static_cast<int64_t>(sizes.size()) - 1; d >= 0; --d) {
      ++idx[d];
      for (int k = 0; k < N; ++k) off[k] += (*strides[k])[d];
      if (idx[d] < sizes[d]) return;
      for (int k = 0; k < N; ++k) off[k] -= (*strides[k])[d] * sizes[d];
      idx[d] = 0;
    }
  }
};

// Drops size-1 dims and merges neighbours that step through memory as one.
void coalesce(Shape& sizes, Shape& strides) {
  Shape s, st;
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] == 1) continue;
    if (!s.empty() && st.back() == strides[d] * sizes[d]) {
      s.back() *= sizes[d];
      st.back() = strides[d];
      continue;
    }
    s.push_back(sizes[d]);
    st.push_back(strides[d]);
  }
  sizes = std::move(s);
  strides = std::move(st);
}

// Copies a strided block into contiguous memory.
template <class T>
void copy_block(T* __restrict dst, const T* __restrict src, const int64_t* sizes, const int64_t* strides, int nd) {
  if (nd == 0) {
    *dst = *src;
    return;
  }
  if (nd == 1) {
    const int64_t n = sizes[0], s = strides[0];
    if (s == 1) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(T));
    else
      for (int64_t i = 0; i < n; ++i) dst[i] = src[i * s];
    return;
  }
  const int64_t inner = shape_numel(IntArrayRef(sizes + 1, static_cast<size_t>(nd - 1)));
  for (int64_t i = 0; i < sizes[0]; ++i) copy_block(dst + i * inner, src + i * strides[0], sizes + 1, strides + 1, nd - 1);
}

// Runs f.template operator()<T>() with an unsigned type of the element size (data movement only).
template <class F>
void dispatch_itemsize(const OpDef& op, DType dt, F&& f) {
  switch (itemsize(dt)) {
    case 1: f.template operator()<uint8_t>(); break;
    case 2: f.template operator()<uint16_t>(); break;
    case 4: f.template operator()<uint32_t>(); break;
    case 8: f.template operator()<uint64_t>(); break;
    default: KILN_FAIL("[", op.name, "] unsupported dtype ", dt);
  }
}

template <class F>
void dispatch_index(const OpDef& op, DType dt, F&& f) {
  if (dt == DType::Int64) f.template operator()<int64_t>();
  else if (dt == DType::Int32) f.template operator()<int32_t>();
  else KILN_FAIL("[", op.name, "] expected an index tensor of dtype int64 or int32, got ", dt);
}

void copy_into(Tensor& dst, const Tensor& src) {
  const OpDef& c = KILN_ROW("copy");
  TensorList outs{dst};
  c.kernels[static_cast<int>(DeviceType::CPU)](c, {src}, outs, Attrs{dst.dtype()});
}

// The first out-of-range index met by any thread (lowest position wins, so serial runs are
// deterministic); raised after the parallel region, since exceptions cannot cross it.
struct BadIndex {
  std::mutex m;
  bool hit = false;
  int64_t pos = INT64_MAX, value = 0;
  void record(int64_t p, int64_t v) {
    std::lock_guard<std::mutex> g(m);
    if (!hit || p < pos) {
      hit = true;
      pos = p;
      value = v;
    }
  }
};

// --- cat ----------------------------------------------------------------------------------------

}  // namespace

void cat_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  Tensor& o = out[0];
  if (o.numel() == 0) return;
  const Tensor* first = nullptr;
  for (const Tensor& t : in)
    if (!cat_should_skip(t)) { first = &t; break; }
  KILN_INTERNAL_ASSERT(first != nullptr, "cat with a non-empty output but no inputs");
  const int64_t dim = wrap_dim(op.name, a.i(0), first->dim());
  const int64_t outer = shape_numel(IntArrayRef(o.sizes().data(), static_cast<size_t>(dim)));
  const int64_t inner = o.numel() / outer / o.size(dim);
  const int64_t out_row = o.size(dim) * inner;  // elements of one outer row of the output

  // Contiguous inputs of the output dtype are copied as blocks; the others through the copy kernel.
  struct Part {
    const char* src;
    int64_t row, off;  // elements per outer row, element offset inside the output row
  };
  std::vector<Part> parts;
  std::vector<std::pair<const Tensor*, int64_t>> slow;
  int64_t off = 0;
  for (const Tensor& t : in) {
    if (cat_should_skip(t)) continue;
    const int64_t len = t.size(dim);
    if (t.numel() > 0) {
      if (t.is_contiguous() && t.dtype() == o.dtype())
        parts.push_back({static_cast<const char*>(t.impl()->data()), len * inner, off * inner});
      else
        slow.emplace_back(&t, off);
    }
    off += len;
  }
  if (!parts.empty()) {
    dispatch_itemsize(op, o.dtype(), [&]<class T>() {
      T* obase = static_cast<T*>(o.impl()->data());
      auto copy = [](T* __restrict dst, const T* __restrict src, int64_t n) {
        if (n >= 16) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(T));
        else
          for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
      };
      // Elements [lo, hi) of output row r.
      auto row_range = [&](int64_t r, int64_t lo, int64_t hi) {
        for (const Part& p : parts) {
          const int64_t s = std::max(lo, p.off), t = std::min(hi, p.off + p.row);
          if (s < t) copy(obase + r * out_row + s, reinterpret_cast<const T*>(p.src) + r * p.row + s - p.off, t - s);
        }
      };
      // Split the output's elements evenly. Whole rows go part by part (short blocks, as in
      // stack on the last dim, then run as tight strided loops); partial rows at the ends.
      parallel_for(outer * out_row, kParallelGrain, [&](int64_t b, int64_t e) {
        const int64_t rf = (b + out_row - 1) / out_row, rl = e / out_row;
        if (rf > rl) {
          row_range(b / out_row, b % out_row, e - (b / out_row) * out_row);
          return;
        }
        if (b < rf * out_row) row_range(rf - 1, b - (rf - 1) * out_row, out_row);
        for (const Part& p : parts) {
          const T* src = reinterpret_cast<const T*>(p.src);
          if (p.row == 1) {
            T* __restrict dst = obase + p.off;
            for (int64_t r = rf; r < rl; ++r) dst[r * out_row] = src[r];
          } else {
            for (int64_t r = rf; r < rl; ++r) copy(obase + r * out_row + p.off, src + r * p.row, p.row);
          }
        }
        if (rl * out_row < e) row_range(rl, 0, e - rl * out_row);
      });
    });
  }
  for (const auto& [t, start] : slow) {
    Tensor dst = o.narrow(dim, start, t->size(dim));
    copy_into(dst, *t);
  }
}

// --- index_select / embedding -------------------------------------------------------------------

namespace {

template <class I>
void check_indices(const OpDef& op, const I* p, int64_t n, int64_t dim, int64_t size) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = p[i];
    KILN_CHECK(v >= 0 && v < size, "[", op.name, "] index ", v, " is out of range for dimension ", dim,
               " with size ", size);
  }
}

// out (contiguous) = self.index_select(dim, idx), laid out as [outer, nidx, inner].
template <class T, class I>
void index_select_run(const Tensor& self, int64_t dim, const I* idx, int64_t nidx, Tensor& out) {
  Geom g = nonempty_geom(self);
  const Shape outer_s(g.sizes.begin(), g.sizes.begin() + dim), outer_st(g.strides.begin(), g.strides.begin() + dim);
  Shape in_s(g.sizes.begin() + dim + 1, g.sizes.end()), in_st(g.strides.begin() + dim + 1, g.strides.end());
  const int64_t inner = shape_numel(in_s), outer = shape_numel(outer_s);
  const int64_t rows = outer * nidx;
  if (rows == 0 || inner == 0) return;
  coalesce(in_s, in_st);
  const int nd_in = static_cast<int>(in_s.size());
  const int64_t sd = g.strides[dim];
  const T* base = static_cast<const T*>(self.impl()->data());
  T* obase = static_cast<T*>(out.impl()->data());
  parallel_for(rows, std::max<int64_t>(1, kParallelGrain / inner), [&](int64_t b, int64_t e) {
    Odometer<1> od(outer_s, {&outer_st}, b / nidx);
    // Rows [r, r + n) share one outer position; j is the index position within it.
    for (int64_t r = b, j = b % nidx; r < e; j = 0, od.next()) {
      const int64_t n = std::min(nidx - j, e - r);
      const T* src = base + od.off[0];
      T* dst = obase + r * inner;
      if (nd_in == 0) {
        for (int64_t q = 0; q < n; ++q) dst[q] = src[static_cast<int64_t>(idx[j + q]) * sd];
      } else {
        for (int64_t q = 0; q < n; ++q) {
          const T* row = src + static_cast<int64_t>(idx[j + q]) * sd;
          if (nd_in == 1 && in_st[0] == 1) std::memcpy(dst + q * inner, row, static_cast<size_t>(inner) * sizeof(T));
          else copy_block(dst + q * inner, row, in_s.data(), in_st.data(), nd_in);
        }
      }
      r += n;
    }
  });
}

void index_select_impl(const OpDef& op, const Tensor& self, int64_t dim, const Tensor& index, Tensor& out) {
  const Tensor idx = index.contiguous();
  const int64_t size = self.dim() == 0 ? 1 : self.size(dim);
  dispatch_index(op, idx.dtype(), [&]<class I>() {
    const I* ip = static_cast<const I*>(idx.impl()->data());
    check_indices(op, ip, idx.numel(), dim, size);
    dispatch_itemsize(op, self.dtype(), [&]<class T>() { index_select_run<T, I>(self, dim, ip, idx.numel(), out); });
  });
}

}  // namespace

void index_select_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  index_select_impl(op, in[0], wrap_dim(op.name, a.i(0), in[0].dim()), in[1], out[0]);
}

void embedding_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs&) {
  index_select_impl(op, in[0], 0, in[1], out[0]);
}

// --- gather / scatter ---------------------------------------------------------------------------

namespace {

// Iteration of gather/scatter over the index's positions. Operand a is the tensor indexed along
// `dim` (self for gather, the output for scatter); i the index; c the index-shaped tensor (the
// output for gather, src for scatter). Outside `dim` all three share the index's coordinates.
// The innermost dim L (when it is not `dim`) is walked in runs, so the loop over k (along dim)
// sits outside a unit-stride loop over L.
struct SGLoop {
  int64_t dim = 0, n = 0, K = 0, nL = 1, positions = 0;
  int64_t a_d = 0, i_d = 0, c_d = 0, a_l = 0, i_l = 0, c_l = 0;
  Shape outer;
  std::array<Shape, 3> outer_st;
};

SGLoop make_sg(const Geom& ga, const Geom& gi, const Geom& gc, int64_t dim) {
  SGLoop s;
  const int64_t nd = static_cast<int64_t>(gi.sizes.size());
  s.dim = dim;
  s.n = ga.sizes[dim];
  s.K = gi.sizes[dim];
  s.a_d = ga.strides[dim];
  s.i_d = gi.strides[dim];
  s.c_d = gc.strides[dim];
  const int64_t L = nd - 1;
  const bool runs = L != dim;
  if (runs) {
    s.nL = gi.sizes[L];
    s.a_l = ga.strides[L];
    s.i_l = gi.strides[L];
    s.c_l = gc.strides[L];
  }
  for (int64_t d = 0; d < nd; ++d) {
    if (d == dim || (runs && d == L)) continue;
    s.outer.push_back(gi.sizes[d]);
    s.outer_st[0].push_back(ga.strides[d]);
    s.outer_st[1].push_back(gi.strides[d]);
    s.outer_st[2].push_back(gc.strides[d]);
  }
  s.positions = s.K == 0 ? 0 : shape_numel(gi.sizes) / s.K;
  return s;
}

// body(off_a, off_i, off_c, l0, len, position) -> false to stop (bad index recorded).
template <class Body>
void sg_for_each(const SGLoop& s, Body&& body) {
  if (s.positions == 0) return;
  parallel_for(s.positions, std::max<int64_t>(1, kParallelGrain / s.K), [&](int64_t b, int64_t e) {
    int64_t p = b;
    Odometer<3> od(s.outer, {&s.outer_st[0], &s.outer_st[1], &s.outer_st[2]}, p / s.nL);
    int64_t l0 = p % s.nL;
    while (p < e) {
      const int64_t len = std::min(s.nL - l0, e - p);
      if (!body(od.off[0], od.off[1], od.off[2], l0, len, p)) return;
      p += len;
      l0 = 0;
      od.next();
    }
  });
}

// scatter_add's sum in the element type; integers wrap around on overflow, as in PyTorch.
template <class T>
T add_wrapping(T x, T v) {
  if constexpr (std::is_same_v<T, bool>) {
    return x || v;
  } else if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;
    return static_cast<T>(static_cast<U>(static_cast<U>(x) + static_cast<U>(v)));
  } else {
    return T(static_cast<opmath_t<T>>(x) + static_cast<opmath_t<T>>(v));
  }
}

[[noreturn]] void raise_bad(const OpDef& op, const BadIndex& bad, const SGLoop& s) {
  KILN_FAIL("[", op.name, "] index ", bad.value, " is out of bounds for dimension ", s.dim, " with size ", s.n);
}

// scatter / scatter_add: out = self, then out[index along dim] (op)= src.
template <class Apply>
void scatter_run(const OpDef& op, const Tensor& index, const Tensor& src, bool src_is_value, int64_t dim, Tensor& o,
                 Apply&& apply_typed) {
  Geom ga = nonempty_geom(o), gi = nonempty_geom(index), gc = nonempty_geom(src);
  if (src_is_value) gc = {gi.sizes, Shape(gi.sizes.size(), 0)};
  SGLoop s = make_sg(ga, gi, gc, dim);
  BadIndex bad;
  dispatch_index(op, index.dtype(), [&]<class I>() {
    const I* ibase = static_cast<const I*>(index.impl()->data());
    apply_typed([&]<class T>(auto&& combine) {
      T* abase = static_cast<T*>(o.impl()->data());
      const T* cbase = static_cast<const T*>(src.impl()->data());
      sg_for_each(s, [&](int64_t oa, int64_t oi, int64_t oc, int64_t l0, int64_t len, int64_t p) {
        if (s.nL == 1) {  // dim is the innermost: one loop along it
          const I* ip = ibase + oi;
          const T* cp = cbase + oc;
          T* ap = abase + oa;
          for (int64_t k = 0; k < s.K; ++k) {
            const int64_t v = ip[k * s.i_d];
            if (v < 0 || v >= s.n) {
              bad.record(p, v);
              return false;
            }
            ap[v * s.a_d] = combine(ap[v * s.a_d], cp[k * s.c_d]);
          }
          return true;
        }
        for (int64_t k = 0; k < s.K; ++k) {
          const I* ip = ibase + oi + k * s.i_d;
          const T* cp = cbase + oc + k * s.c_d;
          for (int64_t l = l0; l < l0 + len; ++l) {
            const int64_t v = ip[l * s.i_l];
            if (v < 0 || v >= s.n) {
              bad.record(p, v);
              return false;
            }
            T& dst = abase[oa + v * s.a_d + l * s.a_l];
            dst = combine(dst, cp[l * s.c_l]);
          }
        }
        return true;
      });
    });
  });
  if (bad.hit) raise_bad(op, bad, s);
}

}  // namespace

void gather_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  const Tensor& self = in[0];
  const Tensor& index = in[1];
  Tensor& o = out[0];
  if (index.numel() == 0) return;
  const int64_t dim = wrap_dim(op.name, a.i(0), self.dim());
  SGLoop s = make_sg(nonempty_geom(self), nonempty_geom(index), nonempty_geom(o), dim);
  BadIndex bad;
  dispatch_index(op, index.dtype(), [&]<class I>() {
    const I* ibase = static_cast<const I*>(index.impl()->data());
    dispatch_itemsize(op, self.dtype(), [&]<class T>() {
      const T* abase = static_cast<const T*>(self.impl()->data());
      T* cbase = static_cast<T*>(o.impl()->data());
      sg_for_each(s, [&](int64_t oa, int64_t oi, int64_t oc, int64_t l0, int64_t len, int64_t p) {
        if (s.nL == 1) {  // dim is the innermost: one loop along it
          const I* ip = ibase + oi;
          const T* ap = abase + oa;
          T* cp = cbase + oc;
          for (int64_t k = 0; k < s.K; ++k) {
            const int64_t v = ip[k * s.i_d];
            if (v < 0 || v >= s.n) {
              bad.record(p, v);
              return false;
            }
            cp[k * s.c_d] = ap[v * s.a_d];
          }
          return true;
        }
        for (int64_t k = 0; k < s.K; ++k) {
          const I* ip = ibase + oi + k * s.i_d;
          T* cp = cbase + oc + k * s.c_d;
          for (int64_t l = l0; l < l0 + len; ++l) {
            const int64_t v = ip[l * s.i_l];
            if (v < 0 || v >= s.n) {
              bad.record(p, v);
              return false;
            }
            cp[l * s.c_l] = abase[oa + v * s.a_d + l * s.a_l];
          }
        }
        return true;
      });
    });
  });
  if (bad.hit) raise_bad(op, bad, s);
}

// inputs: self, index, [src]; attrs: dim, value (a Scalar when there is no src).
void scatter_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  Tensor& o = out[0];
  copy_into(o, in[0]);
  const Tensor& index = in[1];
  if (index.numel() == 0) return;
  const int64_t dim = wrap_dim(op.name, a.i(0), in[0].dim());
  const bool has_src = in.size() == 3;
  const Tensor src = has_src ? in[2] : full({}, a.scalar(1), o.dtype(), o.device());
  scatter_run(op, index, src, !has_src, dim, o, [&](auto&& run) {
    dispatch_itemsize(op, o.dtype(), [&]<class T>() { run.template operator()<T>([](T, T v) { return v; }); });
  });
}

void scatter_add_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  Tensor& o = out[0];
  copy_into(o, in[0]);
  const Tensor& index = in[1];
  if (index.numel() == 0) return;
  const int64_t dim = wrap_dim(op.name, a.i(0), in[0].dim());
  scatter_run(op, index, in[2], false, dim, o, [&](auto&& run) {
    KILN_DISPATCH_ALL_TYPES(o.dtype(), op.name, {
      using T = scalar_t;
      run.template operator()<T>([](T x, T v) { return add_wrapping(x, v); });
    });
  });
}

// --- one_hot ------------------------------------------------------------------------------------

// Values were range-checked by the row's infer (which also fixed num_classes).
void one_hot_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs&) {
  Tensor& o = out[0];
  const Tensor idx = in[0].contiguous();
  const int64_t n = idx.numel();
  const int64_t C = o.dim() == 0 ? 0 : o.size(-1);
  if (o.numel() == 0) return;
  int64_t* obase = o.data_ptr<int64_t>();
  dispatch_index(op, idx.dtype(), [&]<class I>() {
    const I* ip = static_cast<const I*>(idx.impl()->data());
    parallel_for(n, std::max<int64_t>(1, kParallelGrain / C), [&](int64_t b, int64_t e) {
      std::memset(obase + b * C, 0, static_cast<size_t>((e - b) * C) * sizeof(int64_t));
      for (int64_t i = b; i < e; ++i) obase[i * C + static_cast<int64_t>(ip[i])] = 1;
    });
  });
}

// --- tril / triu ----------------------------------------------------------------------------------

namespace {

void tri_kernel(const OpDef& op, const Tensor& x, Tensor& o, int64_t k, bool lower) {
  if (o.numel() == 0) return;
  const int64_t nd = x.dim(), M = x.size(-2), N = x.size(-1);
  k = std::clamp<int64_t>(k, -(M + 1), N + 1);  // no overflow below; beyond these every row is alike
  const Shape rows_s(x.sizes().begin(), x.sizes().end() - 1), rows_st(x.strides().begin(), x.strides().end() - 1);
  const int64_t sN = x.stride(nd - 1);
  const int64_t rows = o.numel() / N;
  dispatch_itemsize(op, x.dtype(), [&]<class T>() {
    const T* base = static_cast<const T*>(x.impl()->data());
    T* obase = static_cast<T*>(o.impl()->data());
    parallel_for(rows, std::max<int64_t>(1, kParallelGrain / N), [&](int64_t b, int64_t e) {
      Odometer<1> od(rows_s, {&rows_st}, b);
      for (int64_t r = b; r < e; ++r) {
        const int64_t i = r % M;
        // Columns [c0, c1) are kept, the rest zeroed (all-zero bits are zero in every dtype).
        const int64_t c0 = lower ? 0 : std::clamp<int64_t>(i + k, 0, N);
        const int64_t c1 = lower ? std::clamp<int64_t>(i + k + 1, 0, N) : N;
        T* dst = obase + r * N;
        const T* src = base + od.off[0];
        if (c0 > 0) std::memset(dst, 0, static_cast<size_t>(c0) * sizeof(T));
        if (c1 < N) std::memset(dst + c1, 0, static_cast<size_t>(N - c1) * sizeof(T));
        if (sN == 1) {
          if (c1 > c0) std::memcpy(dst + c0, src + c0, static_cast<size_t>(c1 - c0) * sizeof(T));
        } else {
          for (int64_t j = c0; j < c1; ++j) dst[j] = src[j * sN];
        }
        od.next();
      }
    });
  });
}

}  // namespace

void tril_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  tri_kernel(op, in[0], out[0], a.i(0), true);
}
void triu_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  tri_kernel(op, in[0], out[0], a.i(0), false);
}

}  // namespace kiln::cpu
