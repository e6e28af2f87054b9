// kiln::profiler: what it records (eager ops, JIT phases, kernel runs, externs, BLAS, allocator
// events, threads), the nesting arithmetic, the summary table's sums, the Chrome trace (parsed
// here with a strict JSON parser), and that kernel names agree between the trace, jit::stats()
// and the KILN_DUMP_DIR files.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "bench/compare/compare.h"

#include "fusion/codegen.h"
#include "kiln/kiln.h"
#include "test_util.h"

using namespace kiln;
namespace prof = kiln::profiler;

namespace {

// --- traces are parsed by bench/compare's JSON parser in strict RFC 8259 mode (no NaN/Infinity:
// Chrome and Perfetto reject them), into this small tree the checks below read -------------------

struct Json {
  enum Kind { Null, Bool, Num, Str, Arr, Obj } kind = Null;
  bool b = false;
  double num = 0;
  std::string str;
  std::vector<Json> arr;
  std::vector<std::pair<std::string, Json>> obj;
  const Json* get(std::string_view key) const {
    for (const auto& [k, v] : obj)
      if (k == key) return &v;
    return nullptr;
  }
  bool has(std::string_view key) const { return get(key) != nullptr; }
  const Json& at(std::string_view key) const {
    const Json* v = get(key);
    if (!v) throw std::runtime_error("missing key " + std::string(key));
    return *v;
  }
};

Json tree(const bench::Json& j) {
  Json t;
  t.kind = static_cast<Json::Kind>(static_cast<int>(j.kind));  // the same order of kinds
  t.b = j.boolean;
  t.num = j.number;
  t.str = j.string;
  for (const bench::Json& e : j.array) t.arr.push_back(tree(e));
  for (const auto& [k, v] : j.object) t.obj.emplace_back(k, tree(v));
  return t;
}

Json parse_json(const std::string& text) { return tree(bench::parse_json(text, "trace", /*allow_non_finite=*/false)); }

TEST(JsonParserSelfTest, AcceptsValidRejectsInvalid) {
  Json v = parse_json(R"({"a":[1,-2.5e3,true,null,"x\u00b5\n"],"b":{}})");
  EXPECT_EQ(v.at("a").arr.size(), 5u);
  EXPECT_EQ(v.at("a").arr[1].num, -2500);
  EXPECT_EQ(v.at("a").arr[4].str, "x\xc2\xb5\n");
  for (const char* bad : {"{\"a\":NaN}", "[1,]", "{\"a\":1,}", "[01]", "\"a\nb\"", "[Infinity]", "[1.]", "{a:1}"})
    EXPECT_THROW(parse_json(bad), std::runtime_error) << bad;
}

// --- fixtures and helpers ---------------------------------------------------------------------

class Profiler : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("kiln_profiler_test_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    ::setenv("KILN_CACHE_DIR", (dir_ / "cache").c_str(), 1);
    jit::reset();
    manual_seed(3);
  }
  void TearDown() override {
    ::unsetenv("KILN_CACHE_DIR");
    ::unsetenv("KILN_DUMP_DIR");
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::filesystem::path dir_;
};

bool native() { return fusion::codegen_available(); }
#define REQUIRE_CODEGEN() \
  if (!native()) GTEST_SKIP() << "kiln was built without LLVM: no fused kernels to profile"

std::vector<const prof::Event*> find(const std::vector<prof::Event>& ev, prof::Category c, std::string_view name = {}) {
  std::vector<const prof::Event*> r;
  for (const prof::Event& e : ev)
    if (e.category == c && (name.empty() || e.name == name)) r.push_back(&e);
  return r;
}

void spin(std::chrono::microseconds d) {
  const auto until = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < until) {
  }
}

// Checks what every trace must satisfy: valid JSON, the documented fields of each phase, thread
// names for every tid, and flow arrows in matching pairs. Returns the parsed document.
Json check_trace(prof::Profile& p) {
  const std::string text = p.to_chrome_trace();
  Json doc;
  EXPECT_NO_THROW(doc = parse_json(text)) << text.substr(0, 2000);
  EXPECT_EQ(doc.kind, Json::Obj);
  const Json& events = doc.at("traceEvents");
  EXPECT_EQ(events.kind, Json::Arr);
  std::set<double> tids, named_tids;
  std::map<double, int> flow_starts, flow_ends;
  size_t complete = 0;
  for (const Json& e : events.arr) {
    EXPECT_EQ(e.at("ph").kind, Json::Str);
    const std::string& ph = e.at("ph").str;
    EXPECT_EQ(e.at("pid").kind, Json::Num);
    if (ph == "M") {
      if (e.at("name").str == "thread_name") {
        named_tids.insert(e.at("tid").num);
        EXPECT_FALSE(e.at("args").at("name").str.empty());
      }
      continue;
    }
    EXPECT_EQ(e.at("ts").kind, Json::Num);
    EXPECT_GE(e.at("ts").num, 0);
    if (ph == "X") {
      ++complete;
      EXPECT_EQ(e.at("name").kind, Json::Str);
      EXPECT_EQ(e.at("cat").kind, Json::Str);
      EXPECT_GE(e.at("dur").num, 0);
      EXPECT_EQ(e.at("args").kind, Json::Obj);
      EXPECT_TRUE(e.at("args").has("self_us"));
      tids.insert(e.at("tid").num);
    } else if (ph == "i") {
      EXPECT_EQ(e.at("s").str, "t");
      tids.insert(e.at("tid").num);
    } else if (ph == "C") {
      EXPECT_EQ(e.at("args").at("bytes").kind, Json::Num);
    } else if (ph == "s") {
      ++flow_starts[e.at("id").num];
      EXPECT_EQ(e.at("name").str, "node to kernel");
    } else if (ph == "f") {
      ++flow_ends[e.at("id").num];
      EXPECT_EQ(e.at("bp").str, "e");
      EXPECT_EQ(e.at("name").str, "node to kernel");
    } else {
      ADD_FAILURE() << "unexpected phase " << ph;
    }
  }
  size_t n_complete = 0;
  for (const prof::Event& e : p.events()) n_complete += !e.instant();
  EXPECT_EQ(complete, n_complete);
  EXPECT_TRUE(std::includes(named_tids.begin(), named_tids.end(), tids.begin(), tids.end()))
      << "every thread with events has a thread_name";
  EXPECT_EQ(flow_starts, flow_ends) << "flow arrows come in start/end pairs";
  for (const auto& [id, n] : flow_starts) EXPECT_EQ(n, 1) << "flow id " << id << " used once";
  return doc;
}

// The summary's invariants: self times sum to the recorded total (the top-level events' time),
// totals and calls to the events'.
void check_summary_sums(prof::Profile& p) {
  const auto& ev = p.events();
  int64_t self = 0, top = 0, dur = 0, calls = 0, bytes = 0;
  for (const prof::Event& e : ev) {
    if (e.instant()) continue;
    self += e.self_ns;
    dur += e.dur_ns;
    bytes += e.bytes;
    ++calls;
    if (e.parent < 0) top += e.dur_ns;
    EXPECT_GE(e.self_ns, 0) << e.name;
  }
  EXPECT_EQ(self, top);
  EXPECT_EQ(self, p.total_ns());
  for (prof::GroupBy g : {prof::GroupBy::Name, prof::GroupBy::NameAndShapes, prof::GroupBy::Category}) {
    int64_t rs = 0, rt = 0, rc = 0, rb = 0;
    for (const prof::Row& r : p.summary(g)) rs += r.self_ns, rt += r.total_ns, rc += r.calls, rb += r.bytes;
    EXPECT_EQ(rs, self);
    EXPECT_EQ(rt, dur);
    EXPECT_EQ(rc, calls);
    EXPECT_EQ(rb, bytes);
  }
}

// --- off -----------------------------------------------------------------------------------------

TEST_F(Profiler, OffRecordsNothing) {
  EXPECT_FALSE(prof::enabled());
  Tensor x = randn({8, 8});
  prof::Profile p;
  EXPECT_TRUE(prof::enabled());
  p.stop();
  EXPECT_FALSE(prof::enabled());
  EXPECT_FALSE(p.recording());
  Tensor y = (x * 2).exp().sum();  // after stop: not recorded
  { prof::Scope s("after"); }
  EXPECT_TRUE(p.events().empty());
  EXPECT_EQ(p.total_ns(), 0);
  check_trace(p);
}

TEST_F(Profiler, OneProfileAtATime) {
  prof::Profile p;
  EXPECT_KILN_ERROR(prof::Profile q, "[profiler]", "already recording");
  p.stop();
  prof::Profile r;  // fine once the first stopped
  EXPECT_TRUE(r.recording());
}

// --- eager ops -----------------------------------------------------------------------------------

TEST_F(Profiler, EagerOpsHaveShapesDtypeDeviceBytes) {
  Tensor x = randn({4, 8}), y = randn({8});
  prof::Profile p;
  Tensor z = x + y;
  Tensor s = z.sum({1});
  Tensor v = z.view({32});  // a view moves no data
  x.add_(x);
  p.stop();
  const auto& ev = p.events();
  auto add = find(ev, prof::Category::Op, "add");
  ASSERT_EQ(add.size(), 1u);
  EXPECT_EQ(add[0]->shapes, "[[4, 8], [8]]");
  EXPECT_EQ(add[0]->dtype, "float32");
  EXPECT_EQ(add[0]->device, "cpu");
  EXPECT_EQ(add[0]->bytes, (32 + 8 + 32) * 4);  // inputs read + output written
  EXPECT_GE(add[0]->dur_ns, 0);
  EXPECT_EQ(add[0]->tid, 1);
  auto sum = find(ev, prof::Category::Op, "sum");
  ASSERT_EQ(sum.size(), 1u);
  EXPECT_EQ(sum[0]->bytes, (32 + 4) * 4);
  auto view = find(ev, prof::Category::Op, "view");
  ASSERT_EQ(view.size(), 1u);
  EXPECT_EQ(view[0]->bytes, 0);
  auto inplace = find(ev, prof::Category::Op, "add_");
  ASSERT_EQ(inplace.size(), 1u);
  EXPECT_EQ(inplace[0]->bytes, 3 * 32 * 4);
  check_summary_sums(p);
  Json doc = check_trace(p);
  bool seen = false;
  for (const Json& e : doc.at("traceEvents").arr) {
    if (e.at("ph").str != "X" || e.at("name").str != "add") continue;
    seen = true;
    EXPECT_EQ(e.at("cat").str, "op");
    const Json& a = e.at("args");
    EXPECT_EQ(a.at("shapes").str, "[[4, 8], [8]]");
    EXPECT_EQ(a.at("dtype").str, "float32");
    EXPECT_EQ(a.at("device").str, "cpu");
    EXPECT_EQ(a.at("bytes").num, 288);
  }
  EXPECT_TRUE(seen);
}

TEST_F(Profiler, RecordShapesOff) {
  Tensor x = randn({4, 8});
  prof::Profile p(prof::Options{.record_shapes = false});
  Tensor y = x.exp();
  auto exp = find(p.events(), prof::Category::Op, "exp");
  ASSERT_EQ(exp.size(), 1u);
  EXPECT_TRUE(exp[0]->shapes.empty());
  EXPECT_EQ(exp[0]->bytes, 2 * 32 * 4);
}

// --- nesting -------------------------------------------------------------------------------------

TEST_F(Profiler, NestedScopesSelfTimeIsTotalMinusChildren) {
  prof::Profile p;
  {
    prof::Scope outer("outer");
    spin(std::chrono::microseconds(300));
    {
      prof::Scope inner("inner");
      spin(std::chrono::microseconds(400));
      prof::Scope leaf("leaf");
      spin(std::chrono::microseconds(200));
    }
    prof::Scope inner2("inner2");
    spin(std::chrono::microseconds(100));
  }
  p.stop();
  const auto& ev = p.events();
  ASSERT_EQ(ev.size(), 4u);
  const prof::Event *outer = find(ev, prof::Category::User, "outer")[0], *inner = find(ev, prof::Category::User, "inner")[0],
                    *leaf = find(ev, prof::Category::User, "leaf")[0], *inner2 = find(ev, prof::Category::User, "inner2")[0];
  auto index = [&](const prof::Event* e) { return static_cast<int>(e - ev.data()); };
  EXPECT_EQ(outer->parent, -1);
  EXPECT_EQ(inner->parent, index(outer));
  EXPECT_EQ(leaf->parent, index(inner));
  EXPECT_EQ(inner2->parent, index(outer));
  EXPECT_EQ(outer->depth, 0);
  EXPECT_EQ(leaf->depth, 2);
  EXPECT_EQ(outer->self_ns, outer->dur_ns - inner->dur_ns - inner2->dur_ns);
  EXPECT_EQ(inner->self_ns, inner->dur_ns - leaf->dur_ns);
  EXPECT_EQ(leaf->self_ns, leaf->dur_ns);
  EXPECT_GE(outer->self_ns, 300'000);
  EXPECT_GE(inner->self_ns, 400'000);
  EXPECT_GE(leaf->dur_ns, 200'000);
  EXPECT_LE(inner->start_ns + inner->dur_ns, outer->start_ns + outer->dur_ns);
  EXPECT_EQ(p.total_ns(), outer->dur_ns);
  check_summary_sums(p);
}

TEST_F(Profiler, OpsNestInsideBackwardNodes) {
  Tensor w = randn({4, 4}).requires_grad_();
  Tensor x = randn({4, 4});
  Tensor loss = (x * w).tanh().sum();
  prof::Profile p;
  loss.backward();
  p.stop();
  const auto& ev = p.events();
  auto backward = find(ev, prof::Category::Autograd, "backward");
  ASSERT_EQ(backward.size(), 1u);
  int nodes = 0, ops_in_nodes = 0;
  for (const prof::Event& e : ev) {
    if (e.category == prof::Category::Autograd && e.name != "backward") {
      ++nodes;
      EXPECT_EQ(ev[static_cast<size_t>(e.parent)].name, "backward");
    }
    if (e.category == prof::Category::Op && e.parent >= 0 &&
        ev[static_cast<size_t>(e.parent)].category == prof::Category::Autograd)
      ++ops_in_nodes;
  }
  EXPECT_GE(nodes, 3);  // sum, tanh, mul
  EXPECT_GE(ops_in_nodes, 3);
  check_summary_sums(p);
}

// --- the table -----------------------------------------------------------------------------------

TEST_F(Profiler, TableIsSortedAndSumsToTheRecordedTotal) {
  Tensor x = randn({64, 64});
  prof::Profile p;
  for (int i = 0; i < 5; ++i) x = (x * 0.5).tanh() + x;
  Tensor m = x.matmul(x);
  p.stop();
  auto rows = p.summary(prof::GroupBy::Name, prof::SortBy::SelfTime);
  ASSERT_GE(rows.size(), 4u);
  for (size_t i = 1; i < rows.size(); ++i) EXPECT_GE(rows[i - 1].self_ns, rows[i].self_ns);
  for (const prof::Row& r : rows)
    if (r.name == "tanh" || r.name == "add") EXPECT_EQ(r.calls, 5) << r.name;
  check_summary_sums(p);
  const std::string t = p.table();
  for (const char* col : {"Name", "Kind", "Calls", "Self", "Self %", "Total", "Avg", "Bytes", "GB/s", "GFLOP/s"})
    EXPECT_NE(t.find(col), std::string::npos) << col << "\n" << t;
  EXPECT_NE(t.find("tanh"), std::string::npos) << t;
  EXPECT_NE(t.find("Self time total: "), std::string::npos) << t;
  // The matmul's GEMM is a BLAS event with 2*M*N*K flops.
  auto gemm = find(p.events(), prof::Category::Blas);
  ASSERT_GE(gemm.size(), 1u);
  EXPECT_EQ(gemm[0]->flops, 2.0 * 64 * 64 * 64);
  EXPECT_EQ(p.events()[static_cast<size_t>(gemm[0]->parent)].name, "matmul");
  // row_limit and the other groupings.
  const std::string two = p.table(prof::SortBy::Calls, prof::GroupBy::Name, 2);
  EXPECT_NE(two.find("more row(s) not shown"), std::string::npos) << two;
  auto by_cat = p.summary(prof::GroupBy::Category, prof::SortBy::Name);
  EXPECT_FALSE(by_cat.empty());
  const std::string shapes = p.table(prof::SortBy::TotalTime, prof::GroupBy::NameAndShapes);
  EXPECT_NE(shapes.find("[[64, 64], [64, 64]]"), std::string::npos) << shapes;
}

// --- allocator -----------------------------------------------------------------------------------

TEST_F(Profiler, AllocatorEventsAndMemoryCounter) {
  Tensor big = randn({1 << 18});  // 1 MiB: a cached size class
  {
    prof::Profile off;  // allocations are not recorded unless asked for
    Tensor t = big.exp();
    off.stop();
    EXPECT_TRUE(find(off.events(), prof::Category::Alloc).empty());
  }
  prof::Profile p(prof::Options{.record_allocations = true, .record_memory = true});
  { Tensor a = big.exp(); }  // its block goes back to the cache ...
  { Tensor b = big.exp(); }  // ... and is taken again
  p.stop();
  auto allocs = find(p.events(), prof::Category::Alloc);
  auto frees = find(p.events(), prof::Category::Free);
  ASSERT_GE(allocs.size(), 2u);
  ASSERT_GE(frees.size(), 2u);
  EXPECT_EQ(allocs.back()->bytes, 4 << 18);
  EXPECT_EQ(allocs.back()->detail, "cache hit");
  EXPECT_EQ(allocs.back()->dur_ns, 0);
  // The allocation happened inside the op that made the tensor.
  ASSERT_GE(allocs.back()->parent, 0);
  EXPECT_EQ(p.events()[static_cast<size_t>(allocs.back()->parent)].name, "exp");
  Json doc = check_trace(p);
  int counters = 0;
  for (const Json& e : doc.at("traceEvents").arr) counters += e.at("ph").str == "C";
  EXPECT_EQ(counters, static_cast<int>(allocs.size() + frees.size()));
  EXPECT_NE(p.table().find("Allocator: "), std::string::npos);
  check_summary_sums(p);
}

// --- escaping ------------------------------------------------------------------------------------

TEST_F(Profiler, TraceEscapesNamesAndStaysValidUtf8) {
  prof::Profile p;
  { prof::Scope s("quote\" backslash\\ newline\n tab\t bell\x07 micro\xc2\xb5 bad\xff end"); }
  p.stop();
  Json doc = check_trace(p);
  bool seen = false;
  for (const Json& e : doc.at("traceEvents").arr)
    if (e.at("ph").str == "X") {
      seen = true;
      EXPECT_EQ(e.at("name").str, "quote\" backslash\\ newline\n tab\t bell\x07 micro\xc2\xb5 bad\xef\xbf\xbd end");
    }
  EXPECT_TRUE(seen);
}

// --- threads -------------------------------------------------------------------------------------

TEST_F(Profiler, EachThreadIsATrack) {
  Tensor x = randn({16, 16});
  prof::Profile p;
  auto work = [&] {
    prof::Scope s("worker");
    for (int i = 0; i < 10; ++i) Tensor y = (x * 2).relu();
  };
  std::thread a(work), b(work);
  a.join();
  b.join();
  p.stop();
  std::set<int> tids;
  for (const auto* e : find(p.events(), prof::Category::User, "worker")) tids.insert(e->tid);
  EXPECT_EQ(tids.size(), 2u);
  for (const prof::Event& e : p.events())
    if (e.category == prof::Category::Op) {
      ASSERT_GE(e.parent, 0);
      EXPECT_EQ(p.events()[static_cast<size_t>(e.parent)].name, "worker");
      EXPECT_EQ(p.events()[static_cast<size_t>(e.parent)].tid, e.tid);
    }
  EXPECT_EQ(find(p.events(), prof::Category::Op, "relu").size(), 20u);
  EXPECT_EQ(p.thread_names().size(), 3u);  // index 0 unused
  check_trace(p);
  check_summary_sums(p);
}

// --- compiled functions --------------------------------------------------------------------------

std::set<std::string> dumped_kernel_names(const std::filesystem::path& dir) {
  std::set<std::string> names;
  for (const auto& f : std::filesystem::directory_iterator(dir)) {
    const std::string fn = f.path().filename().string();
    if (fn.size() < 12 || fn.substr(fn.size() - 12) != ".kernels.txt") continue;
    std::ifstream in(f.path());
    for (std::string line; std::getline(in, line);)
      if (line.rfind("=== ", 0) == 0) names.insert(line.substr(4, line.find(" [") - 4));
  }
  return names;
}

TEST_F(Profiler, KernelNamesAgreeBetweenTraceStatsAndDumps) {
  REQUIRE_CODEGEN();
  const auto dump = dir_ / "dump";
  ::setenv("KILN_DUMP_DIR", dump.c_str(), 1);
  jit::CompileOptions o;
  o.name = "prof_fn";
  auto f = [](const Tensor& x, const Tensor& w) { return softmax((x.matmul(w) * 0.5).tanh() + 1.0, -1); };
  auto c = jit::compile(f, o);
  Tensor x = randn({8, 16}), w = randn({16, 32});
  prof::Profile p;
  for (int i = 0; i < 4; ++i) c(x, w);  // capture, cache hit, then replays
  p.stop();
  ::unsetenv("KILN_DUMP_DIR");
  const auto& ev = p.events();

  std::map<std::string, int> traced;
  for (const auto* e : find(ev, prof::Category::Kernel)) {
    ++traced[e->name];
    EXPECT_GT(e->bytes, 0) << e->name;
    EXPECT_GT(e->flops, 0) << e->name;
    EXPECT_FALSE(e->detail.empty()) << e->name;  // the fused ops
    EXPECT_GT(e->flow_in, 0);
    ASSERT_GE(e->parent, 0);
    const prof::Event& node = ev[static_cast<size_t>(e->parent)];
    EXPECT_EQ(node.category, prof::Category::Node);
    EXPECT_EQ(node.flow_out, e->flow_in);
    EXPECT_NE(node.detail.find(e->name), std::string::npos) << node.detail;  // "%7 = fused[<name>: ...]"
    EXPECT_EQ(e->name.rfind("prof_fn.0/k", 0), 0u) << e->name;
  }
  ASSERT_FALSE(traced.empty());
  std::set<std::string> trace_names;
  for (const auto& [n, calls] : traced) {
    trace_names.insert(n);
    EXPECT_EQ(calls, 4) << n;
  }
  jit::Stats s = jit::stats();
  std::set<std::string> stats_names;
  for (const jit::KernelStats& k : s.kernels) {
    stats_names.insert(k.name);
    EXPECT_EQ(k.plan, "prof_fn.0");
    EXPECT_EQ(k.calls, 4) << k.name;
    EXPECT_EQ(k.profiled_calls, 4) << k.name;
    EXPECT_GT(k.profiled_ms, 0) << k.name;
    EXPECT_FALSE(k.ops.empty());
    EXPECT_EQ(k.values.rfind("%", 0), 0u) << k.values;
    EXPECT_NE(s.str().find("kernel " + k.name + " [" + k.ops + "]: 4 call(s)"), std::string::npos) << s.str();
  }
  EXPECT_EQ(trace_names, stats_names);
  EXPECT_EQ(trace_names, dumped_kernel_names(dump));

  // The matmul runs as an extern node, with its GEMM inside and an arrow from its node.
  auto externs = find(ev, prof::Category::Extern, "matmul");
  ASSERT_EQ(externs.size(), 4u);
  for (const auto* e : externs) {
    EXPECT_EQ(e->shapes, "[[8, 16], [16, 32]]");
    EXPECT_EQ(e->bytes, (8 * 16 + 16 * 32 + 8 * 32) * 4);
    EXPECT_EQ(ev[static_cast<size_t>(e->parent)].flow_out, e->flow_in);
  }
  auto gemms = find(ev, prof::Category::Blas, "sgemm");
  ASSERT_GE(gemms.size(), 4u);
  EXPECT_EQ(ev[static_cast<size_t>(gemms[0]->parent)].category, prof::Category::Extern);

  // JIT phases: capture > compile > passes, fusion, codegen (> render, optimise, llvm codegen, link).
  auto compile = find(ev, prof::Category::Jit, "compile prof_fn.0");
  ASSERT_EQ(compile.size(), 1u);
  EXPECT_EQ(ev[static_cast<size_t>(compile[0]->parent)].name, "capture prof_fn");
  for (const char* phase : {"simplify_algebra", "fold_constants", "eliminate_common_subexpressions", "eliminate_dead_code",
                            "fusion", "codegen", "render", "optimise", "llvm codegen", "link"}) {
    auto e = find(ev, prof::Category::Jit, phase);
    ASSERT_EQ(e.size(), 1u) << phase;
    int up = e[0]->parent;
    while (up >= 0 && ev[static_cast<size_t>(up)].name != "compile prof_fn.0") up = ev[static_cast<size_t>(up)].parent;
    EXPECT_GE(up, 0) << phase << " is not inside the compile event";
  }
  EXPECT_EQ(find(ev, prof::Category::Jit, "capture prof_fn").size(), 2u);  // two traced calls, then replays
  EXPECT_EQ(find(ev, prof::Category::Run, "replay prof_fn").size(), 4u);   // the first two fall back to tracing
  EXPECT_EQ(find(ev, prof::Category::Run, "prof_fn.0").size(), 4u);        // the plan's runs

  Json doc = check_trace(p);
  int kernel_events = 0, flows = 0;
  for (const Json& e : doc.at("traceEvents").arr) {
    if (e.at("ph").str == "s") ++flows;
    if (e.at("ph").str != "X" || e.at("cat").str != "kernel") continue;
    ++kernel_events;
    const Json& a = e.at("args");
    for (const char* k : {"bytes", "GB/s", "flops", "GFLOP/s", "detail", "values", "dump", "self_us"})
      EXPECT_TRUE(a.has(k)) << k;
    EXPECT_EQ(a.at("dump").str, "prof_fn.0.kernels.txt");
  }
  EXPECT_EQ(kernel_events, static_cast<int>(find(ev, prof::Category::Kernel).size()));
  EXPECT_EQ(flows, static_cast<int>(find(ev, prof::Category::Node).size()));
  check_summary_sums(p);
  EXPECT_NE(p.table(prof::SortBy::SelfTime, prof::GroupBy::Name, 0).find("prof_fn.0/k"), std::string::npos);
}

TEST_F(Profiler, KernelCallsCountWithoutProfiling) {
  REQUIRE_CODEGEN();
  jit::CompileOptions o;
  o.name = "counted";
  auto c = jit::compile([](const Tensor& x) { return (x * 2).exp() + 1; }, o);
  Tensor x = randn({32});
  for (int i = 0; i < 5; ++i) c(x);
  jit::Stats s = jit::stats();
  ASSERT_EQ(s.kernels.size(), 1u);
  EXPECT_EQ(s.kernels[0].name, "counted.0/k0_mul");
  EXPECT_EQ(s.kernels[0].ops, "mul exp add");
  EXPECT_EQ(s.kernels[0].calls, 5);
  EXPECT_EQ(s.kernels[0].profiled_calls, 0);
  EXPECT_EQ(s.kernels[0].bytes, 2 * 32 * 4);   // x read, result written
  EXPECT_EQ(s.kernels[0].flops, 3.0 * 32);     // mul, exp, add per element
  jit::reset();
  EXPECT_TRUE(jit::stats().kernels.empty());
}

TEST_F(Profiler, CompiledCallsFromTwoThreadsAndTheAsyncCompiler) {
  REQUIRE_CODEGEN();
  jit::CompileOptions o;
  o.name = "async_fn";
  o.async = true;
  auto c = jit::compile([](const Tensor& x) { return (x * 3).sigmoid() * x; }, o);
  Tensor x = randn({64});
  prof::Profile p;
  c(x);  // served by the interpreter while the kernel compiles on the compile thread
  jit::wait_for_compiles();
  auto work = [&] {
    for (int i = 0; i < 4; ++i) c(x);
  };
  std::thread a(work), b(work);
  a.join();
  b.join();
  p.stop();
  const auto& ev = p.events();
  auto async = find(ev, prof::Category::Jit, "async compile async_fn.0");
  ASSERT_EQ(async.size(), 1u);
  EXPECT_NE(p.thread_names()[static_cast<size_t>(async[0]->tid)].find("kiln-compile"), std::string::npos);
  std::set<int> kernel_tids;
  for (const auto* e : find(ev, prof::Category::Kernel)) kernel_tids.insert(e->tid);
  EXPECT_EQ(kernel_tids.size(), 2u);  // the two calling threads
  EXPECT_FALSE(kernel_tids.count(async[0]->tid));
  check_trace(p);
  check_summary_sums(p);
}

TEST_F(Profiler, SaveChromeTraceWritesAFile) {
  Tensor x = randn({4});
  prof::Profile p;
  Tensor y = x.exp();
  const std::string path = (dir_ / "trace.json").string();
  p.save_chrome_trace(path);
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  Json doc = parse_json(ss.str());
  EXPECT_TRUE(doc.has("traceEvents"));
  EXPECT_KILN_ERROR(p.save_chrome_trace((dir_ / "no_such_dir" / "t.json").string()), "[profiler]", "cannot open");
}

}  // namespace
