// The CUDA renderer and NVRTC compiler (fusion/cuda_render.h, fusion/nvrtc.h, docs/cuda.md) and the
// driver loader (core/cuda_driver.h).
//
// No GPU needed: every kernel the fusion backend makes of the registry's pointwise ops (each dtype),
// casts, reductions and normalisations, of the fusion suite's graphs (chains, softmax and
// layer_norm written out, broadcast/strided views, a GEMM epilogue, an Adam step; constant and
// symbolic sizes), of hand-built kernels covering every ExprOp x dtype and ReduceOp x strategy, and
// of a fuzzer corpus of random kernel IR, is rendered to CUDA C and compiled by NVRTC for sm_80 and
// sm_90: no error and an empty log (no warning). The generated code's structure is checked: one
// __global__ per distinct kernel, 128-bit loads and stores exactly where the layout allows them (in
// the source and in the PTX), warp shuffles and block barriers where the strategy needs them.
//
// With a GPU (kiln::cuda::is_available()): the same kernels run on it through the driver API on
// random inputs and their results are compared with the CPU (LLVM) kernels' — bitwise for the
// kernels whose operations are exactly rounded on both sides, within float tolerances otherwise;
// the vector kernels also run on misaligned buffers (the scalar fallback). Without one, those tests
// skip saying why. Built without the CUDA toolkit, everything but the driver checks skips.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>

#include "core/cuda_driver.h"
#include "fusion/codegen.h"
#include "core/profiler.h"
#include "fusion/nvrtc.h"
#include "kiln/kiln.h"
#include "test_util.h"

#if KILN_HAS_CUDA_TOOLKIT
#include "core/half.h"
#include "core/op.h"
#include "fusion/cuda_render.h"
#include "fusion/partition.h"
#include "fusion_kernel_builder.h"
#include "jit/interpreter.h"
#include "jit/passes.h"
#include "jit/tracer.h"
#endif

using namespace kiln;

namespace {

// ---- the driver loader: meaningful on every machine ----------------------------------------------

TEST(CudaDriver, ReportsWhetherADeviceIsUsable) {
  if (!cuda::is_available()) {
    EXPECT_FALSE(cuda::unavailable_reason().empty());
    EXPECT_KILN_ERROR(cuda::device_arch(0), "[cuda] CUDA is not available");
    EXPECT_KILN_ERROR(cuda::DeviceBuffer(0, 64), "[cuda] CUDA is not available");
    EXPECT_KILN_ERROR(cuda::Module(0, "not a module"), "[cuda]");
    GTEST_SKIP() << "no usable CUDA driver/device here (" << cuda::unavailable_reason()
                 << "); checked that the API raises clear errors";
  }
  EXPECT_TRUE(cuda::unavailable_reason().empty());
  ASSERT_GE(cuda::device_count(), 1);
  EXPECT_GE(cuda::device_arch(0), 50);
  EXPECT_FALSE(cuda::device_name(0).empty());
  EXPECT_GT(cuda::multiprocessor_count(0), 0);
  EXPECT_GT(cuda::driver_version(), 0);
  EXPECT_KILN_ERROR(cuda::device_arch(cuda::device_count()), "[cuda] device", "does not exist");
  cuda::DeviceBuffer b(0, 16);
  float in[4] = {1, 2, 3, 4}, out[4] = {};
  b.copy_from_host(in, sizeof in);
  b.copy_to_host(out, sizeof out);
  EXPECT_EQ(std::memcmp(in, out, sizeof in), 0);
  EXPECT_KILN_ERROR(b.copy_from_host(in, 32), "[cuda] copy of 32 bytes into a device buffer of 16 bytes");
}

#if !KILN_HAS_CUDA_TOOLKIT

TEST(CudaCodegen, SkippedWithoutToolkit) {
  EXPECT_FALSE(fusion::nvrtc_available());
  EXPECT_KILN_ERROR(fusion::nvrtc_compile("", 90), "[nvrtc] NVRTC is not available", "without the CUDA toolkit");
  GTEST_SKIP() << "kiln was built without the CUDA toolkit (KILN_WITH_CUDA=OFF or none found): no CUDA renderer to test";
}

#else  // KILN_HAS_CUDA_TOOLKIT

using fusion::CudaKernel;
using fusion::CudaStrategy;
using fusion::ExprOp;
using fusion::Kernel;
using fusion::ReduceOp;
using KB = kiln::testing::KernelBuilder;

constexpr int kArchs[] = {80, 90};

// A private cache directory per test (every compile runs NVRTC). KILN_DUMP_DIR is left as the
// caller set it (`KILN_DUMP_DIR=d test_cuda_codegen` writes every translation unit and its PTX).
class CudaCodegen : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fusion::nvrtc_available()) GTEST_SKIP() << "NVRTC could not be loaded: " << fusion::nvrtc_unavailable_reason();
    char tmpl[] = "/tmp/kiln_cuda_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    setenv("KILN_CACHE_DIR", dir_.c_str(), 1);
    const char* dump = std::getenv("KILN_DUMP_DIR");
    dump_ = dump ? std::optional<std::string>(dump) : std::nullopt;
  }
  void TearDown() override {
    unsetenv("KILN_CACHE_DIR");
    if (dump_)
      setenv("KILN_DUMP_DIR", dump_->c_str(), 1);
    else
      unsetenv("KILN_DUMP_DIR");
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  std::string dir_;
  std::optional<std::string> dump_;
};

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

// The text of one kernel's entry in PTX (from ".entry <symbol>" to the next entry).
std::string ptx_of(const std::string& ptx, const std::string& symbol) {
  const size_t at = ptx.find(".entry " + symbol + "(");
  if (at == std::string::npos) return "";
  return ptx.substr(at, ptx.find(".entry ", at + 1) - at);
}

// Renders the kernels into one translation unit and compiles it for sm_80 and sm_90, expecting no
// warning, one __global__ per distinct kernel and an entry for each in the PTX. Returns the
// rendered kernels and the sm_90 binary.
struct Compiled {
  std::vector<CudaKernel> kernels;
  std::string source;
  std::shared_ptr<const fusion::CudaBinary> sm90;
};
Compiled render_and_compile(const std::vector<Kernel>& kernels, const std::string& name) {
  Compiled c;
  std::set<std::string> symbols;
  for (const Kernel& k : kernels) {
    c.kernels.push_back(fusion::render_cuda(k));
    symbols.insert(c.kernels.back().symbol);
  }
  c.source = fusion::cuda_translation_unit(c.kernels);
  EXPECT_EQ(count(c.source, "__global__"), symbols.size()) << "one __global__ per distinct kernel";
  // Both architectures at once: NVRTC is thread-safe, and this is most of the suite's time.
  std::vector<std::future<std::shared_ptr<const fusion::CudaBinary>>> jobs;
  for (int arch : kArchs)
    jobs.push_back(std::async(std::launch::async, [&, arch] { return fusion::nvrtc_compile(c.source, arch, {.name = name}); }));
  for (size_t j = 0; j < jobs.size(); ++j) {
    const int arch = kArchs[j];
    std::shared_ptr<const fusion::CudaBinary> bin;
    try {
      bin = jobs[j].get();
    } catch (const Error& e) {
      ADD_FAILURE() << name << " for sm_" << arch << ": " << std::string(e.what()).substr(0, 20000);
      continue;
    }
    EXPECT_EQ(bin->log, "") << name << " for sm_" << arch << ": NVRTC warned";
    EXPECT_FALSE(bin->cubin.empty());
    EXPECT_NE(bin->ptx.find(".target sm_" + std::to_string(arch)), std::string::npos);
    for (const std::string& s : symbols) EXPECT_NE(ptx_of(bin->ptx, s), "") << s << " missing from the PTX";
    if (arch == 90) c.sm90 = bin;
  }
  return c;
}

// ---- kernels from graphs ---------------------------------------------------------------------------

// The fused kernels of what `body` computes (captured as a jit graph, passes run, fused). `body`
// returns the tensors that stay alive (the graph's outputs); the segment then runs eagerly.
std::vector<Kernel> fused_kernels(const std::function<TensorList()>& body, bool dynamic = false, int* externs = nullptr) {
  std::vector<Kernel> out;
  jit::Tracer tracer([&](jit::Segment& seg) {
    jit::Graph g = jit::run_pipeline(seg.graph);
    fusion::FusionResult fr = fusion::fuse(g, fusion::FusionOptions{dynamic});
    if (externs) *externs += fr.externs;
    for (const jit::Node& n : fr.graph.nodes)
      if (n.kind == jit::NodeKind::Fused) out.push_back(n.fused->ir);
    jit::Plan eager(seg.graph);
    eager.run(seg.bindings, seg.outputs);
  });
  TensorList keep;
  try {
    jit::TraceScope scope(&tracer);
    keep = body();
  } catch (...) {
    tracer.abandon("the test body raised");
    throw;
  }
  tracer.flush();
  return out;
}

// Made outside the captured calls (inside, random ops would be graph nodes).
Tensor sample(const Shape& s, DType t, uint64_t seed) {
  manual_seed(seed);
  if (t == kBool) return randn(s) > 0;
  if (!is_floating_point(t)) return randint(t == kUInt8 ? 0 : -6, 7, s).to(t);
  return (randn(s) * 2).to(t);
}

// Every pointwise row of the registry, applied on each dtype to the same inputs in one captured
// graph (one input broadcast along a dim; the partitioner fuses same-shaped pointwise ops into one
// kernel), every cast between the fused dtypes, and the reductions and row-wise normalisations on
// row lengths that pick each strategy. `rows`: the rows some dtype accepted and fused.
std::vector<Kernel> op_table_kernels(std::set<std::string>* rows) {
  const std::vector<DType> dtypes = {kFloat32, kFloat64, kInt32, kInt64, kInt16, kInt8, kUInt8, kBool};
  std::vector<Kernel> out;
  auto add = [&](const std::vector<Kernel>& ks) { out.insert(out.end(), ks.begin(), ks.end()); };
  for (DType t : dtypes) {
    const TensorList in = {sample({3, 37}, t, 10), sample({37}, t, 11), sample({3, 37}, t, 12)};
    std::vector<const OpDef*> accepted;
    for (const OpDef* d : OpRegistry::instance().all()) {
      if (d->kind != OpKind::Pointwise || d->arity < 1 || !d->attr_names.empty()) continue;  // copy: the casts below
      try {
        call_op(*d, TensorList(in.begin(), in.begin() + d->arity));  // eager first: does it take this dtype?
        accepted.push_back(d);
      } catch (const Error&) {
      }
    }
    int externs = 0;
    std::vector<Kernel> ks = fused_kernels([&] {
      TensorList results;
      for (const OpDef* d : accepted) results.push_back(call_op(*d, TensorList(in.begin(), in.begin() + d->arity))[0]);
      return results;
    }, false, &externs);
    EXPECT_FALSE(ks.empty()) << t;
    // Integer pow/fmod/remainder stay eager (their operands are checked); everything else fuses.
    if (is_floating_point(t)) EXPECT_EQ(externs, 0) << t;
    for (const OpDef* d : accepted) rows->insert(d->name);
    add(ks);
  }
  for (DType from : dtypes) {
    Tensor x = sample({5, 12}, from, 3);
    add(fused_kernels([&] {
      TensorList casts;
      for (DType to : dtypes)
        if (to != from) casts.push_back(x.to(to));
      return casts;
    }));
  }
  rows->insert("copy");
  for (Shape s : {Shape{4, 48}, Shape{3, 2000}, Shape{300, 6}}) {
    for (DType t : {kFloat32, kFloat64}) {
      Tensor x = sample(s, t, 4), w = sample({s[1]}, t, 7), b = sample({s[1]}, t, 8);
      add(fused_kernels([&] {
        return TensorList{x.sum({1}), x.mean({1}, true), prod(x * 0.1 + 1, {1}), x.amax({1}), x.amin({0}), x.var({1}, 1),
                          x.std({0}, 0, true), logsumexp(x, {1}), softmax(x, -1), log_softmax(x, 0),
                          layer_norm(x, {s[1]}, w, b)};
      }));
    }
    Tensor i = sample(s, kInt32, 9);
    add(fused_kernels([&] { return TensorList{(i * 3).sum({1}), i.amax({1}), (i > 0).sum({0})}; }));
  }
  return out;
}

// The fusion suite's graphs (tests/fusion_test.cpp), with constant and with symbolic sizes.
std::vector<Kernel> fusion_graph_kernels() {
  std::vector<Kernel> out;
  for (bool dynamic : {false, true}) {
    auto add = [&](const std::function<TensorList()>& body) {
      std::vector<Kernel> ks = fused_kernels(body, dynamic);
      out.insert(out.end(), ks.begin(), ks.end());
    };
    manual_seed(1);
    Tensor x = randn({16, 32}), y = randn({16, 32});
    add([&] {
      Tensor t = x * 1.5 + y;
      t = t.relu() * y - x;
      t = t.tanh().sigmoid() + 0.5;
      t = t.exp() / (y.abs() + 1.0);
      return TensorList{t.sqrt()};
    });
    Tensor s = randn({8, 64});
    add([&] {
      Tensor e = (s - s.amax({-1}, true)).exp();
      return TensorList{e / e.sum({-1}, true)};
    });
    Tensor w = randn({64}), b = randn({64});
    add([&] { return TensorList{layer_norm(s, {64}, w, b)}; });
    add([&] {
      Tensor m = s.mean({-1}, true);
      Tensor v = s.var({-1}, 0, true);
      return TensorList{(s - m) * (v + 1e-5).rsqrt() * w + b};
    });
    Tensor gx = randn({8, 32}), gw = randn({32, 16}), gb = randn({16});
    add([&] { return TensorList{gelu(matmul(gx, gw) + gb)}; });
    Tensor r = randn({6, 10});
    add([&] { return TensorList{((r * 2).exp().sum({1}) + 1).log()}; });
    Tensor mx = randn({12, 8}), my = randn({8, 12});
    add([&] {
      Tensor a = (mx.t() * 2 + my).relu();
      Tensor bb = a.unsqueeze(0).expand({3, 8, 12}).squeeze(0);
      return TensorList{bb.narrow(1, 2, 5).select(0, 1) * 3};
    });
    Tensor big = randn({20, 30});
    Tensor sliced = big.slice(0, 1, 19, 2).slice(1, 3, 30, 3);
    add([&] { return TensorList{(sliced * sliced).sum({0}) + sliced.amax({0})}; });
    Tensor d64 = randn({6, 4}, kFloat64), e = randint(0, 5, {6, 4});
    add([&] { return TensorList{(d64 * e + 2).to(kFloat32).sin() * (e > 2)}; });
    Tensor c3 = randn({2, 3, 5, 7});
    add([&] { return TensorList{((c3 * 1.5 + c3).relu() * c3).tanh() + c3, c3.sum({1, 3}, true) * c3}; });
    // An Adam step of a small MLP: one update kernel per parameter, in place.
    auto mlp = std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(16, 32), std::make_shared<nn::ReLU>(),
                                                std::make_shared<nn::Linear>(32, 4));
    optim::Adam opt(mlp->parameters(), {.lr = 1e-3});
    Tensor ax = randn({8, 16}), at = randn({8, 4});
    auto step = [&] {
      opt.zero_grad();
      Tensor l = mse_loss(mlp->forward(ax), at);
      l.backward();
      opt.step();
      return TensorList{l};
    };
    step();  // the optimizer's state exists from here on
    add(step);
  }
  return out;
}

// ---- hand-built kernels: every ExprOp x dtype, every ReduceOp x dtype x strategy ---------------------

const std::vector<DType> kAllDtypes = {kFloat32, kFloat64, kFloat16, kBFloat16, kInt64, kInt32,
                                       kInt16,   kInt8,    kUInt8,   kBool};

bool float_only(ExprOp op) {
  switch (op) {
    case ExprOp::Exp: case ExprOp::Exp2: case ExprOp::Log: case ExprOp::Log2: case ExprOp::Log10:
    case ExprOp::Log1p: case ExprOp::Expm1: case ExprOp::Sqrt: case ExprOp::Sin: case ExprOp::Cos:
    case ExprOp::Tan: case ExprOp::Tanh: case ExprOp::Erf: return true;
    default: return false;
  }
}

// Per dtype: one kernel applying every unary, binary, comparison and logic op and select to a
// [3, 41] input and a broadcast row (one output each), one casting a contiguous input to every
// dtype, and one folding constants of the dtype (special values included).
std::vector<Kernel> expr_op_kernels() {
  std::vector<Kernel> out;
  for (DType t : kAllDtypes) {
    {
      KB kb(std::string("ops_") + std::string(dtype_name(t)));
      kb.dims({KB::c(3), KB::c(41)}, 2);
      int x = kb.buffer(t, true, false), y = kb.buffer(t, true, false), c = kb.buffer(kBool, true, false);
      int ix = kb.index(KB::c(0), {KB::c(41), KB::c(1)}), iy = kb.index(KB::c(0), {KB::c(0), KB::c(1)});
      int a = kb.load(x, ix), b = kb.load(y, iy), cond = kb.load(c, ix);
      for (int op = static_cast<int>(ExprOp::Neg); op <= static_cast<int>(ExprOp::Select); ++op) {
        const ExprOp o = static_cast<ExprOp>(op);
        if (float_only(o) && !is_floating_point(t)) continue;
        const bool boolean = o == ExprOp::IsNan || o == ExprOp::Not || (o >= ExprOp::Lt && o <= ExprOp::Or);
        const DType rt = boolean ? kBool : t;
        int v = o == ExprOp::Select ? kb.op(o, t, cond, a, b) : fusion::expr_arity(o) == 1 ? kb.op(o, rt, a) : kb.op(o, rt, a, b);
        kb.store(kb.buffer(rt, false, true), ix, v);
      }
      out.push_back(kb.k);
    }
    {
      KB kb(std::string("casts_") + std::string(dtype_name(t)));
      kb.dims({KB::c(77)}, 1);
      int x = kb.buffer(t, true, false);
      int ix = kb.index(KB::c(0), {KB::c(1)});
      int v = kb.load(x, ix);
      for (DType to : kAllDtypes) kb.store(kb.buffer(to, false, true), ix, kb.cast(to, v));
      out.push_back(kb.k);
    }
    KB kb("constants");
    kb.dims({KB::c(9)}, 1);
    int r = kb.buffer(t, false, true);
    int ix = kb.index(KB::c(0), {KB::c(1)});
    int acc = -1;
    auto fold = [&](int e) { acc = acc < 0 ? e : kb.op(ExprOp::Add, t, acc, e); };
    if (is_floating_point(t)) {
      for (double v : {0.0, -0.0, 1.5, -3.25, 1e-300, 1e300, 3.4e38, 1e-40, 65504.0, std::numeric_limits<double>::infinity(),
                       -std::numeric_limits<double>::infinity(), std::numeric_limits<double>::quiet_NaN(), 0.1})
        fold(kb.constant(t, v));
    } else {
      for (int64_t v : {int64_t(0), int64_t(1), int64_t(-1), int64_t(127), int64_t(-128), int64_t(255), int64_t(32767),
                        int64_t(2147483647), std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()})
        fold(kb.iconstant(t, v));
    }
    kb.store(r, ix, acc);
    out.push_back(kb.k);
  }
  return out;
}

// One reduction kernel: out[i] = reduce over j of f(x[i, j]) with rows of `row` points (`param_rows`:
// a runtime size), `column`: x stored transposed (a sum over dim 0 of its storage).
Kernel reduction_kernel(ReduceOp op, DType t, DType acc_t, int64_t outer, int64_t row, bool param_rows, bool column) {
  KB kb(std::string("reduce_") + fusion::reduce_op_name(op));
  fusion::Int r = param_rows ? kb.param(row) : KB::c(row);
  kb.dims({KB::c(outer), r}, 1);
  int x = kb.buffer(t, true, false), y = kb.buffer(t, false, true);
  int ix = column ? kb.index(KB::c(0), {KB::c(1), KB::c(outer)}) : kb.index(KB::c(0), {r, KB::c(1)});
  int iy = kb.index(KB::c(0), {KB::c(1), KB::c(0)});
  int v = kb.load(x, ix);
  // Float products of factors near 1: a long product of raw values underflows to 0 at a point
  // that depends on the order, and 0 * inf is then NaN on one device and inf on the other.
  if (is_floating_point(t) && op == ReduceOp::Prod)
    v = kb.op(ExprOp::Add, t, kb.constant(t, 1), kb.op(ExprOp::Mul, t, v, kb.constant(t, 0.015625)));
  int a = kb.acc(op, acc_t, v, 0);
  kb.store(y, iy, kb.cast(t, kb.acc_value(a)));
  return kb.k;
}

// Every ReduceOp on every dtype, each pair under one of the six row shapes (rotating, so each
// dtype meets every strategy).
std::vector<Kernel> reduce_op_kernels() {
  std::vector<Kernel> out;
  int n = 0;
  for (DType t : kAllDtypes)
    for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Prod, ReduceOp::Max, ReduceOp::Min}) {
      const DType acc = t == kFloat16 || t == kBFloat16 ? kFloat32 : t;
      switch (n++ % 6) {
        case 0: out.push_back(reduction_kernel(op, t, acc, 5, 7, false, false)); break;     // thread per row
        case 1: out.push_back(reduction_kernel(op, t, acc, 5, 200, false, false)); break;   // warp per row
        case 2: out.push_back(reduction_kernel(op, t, acc, 5, 3000, false, false)); break;  // block per row
        case 3: out.push_back(reduction_kernel(op, t, acc, 5, 3000, true, false)); break;   // block, runtime length
        case 4: out.push_back(reduction_kernel(op, t, acc, 64, 100, false, true)); break;   // column: thread per row
        default: out.push_back(reduction_kernel(op, t, t == kFloat32 ? kFloat64 : acc, 1, 5000, false, false));  // one row
      }
    }
  // Rows of no points: every output is the fold's identity.
  out.push_back(reduction_kernel(ReduceOp::Max, kFloat32, kFloat32, 5, 0, false, false));
  out.push_back(reduction_kernel(ReduceOp::Prod, kInt64, kInt64, 5, 0, true, false));
  return out;
}

// ---- a fuzzer corpus of random kernel IR ---------------------------------------------------------------

// Random kernels that verify(): pointwise or 1-3 stages of reductions over 1-3 dims, constant or
// runtime sizes, inputs of any dtype in any layout (permuted, broadcast, offset, stepped), random
// expression DAGs over every ExprOp, stage stores, in-place buffers. `exact` kernels use only
// operations that are exactly rounded on CPU and GPU alike (no transcendental functions, no float
// pow, integer/bool accumulators), so the two must agree bit for bit.
class KernelFuzzer {
 public:
  explicit KernelFuzzer(uint64_t seed) : g_(seed) {}

  Kernel make(int c, bool exact) {
    KB kb("fuzz" + std::to_string(c));
    kb_ = &kb;
    exact_ = exact;
    inner_.clear();
    ready_.clear();
    inputs_.clear();
    accs_.clear();
    nd_ = static_cast<size_t>(uniform(1, 3));
    const bool reduce = nd_ >= 2 && chance(0.45);
    no_ = reduce ? static_cast<size_t>(uniform(1, static_cast<int>(nd_) - 1)) : nd_;
    const bool dynamic = chance(0.25);
    static const int64_t kSizes[] = {1, 2, 3, 5, 8, 13, 32, 37, 64, 100, 300};
    std::vector<int64_t> sizes;
    int64_t total = 1;
    for (size_t d = 0; d < nd_; ++d) {
      int64_t s = kSizes[pick(11)];
      while (total * s > 30000) s = kSizes[pick(5)];
      sizes.push_back(s);
      total *= s;
    }
    std::vector<fusion::Int> dims;
    for (int64_t s : sizes) dims.push_back(dynamic && s > 1 ? kb.param(s) : KB::c(s));
    kb.dims(dims, static_cast<int>(no_));
    auto as_int = [&](int64_t v) { return dynamic && v > 1 ? kb.param(v) : KB::c(v); };
    // Inputs: a random storage order of the dims (some broadcast), an offset, maybe a step.
    const int nin = uniform(1, 3);
    for (int i = 0; i < nin; ++i) {
      const DType t = random_dtype();
      std::vector<size_t> order(nd_);
      for (size_t d = 0; d < nd_; ++d) order[d] = d;
      if (chance(0.4)) std::shuffle(order.begin(), order.end(), g_);
      const int64_t step = chance(0.2) ? 2 : 1;
      std::vector<int64_t> strides(nd_, 0);
      int64_t st = step;
      for (size_t k = nd_; k-- > 0;) {
        const size_t d = order[k];
        if (chance(0.15)) continue;  // broadcast along d
        strides[d] = st;
        st *= sizes[d];
      }
      const int64_t offset = chance(0.3) ? uniform(1, 5) : 0;
      std::vector<fusion::Int> full, outer;
      for (size_t d = 0; d < nd_; ++d) {
        full.push_back(as_int(strides[d]));
        outer.push_back(d < no_ ? as_int(strides[d]) : KB::c(0));
      }
      // In place only through a layout that visits each element once (no broadcast dim).
      bool bijective = true;
      for (size_t d = 0; d < nd_; ++d) bijective &= strides[d] != 0 || sizes[d] == 1;
      const bool inplace = !reduce && i == 0 && bijective && chance(0.2);
      const int b = kb.buffer(t, true, inplace);
      inputs_.push_back({b, kb.index(as_int(offset), full), kb.index(as_int(offset), outer)});
    }
    // Outputs: contiguous over all dims (pointwise, stage stores) or over the outer dims.
    auto contiguous = [&](size_t upto) {
      std::vector<fusion::Int> s(nd_, KB::c(0));
      int64_t st = 1;
      for (size_t d = upto; d-- > 0;) {
        s[d] = as_int(st);
        st *= sizes[d];
      }
      return kb.index(KB::c(0), s);
    };
    if (!reduce) {
      if (kb.k.buffers[static_cast<size_t>(inputs_[0].buffer)].written) {
        const Input& in = inputs_[0];  // in place: written where it is read
        kb.store(in.buffer, in.full, value(uniform(2, 5), true, 0));
      }
      const int nout = uniform(1, 2);
      const int io = contiguous(nd_);
      for (int o = 0; o < nout; ++o) kb.store(kb.buffer(random_dtype(), false, true), io, value(uniform(2, 6), true, 0));
    } else {
      const int stages = uniform(1, 3);
      for (int s = 0; s < stages; ++s) {
        const int n = uniform(1, 2);
        for (int a = 0; a < n; ++a) {
          const int v = value(uniform(1, 4), true, s);
          DType at = random_dtype();
          if (exact && is_floating_point(at)) at = chance(0.5) ? kInt64 : kInt32;
          if (at == kFloat16 || at == kBFloat16) at = kFloat32;
          const ReduceOp op = static_cast<ReduceOp>(pick(4));
          const int id = kb.acc(op, at, v, s);
          accs_.push_back({id, s});
        }
        if (chance(0.3)) kb.store(kb.buffer(random_dtype(), false, true), contiguous(nd_), value(uniform(1, 3), true, s), s);
      }
      const int io = contiguous(no_);
      const int nout = uniform(1, 2);
      for (int o = 0; o < nout; ++o)
        kb.store(kb.buffer(random_dtype(), false, true), io, value(uniform(1, 4), false, stages));
    }
    kb_ = nullptr;
    kb.k.verify();
    return kb.k;
  }

 private:
  struct Input {
    int buffer, full, outer;  // buffer; its index over all dims; the same with reduced strides 0
  };
  struct AccRef {
    int acc, stage;
  };

  int uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(g_); }
  int pick(int n) { return uniform(0, n - 1); }
  bool chance(double p) { return std::bernoulli_distribution(p)(g_); }
  DType random_dtype() {
    static const DType kTypes[] = {kFloat32, kFloat32, kFloat32, kFloat64, kFloat16, kBFloat16,
                                   kInt64,   kInt32,   kInt16,   kInt8,    kUInt8,   kBool};
    return kTypes[pick(12)];
  }
  DType dtype(int e) const { return kb_->k.exprs[static_cast<size_t>(e)].dtype; }
  // Records an expression's properties: varies over the reduced dims; latest acc stage read.
  int note(int e, bool inner, int ready) {
    inner_.resize(static_cast<size_t>(e) + 1, 0);
    ready_.resize(static_cast<size_t>(e) + 1, -1);
    inner_[static_cast<size_t>(e)] = inner;
    ready_[static_cast<size_t>(e)] = ready;
    return e;
  }
  int op(ExprOp o, DType t, int a, int b = -1, int c = -1) {
    bool inner = false;
    int ready = -1;
    for (int x : {a, b, c})
      if (x >= 0) {
        inner |= inner_[static_cast<size_t>(x)] != 0;
        ready = std::max(ready, ready_[static_cast<size_t>(x)]);
      }
    return note(kb_->op(o, t, a, b, c), inner, ready);
  }
  int cast(DType t, int x) { return dtype(x) == t ? x : op(ExprOp::Cast, t, x); }

  int leaf(bool allow_inner, int max_ready) {
    std::vector<AccRef> usable;
    for (const AccRef& a : accs_)
      if (a.stage < max_ready) usable.push_back(a);
    const int kind = pick(usable.empty() ? 5 : 7);
    if (kind <= 3) {
      const Input& in = inputs_[static_cast<size_t>(pick(static_cast<int>(inputs_.size())))];
      const bool inner = allow_inner && no_ < nd_ && chance(0.8);
      return note(kb_->load(in.buffer, inner ? in.full : in.outer), inner || (no_ == nd_), -1) ;
    }
    if (kind == 4) {
      const DType t = random_dtype();
      static const double kValues[] = {0.5, -1.25, 3.0, 0.0, -0.0, 7.0, 1e-3, 100.0, -2.0};
      const double v = kValues[pick(9)];
      return note(is_floating_point(t) ? kb_->constant(t, v) : kb_->iconstant(t, static_cast<int64_t>(v)), false, -1);
    }
    const AccRef& a = usable[static_cast<size_t>(pick(static_cast<int>(usable.size())))];
    return note(kb_->acc_value(a.acc), false, a.stage);
  }

  // A random expression of depth <= depth; loads vary over the reduced dims only when allowed, and
  // accumulators are read only from stages before `max_ready`.
  int value(int depth, bool allow_inner, int max_ready) {
    if (depth <= 0 || chance(0.2)) return leaf(allow_inner, max_ready);
    const int kind = pick(10);
    if (kind <= 2) {  // unary
      int x = value(depth - 1, allow_inner, max_ready);
      static const ExprOp kExact[] = {ExprOp::Neg, ExprOp::Abs, ExprOp::Floor, ExprOp::Ceil, ExprOp::Round, ExprOp::Trunc, ExprOp::Sqrt};
      static const ExprOp kAll[] = {ExprOp::Exp,  ExprOp::Exp2, ExprOp::Log,  ExprOp::Log2, ExprOp::Log10, ExprOp::Log1p, ExprOp::Expm1,
                                    ExprOp::Sin,  ExprOp::Cos,  ExprOp::Tan,  ExprOp::Tanh, ExprOp::Erf,   ExprOp::Neg,   ExprOp::Sqrt};
      const ExprOp o = exact_ || chance(0.5) ? kExact[pick(7)] : kAll[pick(14)];
      if (float_only(o) && !is_floating_point(dtype(x))) x = cast(chance(0.5) ? kFloat32 : kFloat64, x);
      return op(o, dtype(x), x);
    }
    if (kind == 3) {
      const int x = value(depth - 1, allow_inner, max_ready);
      return chance(0.5) ? op(ExprOp::IsNan, kBool, x) : op(ExprOp::Not, kBool, x);
    }
    if (kind <= 6) {  // arithmetic
      const int a = value(depth - 1, allow_inner, max_ready);
      const int b = cast(dtype(a), value(depth - 1, allow_inner, max_ready));
      static const ExprOp kOps[] = {ExprOp::Add, ExprOp::Sub, ExprOp::Mul, ExprOp::Div, ExprOp::Fmod, ExprOp::Pow};
      ExprOp o = kOps[pick(6)];
      if (o == ExprOp::Pow && exact_ && is_floating_point(dtype(a))) o = ExprOp::Mul;
      return op(o, dtype(a), a, b);
    }
    if (kind == 7) {  // comparison or logic
      const int a = value(depth - 1, allow_inner, max_ready);
      const int b = value(depth - 1, allow_inner, max_ready);
      static const ExprOp kOps[] = {ExprOp::Lt, ExprOp::Le, ExprOp::Gt, ExprOp::Ge, ExprOp::Eq, ExprOp::Ne, ExprOp::And, ExprOp::Or};
      const ExprOp o = kOps[pick(8)];
      return o == ExprOp::And || o == ExprOp::Or ? op(o, kBool, a, b) : op(o, kBool, a, cast(dtype(a), b));
    }
    if (kind == 8) {
      const int c = cast(kBool, value(depth - 1, allow_inner, max_ready));
      const int a = value(depth - 1, allow_inner, max_ready);
      return op(ExprOp::Select, dtype(a), c, a, cast(dtype(a), value(depth - 1, allow_inner, max_ready)));
    }
    return cast(random_dtype(), value(depth - 1, allow_inner, max_ready));
  }

  std::mt19937_64 g_;
  KB* kb_ = nullptr;
  bool exact_ = false;
  size_t nd_ = 1, no_ = 1;
  std::vector<char> inner_;
  std::vector<int> ready_;
  std::vector<Input> inputs_;
  std::vector<AccRef> accs_;
};

struct FuzzCorpus {
  std::vector<Kernel> kernels;
  std::vector<char> exact;
};
FuzzCorpus fuzz_corpus(int n) {
  FuzzCorpus c;
  KernelFuzzer f(20240607);
  for (int i = 0; i < n; ++i) {
    const bool exact = i % 2 == 0;
    c.kernels.push_back(f.make(i, exact));
    c.exact.push_back(exact);
  }
  return c;
}
constexpr int kFuzzKernels = 64;

// ---- compile everything: no error, no warning ------------------------------------------------------

TEST_F(CudaCodegen, EveryOpTableOpCompilesForSm80AndSm90) {
  std::set<std::string> rows;
  std::vector<Kernel> ks = op_table_kernels(&rows);
  for (const OpDef* d : OpRegistry::instance().all())
    if (d->kind == OpKind::Pointwise) EXPECT_TRUE(rows.count(d->name)) << "pointwise row " << d->name << " is not covered";
  EXPECT_GT(ks.size(), 30u);
  Compiled c = render_and_compile(ks, "op_table");
  std::set<CudaStrategy> seen;
  for (const CudaKernel& k : c.kernels) seen.insert(k.strategy);
  EXPECT_EQ(seen.size(), 4u) << "pointwise, thread, warp and block kernels";
}

TEST_F(CudaCodegen, FusionTestGraphsCompileForSm80AndSm90) {
  std::vector<Kernel> ks = fusion_graph_kernels();
  EXPECT_GT(ks.size(), 30u);
  int dynamic = 0;
  for (const Kernel& k : ks) dynamic += k.num_params > 0;
  EXPECT_GT(dynamic, 10);
  Compiled c = render_and_compile(ks, "fusion_graphs");
  for (size_t i = 0; i < ks.size(); ++i) {
    const CudaKernel& ck = c.kernels[i];
    // Every runtime parameter is a kernel argument, after the buffers.
    for (int p = 0; p < ks[i].num_params; ++p)
      EXPECT_NE(ck.source.find("long long p" + std::to_string(p)), std::string::npos) << ck.source;
  }
}

TEST_F(CudaCodegen, EveryExprOpAndReduceOpOfEveryDtypeCompiles) {
  std::vector<Kernel> ks = expr_op_kernels();
  std::vector<Kernel> rs = reduce_op_kernels();
  ks.insert(ks.end(), rs.begin(), rs.end());
  render_and_compile(ks, "expr_ops");
}

TEST_F(CudaCodegen, FuzzerCorpusCompilesForSm80AndSm90) {
  FuzzCorpus corpus = fuzz_corpus(kFuzzKernels);
  int reductions = 0, dynamic = 0;
  for (const Kernel& k : corpus.kernels) {
    reductions += k.num_stages > 0;
    dynamic += k.num_params > 0;
  }
  EXPECT_GT(reductions, kFuzzKernels / 5);
  EXPECT_GT(dynamic, kFuzzKernels / 10);
  render_and_compile(corpus.kernels, "fuzz_corpus");
}

// ---- structure of the generated code ----------------------------------------------------------------

// y = x * 2 + z over `dims`, x read through `x_strides` from `x_offset`, z a row broadcast over
// the other dims, y contiguous. `runtime`: sizes, strides and offsets other than 0 and 1 are kernel
// parameters (as the partitioner makes them for dynamic shapes).
Kernel pointwise(DType t, std::vector<int64_t> dims, std::vector<int64_t> x_strides, int64_t x_offset = 0,
                 DType out = kFloat32, bool runtime = false) {
  KB kb("pw");
  auto num = [&](int64_t v) { return runtime && v != 0 && v != 1 ? kb.param(v) : KB::c(v); };
  const size_t nd = dims.size();
  std::vector<fusion::Int> d, xs, zs(nd, KB::c(0)), ys(nd);
  int64_t st = 1;
  for (size_t i = nd; i-- > 0;) {
    ys[i] = num(st);
    st *= dims[i];
  }
  for (size_t i = 0; i < nd; ++i) {
    d.push_back(num(dims[i]));
    xs.push_back(num(x_strides[i]));
  }
  zs[nd - 1] = KB::c(1);
  kb.dims(d, static_cast<int>(nd));
  int x = kb.buffer(t, true, false), z = kb.buffer(t, true, false), y = kb.buffer(out, false, true);
  int ix = kb.index(num(x_offset), xs), iz = kb.index(KB::c(0), zs), iy = kb.index(KB::c(0), ys);
  int v = kb.op(ExprOp::Add, t, kb.op(ExprOp::Mul, t, kb.load(x, ix), kb.constant(t, 2)), kb.load(z, iz));
  kb.store(y, iy, kb.cast(out, v));
  return kb.k;
}

TEST_F(CudaCodegen, VectorLoadsExactlyWhereTheLayoutAllows) {
  struct Case {
    const char* what;
    Kernel k;
    int width;
    const char* ptx_load;  // expected in the PTX when width > 1
  };
  const std::vector<Case> cases = {
      {"contiguous f32", pointwise(kFloat32, {1000}, {1}), 4, "ld.global.nc.v4.f32"},
      {"contiguous f32, odd size (scalar tail)", pointwise(kFloat32, {37}, {1}), 4, "ld.global.nc.v4.f32"},
      {"contiguous f64", pointwise(kFloat64, {1000}, {1}, 0, kFloat64), 2, "ld.global.nc.v2.f64"},
      {"f64 in, f32 out", pointwise(kFloat64, {1000}, {1}), 2, "ld.global.nc.v2.f64"},
      {"rows of a wider tensor", pointwise(kFloat32, {16, 64}, {128, 1}), 4, "ld.global.nc.v4.f32"},
      {"runtime sizes", pointwise(kFloat32, {64, 64}, {256, 1}, 0, kFloat32, true), 4, "ld.global.nc.v4.f32"},
      {"transposed input", pointwise(kFloat32, {32, 48}, {1, 32}), 1, nullptr},
      {"stepped input", pointwise(kFloat32, {1000}, {2}), 1, nullptr},
      {"rows at an odd offset", pointwise(kFloat32, {16, 64}, {64, 1}, 3), 1, nullptr},
      {"rows of odd length", pointwise(kFloat32, {16, 30}, {30, 1}), 1, nullptr},
      {"runtime innermost stride", pointwise(kFloat32, {1000}, {3}, 0, kFloat32, true), 1, nullptr},
  };
  std::vector<Kernel> ks;
  for (const Case& c : cases) ks.push_back(c.k);
  Compiled compiled = render_and_compile(ks, "vector_layouts");
  ASSERT_NE(compiled.sm90, nullptr);
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].what);
    const CudaKernel& ck = compiled.kernels[i];
    EXPECT_EQ(ck.vector_width, cases[i].width) << ck.source;
    const std::string ptx = ptx_of(compiled.sm90->ptx, ck.symbol);
    if (cases[i].width > 1) {
      const size_t bytes = static_cast<size_t>(cases[i].width) * itemsize(ks[i].buffers[0].dtype);
      EXPECT_NE(ck.source.find("% " + std::to_string(bytes) + "ULL == 0ULL"), std::string::npos)
          << "runtime alignment check\n" << ck.source;
      EXPECT_NE(ck.source.find("kiln_vec<"), std::string::npos) << ck.source;
      EXPECT_NE(ptx.find(cases[i].ptx_load), std::string::npos) << ptx;
      EXPECT_NE(ptx.find("st.global.v"), std::string::npos) << ptx;
    } else {
      EXPECT_EQ(ck.source.find("kiln_vec<"), std::string::npos) << ck.source;
      EXPECT_EQ(ptx.find(".v4."), std::string::npos) << ptx;
      EXPECT_EQ(ptx.find(".v2."), std::string::npos) << ptx;
    }
  }
  // A runtime row stride: the fast path also checks that it keeps rows aligned.
  EXPECT_NE(compiled.kernels[5].source.find(" % 4LL == 0LL"), std::string::npos) << compiled.kernels[5].source;
}

TEST_F(CudaCodegen, ReductionStrategiesAndTheirSynchronisation) {
  std::vector<Kernel> ks;
  Tensor a = randn({4, 64}), b = randn({2, 3000}), c = randn({1000, 8}), d = randn({50, 5}), e = randn({6, 40});
  ks.push_back(fused_kernels([&] { return TensorList{softmax(a, -1)}; }).at(0));
  ks.push_back(fused_kernels([&] { return TensorList{softmax(b, -1)}; }).at(0));
  ks.push_back(fused_kernels([&] { return TensorList{c.sum({0})}; }).at(0));
  ks.push_back(fused_kernels([&] { return TensorList{d.amax({1})}; }).at(0));
  ks.push_back(fused_kernels([&] { return TensorList{softmax(e, -1)}; }, /*dynamic=*/true).at(0));
  Compiled r = render_and_compile(ks, "reductions");
  ASSERT_NE(r.sm90, nullptr);
  const CudaStrategy want[] = {CudaStrategy::Warp, CudaStrategy::Block, CudaStrategy::Thread, CudaStrategy::Thread,
                               CudaStrategy::Block};
  for (size_t i = 0; i < ks.size(); ++i) {
    const CudaKernel& k = r.kernels[i];
    SCOPED_TRACE(ks[i].str() + k.source);
    EXPECT_EQ(k.strategy, want[i]) << fusion::cuda_strategy_name(k.strategy);
    const std::string ptx = ptx_of(r.sm90->ptx, k.symbol);
    const bool shuffles = k.strategy != CudaStrategy::Thread;
    EXPECT_EQ(k.source.find("kiln_warp_") != std::string::npos, shuffles);
    EXPECT_EQ(ptx.find("shfl.sync.down") != std::string::npos, shuffles);
    EXPECT_EQ(ptx.find("bar.sync") != std::string::npos || ptx.find("barrier.sync") != std::string::npos,
              k.strategy == CudaStrategy::Block);
    EXPECT_EQ(k.source.find("__shared__") != std::string::npos, k.strategy == CudaStrategy::Block);
    for (int s = 0; s < ks[i].num_stages; ++s)
      EXPECT_NE(k.source.find("// stage " + std::to_string(s)), std::string::npos);
  }
  EXPECT_EQ(ks[0].num_stages, 3) << "softmax: max, sum, normalise";
  // Launch shapes: one block per row (capped at a few waves), one warp per row, one thread per column.
  EXPECT_EQ(fusion::cuda_launch_config(ks[1], r.kernels[1], ks[1].param_values(), 132).grid, 2u);
  EXPECT_EQ(fusion::cuda_launch_config(ks[0], r.kernels[0], ks[0].param_values(), 132).grid, 1u);
  EXPECT_EQ(fusion::cuda_launch_config(ks[2], r.kernels[2], ks[2].param_values(), 132).block, 256u);
  EXPECT_EQ(fusion::cuda_launch_config(ks[4], r.kernels[4], ks[4].param_values(), 132).grid, 6u);
  // Nothing to do: no launch.
  const Kernel empty = pointwise(kFloat32, {0, 8}, {8, 1});
  EXPECT_EQ(fusion::cuda_launch_config(empty, fusion::render_cuda(empty), {}, 132).grid, 0u);
  // A big pointwise kernel: a few waves of blocks, the grid-stride loop does the rest.
  const Kernel big = pointwise(kFloat32, {1 << 26}, {1});
  const fusion::CudaLaunch l = fusion::cuda_launch_config(big, fusion::render_cuda(big), {}, 132);
  EXPECT_EQ(l.block, 256u);
  EXPECT_EQ(l.grid, 132u * 32u);
}

TEST_F(CudaCodegen, SymbolsFollowTheKeyAndIdenticalKernelsCompileOnce) {
  Kernel a = pointwise(kFloat32, {100}, {1});
  Kernel b = a;
  b.name = "another_name";
  Kernel c = pointwise(kFloat32, {101}, {1});
  const CudaKernel ra = fusion::render_cuda(a), rb = fusion::render_cuda(b), rc = fusion::render_cuda(c);
  EXPECT_EQ(ra.symbol, rb.symbol);
  EXPECT_EQ(ra.source, rb.source);
  EXPECT_NE(ra.symbol, rc.symbol);
  EXPECT_EQ(ra.symbol.rfind("kiln_", 0), 0u);
  const std::string tu = fusion::cuda_translation_unit({ra, rb, rc});
  EXPECT_EQ(count(tu, "__global__"), 2u);
  EXPECT_EQ(count(tu, "extern \"C\""), 2u);
}

TEST_F(CudaCodegen, InPlaceKernelsLoadEverythingBeforeTheFirstStore) {
  KB kb("inplace");
  kb.dims({KB::c(64)}, 1);
  int p = kb.buffer(kFloat32, true, true), m = kb.buffer(kFloat32, true, true);
  int ix = kb.index(KB::c(0), {KB::c(1)});
  int mv = kb.load(m, ix), pv = kb.load(p, ix);
  kb.store(m, ix, kb.op(ExprOp::Mul, kFloat32, mv, kb.constant(kFloat32, 0.9)));
  kb.store(p, ix, kb.op(ExprOp::Sub, kFloat32, pv, mv));
  const CudaKernel k = fusion::render_cuda(kb.k);
  // Written buffers are not const; every store comes after every load.
  EXPECT_NE(k.source.find("float* __restrict__ b0"), std::string::npos);
  EXPECT_EQ(k.source.find("const float* __restrict__ b0"), std::string::npos);
  const size_t first_store = k.source.find("] = s");
  ASSERT_NE(first_store, std::string::npos) << k.source;
  EXPECT_EQ(k.source.find("b1[", first_store), std::string::npos) << "a load after a store\n" << k.source;
  render_and_compile({kb.k}, "inplace");
}

// ---- NVRTC: cache, dumps, errors ------------------------------------------------------------------------

TEST_F(CudaCodegen, NvrtcCachesInMemoryAndOnDiskAndDumps) {
  const std::string dump = dir_ + "/dumps";
  std::filesystem::create_directories(dump);
  setenv("KILN_DUMP_DIR", dump.c_str(), 1);
  const CudaKernel k = fusion::render_cuda(pointwise(kFloat32, {257}, {1}));
  const std::string src = fusion::cuda_translation_unit({k});
  const fusion::NvrtcCacheStats s0 = fusion::nvrtc_cache_stats();
  auto first = fusion::nvrtc_compile(src, 90, {.name = "cache_probe"});
  EXPECT_FALSE(first->from_disk);
  EXPECT_EQ(first->arch, 90);
  EXPECT_NE(first->key.find("nvrtc " + fusion::nvrtc_version()), std::string::npos) << first->key;
  EXPECT_NE(first->key.find("sm_90"), std::string::npos);
  auto again = fusion::nvrtc_compile(src, 90, {.name = "cache_probe"});
  EXPECT_EQ(again.get(), first.get()) << "memory cache";
  fusion::nvrtc_clear_memory_cache();
  std::shared_ptr<const fusion::CudaBinary> disk;
  {
    // The profiler sees the disk cache load as a JIT phase (and "nvrtc compile" on a miss).
    profiler::Profile prof;
    disk = fusion::nvrtc_compile(src, 90, {.name = "cache_probe"});
    bool loaded = false;
    for (const profiler::Event& e : prof.events())
      loaded |= e.name == "cache load" && e.category == profiler::Category::Jit;
    EXPECT_TRUE(loaded);
  }
  EXPECT_TRUE(disk->from_disk);
  EXPECT_EQ(disk->cubin, first->cubin);
  EXPECT_EQ(disk->ptx, first->ptx);
  const fusion::NvrtcCacheStats s1 = fusion::nvrtc_cache_stats();
  EXPECT_EQ(s1.compiled - s0.compiled, 1);
  EXPECT_EQ(s1.memory_hits - s0.memory_hits, 1);
  EXPECT_EQ(s1.disk_hits - s0.disk_hits, 1);
  EXPECT_EQ(s1.disk_writes - s0.disk_writes, 1);
  // Another arch is another entry; a corrupt file is rejected and rebuilt.
  EXPECT_NE(fusion::nvrtc_compile(src, 80)->cubin, first->cubin);
  for (const auto& e : std::filesystem::directory_iterator(dir_)) {
    if (e.path().extension() != ".kcubin") continue;
    std::fstream f(e.path(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x7f');
  }
  fusion::nvrtc_clear_memory_cache();
  std::shared_ptr<const fusion::CudaBinary> rebuilt;
  {
    profiler::Profile prof;
    rebuilt = fusion::nvrtc_compile(src, 90, {.name = "cache_probe"});
    bool compiled = false;
    for (const profiler::Event& e : prof.events())
      compiled |= e.name == "nvrtc compile" && e.detail == "cache_probe sm_90";
    EXPECT_TRUE(compiled);
  }
  EXPECT_FALSE(rebuilt->from_disk);
  EXPECT_EQ(rebuilt->cubin, first->cubin);
  EXPECT_GE(fusion::nvrtc_cache_stats().disk_rejected - s0.disk_rejected, 1);
  // KILN_DUMP_DIR: the source as compiled, and its PTX.
  std::ifstream cu(dump + "/cache_probe.sm_90.cu"), ptx(dump + "/cache_probe.sm_90.ptx");
  std::stringstream cu_text, ptx_text;
  cu_text << cu.rdbuf();
  ptx_text << ptx.rdbuf();
  EXPECT_EQ(cu_text.str(), src);
  EXPECT_EQ(ptx_text.str(), first->ptx);
}

TEST_F(CudaCodegen, NvrtcReportsErrorsWarningsAndUnsupportedArchs) {
  EXPECT_KILN_ERROR(fusion::nvrtc_compile("extern \"C\" __global__ void k() { undeclared_thing(); }", 90, {.name = "broken"}),
                    "[nvrtc] compiling broken for sm_90 failed", "undeclared_thing");
  // A warning does not fail the compile; it comes back in the log (which the suites require empty).
  auto warned = fusion::nvrtc_compile("extern \"C\" __global__ void k(int* p) { int unused = 3; p[0] = 1; }", 80);
  EXPECT_NE(warned->log.find("unused"), std::string::npos) << warned->log;
  EXPECT_KILN_ERROR(fusion::nvrtc_compile("", 12), "[nvrtc] sm_12 is not an architecture NVRTC");
  const std::vector<int> archs = fusion::nvrtc_supported_archs();
  EXPECT_NE(std::find(archs.begin(), archs.end(), 80), archs.end());
  EXPECT_NE(std::find(archs.begin(), archs.end(), 90), archs.end());
  EXPECT_FALSE(fusion::nvrtc_version().empty());
}

// ---- on a GPU: the kernels against the CPU kernels ---------------------------------------------------

// Elements of buffer b that kernel k may touch (largest address + 1, or more) for parameter
// values `p`. A store at the outer point happens even when a reduced dim is empty.
int64_t extent(const Kernel& k, int b, const std::vector<int64_t>& p) {
  auto value = [&](const fusion::Int& v) { return v.is_const() ? v.value : p.at(static_cast<size_t>(v.param)); };
  int64_t hi = 0;
  auto note = [&](int index) {
    const fusion::Index& ix = k.indices[static_cast<size_t>(index)];
    int64_t at = value(ix.offset);
    for (size_t d = 0; d < k.dims.size(); ++d)
      at += std::max<int64_t>(0, value(ix.strides[d]) * (value(k.dims[d]) - 1));
    hi = std::max(hi, at + 1);
  };
  for (const fusion::Expr& e : k.exprs)
    if (e.op == ExprOp::Load && e.buffer == b) note(e.index);
  for (const fusion::Store& s : k.stores)
    if (s.buffer == b) note(s.index);
  return hi;
}

// Random contents of `n` elements of dtype t: values of both signs, some special ones.
std::vector<unsigned char> random_bytes(DType t, int64_t n, std::mt19937_64& g) {
  const size_t size = itemsize(t);
  std::vector<unsigned char> out(static_cast<size_t>(n) * size);
  std::uniform_real_distribution<double> u(-2, 2);
  std::uniform_int_distribution<int> small(-20, 20), pct(0, 99);
  static const double kSpecial[] = {0.0, -0.0, std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity(),
                                    std::numeric_limits<double>::quiet_NaN(), 1e-40, 1e30, 0.5, -2.5};
  for (int64_t i = 0; i < n; ++i) {
    unsigned char* p = out.data() + static_cast<size_t>(i) * size;
    const double v = pct(g) < 4 ? kSpecial[g() % 9] : u(g);
    switch (t) {
      case DType::Float32: { float f = static_cast<float>(v); std::memcpy(p, &f, 4); break; }
      case DType::Float64: std::memcpy(p, &v, 8); break;
      case DType::Float16: { uint16_t h = Half(static_cast<float>(v)).x; std::memcpy(p, &h, 2); break; }
      case DType::BFloat16: { uint16_t h = BFloat16(static_cast<float>(v)).x; std::memcpy(p, &h, 2); break; }
      case DType::Bool: *p = static_cast<unsigned char>(g() & 1); break;
      case DType::UInt8: *p = static_cast<unsigned char>(small(g) + 20); break;
      case DType::Int8: { int8_t x = static_cast<int8_t>(small(g)); std::memcpy(p, &x, 1); break; }
      case DType::Int16: { int16_t x = static_cast<int16_t>(small(g)); std::memcpy(p, &x, 2); break; }
      case DType::Int32: { int32_t x = small(g); std::memcpy(p, &x, 4); break; }
      case DType::Int64: { int64_t x = small(g); std::memcpy(p, &x, 8); break; }
    }
  }
  return out;
}

double as_double(DType t, const unsigned char* p) {
  switch (t) {
    case DType::Float32: { float f; std::memcpy(&f, p, 4); return f; }
    case DType::Float64: { double d; std::memcpy(&d, p, 8); return d; }
    case DType::Float16: { uint16_t h; std::memcpy(&h, p, 2); return static_cast<float>(Half::from_bits(h)); }
    case DType::BFloat16: { uint16_t h; std::memcpy(&h, p, 2); return static_cast<float>(BFloat16::from_bits(h)); }
    case DType::Bool:
    case DType::UInt8: return *p;
    case DType::Int8: { int8_t x; std::memcpy(&x, p, 1); return x; }
    case DType::Int16: { int16_t x; std::memcpy(&x, p, 2); return x; }
    case DType::Int32: { int32_t x; std::memcpy(&x, p, 4); return x; }
    case DType::Int64: { int64_t x; std::memcpy(&x, p, 8); return static_cast<double>(x); }
  }
  return 0;
}

// GPU result vs CPU result of one buffer: exact (numerically equal, NaN matching NaN) or within the
// float tolerance of the fusion suite (rtol, and atol scaled by the largest CPU magnitude).
::testing::AssertionResult same_buffer(DType t, const std::vector<unsigned char>& gpu, const std::vector<unsigned char>& cpu,
                                       bool exact) {
  const size_t size = itemsize(t), n = cpu.size() / size;
  double scale = 1;
  for (size_t i = 0; i < n; ++i) {
    const double c = as_double(t, cpu.data() + i * size);
    if (std::isfinite(c)) scale = std::max(scale, std::fabs(c));
  }
  double rtol = 0, atol = 0;
  if (!exact && is_floating_point(t)) {
    rtol = t == kFloat64 ? 1e-9 : t == kFloat32 ? 1e-4 : t == kFloat16 ? 4e-3 : 3e-2;
    atol = rtol * 0.1 * scale;
  }
  for (size_t i = 0; i < n; ++i) {
    const double g = as_double(t, gpu.data() + i * size), c = as_double(t, cpu.data() + i * size);
    const bool ok = (std::isnan(g) && std::isnan(c)) || g == c || std::fabs(g - c) <= atol + rtol * std::fabs(c);
    if (!ok) return ::testing::AssertionFailure() << "element " << i << ": GPU " << g << " vs CPU " << c;
  }
  return ::testing::AssertionSuccess();
}

class CudaDevice : public CudaCodegen {
 protected:
  void SetUp() override {
    CudaCodegen::SetUp();
    if (IsSkipped()) return;
    if (!cuda::is_available()) GTEST_SKIP() << "no CUDA device to run kernels on: " << cuda::unavailable_reason();
    if (!fusion::codegen_available()) GTEST_SKIP() << "built without LLVM: no CPU kernels to compare with";
    arch_ = cuda::device_arch(0);
    const std::vector<int> archs = fusion::nvrtc_supported_archs();
    if (std::find(archs.begin(), archs.end(), arch_) == archs.end())
      GTEST_SKIP() << "NVRTC " << fusion::nvrtc_version() << " cannot compile for this device (sm_" << arch_ << ")";
  }

  // Runs every kernel on the CPU and on the GPU (aligned, and for vector kernels also shifted by one
  // element so that the scalar fallback runs) from the same random inputs; compares what they write.
  void check(const std::vector<Kernel>& ks, const std::vector<char>& exact, const std::string& name) {
    std::vector<CudaKernel> rendered;
    for (const Kernel& k : ks) rendered.push_back(fusion::render_cuda(k));
    auto bin = fusion::nvrtc_compile(fusion::cuda_translation_unit(rendered), arch_, {.name = name});
    cuda::Module module(0, bin->cubin);
    std::vector<const Kernel*> ptrs;
    for (const Kernel& k : ks) ptrs.push_back(&k);
    auto cpu = fusion::compile_kernels(ptrs);
    const int mp = cuda::multiprocessor_count(0);
    std::mt19937_64 g(99);
    for (size_t i = 0; i < ks.size(); ++i) {
      const Kernel& k = ks[i];
      SCOPED_TRACE(name + " kernel " + std::to_string(i) + "\n" + k.str() + rendered[i].source);
      const std::vector<int64_t> params = k.param_values();
      const size_t nb = k.buffers.size();
      std::vector<std::vector<unsigned char>> init(nb);
      for (size_t b = 0; b < nb; ++b) {
        const int64_t n = extent(k, static_cast<int>(b), params);
        init[b] = k.buffers[b].read ? random_bytes(k.buffers[b].dtype, n, g)
                                    : std::vector<unsigned char>(static_cast<size_t>(n) * itemsize(k.buffers[b].dtype), 0xA5);
      }
      // CPU
      std::vector<std::vector<unsigned char>> host = init;
      std::vector<char*> bases;
      for (auto& h : host) bases.push_back(reinterpret_cast<char*>(h.data()));
      const int64_t d0 = k.dims[0].is_const() ? k.dims[0].value : params.at(static_cast<size_t>(k.dims[0].param));
      cpu[i]->fn(bases.data(), params.data(), 0, d0);
      // GPU, aligned then shifted
      void* fn = module.function(rendered[i].symbol);
      const fusion::CudaLaunch launch = fusion::cuda_launch_config(k, rendered[i], params, mp);
      for (int shift : {0, 1}) {
        if (shift && rendered[i].vector_width == 1) continue;
        SCOPED_TRACE(shift ? "misaligned buffers (scalar path)" : "aligned buffers");
        std::vector<cuda::DeviceBuffer> dev;
        std::vector<uint64_t> addr;
        for (size_t b = 0; b < nb; ++b) {
          const size_t off = static_cast<size_t>(shift) * itemsize(k.buffers[b].dtype);
          dev.emplace_back(0, init[b].size() + off);
          std::vector<unsigned char> staged(off, 0);
          staged.insert(staged.end(), init[b].begin(), init[b].end());
          dev.back().copy_from_host(staged.data(), staged.size());
          addr.push_back(dev.back().address() + off);
        }
        std::vector<int64_t> args_params = params;
        std::vector<void*> args;
        for (uint64_t& a : addr) args.push_back(&a);
        for (int64_t& p : args_params) args.push_back(&p);
        if (launch.grid > 0) cuda::launch(0, fn, launch.grid, launch.block, 0, args.data());
        cuda::synchronize(0);
        for (size_t b = 0; b < nb; ++b) {
          if (!k.buffers[b].written) continue;
          const size_t off = static_cast<size_t>(shift) * itemsize(k.buffers[b].dtype);
          std::vector<unsigned char> back(init[b].size() + off);
          dev[b].copy_to_host(back.data(), back.size());
          back.erase(back.begin(), back.begin() + static_cast<std::ptrdiff_t>(off));
          EXPECT_TRUE(same_buffer(k.buffers[b].dtype, back, host[b], exact[i] != 0)) << "buffer b" << b;
        }
      }
      if (HasFailure()) return;  // one kernel's listing is enough to read
    }
  }
  int arch_ = 0;
};

TEST_F(CudaDevice, OpTableKernelsMatchTheCpuKernels) {
  std::set<std::string> rows;
  std::vector<Kernel> ks = op_table_kernels(&rows);
  check(ks, std::vector<char>(ks.size(), 0), "op_table");
}

TEST_F(CudaDevice, FusionGraphAndHandBuiltKernelsMatchTheCpuKernels) {
  std::vector<Kernel> ks = fusion_graph_kernels();
  std::vector<char> exact(ks.size(), 0);
  for (const Kernel& k : reduce_op_kernels()) {
    ks.push_back(k);
    // Integer and bool folds, and max/min, give the same bits in any order.
    const fusion::Accumulator& a = k.accs.at(0);
    exact.push_back(!is_floating_point(a.dtype) || a.op == ReduceOp::Max || a.op == ReduceOp::Min);
  }
  check(ks, exact, "graphs");
}

TEST_F(CudaDevice, FuzzerCorpusMatchesTheCpuKernelsBitForBit) {
  FuzzCorpus corpus = fuzz_corpus(kFuzzKernels);
  std::vector<Kernel> ks;
  std::vector<char> exact;
  for (size_t i = 0; i < corpus.kernels.size(); ++i)
    if (corpus.exact[i]) {
      ks.push_back(corpus.kernels[i]);
      exact.push_back(1);
    }
  check(ks, exact, "fuzz_exact");
}

#endif  // KILN_HAS_CUDA_TOOLKIT

}  // namespace
