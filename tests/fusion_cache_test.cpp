// fusion/codegen's kernel cache: in memory, on disk (also across processes), corrupt and
// truncated files, unusable directories, concurrent compiles, injected failures.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "fusion/codegen.h"
#include "fusion_kernel_builder.h"
#include "test_util.h"

using namespace kiln;
using namespace kiln::fusion;
using kiln::testing::compile_one;
using kiln::testing::KernelBuilder;
using kiln::testing::run_kernel;
namespace fs = std::filesystem;

namespace {

// y[i] = x[i] * factor + 1 over a dynamic size; the factor makes the key unique per test.
Kernel scale_kernel(double factor) {
  KernelBuilder kb("scale");
  Int n = kb.param(16);
  kb.dims({n}, 1);
  int x = kb.buffer(kFloat32, true, false), y = kb.buffer(kFloat32, false, true);
  int ix = kb.index(KernelBuilder::c(0), {KernelBuilder::c(1)});
  int v = kb.op(ExprOp::Mul, kFloat32, kb.load(x, ix), kb.constant(kFloat32, factor));
  kb.store(y, ix, kb.op(ExprOp::Add, kFloat32, v, kb.constant(kFloat32, 1)));
  return kb.k;
}

::testing::AssertionResult computes_scale(const CompiledKernel& ck, double factor) {
  if (!ck.fn) return ::testing::AssertionFailure() << "no function";
  const int64_t n = 50;
  std::vector<float> xs(n), ys(n, -1);
  for (int64_t i = 0; i < n; ++i) xs[static_cast<size_t>(i)] = static_cast<float>(i) - 20.5f;
  run_kernel(ck, {xs.data(), ys.data()}, {n}, 0, n);
  for (size_t i = 0; i < xs.size(); ++i) {
    float want = xs[i] * static_cast<float>(factor) + 1.0f;
    if (ys[i] != want) return ::testing::AssertionFailure() << "element " << i << ": " << ys[i] << " vs " << want;
  }
  return ::testing::AssertionSuccess();
}

std::set<std::string> cache_files(const std::string& dir) {
  std::set<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().extension() == ".kobj") out.insert(e.path().string());
  return out;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << data;
}

class CacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!codegen_available()) GTEST_SKIP() << "built without LLVM";
    char tmpl[] = "/tmp/kiln_cache_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    setenv("KILN_CACHE_DIR", dir_.c_str(), 1);
    clear_memory_cache();
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
    unsetenv("KILN_CACHE_DIR");
  }
  std::string dir_;
};

TEST_F(CacheTest, MemoryHitReturnsTheSameKernel) {
  Kernel k = scale_kernel(2.0);
  auto a = compile_one(k);
  const CacheStats s0 = cache_stats();
  auto b = compile_one(k);
  EXPECT_EQ(a.get(), b.get());
  EXPECT_EQ(cache_stats().memory_hits, s0.memory_hits + 1);
  EXPECT_EQ(cache_stats().compiled, s0.compiled);
  EXPECT_TRUE(computes_scale(*b, 2.0));
}

TEST_F(CacheTest, DiskHitAfterClearingMemory) {
  Kernel k = scale_kernel(2.5);
  const CacheStats s0 = cache_stats();
  auto a = compile_one(k);
  EXPECT_FALSE(a->from_disk);
  EXPECT_EQ(cache_stats().compiled, s0.compiled + 1);
  EXPECT_EQ(cache_stats().disk_writes, s0.disk_writes + 1);
  EXPECT_EQ(cache_files(dir_).size(), 1u);
  EXPECT_EQ(cache_dir(), dir_);

  clear_memory_cache();
  CodegenOptions opt;
  opt.keep_text = true;
  auto b = compile_one(k, opt);
  EXPECT_TRUE(b->from_disk);
  EXPECT_TRUE(b->llvm_ir.empty());  // nothing was rendered
  EXPECT_EQ(b->symbol, a->symbol);
  EXPECT_EQ(b->key, a->key);
  EXPECT_EQ(cache_stats().disk_hits, s0.disk_hits + 1);
  EXPECT_EQ(cache_stats().compiled, s0.compiled + 1);
  EXPECT_TRUE(computes_scale(*b, 2.5));
  // Loaded once, then served from memory.
  auto c = compile_one(k);
  EXPECT_EQ(c.get(), b.get());
}

TEST_F(CacheTest, KeepTextAndTheKernelsNameDoNotChangeTheKey) {
  Kernel k = scale_kernel(4.5);
  CodegenOptions opt;
  opt.keep_text = true;
  opt.use_disk_cache = false;
  auto a = compile_one(k, opt);
  EXPECT_NE(a->llvm_ir.find("define void @" + a->symbol), std::string::npos) << a->llvm_ir;
  EXPECT_NE(a->llvm_ir_optimized.find("define void @" + a->symbol), std::string::npos);
  EXPECT_GE(a->compile_ms, 0.0);
  Kernel renamed = k;
  renamed.name = "another_name";
  EXPECT_EQ(compile_one(renamed).get(), a.get());
  EXPECT_TRUE(cache_files(dir_).empty());  // use_disk_cache = false wrote nothing
}

// Garbage, truncation, a flipped payload byte, another batch's file under this name: each is
// rejected (counted), the kernel is recompiled and works, and the file is rewritten.
TEST_F(CacheTest, CorruptTruncatedAndForeignFilesAreRebuilt) {
  Kernel other = scale_kernel(-1.0);
  compile_one(other);
  const std::string other_file = *cache_files(dir_).begin();
  const std::string other_bytes = read_file(other_file);
  const char* modes[] = {"garbage", "truncated", "flipped byte", "empty", "foreign keys"};
  for (int m = 0; m < 5; ++m) {
    SCOPED_TRACE(modes[m]);
    const double factor = 3.0 + m;
    Kernel k = scale_kernel(factor);
    auto before = cache_files(dir_);
    compile_one(k);
    auto after = cache_files(dir_);
    ASSERT_EQ(after.size(), before.size() + 1);
    std::string file;
    for (const std::string& f : after)
      if (!before.count(f)) file = f;
    std::string bytes = read_file(file);
    ASSERT_GT(bytes.size(), 100u);
    switch (m) {
      case 0: write_file(file, std::string(bytes.size(), 'x')); break;
      case 1: write_file(file, bytes.substr(0, bytes.size() / 2)); break;
      case 2: bytes[bytes.size() - 7] ^= 0x20; write_file(file, bytes); break;
      case 3: write_file(file, ""); break;
      default: write_file(file, other_bytes); break;
    }
    clear_memory_cache();
    const CacheStats s0 = cache_stats();
    auto rebuilt = compile_one(k);
    EXPECT_FALSE(rebuilt->from_disk);
    EXPECT_EQ(cache_stats().disk_rejected, s0.disk_rejected + 1);
    EXPECT_EQ(cache_stats().compiled, s0.compiled + 1);
    EXPECT_EQ(cache_stats().disk_writes, s0.disk_writes + 1);
    EXPECT_TRUE(computes_scale(*rebuilt, factor));
    // The rewritten file is good again.
    clear_memory_cache();
    auto reloaded = compile_one(k);
    EXPECT_TRUE(reloaded->from_disk);
    EXPECT_TRUE(computes_scale(*reloaded, factor));
  }
  // No temporary files are left behind.
  for (const auto& e : fs::directory_iterator(dir_)) EXPECT_EQ(e.path().extension(), ".kobj") << e.path();
}

TEST_F(CacheTest, UnusableCacheDirIsNoError) {
  const std::string file = dir_ + "/not_a_dir";
  write_file(file, "x");
  setenv("KILN_CACHE_DIR", (file + "/sub").c_str(), 1);
  EXPECT_EQ(cache_dir(), "");
  Kernel k = scale_kernel(6.5);
  const CacheStats s0 = cache_stats();
  auto a = compile_one(k);
  EXPECT_TRUE(computes_scale(*a, 6.5));
  clear_memory_cache();
  auto b = compile_one(k);
  EXPECT_FALSE(b->from_disk);
  EXPECT_EQ(cache_stats().compiled, s0.compiled + 2);
  EXPECT_EQ(cache_stats().disk_writes, s0.disk_writes);
  EXPECT_EQ(cache_stats().disk_rejected, s0.disk_rejected);
}

TEST_F(CacheTest, DefaultDirIsUnderHome) {
  const char* old_home = std::getenv("HOME");
  const std::string saved = old_home ? old_home : "";
  unsetenv("KILN_CACHE_DIR");
  setenv("HOME", dir_.c_str(), 1);
  EXPECT_EQ(cache_dir(), dir_ + "/.cache/kiln");
  EXPECT_TRUE(fs::is_directory(dir_ + "/.cache/kiln"));
  if (old_home)
    setenv("HOME", saved.c_str(), 1);
  else
    unsetenv("HOME");
}

// The child half of SecondProcessHitsTheDiskCache (skipped when run on its own).
TEST(CacheChild, LoadsKernelFromDisk) {
  if (!std::getenv("KILN_CACHE_TEST_CHILD")) GTEST_SKIP() << "runs as the child process of CacheTest.SecondProcessHitsTheDiskCache";
  Kernel k = scale_kernel(5.0);
  k.name = "named_differently_in_this_process";
  auto c = compile_one(k);
  EXPECT_TRUE(c->from_disk);
  EXPECT_EQ(cache_stats().compiled, 0);
  EXPECT_EQ(cache_stats().disk_hits, 1);
  EXPECT_TRUE(computes_scale(*c, 5.0));
  std::printf("child: from_disk=%d compiled=%lld\n", c->from_disk ? 1 : 0, static_cast<long long>(cache_stats().compiled));
}

TEST_F(CacheTest, SecondProcessHitsTheDiskCache) {
  Kernel k = scale_kernel(5.0);
  auto a = compile_one(k);
  ASSERT_EQ(cache_files(dir_).size(), 1u);
  const std::string exe = fs::read_symlink("/proc/self/exe").string();
  const std::string log = dir_ + "/child.log";
  const std::string cmd = "KILN_CACHE_DIR='" + dir_ + "' KILN_CACHE_TEST_CHILD=1 '" + exe +
                          "' --gtest_filter=CacheChild.LoadsKernelFromDisk > '" + log + "' 2>&1";
  const int rc = std::system(cmd.c_str());
  const std::string out = read_file(log);
  ASSERT_TRUE(WIFEXITED(rc)) << out;
  EXPECT_EQ(WEXITSTATUS(rc), 0) << out;
  EXPECT_NE(out.find("child: from_disk=1 compiled=0"), std::string::npos) << out;
  EXPECT_NE(out.find("[  PASSED  ] 1 test"), std::string::npos) << out;
}

TEST_F(CacheTest, ConcurrentCompilesOfOneKernelShareOneResult) {
  Kernel k = scale_kernel(7.0);
  const CacheStats s0 = cache_stats();
  std::vector<std::shared_ptr<const CompiledKernel>> got(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) threads.emplace_back([&, t] { got[static_cast<size_t>(t)] = compile_one(k); });
  for (auto& t : threads) t.join();
  for (int t = 1; t < 4; ++t) EXPECT_EQ(got[static_cast<size_t>(t)].get(), got[0].get());
  const CacheStats s1 = cache_stats();
  EXPECT_EQ(s1.compiled, s0.compiled + 1);
  EXPECT_EQ(s1.memory_hits, s0.memory_hits + 3);
  EXPECT_EQ(s1.disk_writes, s0.disk_writes + 1);
  EXPECT_TRUE(computes_scale(*got[0], 7.0));
}

TEST_F(CacheTest, BatchWithHitsMissesAndDuplicates) {
  Kernel k1 = scale_kernel(8.0), k2 = scale_kernel(8.5);
  auto a = compile_one(k1);
  const CacheStats s0 = cache_stats();
  auto batch = compile_kernels({&k1, &k2, &k2});
  ASSERT_EQ(batch.size(), 3u);
  EXPECT_EQ(batch[0].get(), a.get());
  EXPECT_EQ(batch[1].get(), batch[2].get());
  EXPECT_EQ(cache_stats().compiled, s0.compiled + 1);
  EXPECT_EQ(cache_stats().memory_hits, s0.memory_hits + 2);
  EXPECT_TRUE(computes_scale(*batch[1], 8.5));
  EXPECT_TRUE(computes_scale(*batch[0], 8.0));
}

TEST_F(CacheTest, InjectedFailureRaises) {
  Kernel k = scale_kernel(9.0);
  auto a = compile_one(k);  // even a cached kernel fails while the injection is on
  setenv("KILN_INJECT_CODEGEN_FAILURE", "1", 1);
  EXPECT_KILN_ERROR(compile_one(k), "[codegen] failure injected by KILN_INJECT_CODEGEN_FAILURE");
  unsetenv("KILN_INJECT_CODEGEN_FAILURE");
  EXPECT_EQ(compile_one(k).get(), a.get());
}

TEST(CacheWithoutLlvm, CompileRaises) {
  if (codegen_available()) GTEST_SKIP() << "built with LLVM";
  Kernel k = scale_kernel(1.0);
  EXPECT_KILN_ERROR(compile_one(k), "[codegen]", "without LLVM");
}

}  // namespace
