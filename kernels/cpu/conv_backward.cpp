// Gradients of conv2d with respect to its input and its weight. float32 runs oneDNN's
// backward-data and backward-weights primitives in layouts of their choosing (cached like the
// forward's, with the reorders to and from the user's plain layouts); float16 and
// bfloat16 go through float32; float64 uses GEMM with col2im (input) or im2col (weight).
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <utility>
#include <unordered_map>
#include <vector>

#include "core/ops.h"
#include "kernels/cpu/conv.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/im2col.h"
#include "kernels/cpu/parallel.h"

namespace kiln::cpu {
namespace {

// --- float32: oneDNN ----------------------------------------------------------------------------

dnnl::engine& cpu_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

struct Descs {
  dnnl::memory::desc src, wei, dst;
  dnnl::memory::dims strides, dilates, padding;
};

// The user's plain layouts (nchw, oihw / goihw) or, with any_layout, format_tag::any so that
// oneDNN picks its own.
Descs descs_of(const Conv2dParams& p, bool any_layout) {
  using dnnl::memory;
  using tag = memory::format_tag;
  const auto f32 = memory::data_type::f32;
  Descs d;
  d.src = memory::desc({p.N, p.C, p.H, p.W}, f32, any_layout ? tag::any : tag::nchw);
  d.wei = p.groups == 1
              ? memory::desc({p.O, p.C, p.kH, p.kW}, f32, any_layout ? tag::any : tag::oihw)
              : memory::desc({p.groups, p.O / p.groups, p.C / p.groups, p.kH, p.kW}, f32,
                             any_layout ? tag::any : tag::goihw);
  d.dst = memory::desc({p.N, p.O, p.oH, p.oW}, f32, any_layout ? tag::any : tag::nchw);
  d.strides = {p.sH, p.sW};
  d.dilates = {p.dH - 1, p.dW - 1};  // oneDNN counts dilation from 0
  d.padding = {p.pH, p.pW};
  return d;
}

// The forward primitive descriptor oneDNN wants as a hint for the backward ones.
dnnl::convolution_forward::primitive_desc forward_hint(const Descs& d) {
  dnnl::convolution_forward::desc fd(dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, d.src,
                                     d.wei, d.dst, d.strides, d.dilates, d.padding, d.padding);
  return dnnl::convolution_forward::primitive_desc(fd, cpu_engine());
}

dnnl::primitive_attr user_scratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// One operand of a backward primitive: the user's plain layout, the layout the primitive chose
// and, where they differ, the reorder between them (user -> primitive for the two inputs,
// primitive -> user for the result).
struct Operand {
  dnnl::memory::desc user, prim;
  dnnl::reorder reorder;  // empty when user == prim
  dnnl::memory::desc scratch;

  Operand(const dnnl::memory::desc& user_md, const dnnl::memory::desc& prim_md, bool is_result)
      : user(user_md), prim(prim_md) {
    if (user == prim) return;
    const dnnl::memory::desc& from = is_result ? prim : user;
    const dnnl::memory::desc& to = is_result ? user : prim;
    dnnl::reorder::primitive_desc rd(cpu_engine(), from, cpu_engine(), to, user_scratchpad());
    scratch = rd.scratchpad_desc();
    reorder = dnnl::reorder(rd);
  }
};

// Inputs `a` (src for weights, weights for data) and `dy` (diff_dst), result `out` (diff_weights
// or diff_src). With plain nchw / oihw layouts oneDNN can only run its im2col + gemm
// implementation, whose backward weights is slow (and, for one input channel, erratic by two
// orders of magnitude on a loaded machine); with format_tag::any it picks its blocked direct
// kernels (jit:avx2 and up), and the operands are reordered around the primitive.
struct BackwardPrimitive {
  dnnl::primitive prim;
  Operand a, dy, out;
  dnnl::memory::desc scratch;
  size_t scratch_bytes;  // the largest of the primitive's and the reorders' scratchpads
};

std::shared_ptr<const BackwardPrimitive> make_backward(dnnl::primitive prim, const dnnl::memory::desc& scratch,
                                                       Operand a, Operand dy, Operand out) {
  auto bp = std::make_shared<BackwardPrimitive>(
      BackwardPrimitive{std::move(prim), std::move(a), std::move(dy), std::move(out), scratch, 0});
  for (const dnnl::memory::desc* s : {&bp->scratch, &bp->a.scratch, &bp->dy.scratch, &bp->out.scratch})
    bp->scratch_bytes = std::max(bp->scratch_bytes, s->get_size());
  return bp;
}

// Backward data keeps the plain layouts when the input has fewer channels than oneDNN's channel
// block (8 with AVX2): a blocked diff_src would be padded up to the block, and the im2col + gemm
// path is the faster one there (N=32, C=1, 28x28, 5x5: 0.8 ms against 2.2 ms on one thread).
std::shared_ptr<const BackwardPrimitive> create_backward_data(const Conv2dParams& p) {
  const Descs user = descs_of(p, false), any = descs_of(p, p.C >= 8);
  dnnl::convolution_backward_data::desc bd(dnnl::algorithm::convolution_direct, any.src, any.wei, any.dst,
                                           any.strides, any.dilates, any.padding, any.padding);
  dnnl::convolution_backward_data::primitive_desc pd(bd, user_scratchpad(), cpu_engine(), forward_hint(any));
  return make_backward(dnnl::convolution_backward_data(pd), pd.scratchpad_desc(),
                       Operand(user.wei, pd.weights_desc(), false), Operand(user.dst, pd.diff_dst_desc(), false),
                       Operand(user.src, pd.diff_src_desc(), true));
}

std::shared_ptr<const BackwardPrimitive> create_backward_weights(const Conv2dParams& p) {
  const Descs user = descs_of(p, false), any = descs_of(p, true);
  dnnl::convolution_backward_weights::desc bd(dnnl::algorithm::convolution_direct, any.src, any.wei, any.dst,
                                              any.strides, any.dilates, any.padding, any.padding);
  dnnl::convolution_backward_weights::primitive_desc pd(bd, user_scratchpad(), cpu_engine(), forward_hint(any));
  return make_backward(dnnl::convolution_backward_weights(pd), pd.scratchpad_desc(),
                       Operand(user.src, pd.src_desc(), false), Operand(user.dst, pd.diff_dst_desc(), false),
                       Operand(user.wei, pd.diff_weights_desc(), true));
}

// Created primitives keyed by every shape and parameter; each execution brings its own
// scratchpad and reorder buffers, so one primitive serves concurrent calls.
class BackwardPrimitiveCache {
 public:
  std::shared_ptr<const BackwardPrimitive> get(const Conv2dParams& p, bool weights) {
    std::vector<int64_t> key{p.N,  p.C,  p.H,  p.W,  p.O,  p.kH, p.kW,     p.oH,   p.oW,
                             p.sH, p.sW, p.pH, p.pW, p.dH, p.dW, p.groups, weights};
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = map_.find(key);
      if (it != map_.end()) return it->second;
    }
    auto made = weights ? create_backward_weights(p) : create_backward_data(p);
    std::lock_guard<std::mutex> lock(mu_);
    if (map_.size() >= kMaxEntries) map_.clear();  // bound memory under ever-changing shapes
    return map_.emplace(std::move(key), std::move(made)).first->second;
  }

 private:
  static constexpr size_t kMaxEntries = 512;
  std::mutex mu_;
  std::map<std::vector<int64_t>, std::shared_ptr<const BackwardPrimitive>> map_;
};

BackwardPrimitiveCache& backward_cache() {
  static BackwardPrimitiveCache* c = new BackwardPrimitiveCache();  // never destroyed: safe at exit
  return *c;
}

// All operands float32 and contiguous. weights: (src = input, diff_dst = grad_output) ->
// diff_weights; data: (weights, diff_dst) -> diff_src.
void backward_onednn(const Tensor& gy, const Tensor& other, const Tensor& out, const Conv2dParams& p, bool weights) {
  try {
    auto bp = backward_cache().get(p, weights);
    dnnl::engine& eng = cpu_engine();
    dnnl::stream s(eng);
    // One scratchpad serves every step: the stream runs them one after another.
    std::vector<char> scratch(bp->scratch_bytes);
    auto scratch_mem = [&](const dnnl::memory::desc& d) { return dnnl::memory(d, eng, scratch.data()); };
    // The user's buffer, or (when the layouts differ) a oneDNN-allocated one in the primitive's layout.
    auto bind = [&](const Operand& o, void* data) {
      dnnl::memory user(o.user, eng, data);
      if (!o.reorder) return std::pair{user, user};
      return std::pair{user, dnnl::memory(o.prim, eng)};
    };
    auto [a_user, a_prim] = bind(bp->a, other.data_ptr());
    auto [dy_user, dy_prim] = bind(bp->dy, gy.data_ptr());
    auto [out_user, out_prim] = bind(bp->out, out.data_ptr());
    for (auto [o, from, to] : {std::tuple{&bp->a, a_user, a_prim}, std::tuple{&bp->dy, dy_user, dy_prim}})
      if (o->reorder)
        o->reorder.execute(s,
                           {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}, {DNNL_ARG_SCRATCHPAD, scratch_mem(o->scratch)}});
    std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_DIFF_DST, dy_prim},
                                               {DNNL_ARG_SCRATCHPAD, scratch_mem(bp->scratch)}};
    args.emplace(weights ? DNNL_ARG_SRC : DNNL_ARG_WEIGHTS, a_prim);
    args.emplace(weights ? DNNL_ARG_DIFF_WEIGHTS : DNNL_ARG_DIFF_SRC, out_prim);
    bp->prim.execute(s, args);
    if (bp->out.reorder)
      bp->out.reorder.execute(
          s, {{DNNL_ARG_FROM, out_prim}, {DNNL_ARG_TO, out_user}, {DNNL_ARG_SCRATCHPAD, scratch_mem(bp->out.scratch)}});
    s.wait();
  } catch (const dnnl::error& e) {
    KILN_INTERNAL_ASSERT(false, "oneDNN convolution backward (", weights ? "weights" : "data", ") failed: ", e.what(),
                         " (status ", static_cast<int>(e.status), ")");
  }
}

// --- float64: GEMM with im2col / col2im ---------------------------------------------------------

// grad_input of image n, group g: col = W_g^T @ gy_ng, then col2im. Threads take whole (image,
// group) pairs, which write disjoint channel planes.
template <class T>
void backward_input_gemm(const Tensor& gy, const Tensor& w, const Tensor& dx, const Conv2dParams& p) {
  const int64_t G = p.groups, Cg = p.C / G, Og = p.O / G, L = p.oH * p.oW, Kd = Cg * p.kH * p.kW;
  const T* gp = gy.data_ptr<T>();
  const T* wp = w.data_ptr<T>();
  T* xp = dx.data_ptr<T>();
  const int64_t per_item = std::max<int64_t>(1, Og * L * Kd);
  parallel_for(p.N * G, std::max<int64_t>(1, 65536 / per_item), [&](int64_t t0, int64_t t1) {
    std::vector<T> col(static_cast<size_t>(Kd * L));
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / G, g = t % G;
      T* x = xp + (n * p.C + g * Cg) * p.H * p.W;
      std::fill(x, x + Cg * p.H * p.W, T(0));
      gemm(dtype_of<T>, Kd, L, Og, MatRef{wp + g * Og * Kd, 1, Kd}, MatRef{gp + (n * p.O + g * Og) * L, L, 1},
           col.data(), L, false);
      col2im<T>(col.data(), Cg, p, x);
    }
  });
}

// grad_weight of group g: sum over images of gy_ng @ col_ng^T. Threads take whole groups; a
// single group leaves the threads to the GEMM.
template <class T>
void backward_weight_gemm(const Tensor& gy, const Tensor& x, const Tensor& dw, const Conv2dParams& p) {
  const int64_t G = p.groups, Cg = p.C / G, Og = p.O / G, L = p.oH * p.oW, Kd = Cg * p.kH * p.kW;
  const T* gp = gy.data_ptr<T>();
  const T* xp = x.data_ptr<T>();
  T* wp = dw.data_ptr<T>();
  const int64_t per_group = std::max<int64_t>(1, p.N * Og * L * Kd);
  parallel_for(G, std::max<int64_t>(1, 65536 / per_group), [&](int64_t g0, int64_t g1) {
    std::vector<T> col(static_cast<size_t>(Kd * L));
    for (int64_t g = g0; g < g1; ++g) {
      T* out = wp + g * Og * Kd;
      for (int64_t n = 0; n < p.N; ++n) {
        im2col<T>(xp + (n * p.C + g * Cg) * p.H * p.W, Cg, p, col.data());
        gemm(dtype_of<T>, Og, Kd, L, MatRef{gp + (n * p.O + g * Og) * L, L, 1}, MatRef{col.data(), 1, L}, out, Kd,
             n > 0);
      }
    }
  });
}

enum class Wrt { Input, Weight };

// Casts, contiguity and the empty cases shared by both gradients; `other` is the weight (Wrt::Input)
// or the input (Wrt::Weight).
void conv_backward(const Tensor& grad_output, const Tensor& other, const Tensor& out_t, const Conv2dParams& p,
                   Wrt wrt) {
  Tensor out = out_t;
  if (out.numel() == 0) return;
  if (grad_output.numel() == 0 || other.numel() == 0) {
    out.zero_();  // no output positions (or no channels): nothing flows back
    return;
  }
  const DType dt = out.dtype();
  if (dt == DType::Float16 || dt == DType::BFloat16) {
    Tensor o32 = empty(out.sizes(), kFloat32);
    conv_backward(grad_output.to(kFloat32), other.to(kFloat32), o32, p, wrt);
    out.copy_(o32);
    return;
  }
  Tensor o = out.is_contiguous() ? out : empty(out.sizes(), dt);
  Tensor gy = grad_output.contiguous(), b = other.contiguous();
  switch (dt) {
    case DType::Float32: backward_onednn(gy, b, o, p, wrt == Wrt::Weight); break;
    case DType::Float64:
      if (wrt == Wrt::Input) backward_input_gemm<double>(gy, b, o, p);
      else backward_weight_gemm<double>(gy, b, o, p);
      break;
    default: KILN_FAIL("[conv2d_backward] expected a floating point grad_output, but got ", dt);
  }
  if (!o.is_same(out)) out.copy_(o);
}

}  // namespace

void conv2d_backward_input(const Tensor& grad_output, const Tensor& weight, const Tensor& grad_input,
                           const Conv2dParams& p) {
  conv_backward(grad_output, weight, grad_input, p, Wrt::Input);
}

void conv2d_backward_weight(const Tensor& grad_output, const Tensor& input, const Tensor& grad_weight,
                            const Conv2dParams& p) {
  conv_backward(grad_output, input, grad_weight, p, Wrt::Weight);
}

}  // namespace kiln::cpu
