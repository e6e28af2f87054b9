#include "kernels/cpu/onednn_conv.h"

#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "core/error.h"

namespace kiln::cpu::onednn {
namespace {

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

dnnl::primitive_attr user_scratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
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
  return dnnl::convolution_forward::primitive_desc(fd, engine());
}

// One operand: the user's plain layout, the layout the primitive chose and, where they differ,
// the reorder between them (user -> primitive for inputs, primitive -> user for the result).
struct Operand {
  int arg = 0;
  dnnl::memory::desc user, prim;
  dnnl::reorder reorder;  // empty when user == prim
  dnnl::memory::desc scratch;

  Operand(int arg_id, const dnnl::memory::desc& user_md, const dnnl::memory::desc& prim_md, bool is_result)
      : arg(arg_id), user(user_md), prim(prim_md) {
    if (user == prim) return;
    const dnnl::memory::desc& from = is_result ? prim : user;
    const dnnl::memory::desc& to = is_result ? user : prim;
    dnnl::reorder::primitive_desc rd(engine(), from, engine(), to, user_scratchpad());
    scratch = rd.scratchpad_desc();
    reorder = dnnl::reorder(rd);
  }
};

struct Primitive {
  dnnl::primitive prim;
  dnnl::memory::desc scratch;
  Operand a, b, out;
  dnnl::memory::desc bias;  // forward with a bias only (plain, never reordered)
  size_t scratch_bytes = 0; // the largest of the primitive's and the reorders' scratchpads
};

std::shared_ptr<const Primitive> make(dnnl::primitive prim, const dnnl::memory::desc& scratch, Operand a, Operand b,
                                      Operand out, const dnnl::memory::desc& bias = {}) {
  auto made = std::make_shared<Primitive>(
      Primitive{std::move(prim), scratch, std::move(a), std::move(b), std::move(out), bias, 0});
  for (const dnnl::memory::desc* s : {&made->scratch, &made->a.scratch, &made->b.scratch, &made->out.scratch})
    made->scratch_bytes = std::max(made->scratch_bytes, s->get_size());
  return made;
}

// Where oneDNN may choose layouts: everywhere but backward data with fewer input channels than
// its channel block (8 with AVX2), where a blocked diff_src would be padded up to the block and
// the plain im2col + gemm path is faster (N=32, C=1, 28x28, 3x3: 0.18-0.30 ms against 0.53 ms).
// Measured on 2 threads (GOMP_SPINCOUNT=20000), chosen against plain layouts: forward C=16
// 14x14 0.37 ms against 0.65 ms, C=1 28x28 0.13-0.19 ms against 0.23 ms; backward weights with
// plain layouts ran gemm, which for one input channel stalled for hundreds of ms per call on a
// loaded machine.
bool any_layout(ConvPass pass, const Conv2dParams& p) { return pass != ConvPass::BackwardData || p.C >= 8; }

std::shared_ptr<const Primitive> create(ConvPass pass, const Conv2dParams& p, bool has_bias) {
  const Descs user = descs_of(p, false), d = descs_of(p, any_layout(pass, p));
  switch (pass) {
    case ConvPass::Forward: {
      const dnnl::memory::desc bias =
          has_bias ? dnnl::memory::desc({p.O}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::x)
                   : dnnl::memory::desc();
      dnnl::convolution_forward::desc fd(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                         d.src, d.wei, bias, d.dst, d.strides, d.dilates, d.padding, d.padding);
      dnnl::convolution_forward::primitive_desc pd(fd, user_scratchpad(), engine());
      return make(dnnl::convolution_forward(pd), pd.scratchpad_desc(), Operand(DNNL_ARG_SRC, user.src, pd.src_desc(), false),
                  Operand(DNNL_ARG_WEIGHTS, user.wei, pd.weights_desc(), false),
                  Operand(DNNL_ARG_DST, user.dst, pd.dst_desc(), true), bias);
    }
    case ConvPass::BackwardData: {
      dnnl::convolution_backward_data::desc bd(dnnl::algorithm::convolution_direct, d.src, d.wei, d.dst, d.strides,
                                               d.dilates, d.padding, d.padding);
      dnnl::convolution_backward_data::primitive_desc pd(bd, user_scratchpad(), engine(), forward_hint(d));
      return make(dnnl::convolution_backward_data(pd), pd.scratchpad_desc(),
                  Operand(DNNL_ARG_WEIGHTS, user.wei, pd.weights_desc(), false),
                  Operand(DNNL_ARG_DIFF_DST, user.dst, pd.diff_dst_desc(), false),
                  Operand(DNNL_ARG_DIFF_SRC, user.src, pd.diff_src_desc(), true));
    }
    case ConvPass::BackwardWeights: {
      dnnl::convolution_backward_weights::desc bd(dnnl::algorithm::convolution_direct, d.src, d.wei, d.dst,
                                                  d.strides, d.dilates, d.padding, d.padding);
      dnnl::convolution_backward_weights::primitive_desc pd(bd, user_scratchpad(), engine(), forward_hint(d));
      return make(dnnl::convolution_backward_weights(pd), pd.scratchpad_desc(),
                  Operand(DNNL_ARG_SRC, user.src, pd.src_desc(), false),
                  Operand(DNNL_ARG_DIFF_DST, user.dst, pd.diff_dst_desc(), false),
                  Operand(DNNL_ARG_DIFF_WEIGHTS, user.wei, pd.diff_weights_desc(), true));
    }
  }
  KILN_INTERNAL_ASSERT(false, "unknown convolution pass");
  return nullptr;
}

// Created primitives keyed by every shape and parameter.
class PrimitiveCache {
 public:
  std::shared_ptr<const Primitive> get(ConvPass pass, const Conv2dParams& p, bool has_bias) {
    std::vector<int64_t> key{p.N,  p.C,  p.H,  p.W,  p.O,  p.kH,     p.kW,     p.oH,
                             p.oW, p.sH, p.sW, p.pH, p.pW, p.dH,     p.dW,     p.groups,
                             has_bias, static_cast<int64_t>(pass)};
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = map_.find(key);
      if (it != map_.end()) return it->second;
    }
    auto made = create(pass, p, has_bias);
    std::lock_guard<std::mutex> lock(mu_);
    if (map_.size() >= kMaxEntries) map_.clear();  // bound memory under ever-changing shapes
    return map_.emplace(std::move(key), std::move(made)).first->second;
  }

 private:
  static constexpr size_t kMaxEntries = 1024;
  std::mutex mu_;
  std::map<std::vector<int64_t>, std::shared_ptr<const Primitive>> map_;
};

PrimitiveCache& cache() {
  static PrimitiveCache* c = new PrimitiveCache();  // never destroyed: safe at exit
  return *c;
}

const char* pass_name(ConvPass pass) {
  switch (pass) {
    case ConvPass::Forward: return "forward";
    case ConvPass::BackwardData: return "backward data";
    case ConvPass::BackwardWeights: return "backward weights";
  }
  return "?";
}

}  // namespace

void run_conv(ConvPass pass, const Conv2dParams& p, const void* a, const void* b, const void* bias, void* out) {
  try {
    auto cp = cache().get(pass, p, bias != nullptr);
    dnnl::engine& eng = engine();
    dnnl::stream s(eng);
    // One scratchpad serves every step: the stream runs them one after another.
    std::vector<char> scratch(cp->scratch_bytes);
    auto scratch_mem = [&](const dnnl::memory::desc& d) { return dnnl::memory(d, eng, scratch.data()); };
    std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SCRATCHPAD, scratch_mem(cp->scratch)}};
    // The caller's buffer, or (when the layouts differ) a oneDNN-allocated one in the primitive's
    // layout, filled by the reorder for inputs.
    auto bind_input = [&](const Operand& o, const void* data) {
      dnnl::memory user(o.user, eng, const_cast<void*>(data));
      if (!o.reorder) return args.emplace(o.arg, user), void();
      dnnl::memory prim(o.prim, eng);
      o.reorder.execute(s, {{DNNL_ARG_FROM, user}, {DNNL_ARG_TO, prim}, {DNNL_ARG_SCRATCHPAD, scratch_mem(o.scratch)}});
      args.emplace(o.arg, prim);
    };
    bind_input(cp->a, a);
    bind_input(cp->b, b);
    if (bias) args.emplace(DNNL_ARG_BIAS, dnnl::memory(cp->bias, eng, const_cast<void*>(bias)));
    dnnl::memory out_user(cp->out.user, eng, out);
    dnnl::memory out_prim = cp->out.reorder ? dnnl::memory(cp->out.prim, eng) : out_user;
    args.emplace(cp->out.arg, out_prim);
    cp->prim.execute(s, args);
    if (cp->out.reorder)
      cp->out.reorder.execute(
          s, {{DNNL_ARG_FROM, out_prim}, {DNNL_ARG_TO, out_user}, {DNNL_ARG_SCRATCHPAD, scratch_mem(cp->out.scratch)}});
    s.wait();
  } catch (const dnnl::error& e) {
    KILN_INTERNAL_ASSERT(false, "oneDNN convolution ", pass_name(pass), " failed: ", e.what(), " (status ",
                         static_cast<int>(e.status), ")");
  }
}

}  // namespace kiln::cpu::onednn
