// CPU kernels of the dim reductions (sum ... all/any): each casts its input where the row asks
// for a dtype, plans the reduction and runs an op of reduce_ops.h over it.
#include "kernels/cpu/reduce.h"

#include <algorithm>
#include <numeric>

#include "core/ops.h"
#include "core/shape.h"
#include "kernels/cpu/reduce_ops.h"

namespace kiln {

std::vector<bool> reduction_mask(std::string_view op, const Tensor& x, IntArrayRef dims) {
  std::vector<int64_t> w = wrap_dims(op, dims, x.dim());
  std::vector<bool> mask(static_cast<size_t>(x.dim()), dims.empty());
  if (x.dim() > 0)
    for (int64_t d : w) mask[static_cast<size_t>(d)] = true;
  return mask;
}

Shape reduced_shape(const Tensor& x, const std::vector<bool>& mask, bool keepdim) {
  Shape s;
  for (int64_t d = 0; d < x.dim(); ++d) {
    if (!mask[static_cast<size_t>(d)]) s.push_back(x.size(d));
    else if (keepdim) s.push_back(1);
  }
  return s;
}

namespace cpu {

ReducePlan make_reduce_plan(const Tensor& in, const std::vector<bool>& reduced) {
  struct Dim {
    int64_t size, in, out;
  };
  const int64_t nd = in.dim();
  // Output strides: contiguous over the kept dims in logical order.
  std::vector<int64_t> out_stride(static_cast<size_t>(nd), 0);
  int64_t acc = 1;
  for (int64_t d = nd - 1; d >= 0; --d) {
    if (reduced[d]) continue;
    out_stride[d] = acc;
    acc *= in.size(d);
  }
  std::vector<Dim> kept, red;
  ReducePlan p;
  for (int64_t d = 0; d < nd; ++d) {
    if (reduced[d]) p.n_red *= in.size(d);
    else p.n_out *= in.size(d);
    if (in.size(d) == 1) continue;
    (reduced[d] ? red : kept).push_back({in.size(d), in.stride(d), out_stride[d]});
  }
  // Memory order, outermost first; broadcast (stride 0) dims go outermost.
  auto key = [](int64_t s) { return s == 0 ? std::numeric_limits<int64_t>::max() : (s < 0 ? -s : s); };
  std::stable_sort(red.begin(), red.end(), [&](const Dim& a, const Dim& b) { return key(a.in) > key(b.in); });
  std::stable_sort(kept.begin(), kept.end(), [&](const Dim& a, const Dim& b) {
    return key(a.in) != key(b.in) ? key(a.in) > key(b.in) : a.out > b.out;
  });
  auto coalesce = [](std::vector<Dim>& v, bool with_out) {
    std::vector<Dim> r;
    for (const Dim& d : v) {
      if (!r.empty() && r.back().in == d.in * d.size && (!with_out || r.back().out == d.out * d.size)) {
        r.back() = {r.back().size * d.size, d.in, d.out};
        continue;
      }
      r.push_back(d);
    }
    v = std::move(r);
  };
  coalesce(red, false);
  coalesce(kept, true);
  if (red.empty()) red.push_back({1, 1, 0});
  KILN_INTERNAL_ASSERT(kept.size() <= kMaxReduceDims && red.size() <= kMaxReduceDims, "too many dims");
  for (const Dim& d : kept) {
    p.ksize.push_back(d.size);
    p.kin.push_back(d.in);
    p.kout.push_back(d.out);
  }
  for (const Dim& d : red) {
    p.rsize.push_back(d.size);
    p.rin.push_back(d.in);
  }
  return p;
}

namespace {

Tensor cast(const Tensor& x, DType dt) { return x.dtype() == dt ? x : x.to(dt); }

std::optional<DType> opt_dtype(const Attrs& a, size_t i) {
  return a.is_none(i) ? std::nullopt : std::optional<DType>(a.dtype(i));
}

template <template <class, class, class> class OpT>
void sum_like(const OpDef& op, const Tensor& x0, Tensor& out, IntArrayRef dims, std::optional<DType> dt,
              bool mean) {
  const Tensor x = dt ? cast(x0, *dt) : x0;
  const ReducePlan p = make_reduce_plan(x, reduction_mask(op.name, x, dims));
  with_contiguous_output(out, [&](Tensor& o) {
    KILN_DISPATCH_ALL_TYPES(x.dtype(), op.name, {
      using T = scalar_t;
      if constexpr (std::is_integral_v<T>) {
        if (o.dtype() == kInt64) {
          run_reduction(OpT<T, int64_t, int64_t>{o.data_ptr<int64_t>()}, p, x.data_ptr<T>());
        } else {
          run_reduction(OpT<T, int64_t, T>{o.data_ptr<T>()}, p, x.data_ptr<T>());
        }
      } else {
        using A = std::conditional_t<std::is_same_v<T, float> && std::is_same_v<OpT<T, float, T>, SumOp<T, float, T>>,
                                     double, opmath_t<T>>;
        OpT<T, A, T> f{o.data_ptr<T>()};
        if constexpr (std::is_same_v<OpT<T, A, T>, SumOp<T, A, T>>) {
          f.mean = mean;
          f.count = A(p.n_red);
        }
        run_reduction(f, p, x.data_ptr<T>());
      }
    });
  });
}

template <bool IsMax>
void extreme(const OpDef& op, const Tensor& x, Tensor& out, IntArrayRef dims) {
  const ReducePlan p = make_reduce_plan(x, reduction_mask(op.name, x, dims));
  with_contiguous_output(out, [&](Tensor& o) {
    KILN_DISPATCH_ALL_TYPES(x.dtype(), op.name,
                            { run_reduction(ExtremeOp<scalar_t, IsMax>{o.data_ptr<scalar_t>()}, p, x.data_ptr<scalar_t>()); });
  });
}

template <bool IsMax>
void arg_extreme(const OpDef& op, const Tensor& x, Tensor* values, Tensor& indices, std::optional<int64_t> dim) {
  // Without a dim the index is into the flattened tensor.
  const Tensor src = dim ? x : x.reshape({-1});
  const ReducePlan p = make_reduce_plan(src, dim ? reduction_mask(op.name, x, *dim) : std::vector<bool>{true});
  Tensor vals_c, idx_c = indices.is_contiguous() ? indices : empty(indices.sizes(), kInt64);
  if (values) vals_c = values->is_contiguous() ? *values : empty(values->sizes(), values->dtype());
  KILN_DISPATCH_ALL_TYPES(src.dtype(), op.name, {
    ArgOp<scalar_t, IsMax> f;
    f.values = values ? vals_c.data_ptr<scalar_t>() : nullptr;
    f.indices = idx_c.data_ptr<int64_t>();
    run_reduction(f, p, src.data_ptr<scalar_t>());
  });
  if (!idx_c.is_same(indices)) indices.copy_(idx_c);
  if (values && !vals_c.is_same(*values)) values->copy_(vals_c);
}

template <bool IsAll>
void all_any(const OpDef& op, const Tensor& x, Tensor& out, IntArrayRef dims) {
  const ReducePlan p = make_reduce_plan(x, reduction_mask(op.name, x, dims));
  with_contiguous_output(out, [&](Tensor& o) {
    KILN_DISPATCH_ALL_TYPES(x.dtype(), op.name,
                            { run_reduction(AllAnyOp<scalar_t, IsAll>{o.data_ptr<bool>()}, p, x.data_ptr<scalar_t>()); });
  });
}

void var_like(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a, bool take_sqrt) {
  const Tensor& x = in[0];
  const ReducePlan p = make_reduce_plan(x, reduction_mask(op.name, x, a.ints(0)));
  const bool two = out.size() == 2;
  Tensor v = out[0].is_contiguous() ? out[0] : empty(out[0].sizes(), out[0].dtype());
  Tensor m = two ? (out[1].is_contiguous() ? out[1] : empty(out[1].sizes(), out[1].dtype())) : Tensor();
  KILN_DISPATCH_FLOATING_TYPES(x.dtype(), op.name, {
    VarOp<scalar_t> f;
    f.var_out = v.data_ptr<scalar_t>();
    f.mean_out = two ? m.data_ptr<scalar_t>() : nullptr;
    f.correction = a.i(1);
    f.take_sqrt = take_sqrt;
    run_reduction(f, p, x.data_ptr<scalar_t>());
  });
  if (!v.is_same(out[0])) out[0].copy_(v);
  if (two && !m.is_same(out[1])) out[1].copy_(m);
}

}  // namespace

void sum_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  sum_like<SumOp>(op, in[0], out[0], a.ints(0), opt_dtype(a, 2), false);
}
void mean_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  sum_like<SumOp>(op, in[0], out[0], a.ints(0), out[0].dtype(), true);
}
void prod_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  sum_like<ProdOp>(op, in[0], out[0], a.ints(0), opt_dtype(a, 2), false);
}
void amax_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  extreme<true>(op, in[0], out[0], a.ints(0));
}
void amin_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  extreme<false>(op, in[0], out[0], a.ints(0));
}
void max_dim_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  arg_extreme<true>(op, in[0], &out[0], out[1], a.i(0));
}
void min_dim_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  arg_extreme<false>(op, in[0], &out[0], out[1], a.i(0));
}
void argmax_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  arg_extreme<true>(op, in[0], nullptr, out[0], a.is_none(0) ? std::nullopt : std::optional<int64_t>(a.i(0)));
}
void argmin_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  arg_extreme<false>(op, in[0], nullptr, out[0], a.is_none(0) ? std::nullopt : std::optional<int64_t>(a.i(0)));
}
void var_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  var_like(op, in, out, a, false);
}
void std_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  var_like(op, in, out, a, true);
}
void var_mean_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  var_like(op, in, out, a, false);
}
void logsumexp_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  const Tensor x = cast(in[0], out[0].dtype());
  const ReducePlan p = make_reduce_plan(x, reduction_mask(op.name, x, a.ints(0)));
  with_contiguous_output(out[0], [&](Tensor& o) {
    KILN_DISPATCH_FLOATING_TYPES(x.dtype(), op.name,
                                 { run_reduction(LogSumExpOp<scalar_t>{o.data_ptr<scalar_t>()}, p, x.data_ptr<scalar_t>()); });
  });
}
void all_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  all_any<true>(op, in[0], out[0], a.ints(0));
}
void any_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  all_any<false>(op, in[0], out[0], a.ints(0));
}

}  // namespace cpu
}  // namespace kiln
