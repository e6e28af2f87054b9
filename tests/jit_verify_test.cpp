// options.verify: the captured graph also runs as captured (the eager reference) and the first
// op whose output differs from the compiled plan's is reported.
#include <gtest/gtest.h>

#include <atomic>

#include "core/op.h"
#include "kiln/kiln.h"
#include "test_util.h"

using namespace kiln;

namespace {

// A row whose kernel returns a different number on every run: the reference run and the compiled
// run of one call disagree, as a miscompiled node would.
std::atomic<int> g_runs{0};

const OpDef& drifting_row() {
  static const OpDef& row = [] () -> const OpDef& {
    OpDef d;
    d.name = "test_drift";
    d.kind = OpKind::Opaque;
    d.differentiable = false;
    d.infer = [](const OpDef&, const TensorList& in, const Attrs&) {
      return std::vector<TensorMeta>{{in.at(0).sizes().vec(), in.at(0).dtype(), in.at(0).device()}};
    };
    d.kernels[static_cast<int>(DeviceType::CPU)] = [](const OpDef&, const TensorList& in, TensorList& out,
                                                      const Attrs&) {
      Tensor x = in[0].contiguous();
      const float* p = x.data_ptr<float>();
      float* o = out[0].data_ptr<float>();
      const float shift = static_cast<float>(g_runs.fetch_add(1));
      for (int64_t i = 0; i < x.numel(); ++i) o[i] = p[i] + shift;
    };
    return OpRegistry::instance().add(std::move(d));
  }();
  return row;
}

TEST(JitVerify, ReportsTheFirstDivergingNode) {
  jit::reset();
  auto f = [](const Tensor& x) { return call_op1(drifting_row(), {x.exp()}) * 2; };
  auto cf = jit::compile(f, {.verify = true});
  Tensor x = zeros({3});
  EXPECT_KILN_ERROR(cf(x), "test_drift");
  EXPECT_KILN_ERROR(cf(x), "diverges from eager");
}

TEST(JitVerify, AgreeingPlansPass) {
  jit::reset();
  auto f = [](const Tensor& x, const Tensor& y) { return ((x * 1.0 + 0.0).t().t() * y).softmax(-1).sum(0); };
  // The interpreter runs eager's kernels: bit for bit the same.
  auto exact = jit::compile(f, {.verify = true, .verify_rtol = 0, .verify_atol = 0, .backend = jit::Backend::Interpreter});
  // Fused kernels sum in another order: equal within the default tolerances.
  auto fused = jit::compile(f, {.verify = true});
  Tensor x = randn({4, 5}), y = randn({4, 5});
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(allclose(exact(x, y), f(x, y)));
    EXPECT_TRUE(allclose(fused(x, y), f(x, y)));
  }
}

}  // namespace
