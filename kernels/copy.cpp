// Rows "copy" (dtype conversion / materialisation) and "fill".
#include <cstring>

#include "core/op.h"
#include "core/ops.h"
#include "kernels/cpu/loops.h"

namespace kiln {
namespace {

template <class D, class S>
void copy_run(char** p, const int64_t* s, int64_t n) {
  if (s[0] == sizeof(D) && s[1] == sizeof(S)) {
    D* __restrict o = reinterpret_cast<D*>(p[0]);
    const S* __restrict a = reinterpret_cast<const S*>(p[1]);
    if constexpr (std::is_same_v<D, S>) {
      std::memcpy(o, a, static_cast<size_t>(n) * sizeof(D));
    } else {
      for (int64_t i = 0; i < n; ++i) o[i] = convert<D>(a[i]);
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i)
    *reinterpret_cast<D*>(p[0] + i * s[0]) = convert<D>(*reinterpret_cast<const S*>(p[1] + i * s[1]));
}

// out[...] = convert(in[0]) with in[0] broadcast to out's shape.
void copy_cpu(const OpDef& op, const TensorList& in, TensorList& out, const Attrs&) {
  const Tensor& src = in[0];
  Tensor& dst = out[0];
  cpu::StridedIter it = cpu::make_iter(dst, {src});
  KILN_DISPATCH_ALL_TYPES(dst.dtype(), op.name, {
    using D = scalar_t;
    KILN_DISPATCH_ALL_TYPES(src.dtype(), op.name, {
      cpu::for_each_run(it, [](char** p, const int64_t* s, int64_t n) { copy_run<D, scalar_t>(p, s, n); });
    });
  });
}

std::vector<TensorMeta> copy_infer(const OpDef&, const TensorList& in, const Attrs& a) {
  return {TensorMeta{in[0].sizes().vec(), a.dtype(0), in[0].device()}};
}

template <class T>
void fill_run(char** p, const int64_t* s, int64_t n, T v) {
  if (s[0] == sizeof(T)) {
    T* __restrict o = reinterpret_cast<T*>(p[0]);
    for (int64_t i = 0; i < n; ++i) o[i] = v;
  } else {
    for (int64_t i = 0; i < n; ++i) *reinterpret_cast<T*>(p[0] + i * s[0]) = v;
  }
}

void fill_cpu(const OpDef& op, const TensorList&, TensorList& out, const Attrs& a) {
  Tensor& dst = out[0];
  const Scalar& v = a.scalar(0);
  cpu::StridedIter it = cpu::make_iter(dst, {});
  KILN_DISPATCH_ALL_TYPES(dst.dtype(), op.name, {
    scalar_t value = v.to<scalar_t>();
    cpu::for_each_run(it, [value](char** p, const int64_t* s, int64_t n) { fill_run<scalar_t>(p, s, n, value); });
  });
}

std::vector<TensorMeta> fill_infer(const OpDef&, const TensorList&, const Attrs& a) {
  return {TensorMeta{a.ints(1), a.dtype(2), Device(kCPU)}};
}

}  // namespace

namespace ops_registration {
void register_copy_ops(OpRegistry& r) {
  OpDef copy;
  copy.name = "copy";
  copy.kind = OpKind::Pointwise;  // a cast: fusion treats it as an elementwise conversion
  copy.infer = &copy_infer;
  copy.kernels[static_cast<int>(DeviceType::CPU)] = &copy_cpu;
  copy.arity = 1;
  copy.attr_names = {"dtype"};
  r.add(std::move(copy));

  OpDef fill;
  fill.name = "fill";
  fill.kind = OpKind::Factory;
  fill.infer = &fill_infer;
  fill.kernels[static_cast<int>(DeviceType::CPU)] = &fill_cpu;
  fill.differentiable = false;
  fill.attr_names = {"value", "sizes", "dtype"};
  r.add(std::move(fill));
}
}  // namespace ops_registration

}  // namespace kiln
