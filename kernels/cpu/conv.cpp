#include "kernels/cpu/conv.h"

#include <oneapi/dnnl/dnnl.hpp>

#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "core/ops.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/im2col.h"
#include "kernels/cpu/parallel.h"

namespace kiln::cpu {
namespace {

// --- float32: oneDNN convolution primitive ------------------------------------------------------

dnnl::engine& cpu_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

struct ConvPrimitive {
  dnnl::convolution_forward prim;
  dnnl::memory::desc src, wei, bias, dst, scratch;
};

// Created primitives, keyed by every shape and parameter. Execution is thread-safe because each
// call brings its own scratchpad (scratchpad_mode::user).
class ConvPrimitiveCache {
 public:
  std::shared_ptr<const ConvPrimitive> get(const Conv2dParams& p, bool has_bias) {
    std::vector<int64_t> key{p.N,  p.C,  p.H,  p.W,  p.O,  p.kH, p.kW, p.oH,     p.oW,
                             p.sH, p.sW, p.pH, p.pW, p.dH, p.dW, p.groups, has_bias};
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = map_.find(key);
      if (it != map_.end()) return it->second;
    }
    auto made = create(p, has_bias);
    std::lock_guard<std::mutex> lock(mu_);
    if (map_.size() >= kMaxEntries) map_.clear();  // bound memory under ever-changing shapes
    return map_.emplace(std::move(key), std::move(made)).first->second;
  }

 private:
  static constexpr size_t kMaxEntries = 512;

  static std::shared_ptr<const ConvPrimitive> create(const Conv2dParams& p, bool has_bias) {
    using dnnl::memory;
    using tag = memory::format_tag;
    const auto f32 = memory::data_type::f32;
    auto cp = std::make_shared<ConvPrimitive>();
    cp->src = memory::desc({p.N, p.C, p.H, p.W}, f32, tag::nchw);
    cp->wei = p.groups == 1 ? memory::desc({p.O, p.C, p.kH, p.kW}, f32, tag::oihw)
                            : memory::desc({p.groups, p.O / p.groups, p.C / p.groups, p.kH, p.kW}, f32, tag::goihw);
    cp->bias = has_bias ? memory::desc({p.O}, f32, tag::x) : memory::desc();
    cp->dst = memory::desc({p.N, p.O, p.oH, p.oW}, f32, tag::nchw);
    dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                      cp->src, cp->wei, cp->bias, cp->dst, {p.sH, p.sW}, {p.dH - 1, p.dW - 1},
                                      {p.pH, p.pW}, {p.pH, p.pW});
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::convolution_forward::primitive_desc pd(d, attr, cpu_engine());
    cp->scratch = pd.scratchpad_desc();
    cp->prim = dnnl::convolution_forward(pd);
    return cp;
  }

  std::mutex mu_;
  std::map<std::vector<int64_t>, std::shared_ptr<const ConvPrimitive>> map_;
};

ConvPrimitiveCache& conv_cache() {
  static ConvPrimitiveCache* c = new ConvPrimitiveCache();  // never destroyed: safe at exit
  return *c;
}

// All tensors float32, contiguous; out contiguous.
void conv2d_onednn(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& out, const Conv2dParams& p) {
  try {
    auto cp = conv_cache().get(p, b.defined());
    dnnl::engine& eng = cpu_engine();
    dnnl::stream s(eng);
    std::vector<char> scratch(cp->scratch.get_size());
    std::unordered_map<int, dnnl::memory> args{
        {DNNL_ARG_SRC, dnnl::memory(cp->src, eng, x.data_ptr())},
        {DNNL_ARG_WEIGHTS, dnnl::memory(cp->wei, eng, w.data_ptr())},
        {DNNL_ARG_DST, dnnl::memory(cp->dst, eng, out.data_ptr())},
        {DNNL_ARG_SCRATCHPAD, dnnl::memory(cp->scratch, eng, scratch.data())}};
    if (b.defined()) args.emplace(DNNL_ARG_BIAS, dnnl::memory(cp->bias, eng, b.data_ptr()));
    cp->prim.execute(s, args);
    s.wait();
  } catch (const dnnl::error& e) {
    KILN_INTERNAL_ASSERT(false, "oneDNN convolution failed: ", e.what(), " (status ", static_cast<int>(e.status), ")");
  }
}

// --- float64: im2col + GEMM ---------------------------------------------------------------------

// x, w, b contiguous; out contiguous.
template <class T>
void conv2d_im2col(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& out, const Conv2dParams& p) {
  const int64_t G = p.groups, Cg = p.C / G, Og = p.O / G, L = p.oH * p.oW, Kd = Cg * p.kH * p.kW;
  const T* xp = x.data_ptr<T>();
  const T* wp = w.data_ptr<T>();
  const T* bp = b.defined() ? b.data_ptr<T>() : nullptr;
  T* op = out.data_ptr<T>();
  // Threads take whole (image, group) pairs; a lone pair lets the GEMM split its rows instead.
  const int64_t per_item = std::max<int64_t>(1, Og * L * Kd);
  parallel_for(p.N * G, std::max<int64_t>(1, 65536 / per_item), [&](int64_t t0, int64_t t1) {
    std::vector<T> col(static_cast<size_t>(Kd * L));
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / G, g = t % G;
      T* o = op + (n * p.O + g * Og) * L;
      if (bp) {
        for (int64_t oc = 0; oc < Og; ++oc)
          for (int64_t l = 0; l < L; ++l) o[oc * L + l] = bp[g * Og + oc];
      }
      im2col<T>(xp + (n * p.C + g * Cg) * p.H * p.W, Cg, p, col.data());
      gemm(dtype_of<T>, Og, L, Kd, MatRef{wp + g * Og * Kd, Kd, 1}, MatRef{col.data(), L, 1}, o, L, bp != nullptr);
    }
  });
}

}  // namespace

void conv2d(const Tensor& input, const Tensor& weight, const Tensor& bias, const Tensor& out_t, const Conv2dParams& p) {
  Tensor out = out_t;
  if (out.numel() == 0) return;
  const DType dt = out.dtype();
  if (input.numel() == 0 || weight.numel() == 0) {
    // Every window lies in the padding (or has no channels): the result is the bias.
    if (bias.defined()) out.copy_(bias.view({1, p.O, 1, 1}).expand(out.sizes()));
    else out.zero_();
    return;
  }
  if (dt == DType::Float16 || dt == DType::BFloat16) {
    Tensor o32 = empty(out.sizes(), kFloat32);
    conv2d(input.to(kFloat32), weight.to(kFloat32), bias.defined() ? bias.to(kFloat32) : Tensor(), o32, p);
    out.copy_(o32);
    return;
  }
  Tensor o = out.is_contiguous() ? out : empty(out.sizes(), dt);
  Tensor x = input.contiguous(), w = weight.contiguous(), b = bias.defined() ? bias.contiguous() : Tensor();
  switch (dt) {
    case DType::Float32: conv2d_onednn(x, w, b, o, p); break;
    case DType::Float64: conv2d_im2col<double>(x, w, b, o, p); break;
    default: KILN_FAIL("[conv2d] expected a floating point input, but got ", dt);
  }
  if (!o.is_same(out)) out.copy_(o);
}

}  // namespace kiln::cpu
