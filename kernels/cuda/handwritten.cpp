// CUDA kernels of the rows with data-dependent addressing and of the random rows
// (kernels/cuda/handwritten.cuh): index_select, embedding, gather, scatter, scatter_add, max/avg
// pooling and their backward rows, cumsum, uniform, normal, randint, bernoulli, dropout (the same
// numbers as the CPU kernels for the same seed and offset; randperm stays on the host). The source is compiled by NVRTC once per device (and cached on disk like every kernel).
// Index values are checked on the device before the launch (a reduction and one synchronisation),
// raising the CPU kernels' errors; dtypes a kernel has no version for go to the host fallback.
#include <map>
#include <mutex>

#include "autograd/grad_mode.h"
#include "core/cuda.h"
#include "core/ops.h"
#include "core/shape.h"
#include "fusion/nvrtc.h"
#include "kernels/cuda/cuda_kernels.h"

namespace kiln {

extern const char* const kHandwrittenCudaSource;  // the .cuh's text (generated at build time)

namespace {

constexpr int kCudaIdx = static_cast<int>(DeviceType::CUDA);

// Mirrors of the .cuh's parameter structs (plain data, passed by value).
struct KilnIndexGeom {
  long long size[8], data[8], other[8];
  long long rank, dim;
};
struct KilnPool {
  long long planes, H, W, oH, oW, kH, kW, sH, sW, pH, pW, dH, dW, count_include_pad;
};
struct KilnPhilox {
  unsigned long long seed, offset;
};

int device_of(const Tensor& t) { return t.device().index() < 0 ? 0 : t.device().index(); }

void* function(int device, const std::string& name) {
  static std::mutex mu;
  static auto* modules = new std::map<int, std::shared_ptr<cuda::Module>>();
  static auto* functions = new std::map<std::pair<int, std::string>, void*>();
  std::lock_guard<std::mutex> lock(mu);
  auto f = functions->find({device, name});
  if (f != functions->end()) return f->second;
  auto& m = (*modules)[device];
  if (!m) {
    auto bin = fusion::nvrtc_compile(kHandwrittenCudaSource, cuda::device_arch(device), {.name = "kiln_handwritten"});
    m = std::make_shared<cuda::Module>(device, bin->cubin);
  }
  void* fn = m->function(name);
  functions->emplace(std::make_pair(device, name), fn);
  return fn;
}

void launch(const Tensor& on, const std::string& name, int64_t work, std::vector<void*> args) {
  if (work <= 0) return;
  const int device = device_of(on);
  const int mp = cuda::multiprocessor_count(device);
  const int64_t blocks = std::min<int64_t>((work + 255) / 256, int64_t{mp} * 32);
  cuda::launch(cuda::current_stream(device), function(device, name), static_cast<uint32_t>(blocks), 256, 0, args.data());
}

uint64_t addr(const Tensor& t) { return reinterpret_cast<uint64_t>(t.data_ptr()); }

// Raises the CPU kernels' error when an index is outside [0, n) (one synchronisation).
void check_range(const OpDef& op, const Tensor& idx, int64_t n, int64_t dim) {
  if (idx.numel() == 0) return;
  Tensor bad = logical_or(idx.lt(Scalar(0)), idx.ge(Scalar(n)));
  if (!any(bad).item().to<bool>()) return;
  const bool negative = any(logical_and(bad, idx.lt(Scalar(0)))).item().to<bool>();
  const int64_t v = negative ? where(bad, idx, Scalar(0)).amin().item().to<int64_t>()
                             : where(bad, idx, Scalar(0)).amax().item().to<int64_t>();
  KILN_FAIL("[", op.name, "] index ", v, " is out of range for dimension ", dim, " with size ", n);
}

std::string move_suffix(DType t) { return std::to_string(itemsize(t)); }

void index_select_into(const OpDef& op, const Tensor& x, int64_t dim, const Tensor& index, Tensor& o) {
  const Tensor xc = x.contiguous(), idx = index.to(kInt64).reshape({-1}).contiguous();
  const int64_t n = xc.size(dim), m = idx.numel();
  check_range(op, idx, n, dim);
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= xc.size(d);
  for (int64_t d = dim + 1; d < xc.dim(); ++d) inner *= xc.size(d);
  uint64_t po = addr(o), px = addr(xc), pi = addr(idx);
  long long lo = outer, ln = n, lm = m, li = inner;
  launch(o, "kiln_index_select_" + move_suffix(o.dtype()), outer * m * inner, {&po, &px, &pi, &lo, &ln, &lm, &li});
}

void index_select_cuda(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  if (in[0].dim() == 0) return host_fallback(op, in, out, a);
  NoGradGuard no_grad;
  const int64_t dim = wrap_dim(op.name, a.i(0), in[0].dim());
  into_contiguous(out[0], [&](Tensor& o) { index_select_into(op, in[0], dim, in[1], o); });
}

void embedding_cuda(const OpDef& op, const TensorList& in, TensorList& out, const Attrs&) {
  NoGradGuard no_grad;
  into_contiguous(out[0], [&](Tensor& o) {
    Tensor o2 = o.view({-1, in[0].size(1)});
    index_select_into(op, in[0], 0, in[1], o2);
  });
}

KilnIndexGeom index_geom(const Tensor& index, const Tensor& data, const Tensor* other, int64_t dim) {
  KilnIndexGeom g{};
  g.rank = index.dim();
  g.dim = dim;
  for (int64_t d = 0; d < index.dim(); ++d) {
    g.size[d] = index.size(d);
    g.data[d] = data.stride(d);
    g.other[d] = other ? other->stride(d) : 0;
  }
  return g;
}

void gather_cuda(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  const Tensor& x = in[0];
  if (x.dim() == 0 || x.dim() > 8) return host_fallback(op, in, out, a);
  NoGradGuard no_grad;
  const int64_t dim = wrap_dim(op.name, a.i(0), x.dim());
  into_contiguous(out[0], [&](Tensor& o) {
    const Tensor xc = x.contiguous(), idx = in[1].to(kInt64).contiguous();
    if (idx.numel() == 0) return;
    check_range(op, idx, xc.size(dim), dim);
    KilnIndexGeom g = index_geom(idx, xc, nullptr, dim);
    uint64_t po = addr(o), px = addr(xc), pi = addr(idx);
    launch(o, "kiln_gather_" + move_suffix(o.dtype()), idx.numel(), {&po, &px, &pi, &g});
  });
}

// scatter (src or a value) and scatter_add: the target starts as a copy of self.
void scatter_cuda(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  const Tensor& self = in[0];
  const bool add = op.name == "scatter_add";
  const DType t = self.dtype();
  std::string kernel = "kiln_scatter_" + move_suffix(t);
  if (add) {
    kernel = t == kFloat32 ? "kiln_scatter_add_f32" : t == kFloat64 ? "kiln_scatter_add_f64"
             : t == kInt32 ? "kiln_scatter_add_i32" : t == kInt64 ? "kiln_scatter_add_u64" : "";
  }
  if (self.dim() == 0 || self.dim() > 8 || kernel.empty()) return host_fallback(op, in, out, a);
  NoGradGuard no_grad;
  const int64_t dim = wrap_dim(op.name, a.i(0), self.dim());
  into_contiguous(out[0], [&](Tensor& o) {
    if (!o.is_same(self)) o.copy_(self);
    const Tensor idx = in[1].to(kInt64).contiguous();
    if (idx.numel() == 0) return;
    check_range(op, idx, o.size(dim), dim);
    Tensor src = in.size() == 3 ? in[2].contiguous() : full({}, a.scalar(1), t, o.device()).expand(idx.sizes());
    KilnIndexGeom g = index_geom(idx, o, &src, dim);
    uint64_t po = addr(o), ps = reinterpret_cast<uint64_t>(src.impl()->data()), pi = addr(idx);
    launch(o, kernel, idx.numel(), {&po, &ps, &pi, &g});
  });
}

std::string float_suffix(DType t) { return t == kFloat32 ? "f32" : t == kFloat64 ? "f64" : ""; }

// [planes, H, W] geometry from the input's sizes and the output's (which infer computed).
KilnPool pool_geom(IntArrayRef x, IntArrayRef y, const Attrs& a, bool has_dilation) {
  const size_t nd = x.size();
  KilnPool p{};
  p.H = x[nd - 2], p.W = x[nd - 1], p.oH = y[nd - 2], p.oW = y[nd - 1];
  p.planes = shape_numel(x) / std::max<int64_t>(p.H * p.W, 1);
  const Shape &k = a.ints(0), &s = a.ints(1), &pad = a.ints(2);
  p.kH = k[0], p.kW = k[1], p.sH = s[0], p.sW = s[1], p.pH = pad[0], p.pW = pad[1];
  p.dH = has_dilation ? a.ints(3)[0] : 1;
  p.dW = has_dilation ? a.ints(3)[1] : 1;
  p.count_include_pad = has_dilation ? 0 : a.b(4);
  return p;
}

void max_pool_cuda(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  const std::string sfx = float_suffix(in[0].dtype());
  if (sfx.empty()) return host_fallback(op, in, out, a);
  NoGradGuard no_grad;
  const bool indices = op.name == "max_pool2d_indices";
  into_contiguous(out[0], [&](Tensor& o) {
    const Tensor x = in[0].contiguous();
    KilnPool p = pool_geom(x.sizes(), o.sizes(), a, true);
    uint64_t pv = indices ? 0 : addr(o), pi = indices ? addr(o) : 0, px = addr(x);
    launch(o, "kiln_max_pool2d_" + std::string(indices ? float_suffix(x.dtype()) : sfx), p.planes * p.oH * p.oW,
           {&pv, &pi, &px, &p});
  });
}

void max_pool_backward_cuda(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  const std::string sfx = float_suffix(in[0].dtype());
  if (sfx.empty()) return host_fallback(op, in, out, a);
  NoGradGuard no_grad;
  const Shape& size = a.ints(0);
  const int64_t HW = size[size.size() - 2] * size[size.size() - 1];
  into_contiguous(out[0], [&](Tensor& o) {
    const Tensor dy = in[0].contiguous(), ind = in[1].contiguous();
    Tensor bad = logical_or(ind.lt(Scalar(-1)), ind.ge(Scalar(HW)));
    KILN_CHECK(ind.numel() == 0 || !any(bad).item().to<bool>(), "[", op.name,
               "] an index is out of range for an input plane of ", HW, " elements");
    o.zero_();
    const int64_t planes = shape_numel(size) / std::max<int64_t>(HW, 1);
    const int64_t ohw = dy.numel() / std::max<int64_t>(planes, 1);
    uint64_t px = addr(o), pg = addr(dy), pi = addr(ind);
    long long lp = planes, lo = ohw, lh = HW;
    launch(o, "kiln_max_pool2d_backward_" + sfx, planes * ohw, {&px, &pg, &pi, &lp, &lo, &lh});
  });
}

void avg_pool_cuda(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  const std::string sfx = float_suffix(in[0].dtype());
  if (sfx.empty()) return host_fallback(op, in, out, a);
  NoGradGuard no_grad;
  into_contiguous(out[0], [&](Tensor& o) {
    const Tensor x = in[0].contiguous();
    KilnPool p = pool_geom(x.sizes(), o.sizes(), a, false);
    uint64_t po = addr(o), px = addr(x);
    launch(o, "kiln_avg_pool2d_" + sfx, p.planes * p.oH * p.oW, {&po, &px, &p});
  });
}

void avg_pool_backward_cuda(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  const std::string sfx = float_suffix(in[0].dtype());
  if (sfx.empty()) return host_fallback(op, in, out, a);
  NoGradGuard no_grad;
  into_contiguous(out[0], [&](Tensor& o) {
    const Tensor dy = in[0].contiguous();
    KilnPool p = pool_geom(o.sizes(), dy.sizes(), a, false);
    uint64_t px = addr(o), pg = addr(dy);
    launch(o, "kiln_avg_pool2d_backward_" + sfx, p.planes * p.H * p.W, {&px, &pg, &p});
  });
}

void cumsum_cuda(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  const DType t = out[0].dtype();
  const std::string sfx = t == kInt64 ? "i64" : float_suffix(t);
  if (sfx.empty() || in[0].dim() == 0) return host_fallback(op, in, out, a);
  NoGradGuard no_grad;
  const int64_t dim = wrap_dim(op.name, a.i(0), in[0].dim());
  into_contiguous(out[0], [&](Tensor& o) {
    const Tensor x = in[0].to(t).contiguous();
    int64_t outer = 1, inner = 1;
    for (int64_t d = 0; d < dim; ++d) outer *= x.size(d);
    for (int64_t d = dim + 1; d < x.dim(); ++d) inner *= x.size(d);
    uint64_t po = addr(o), px = addr(x);
    long long lo = outer, ln = x.size(dim), li = inner;
    launch(o, "kiln_cumsum_" + sfx, outer * inner, {&po, &px, &lo, &ln, &li});
  });
}

// ---- random rows: the CPU kernels' numbers (handwritten.cuh) -------------------------------------

KilnPhilox key_at(const Attrs& a, size_t i) {
  return KilnPhilox{static_cast<unsigned long long>(a.i(i)), static_cast<unsigned long long>(a.i(i + 1))};
}

// uniform and normal: <kernel>_<f32|f64>(out, n, key, p, q[, to]), p and q in the output's type.
void float_random(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a, const std::string& kernel,
                  double p, double q, bool with_to) {
  const std::string sfx = float_suffix(out[0].dtype());
  if (sfx.empty()) return host_fallback(op, in, out, a);
  into_contiguous(out[0], [&](Tensor& o) {
    KilnPhilox key = key_at(a, 2);
    uint64_t po = addr(o);
    long long n = o.numel();
    double to = a.d(5), p64 = p, q64 = q;
    float p32 = static_cast<float>(p), q32 = static_cast<float>(q);
    const bool f32 = o.dtype() == kFloat32;
    std::vector<void*> args = {&po, &n, &key, f32 ? static_cast<void*>(&p32) : &p64, f32 ? static_cast<void*>(&q32) : &q64};
    if (with_to) args.push_back(&to);
    launch(o, kernel + "_" + sfx, n, std::move(args));
  });
}

// uniform: attrs (sizes, dtype, seed, offset, from, to); the kernel takes from, to - from, to.
void uniform_cuda(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  float_random(op, in, out, a, "kiln_uniform", a.d(4), a.d(5) - a.d(4), true);
}

// normal: attrs (sizes, dtype, seed, offset, mean, std).
void normal_cuda(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  float_random(op, in, out, a, "kiln_normal", a.d(4), a.d(5), false);
}

void randint_cuda(const OpDef&, const TensorList&, TensorList& out, const Attrs& a) {
  NoGradGuard no_grad;
  Tensor values = empty(out[0].sizes(), TensorOptions(kInt64).device(out[0].device()));
  KilnPhilox key = key_at(a, 2);
  uint64_t po = addr(values);
  long long n = values.numel(), low = a.i(4);
  unsigned long long range = static_cast<unsigned long long>(a.i(5)) - static_cast<unsigned long long>(a.i(4));
  launch(values, "kiln_randint_i64", n, {&po, &n, &key, &low, &range});
  out[0].copy_(values);
}

void bernoulli_scalar_cuda(const OpDef&, const TensorList&, TensorList& out, const Attrs& a) {
  NoGradGuard no_grad;
  Tensor bits = empty(out[0].sizes(), TensorOptions(kUInt8).device(out[0].device()));
  KilnPhilox key = key_at(a, 2);
  uint64_t po = addr(bits);
  long long n = bits.numel();
  unsigned long long thr = static_cast<unsigned long long>(a.d(4) * 4294967296.0);
  launch(bits, "kiln_bernoulli_scalar_u8", n, {&po, &n, &key, &thr});
  out[0].copy_(bits);
}

void bernoulli_cuda(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  const std::string sfx = float_suffix(in[0].dtype());
  if (sfx.empty()) return host_fallback(op, in, out, a);
  NoGradGuard no_grad;
  const Tensor p = in[0].contiguous();
  const int64_t count = p.numel();
  if (count > 0) {
    Tensor flat = p.reshape({-1});
    Tensor bad = logical_not(logical_and(flat.ge(Scalar(0)), flat.le(Scalar(1))));
    if (any(bad).item().to<bool>()) {
      Tensor iota = arange(count, TensorOptions(kInt64)).to(p.device());
      const int64_t at = where(bad, iota, Scalar(count)).amin().item().to<int64_t>();
      KILN_FAIL("[", op.name, "] expected all elements of p to be in [0, 1], but got ", flat[at].item().to<double>(),
                " at index ", at);
    }
  }
  into_contiguous(out[0], [&](Tensor& o) {
    KilnPhilox key = key_at(a, 0);
    uint64_t po = addr(o), pp = addr(p);
    long long n = count;
    launch(o, "kiln_bernoulli_" + sfx, n, {&po, &pp, &n, &key});
  });
}

void dropout_cuda(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  const std::string sfx = float_suffix(in[0].dtype());
  if (sfx.empty()) return host_fallback(op, in, out, a);
  NoGradGuard no_grad;
  into_contiguous(out[0], [&](Tensor& o) {
    const Tensor x = in[0].contiguous();
    const double p = a.d(0);
    KilnPhilox key{static_cast<unsigned long long>(a.i(1)), static_cast<unsigned long long>(a.i(2))};
    uint64_t po = addr(o), px = addr(x);
    long long n = x.numel();
    unsigned long long thr = static_cast<unsigned long long>(p * 4294967296.0);
    if (x.dtype() == kFloat32) {
      float scale = static_cast<float>(1.0 / (1.0 - p));
      launch(o, "kiln_dropout_f32", n, {&po, &px, &n, &key, &thr, &scale});
    } else {
      double scale = 1.0 / (1.0 - p);
      launch(o, "kiln_dropout_f64", n, {&po, &px, &n, &key, &thr, &scale});
    }
  });
}

}  // namespace

const char* handwritten_cuda_source() { return kHandwrittenCudaSource; }

// Without NVRTC the hand-written kernels cannot be compiled: the rows run on the host.
template <KernelFn K>
void or_host(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  if (!fusion::nvrtc_available()) return host_fallback(op, in, out, a);
  K(op, in, out, a);
}

namespace ops_registration {
void register_cuda_handwritten_kernels(OpRegistry& r) {
  r.mutable_get("index_select").kernels[kCudaIdx] = &or_host<&index_select_cuda>;
  r.mutable_get("embedding").kernels[kCudaIdx] = &or_host<&embedding_cuda>;
  r.mutable_get("gather").kernels[kCudaIdx] = &or_host<&gather_cuda>;
  r.mutable_get("scatter").kernels[kCudaIdx] = &or_host<&scatter_cuda>;
  r.mutable_get("scatter_add").kernels[kCudaIdx] = &or_host<&scatter_cuda>;
  r.mutable_get("max_pool2d").kernels[kCudaIdx] = &or_host<&max_pool_cuda>;
  r.mutable_get("max_pool2d_indices").kernels[kCudaIdx] = &or_host<&max_pool_cuda>;
  r.mutable_get("max_pool2d_backward").kernels[kCudaIdx] = &or_host<&max_pool_backward_cuda>;
  r.mutable_get("avg_pool2d").kernels[kCudaIdx] = &or_host<&avg_pool_cuda>;
  r.mutable_get("avg_pool2d_backward").kernels[kCudaIdx] = &or_host<&avg_pool_backward_cuda>;
  r.mutable_get("cumsum").kernels[kCudaIdx] = &or_host<&cumsum_cuda>;
  r.mutable_get("uniform").kernels[kCudaIdx] = &or_host<&uniform_cuda>;
  r.mutable_get("normal").kernels[kCudaIdx] = &or_host<&normal_cuda>;
  r.mutable_get("randint").kernels[kCudaIdx] = &or_host<&randint_cuda>;
  r.mutable_get("bernoulli_scalar").kernels[kCudaIdx] = &or_host<&bernoulli_scalar_cuda>;
  r.mutable_get("bernoulli").kernels[kCudaIdx] = &or_host<&bernoulli_cuda>;
  r.mutable_get("dropout").kernels[kCudaIdx] = &or_host<&dropout_cuda>;
}
}  // namespace ops_registration

}  // namespace kiln
