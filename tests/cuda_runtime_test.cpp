// The CUDA runtime and eager CUDA kernels (issue 7): the caching allocator, device tensors and
// copies, the registry's CUDA column, the eager kernels the fusion backend makes, cuBLAS, and
// jit::compile on CUDA.
//
// No GPU needed: the caching allocator against a fake backend (streams, events, out of memory),
// errors without a device, every registry row having a CUDA kernel, and NVRTC compiling (sm_80,
// sm_90, no warning) the eager CUDA kernels of every pointwise row on each dtype, of the casts, of
// the reductions and normalisations, and of in-place/out= writes into strided views.
// With a GPU (kiln::cuda::is_available()): every row of that list on CUDA against the CPU, matmuls
// (also TF32), host fallbacks, the allocator and pinned copies on the device, streams, an MLP
// training step against the same step on the CPU, and jit::compile on CUDA against eager.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "core/caching_allocator.h"
#include "core/cuda.h"
#include "core/op.h"
#include "kiln/kiln.h"
#include "test_util.h"
#if KILN_HAS_CUDA_TOOLKIT
#include "fusion/cuda_render.h"
#include "fusion/nvrtc.h"
#include "kernels/cuda/cuda_kernels.h"
#endif

namespace kiln {
namespace {

// ---- the caching allocator against a fake backend ------------------------------------------------

struct FakeDevice {
  size_t capacity = 64 << 20;
  size_t used = 0;
  uint64_t next = 0x10000;
  std::map<uint64_t, size_t> blocks;
  int allocs = 0, frees = 0;
  std::map<uint64_t, bool> events;  // event id -> done
  uint64_t next_event = 1;

  detail::BlockBackend backend() {
    detail::BlockBackend b;
    b.alloc = [this](size_t n) -> uint64_t {
      if (used + n > capacity) return 0;
      used += n;
      ++allocs;
      const uint64_t p = next;
      next += n + 4096;
      blocks[p] = n;
      return p;
    };
    b.free = [this](uint64_t p) {
      used -= blocks.at(p);
      blocks.erase(p);
      ++frees;
    };
    b.record_event = [this](uint64_t) {
      const uint64_t id = next_event++;
      events[id] = false;
      return reinterpret_cast<void*>(id);
    };
    b.event_done = [this](void* e) { return events.at(reinterpret_cast<uint64_t>(e)); };
    b.destroy_event = [this](void* e) { events.erase(reinterpret_cast<uint64_t>(e)); };
    b.describe = [this] { return "fake device of " + std::to_string(capacity) + " bytes"; };
    return b;
  }
};

TEST(CachingAllocator, RoundsSizesIntoClasses) {
  using A = detail::CachingAllocator;
  EXPECT_EQ(A::round_size(0), 512u);
  EXPECT_EQ(A::round_size(1), 512u);
  EXPECT_EQ(A::round_size(512), 512u);
  EXPECT_EQ(A::round_size(513), 1024u);
  EXPECT_EQ(A::round_size((1 << 20) - 1), size_t{1} << 20);
  EXPECT_EQ(A::round_size(1 << 20), size_t{2} << 20);
  EXPECT_EQ(A::round_size((2 << 20) + 1), size_t{4} << 20);
}

TEST(CachingAllocator, ReusesFreedBlocksOnTheSameStreamOnly) {
  FakeDevice dev;
  detail::CachingAllocator a("fake:0", dev.backend());
  const uint64_t p = a.allocate(1000, /*stream=*/1);
  a.free(p);
  EXPECT_EQ(a.allocate(900, 1), p) << "a freed block serves the next request of its size class on its stream";
  EXPECT_EQ(dev.allocs, 1);
  a.free(p);
  const uint64_t q = a.allocate(900, 2);
  EXPECT_NE(q, p) << "another stream's cached block is not reused";
  EXPECT_EQ(dev.allocs, 2);
  // A much smaller request does not take a big block (at most half of it wasted): it takes p.
  const uint64_t big = a.allocate(8 << 20, 1);
  a.free(big);
  const uint64_t small = a.allocate(100, 1);
  EXPECT_EQ(small, p);
  EXPECT_NE(a.allocate(1 << 20, 1), big) << "8 MiB is more than twice 1 MiB";
  const auto s = a.stats();
  EXPECT_EQ(s.cache_hits, 2);
  EXPECT_EQ(s.cache_misses, 4);
  EXPECT_EQ(s.allocations, 6);
  EXPECT_EQ(s.frees, 3);
  EXPECT_EQ(s.allocated_bytes, 1024u + 1024u + (2u << 20));
  EXPECT_EQ(s.requested_bytes, 900u + 100u + (1u << 20));
  EXPECT_EQ(s.reserved_bytes, dev.used);
  EXPECT_EQ(s.cached_bytes, 8u << 20);
  EXPECT_EQ(s.peak_allocated_bytes, 1024u + (8u << 20)) << "q and the 8 MiB block (p was cached then)";
}

TEST(CachingAllocator, EmptyCacheReturnsOnlyFreeBlocks) {
  FakeDevice dev;
  detail::CachingAllocator a("fake:0", dev.backend());
  const uint64_t live = a.allocate(4096, 0);
  a.free(a.allocate(3 << 20, 0));
  EXPECT_EQ(dev.blocks.size(), 2u);
  a.empty_cache();
  EXPECT_EQ(dev.blocks.size(), 1u);
  EXPECT_EQ(a.stats().reserved_bytes, 4096u);
  EXPECT_EQ(a.stats().cached_bytes, 0u);
  EXPECT_EQ(a.find(live + 10), std::make_pair(live, size_t{4096}));
  EXPECT_EQ(a.find(live + 4096).first, 0u);
  a.free(live);
  a.reset_peak();
  EXPECT_EQ(a.stats().peak_allocated_bytes, 0u);
}

TEST(CachingAllocator, BlocksUsedOnOtherStreamsWaitForTheirEvents) {
  FakeDevice dev;
  detail::CachingAllocator a("fake:0", dev.backend());
  const uint64_t p = a.allocate(2048, 1);
  a.record_stream(p + 100, 2);
  a.record_stream(p, 1);  // its own stream: nothing to wait for
  a.free(p);
  EXPECT_EQ(a.stats().pending_blocks, 1);
  ASSERT_EQ(dev.events.size(), 1u) << "one event, recorded on stream 2 at free time";
  EXPECT_NE(a.allocate(2048, 1), p) << "not reused while stream 2 may still read it";
  dev.events.begin()->second = true;
  EXPECT_EQ(a.allocate(2048, 1), p) << "reused once the event completed";
  EXPECT_TRUE(dev.events.empty()) << "the event was destroyed";
  EXPECT_EQ(a.stats().pending_blocks, 0);
}

TEST(CachingAllocator, OutOfMemoryReleasesTheCacheThenRaisesWithSizes) {
  FakeDevice dev;
  dev.capacity = 10 << 20;
  detail::CachingAllocator a("fake:0", dev.backend());
  a.free(a.allocate(6 << 20, 0));  // cached, on the same stream but too big to reuse for 2 MiB
  const uint64_t p = a.allocate(8 << 20, 1);  // needs the cached 6 MiB back
  EXPECT_NE(p, 0u);
  EXPECT_EQ(a.stats().oom_retries, 1);
  EXPECT_EQ(dev.frees, 1);
  EXPECT_KILN_ERROR(a.allocate(5 << 20, 1), "out of memory on fake:0", "tried to allocate 5.00 MiB",
                    "live tensors hold 8.00 MiB", "fake device of 10485760 bytes");
  EXPECT_EQ(a.stats().ooms, 1);
  a.free(p);
  EXPECT_KILN_ERROR(a.free(p), "free of fake:0 address", "did not hand out");
  EXPECT_KILN_ERROR(a.record_stream(0x1, 3), "[record_stream]", "not in a live block of fake:0");
}

TEST(CachingAllocator, RetainedStreamsKeepTheirCachedBlocks) {
  FakeDevice dev;
  detail::CachingAllocator a("fake:0", dev.backend());
  a.free(a.allocate(4096, 5));
  a.free(a.allocate(4096, 6));
  a.retain_stream(5, true);
  a.empty_cache();
  EXPECT_EQ(dev.blocks.size(), 1u) << "stream 5's block stays (a CUDA graph addresses it)";
  EXPECT_EQ(a.stats().cached_bytes, 4096u);
  a.retain_stream(5, false);
  a.empty_cache();
  EXPECT_TRUE(dev.blocks.empty());
}

// ---- settings and errors that need no device -----------------------------------------------------

TEST(CudaSettings, Float32MatmulPrecision) {
  EXPECT_EQ(get_float32_matmul_precision(), "highest");
  set_float32_matmul_precision("high");
  EXPECT_EQ(get_float32_matmul_precision(), "high");
  set_float32_matmul_precision("highest");
  EXPECT_KILN_ERROR(set_float32_matmul_precision("fast"), "[set_float32_matmul_precision]", "\"fast\"");
}

TEST(CudaWithoutDevice, DeviceTensorsRaiseClearly) {
  if (cuda::is_available()) GTEST_SKIP() << "a GPU is present: the error paths for its absence do not apply";
  Tensor x = ones({2, 3});
  EXPECT_KILN_ERROR(x.to(Device(kCUDA)), "CUDA is not available");
  EXPECT_KILN_ERROR(zeros({4}, TensorOptions(kFloat32).device(Device(kCUDA))), "CUDA is not available");
  EXPECT_KILN_ERROR(pin_memory(x), "[pin_memory]", "CUDA is not available");
  EXPECT_FALSE(is_pinned(x));
  EXPECT_KILN_ERROR(cuda::memory_stats(0), "CUDA is not available");
  EXPECT_TRUE(cuda::host_fallback_counts().empty());
}

TEST(CudaGraphsOption, PlansThatCannotBeCudaGraphsRunAsUsual) {
  // CPU kernels: nothing to capture; the plan runs kernel by kernel and the refusal is counted.
  jit::reset();
  jit::CompileOptions o;
  o.cuda_graphs = true;
  auto f = jit::compile([](const Tensor& x) { return (x * 2).exp() + 1; }, o);
  Tensor x = randn({16});
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(testing::close(f(x), (x * 2).exp() + 1, 1e-6, 1e-6));
  if (jit::stats().fused_kernels > 0) EXPECT_GE(jit::stats().cuda_graph_refusals, 1);
  EXPECT_EQ(jit::stats().cuda_graph_plans, 0);
}

#if KILN_HAS_CUDA_TOOLKIT

// ---- the registry's CUDA column and the eager kernels, compiled without a device -----------------

TEST(CudaRegistry, EveryRowHasACudaKernel) {
  for (const OpDef* d : OpRegistry::instance().all()) {
    if (d->kind == OpKind::View) continue;  // views move no data: one implementation for every device
    EXPECT_NE(d->kernels[static_cast<int>(DeviceType::CUDA)], nullptr) << d->name;
  }
}

Tensor sample(const Shape& s, DType t, uint64_t seed) {
  manual_seed(seed);
  if (t == kBool) return randn(s) > 0;
  if (!is_floating_point(t)) return randint(t == kUInt8 ? 0 : -6, 7, s).to(t);
  return (randn(s) * 2).to(t);
}

// The eager CUDA kernels of one call: outputs as call_op would allocate them.
std::vector<fusion::Kernel> eager_kernels(const OpDef& op, const TensorList& in, const Attrs& attrs = {}) {
  TensorList out;
  for (const TensorMeta& m : op.infer(op, in, attrs)) out.push_back(empty(m.sizes, m.dtype));
  return eager_cuda_kernels(op, in, out, attrs);
}

struct EagerCorpus {
  std::vector<fusion::Kernel> kernels;
  std::set<std::string> rows;  // rows that made at least one kernel
};

const EagerCorpus& eager_corpus() {
  static const EagerCorpus corpus = [] {
    EagerCorpus c;
    auto add = [&](const std::string& row, const std::vector<fusion::Kernel>& ks) {
      if (!ks.empty()) c.rows.insert(row);
      c.kernels.insert(c.kernels.end(), ks.begin(), ks.end());
    };
    const std::vector<DType> dtypes = {kFloat32, kFloat64, kFloat16, kBFloat16, kInt32, kInt64, kInt16, kInt8, kUInt8, kBool};
    for (DType t : dtypes) {
      // A contiguous, a broadcast row vector and a transposed operand.
      const TensorList in = {sample({3, 37}, t, 10), sample({37}, t, 11), sample({37, 3}, t, 12).t()};
      for (const OpDef* d : OpRegistry::instance().all()) {
        if (d->kind != OpKind::Pointwise || d->arity < 1 || !d->attr_names.empty()) continue;
        const TensorList args(in.begin(), in.begin() + d->arity);
        try {
          d->infer(*d, args, {});
        } catch (const Error&) {
          continue;  // the row does not take this dtype
        }
        add(d->name, eager_kernels(*d, args));
      }
      for (DType to : dtypes) add("copy", eager_kernels(op_def("copy"), {in[2]}, Attrs{to}));
    }
    for (DType t : {kFloat32, kFloat64, kFloat16, kBFloat16}) {
      for (Shape s : {Shape{4, 48}, Shape{3, 2000}, Shape{300, 6}}) {
        Tensor x = sample(s, t, 4), w = sample({s[1]}, t, 7), b = sample({s[1]}, t, 8);
        const Shape row{1}, col{0}, all{};
        add("sum", eager_kernels(op_def("sum"), {x}, Attrs{row, false, std::monostate{}}));
        add("mean", eager_kernels(op_def("mean"), {x}, Attrs{col, true, std::monostate{}}));
        add("prod", eager_kernels(op_def("prod"), {x}, Attrs{all, false, std::monostate{}}));
        add("amax", eager_kernels(op_def("amax"), {x}, Attrs{row, false}));
        add("amin", eager_kernels(op_def("amin"), {x.t()}, Attrs{row, true}));
        add("var", eager_kernels(op_def("var"), {x}, Attrs{row, int64_t{1}, false}));
        add("std", eager_kernels(op_def("std"), {x}, Attrs{col, int64_t{0}, true}));
        add("logsumexp", eager_kernels(op_def("logsumexp"), {x}, Attrs{row, false}));
        add("softmax", eager_kernels(op_def("softmax"), {x}, Attrs{int64_t{-1}, std::monostate{}}));
        add("log_softmax", eager_kernels(op_def("log_softmax"), {x}, Attrs{int64_t{0}, std::monostate{}}));
        add("layer_norm", eager_kernels(op_def("layer_norm"), {x, w, b}, Attrs{Shape{s[1]}, 1e-5}));
      }
    }
    // In place and out=: written through strided views, read where they are written.
    Tensor y = sample({8, 6}, kFloat32, 3);
    {
      const OpDef& add_row = op_def("add");
      Tensor target = y.t();
      TensorList out{target};
      add("add_", eager_cuda_kernels(add_row, {target, sample({8}, kFloat32, 5).unsqueeze(0)}, out, {}));
      Tensor slice = y.narrow(1, 1, 3);
      TensorList out2{slice};
      add("copy_", eager_cuda_kernels(op_def("copy"), {sample({8, 3}, kInt32, 6)}, out2, Attrs{kFloat32}));
    }
    return c;
  }();
  return corpus;
}

TEST(CudaEagerKernels, CoverThePointwiseRowsAndReductions) {
  const EagerCorpus& c = eager_corpus();
  for (const OpDef* d : OpRegistry::instance().all())
    if (d->kind == OpKind::Pointwise && d->attr_names.empty() && d->arity >= 1)
      EXPECT_TRUE(c.rows.count(d->name)) << d->name << " made no eager CUDA kernel";
  for (const char* r : {"copy", "sum", "mean", "prod", "amax", "amin", "var", "std", "logsumexp", "softmax",
                        "log_softmax", "layer_norm", "add_", "copy_"})
    EXPECT_TRUE(c.rows.count(r)) << r;
  EXPECT_GT(c.kernels.size(), 300u);
  // float16/bfloat16 fuse for CUDA (computed in float32, rounded once per op).
  int reduced = 0;
  for (const fusion::Kernel& k : c.kernels)
    for (const fusion::Buffer& b : k.buffers) reduced += b.dtype == kFloat16 || b.dtype == kBFloat16;
  EXPECT_GT(reduced, 100);
}

TEST(CudaEagerKernels, CompileWithNvrtcForSm80AndSm90WithoutWarnings) {
  if (!fusion::nvrtc_available()) GTEST_SKIP() << "NVRTC is not available: " << fusion::nvrtc_unavailable_reason();
  const EagerCorpus& c = eager_corpus();
  std::vector<fusion::CudaKernel> rendered;
  for (const fusion::Kernel& k : c.kernels) rendered.push_back(fusion::render_cuda(k));
  const std::string tu = fusion::cuda_translation_unit(rendered);
  for (int arch : {80, 90}) {
    auto bin = fusion::nvrtc_compile(tu, arch, {.name = "eager_corpus"});
    EXPECT_FALSE(bin->cubin.empty()) << "sm_" << arch;
    EXPECT_EQ(bin->log, "") << "sm_" << arch;
  }
}

TEST(CudaHandwritten, CompilesWithNvrtcForSm80AndSm90WithoutWarnings) {
  if (!fusion::nvrtc_available()) GTEST_SKIP() << "NVRTC is not available: " << fusion::nvrtc_unavailable_reason();
  for (int arch : {80, 90}) {
    auto bin = fusion::nvrtc_compile(handwritten_cuda_source(), arch, {.name = "kiln_handwritten"});
    EXPECT_FALSE(bin->cubin.empty()) << "sm_" << arch;
    EXPECT_EQ(bin->log, "") << "sm_" << arch;
    for (const char* k : {"kiln_index_select_4", "kiln_gather_8", "kiln_scatter_add_f32", "kiln_max_pool2d_f64",
                          "kiln_avg_pool2d_backward_f32", "kiln_cumsum_i64", "kiln_uniform_f32", "kiln_normal_f64",
                          "kiln_randint_i64", "kiln_bernoulli_f32", "kiln_dropout_f64"})
      EXPECT_NE(bin->ptx.find(std::string(".entry ") + k), std::string::npos) << k;
  }
}

TEST(CudaEagerKernels, UnloweredCallsGoToTheHost) {
  // Integer pow checks its operands on the CPU; the CUDA path hands it to the host fallback.
  Tensor a = sample({4}, kInt32, 1), b = sample({4}, kInt32, 2).abs();
  EXPECT_TRUE(eager_kernels(op_def("pow"), {a, b}).empty());
}

// The composed CUDA kernels are device-agnostic: on CPU tensors they must agree with each row's CPU
// kernel (which is how they are checked without a GPU).
TensorList run_kernel(KernelFn k, const OpDef& op, const TensorList& in, const Attrs& attrs) {
  TensorList out;
  for (const TensorMeta& m : op.infer(op, in, attrs)) out.push_back(empty(m.sizes, m.dtype));
  k(op, in, out, attrs);
  return out;
}

TEST(CudaCompositions, AgreeWithTheCpuKernelsOnCpuTensors) {
  manual_seed(5);
  Tensor x = randn({4, 7});
  x.select(0, 2).select(0, 3).fill_(std::nan(""));
  Tensor logits = randn({5, 4}), logits3 = randn({2, 4, 3});
  Tensor target = tensor({0, 3, -100, 1, 2}).to(kInt64), target3 = randint(0, 4, {2, 3});
  Tensor probs = softmax(randn({5, 4}), 1), target_ok = tensor({0, 3, 2, 1, 2}).to(kInt64);
  Tensor w = rand({4}) + 0.5;
  struct Case {
    std::string row;
    TensorList in;
    Attrs attrs;
  };
  const std::vector<Case> cases = {
      {"argmax", {x}, Attrs{int64_t{1}, false}},
      {"argmax", {x}, Attrs{std::monostate{}, false}},
      {"argmin", {x.abs()}, Attrs{int64_t{0}, true}},
      {"argmin", {randint(0, 3, {6, 5})}, Attrs{int64_t{1}, false}},
      {"max_dim", {x}, Attrs{int64_t{1}, true}},
      {"min_dim", {randn({3, 6})}, Attrs{int64_t{0}, false}},
      {"all", {randint(0, 2, {3, 5})}, Attrs{Shape{1}, false}},
      {"any", {randint(0, 2, {3, 5}).to(kBool)}, Attrs{Shape{}, false}},
      {"var_mean", {randn({3, 8})}, Attrs{Shape{1}, int64_t{1}, true}},
      {"equal", {x, x.clone()}, Attrs{}},
      {"equal", {logits, logits.clone()}, Attrs{}},
      {"equal", {x, x.t()}, Attrs{}},
      {"allclose", {x, x + 1e-9}, Attrs{1e-5, 1e-8, true}},
      {"allclose", {x, x + 1e-9}, Attrs{1e-5, 1e-8, false}},
      {"allclose", {logits, logits + 0.1}, Attrs{1e-5, 1e-8, false}},
      {"cat", {randn({2, 3}), randn({0}), randn({4, 3})}, Attrs{int64_t{0}}},
      {"cat", {randn({2, 3}), randn({2, 1}).to(kFloat64)}, Attrs{int64_t{-1}}},
      {"tril", {randn({5, 4})}, Attrs{int64_t{1}}},
      {"triu", {randn({2, 3, 4})}, Attrs{int64_t{-1}}},
      {"triu", {randint(0, 2, {4, 4}).to(kBool)}, Attrs{int64_t{0}}},
      {"one_hot", {randint(0, 4, {6})}, Attrs{int64_t{5}}},
      {"mse_loss", {randn({4, 3}), randn({3})}, Attrs{int64_t{0}}},
      {"mse_loss", {randn({4, 3}), randn({4, 3})}, Attrs{int64_t{1}}},
      {"mse_loss", {randn({4, 3}), randn({4, 3}).to(kFloat64)}, Attrs{int64_t{2}}},
      {"nll_loss", {log_softmax(logits, 1), target, w}, Attrs{int64_t{1}, int64_t{-100}}},
      {"nll_loss", {log_softmax(logits, 1), target_ok}, Attrs{int64_t{0}, int64_t{3}}},
      {"cross_entropy", {logits, target, w}, Attrs{int64_t{1}, int64_t{-100}, 0.1}},
      {"cross_entropy", {logits, target_ok}, Attrs{int64_t{2}, int64_t{-100}, 0.0}},
      {"cross_entropy", {logits3, target3}, Attrs{int64_t{0}, int64_t{-100}, 0.2}},
      {"cross_entropy", {logits, probs, w}, Attrs{int64_t{1}, int64_t{-100}, 0.1}},
      {"cross_entropy", {logits[0], tensor(int64_t{2})}, Attrs{int64_t{1}, int64_t{-100}, 0.0}},
  };
  std::set<std::string> covered;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.row);
    const OpDef& op = op_def(c.row);
    const TensorList expected = run_kernel(op.kernels[static_cast<int>(DeviceType::CPU)], op, c.in, c.attrs);
    const TensorList got = run_kernel(cuda_compositions().at(c.row), op, c.in, c.attrs);
    ASSERT_EQ(got.size(), expected.size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].dtype(), expected[i].dtype());
      EXPECT_TRUE(testing::close(got[i], expected[i], 1e-5, 1e-6)) << "output " << i;
    }
    covered.insert(c.row);
  }
  for (const auto& [name, fn] : cuda_compositions()) EXPECT_TRUE(covered.count(name)) << name << " has no case";
  // Long full reductions in two stages (sizes with and without a tail, keepdim, dtype argument).
  for (int64_t n : {int64_t{1} << 16, (int64_t{1} << 16) + 777}) {
    Tensor big = randn({n}) + 0.5;
    Tensor ints = randint(-100, 100, {n}).to(kInt32);
    Tensor wide = big.view({-1, n / 7 * 7 == n ? 7 : 1});
    const std::vector<std::pair<std::string, std::pair<Tensor, Attrs>>> full = {
        {"sum", {big, Attrs{Shape{}, false, std::monostate{}}}},
        {"sum", {ints, Attrs{Shape{}, true, std::monostate{}}}},
        {"sum", {big, Attrs{Shape{}, false, kFloat64}}},
        {"mean", {wide, Attrs{Shape{}, true, std::monostate{}}}},
        {"amax", {big, Attrs{Shape{}, false}}},
        {"amin", {ints, Attrs{Shape{0}, false}}},
    };
    for (const auto& [row, arg] : full) {
      const OpDef& op = op_def(row);
      const Tensor expected = run_kernel(op.kernels[static_cast<int>(DeviceType::CPU)], op, {arg.first}, arg.second)[0];
      Tensor got = empty(expected.sizes(), TensorOptions(expected.dtype()));
      split_full_reduction(op, arg.first, got, arg.second);
      EXPECT_TRUE(testing::close(got, expected, 1e-5, 1e-4)) << row << " of " << n;
    }
  }
  // Out-of-range targets raise as on the CPU.
  const OpDef& ce = op_def("cross_entropy");
  EXPECT_KILN_ERROR(run_kernel(cuda_compositions().at("cross_entropy"), ce, {logits, tensor({0, 4, 1, 1, 1}).to(kInt64)},
                               Attrs{int64_t{1}, int64_t{-100}, 0.0}),
                    "[cross_entropy] target 4 is out of bounds", "[0, 4)");
  EXPECT_KILN_ERROR(run_kernel(cuda_compositions().at("cross_entropy"), ce, {logits, tensor({0, -3, 1, 1, 1}).to(kInt64)},
                               Attrs{int64_t{1}, int64_t{-100}, 0.0}),
                    "target -3 is out of bounds");
}

// ---- on a GPU --------------------------------------------------------------------------------------

class CudaDevice : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda::is_available()) GTEST_SKIP() << "no CUDA device: " << cuda::unavailable_reason();
    if (!fusion::nvrtc_available()) GTEST_SKIP() << "NVRTC is not available: " << fusion::nvrtc_unavailable_reason();
  }
  static Tensor gpu(const Tensor& t) { return t.to(Device(kCUDA)); }
};

TEST_F(CudaDevice, CopiesRoundTripAndPinnedMemory) {
  Tensor x = randn({33, 17});
  Tensor g = gpu(x);
  EXPECT_TRUE(g.is_cuda());
  EXPECT_TRUE(testing::close(g.cpu(), x, 0, 0));
  EXPECT_TRUE(testing::close(gpu(x.t()).cpu(), x.t(), 0, 0));
  Tensor p = pin_memory(x);
  EXPECT_TRUE(is_pinned(p));
  EXPECT_FALSE(is_pinned(x));
  EXPECT_TRUE(testing::close(gpu(p).cpu(), x, 0, 0));
  EXPECT_GT(cuda::pinned_memory_stats().allocations, 0);
  // A cast on the way, and device-to-device.
  EXPECT_TRUE(testing::close(g.to(kFloat64).cpu(), x.to(kFloat64), 0, 0));
  EXPECT_TRUE(testing::close(g.clone().cpu(), x, 0, 0));
  Tensor h = zeros({33, 17}, TensorOptions(kFloat32).device(Device(kCUDA)));
  h.copy_(g);
  EXPECT_TRUE(testing::close(h.cpu(), x, 0, 0));
  EXPECT_TRUE(testing::close(full({3}, 2.5, kFloat64, Device(kCUDA)).cpu(), full({3}, 2.5, kFloat64), 0, 0));
  EXPECT_EQ(g.sum().item().to<double>(), x.sum().item().to<double>());
}

TEST_F(CudaDevice, GradientsFlowAcrossDevices) {
  Tensor x = randn({5}).requires_grad_();
  Tensor y = (gpu(x) * 3).exp().sum();
  y.backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_TRUE(x.grad().is_cpu());
  EXPECT_TRUE(testing::close(x.grad(), (x.detach() * 3).exp() * 3, 1e-5, 1e-6));
}

TEST_F(CudaDevice, PointwiseRowsAgreeWithTheCpu) {
  const std::vector<DType> dtypes = {kFloat32, kFloat64, kFloat16, kBFloat16, kInt32, kInt64, kUInt8, kBool};
  for (DType t : dtypes) {
    const double tol = t == kFloat16 ? 2e-3 : t == kBFloat16 ? 1.6e-2 : 2e-6;
    const TensorList in = {sample({3, 37}, t, 10), sample({37}, t, 11), sample({37, 3}, t, 12).t()};
    for (const OpDef* d : OpRegistry::instance().all()) {
      if (d->kind != OpKind::Pointwise || d->arity < 1 || !d->attr_names.empty()) continue;
      const TensorList args(in.begin(), in.begin() + d->arity);
      Tensor expected;
      try {
        expected = call_op1(*d, args);
      } catch (const Error&) {
        continue;
      }
      TensorList dargs;
      for (const Tensor& a : args) dargs.push_back(gpu(a));
      Tensor got = call_op1(*d, dargs);
      EXPECT_TRUE(got.is_cuda());
      EXPECT_TRUE(testing::close(got.cpu(), expected, tol, tol / 2)) << d->name << " " << t;
    }
  }
}

TEST_F(CudaDevice, ReductionsAndNormalisationsAgreeWithTheCpu) {
  for (Shape s : {Shape{4, 48}, Shape{3, 2000}, Shape{300, 6}}) {
    Tensor x = sample(s, kFloat32, 4), w = sample({s[1]}, kFloat32, 7), b = sample({s[1]}, kFloat32, 8);
    Tensor g = gpu(x);
    EXPECT_TRUE(testing::close(g.sum({1}).cpu(), x.sum({1}), 1e-5, 1e-4));
    EXPECT_TRUE(testing::close(g.mean({0}, true).cpu(), x.mean({0}, true), 1e-5, 1e-5));
    EXPECT_TRUE(testing::close(g.amax({1}).cpu(), x.amax({1}), 0, 0));
    EXPECT_TRUE(testing::close(g.var({1}).cpu(), x.var({1}), 1e-5, 1e-5));
    EXPECT_TRUE(testing::close(softmax(g, -1).cpu(), softmax(x, -1), 1e-5, 1e-6));
    EXPECT_TRUE(testing::close(log_softmax(g, 0).cpu(), log_softmax(x, 0), 1e-5, 1e-5));
    EXPECT_TRUE(testing::close(logsumexp(g, {1}).cpu(), logsumexp(x, {1}), 1e-5, 1e-5));
    EXPECT_TRUE(testing::close(layer_norm(g, {s[1]}, gpu(w), gpu(b)).cpu(), layer_norm(x, {s[1]}, w, b), 1e-5, 1e-5));
    EXPECT_TRUE(testing::close(g.argmax(1).cpu(), x.argmax(1), 0, 0));
    EXPECT_TRUE(testing::close(g.argmin(0).cpu(), x.argmin(0), 0, 0));
    EXPECT_EQ(g.gt(0).all().item().to<bool>(), x.gt(0).all().item().to<bool>());
    EXPECT_EQ(g.gt(0).any().item().to<bool>(), x.gt(0).any().item().to<bool>());
  }
}

TEST_F(CudaDevice, MatmulsThroughCublas) {
  Tensor a = randn({2, 5, 7}), b = randn({7, 3}), w = randn({4, 7}), bias = randn({4});
  EXPECT_TRUE(testing::close(matmul(gpu(a), gpu(b)).cpu(), matmul(a, b), 1e-5, 1e-5));
  EXPECT_TRUE(testing::close(mm(gpu(b.t()), gpu(a[0].t())).cpu(), mm(b.t(), a[0].t()), 1e-5, 1e-5));
  EXPECT_TRUE(testing::close(linear(gpu(a), gpu(w), gpu(bias)).cpu(), linear(a, w, bias), 1e-5, 1e-5));
  EXPECT_TRUE(testing::close(matmul(gpu(a[0][0]), gpu(b)).cpu(), matmul(a[0][0], b), 1e-5, 1e-5));
  set_float32_matmul_precision("high");
  Tensor big_a = randn({64, 256}), big_b = randn({256, 32});
  EXPECT_TRUE(testing::close(mm(gpu(big_a), gpu(big_b)).cpu(), mm(big_a, big_b), 1e-2, 5e-2)) << "TF32: ~1e-3 relative";
  set_float32_matmul_precision("highest");
}

TEST_F(CudaDevice, ConvolutionsThroughCudnnAndHostFallbacksCounted) {
  cuda::reset_host_fallback_counts();
  Tensor x = randn({2, 3, 8, 8}), w = randn({4, 3, 3, 3}), b = randn({4});
  EXPECT_TRUE(testing::close(conv2d(gpu(x), gpu(w), gpu(b), {2, 1}, {1, 1}).cpu(), conv2d(x, w, b, {2, 1}, {1, 1}), 1e-4,
                             1e-4));
  Tensor gy = randn({2, 4, 6, 6});
  EXPECT_TRUE(testing::close(conv2d_backward_input(gpu(gy), gpu(w), x.sizes()).cpu(), conv2d_backward_input(gy, w, x.sizes()),
                             1e-4, 1e-4));
  EXPECT_TRUE(testing::close(conv2d_backward_weight(gpu(gy), gpu(x), w.sizes()).cpu(),
                             conv2d_backward_weight(gy, x, w.sizes()), 1e-4, 1e-4));
  // randperm has no CUDA kernel: it runs on the host, counted, with the CPU's numbers.
  manual_seed(4);
  Tensor want = randperm(50);
  manual_seed(4);
  Tensor got = randperm(50, TensorOptions(kInt64).device(Device(kCUDA)));
  EXPECT_TRUE(testing::close(got.cpu(), want, 0, 0));
  EXPECT_EQ(cuda::host_fallback_counts().at("randperm"), 1);
}

TEST_F(CudaDevice, AllocatorCachesAndRaisesOutOfMemory) {
  cuda::empty_cache();
  const auto before = cuda::memory_stats(0);
  { Tensor t = empty({1 << 20}, TensorOptions(kFloat32).device(Device(kCUDA))); }
  { Tensor t = empty({1 << 20}, TensorOptions(kFloat32).device(Device(kCUDA))); }
  const auto after = cuda::memory_stats(0);
  EXPECT_EQ(after.cache_hits - before.cache_hits, 1);
  EXPECT_GE(cuda::memory_reserved(0), size_t{4} << 20);
  cuda::empty_cache();
  EXPECT_EQ(cuda::memory_stats(0).cached_bytes, 0u);
  EXPECT_KILN_ERROR(empty({int64_t{1} << 50}, TensorOptions(kFloat32).device(Device(kCUDA))), "out of memory on cuda:0",
                    "tried to allocate 4096.00 TiB", "the device has");
}

TEST_F(CudaDevice, StreamsOrderTheirWork) {
  cuda::Stream s = cuda::create_stream(0);
  Tensor x = randn({1000});
  Tensor y;
  {
    cuda::StreamGuard guard(s);
    EXPECT_EQ(cuda::current_stream(0), s);
    y = (gpu(x) * 2 + 1).exp();
  }
  cuda::synchronize(s);
  EXPECT_TRUE(testing::close(y.cpu(), (x * 2 + 1).exp(), 1e-6, 1e-6));
  EXPECT_EQ(cuda::current_stream(0).handle, nullptr);
  cuda::destroy_stream(s);
}

TEST_F(CudaDevice, MlpTrainingStepMatchesTheCpu) {
  manual_seed(3);
  auto mlp = [] {
    return std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(16, 32), std::make_shared<nn::ReLU>(),
                                            std::make_shared<nn::Linear>(32, 4));
  };
  auto cpu_model = mlp(), gpu_model = mlp();
  gpu_model->load_state_dict(cpu_model->state_dict());
  gpu_model->to(Device(kCUDA));
  optim::SGD cpu_opt(cpu_model->parameters(), {.lr = 0.1, .momentum = 0.9});
  optim::SGD gpu_opt(gpu_model->parameters(), {.lr = 0.1, .momentum = 0.9});
  Tensor x = randn({8, 16}), target = randn({8, 4});
  for (int step = 0; step < 3; ++step) {
    cpu_opt.zero_grad();
    gpu_opt.zero_grad();
    Tensor lc = mse_loss(cpu_model->forward(x), target);
    Tensor lg = mse_loss(gpu_model->forward(gpu(x)), gpu(target));
    lc.backward();
    lg.backward();
    cpu_opt.step();
    gpu_opt.step();
    EXPECT_NEAR(lg.item().to<double>(), lc.item().to<double>(), 1e-5);
  }
  auto pc = cpu_model->parameters(), pg = gpu_model->parameters();
  for (size_t i = 0; i < pc.size(); ++i) EXPECT_TRUE(testing::close(pg[i].cpu(), pc[i], 1e-4, 1e-5)) << "parameter " << i;
}

TEST_F(CudaDevice, CompiledEqualsEager) {
  auto f = [](const Tensor& x, const Tensor& y) { return softmax((x * 1.5 + y).relu().tanh(), -1) + x.sum({1}, true); };
  auto compiled = jit::compile(f);
  Tensor x = gpu(randn({64, 100})), y = gpu(randn({100}));
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(testing::close(compiled(x, y).cpu(), f(x, y).cpu(), 1e-5, 1e-6));
  EXPECT_GT(jit::stats().fused_kernels, 0);
}

TEST_F(CudaDevice, CompiledPlansReplayAsCudaGraphs) {
  jit::reset();
  jit::CompileOptions o;
  o.cuda_graphs = true;
  auto f = [](const Tensor& x, const Tensor& y) { return softmax((x * 1.5 + y).relu().tanh(), -1); };
  auto g = jit::compile(f, o);
  Tensor y = gpu(randn({100}));
  for (int i = 0; i < 5; ++i) {
    Tensor x = gpu(randn({64, 100}));  // a new input every call: copied into the graph's buffers
    EXPECT_TRUE(testing::close(g(x, y).cpu(), f(x, y).cpu(), 1e-5, 1e-6)) << "call " << i;
  }
  EXPECT_GT(jit::stats().cuda_graph_plans, 0);
  EXPECT_GE(jit::stats().cuda_graph_launches, 2) << "calls 3 to 5 (after the warm-up and the capture call) launch the graph";
  // In-place updates of an input reach the caller's tensor.
  auto step = jit::compile([](const Tensor& p, const Tensor& gr) {
    Tensor q = p;
    q.sub_(gr * 0.1);
    return q.sum();
  }, o);
  Tensor p = gpu(ones({32})), gr = gpu(full({32}, 2.0));
  for (int i = 0; i < 4; ++i) step(p, gr);
  EXPECT_TRUE(testing::close(p.cpu(), full({32}, 1.0 - 4 * 0.2), 1e-6, 1e-6));
  // Extern nodes (a cuBLAS matmul) in the graph too.
  auto mlp = [](const Tensor& x, const Tensor& w) { return (matmul(x, w) + 1).relu().sum({1}); };
  auto gm = jit::compile(mlp, o);
  Tensor w = gpu(randn({100, 20}));
  for (int i = 0; i < 4; ++i) {
    Tensor x = gpu(randn({64, 100}));
    EXPECT_TRUE(testing::close(gm(x, w).cpu(), mlp(x, w).cpu(), 1e-4, 1e-4)) << "call " << i;
  }
}

#endif  // KILN_HAS_CUDA_TOOLKIT

}  // namespace
}  // namespace kiln
