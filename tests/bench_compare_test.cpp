// kiln-bench-compare (bench/compare/): the JSON reader, the rank test, the verdicts on fixed input
// files (tests/data/bench_compare/: an injected 20% slowdown is flagged, noise-level changes are
// not) and the three outputs. The executable's exit codes are checked by bench_compare_cli.cmake.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "bench/compare/compare.h"

namespace {

using namespace kiln::bench;

const std::string kData = KILN_BENCH_COMPARE_DATA;

BenchFile load(const std::string& name, Metric m = Metric::RealTime) { return load_benchmark_json(kData + "/" + name, m); }

const Row& row(const Report& r, const std::string& name) {
  for (const Row& x : r.rows)
    if (x.name == name) return x;
  throw std::runtime_error("no row " + name);
}

// Expects `f` to throw InputError whose message contains every fragment.
template <class F>
void expect_input_error(F f, const std::vector<std::string>& fragments) {
  try {
    f();
    ADD_FAILURE() << "no InputError";
  } catch (const InputError& e) {
    for (const std::string& s : fragments) EXPECT_NE(std::string(e.what()).find(s), std::string::npos) << e.what();
  }
}

// --- JSON ---------------------------------------------------------------------------------------

TEST(BenchCompareJson, ParsesValuesEscapesAndBenchmarkSpecials) {
  Json j = parse_json(R"({"a": [1, -2.5e3, 0, true, false, null], "s": "q\"\\\/\n\u00e9\ud83d\ude00",
                          "x": NaN, "y": -Infinity, "z": Infinity, "e": {}, "f": []})",
                      "t");
  ASSERT_EQ(j.kind, Json::Kind::Object);
  const Json& a = *j.find("a");
  ASSERT_EQ(a.array.size(), 6u);
  EXPECT_EQ(a.array[0].number, 1);
  EXPECT_EQ(a.array[1].number, -2500);
  EXPECT_TRUE(a.array[3].boolean);
  EXPECT_EQ(a.array[4].kind, Json::Kind::Bool);
  EXPECT_FALSE(a.array[4].boolean);
  EXPECT_EQ(a.array[5].kind, Json::Kind::Null);
  EXPECT_EQ(j.find("s")->string, "q\"\\/\n\xC3\xA9\xF0\x9F\x98\x80");
  EXPECT_TRUE(std::isnan(j.find("x")->number));
  EXPECT_EQ(j.find("y")->number, -INFINITY);
  EXPECT_EQ(j.find("z")->number, INFINITY);
  EXPECT_TRUE(j.find("e")->object.empty());
  EXPECT_EQ(j.find("missing"), nullptr);
}

TEST(BenchCompareJson, ErrorsNameTheFileLineAndColumn) {
  expect_input_error([] { parse_json("{\n  \"a\": [1, 2,\n", "f.json"); },
                     {"f.json", "line 3, column 1", "end of file"});
  expect_input_error([] { parse_json("{\"a\": 1,}", "f.json"); }, {"line 1, column 9", "string key"});
  expect_input_error([] { parse_json("{\"a\": 01}", "f.json"); }, {"expected ',' or '}'"});
  expect_input_error([] { parse_json("[\"\\x\"]", "f.json"); }, {"unknown escape \\x"});
  expect_input_error([] { parse_json("[\"a\nb\"]", "f.json"); }, {"control character"});
  expect_input_error([] { parse_json("{} {}", "f.json"); }, {"after the JSON value"});
  expect_input_error([] { parse_json("", "f.json"); }, {"empty"});
  expect_input_error([] { parse_json(std::string(1000, '['), "f.json"); }, {"nesting deeper"});
}

// --- benchmark files ----------------------------------------------------------------------------

TEST(BenchCompareFile, GroupsRepetitionsByRunNameInNanoseconds) {
  BenchFile f = load("base.json");
  ASSERT_EQ(f.series.size(), 6u);
  EXPECT_EQ(f.series[0].name, "EagerAdd_16M");
  for (const Series& s : f.series) {
    EXPECT_EQ(s.samples_ns.size(), 8u) << s.name;  // aggregates ignored: repetitions are there
    EXPECT_FALSE(s.from_aggregate);
  }
  EXPECT_NEAR(median(f.series[0].samples_ns), 6.70e6, 1);          // ms
  EXPECT_NEAR(median(f.series[2].samples_ns), 27.4e3, 1e-2);       // us
  EXPECT_EQ(f.context.at("host_name"), "ci-runner-1");
  BenchFile cpu = load("base.json", Metric::CpuTime);
  EXPECT_LT(median(cpu.series[0].samples_ns), median(f.series[0].samples_ns));
}

TEST(BenchCompareFile, AggregatesOnlyFallBackToTheMedian) {
  BenchFile f = load("aggregates_only.json");
  ASSERT_EQ(f.series.size(), 2u);
  EXPECT_TRUE(f.series[0].from_aggregate);
  EXPECT_EQ(f.series[0].repetitions, 8);
  ASSERT_EQ(f.series[0].samples_ns.size(), 1u);
  EXPECT_DOUBLE_EQ(f.series[0].samples_ns[0], 6.71e6);  // the median, not the mean
}

// --benchmark_enable_random_interleaving writes repetitions in a random order: the series follow
// the registration order instead, so tables of two runs line up.
TEST(BenchCompareFile, RegistrationOrderWhenKnown) {
  BenchFile f = parse_benchmark_json(
      R"({"benchmarks": [{"name": "B/2", "family_index": 1, "per_family_instance_index": 1, "real_time": 1, "cpu_time": 1},
                         {"name": "C", "family_index": 2, "per_family_instance_index": 0, "real_time": 1, "cpu_time": 1},
                         {"name": "B/1", "family_index": 1, "per_family_instance_index": 0, "real_time": 1, "cpu_time": 1},
                         {"name": "A", "family_index": 0, "per_family_instance_index": 0, "real_time": 1, "cpu_time": 1},
                         {"name": "B/2", "family_index": 1, "per_family_instance_index": 1, "real_time": 2, "cpu_time": 1}]})",
      "r.json", Metric::RealTime);
  std::vector<std::string> names;
  for (const Series& s : f.series) names.push_back(s.name);
  EXPECT_EQ(names, (std::vector<std::string>{"A", "B/1", "B/2", "C"}));
  EXPECT_EQ(f.series[2].samples_ns, (std::vector<double>{1, 2}));
}

TEST(BenchCompareFile, ErroredRunsAndBadEntries) {
  BenchFile f = parse_benchmark_json(
      R"({"benchmarks": [{"name": "A", "run_type": "iteration", "real_time": 5, "cpu_time": 5, "time_unit": "ns"},
                         {"name": "B", "run_type": "iteration", "error_occurred": true, "error_message": "compiled result differs"}]})",
      "x.json", Metric::RealTime);
  ASSERT_EQ(f.series.size(), 2u);
  EXPECT_EQ(f.series[1].error, "compiled result differs");
  expect_input_error([] { load("not_benchmark.json"); }, {"not_benchmark.json", "no \"benchmarks\" array"});
  expect_input_error([] { load("truncated.json"); }, {"truncated.json", "invalid JSON", "line"});
  expect_input_error([] { load("no_such_file.json"); }, {"no_such_file.json", "cannot open"});
  expect_input_error(
      [] { parse_benchmark_json(R"({"benchmarks": [{"name": "A", "real_time": 1, "time_unit": "min"}]})", "u.json", Metric::RealTime); },
      {"u.json", "\"A\"", "unknown time_unit \"min\""});
  expect_input_error(
      [] { parse_benchmark_json(R"({"benchmarks": [{"name": "A", "real_time": "fast"}]})", "v.json", Metric::RealTime); },
      {"v.json", "benchmarks[0]", "no numeric \"real_time\""});
  expect_input_error([] { parse_benchmark_json(R"({"benchmarks": [{"real_time": 1}]})", "w.json", Metric::RealTime); },
                     {"benchmarks[0] has no \"name\""});
}

// --- statistics ---------------------------------------------------------------------------------

TEST(BenchCompareStats, MedianAndSmallestPValue) {
  EXPECT_EQ(median({3, 1, 2}), 2);
  EXPECT_EQ(median({4, 1, 2, 3}), 2.5);
  EXPECT_DOUBLE_EQ(min_p_value(3, 3), 0.1);       // 2 / C(6, 3)
  EXPECT_DOUBLE_EQ(min_p_value(4, 4), 2.0 / 70);  // 2 / C(8, 4)
  EXPECT_DOUBLE_EQ(min_p_value(1, 8), 2.0 / 9);   // one aggregate median against 8 repetitions
  EXPECT_DOUBLE_EQ(min_p_value(1, 1), 1.0);
}

TEST(BenchCompareStats, ExactTestFullySeparatedSamples) {
  RankTest t = mann_whitney_u({1, 2, 3, 4}, {5, 6, 7, 8});
  EXPECT_TRUE(t.exact);
  EXPECT_EQ(t.u, 0);
  EXPECT_DOUBLE_EQ(t.p, 2.0 / 70);
  RankTest r = mann_whitney_u({5, 6, 7, 8}, {1, 2, 3, 4});
  EXPECT_EQ(r.u, 16);
  EXPECT_DOUBLE_EQ(r.p, 2.0 / 70);
}

// The exact p-value against brute force: every way of drawing the first sample's ranks.
TEST(BenchCompareStats, ExactTestMatchesEnumeration) {
  const std::vector<double> a = {3.1, 0.4, 2.2, 5.0, 1.7}, b = {2.5, 4.4, 3.9, 6.1};
  const RankTest t = mann_whitney_u(a, b);
  ASSERT_TRUE(t.exact);
  // U of a: pairs (x in a, y in b) with x > y
  double u = 0;
  for (double x : a)
    for (double y : b) u += x > y;
  EXPECT_EQ(t.u, u);
  int le = 0, ge = 0, total = 0;
  for (unsigned mask = 0; mask < (1u << 9); ++mask) {
    if (__builtin_popcount(mask) != 5) continue;
    // ranks 0..8; subset `mask` plays the first sample
    double uu = 0;
    for (int i = 0; i < 9; ++i)
      for (int j = 0; j < 9; ++j)
        if ((mask >> i & 1) && !(mask >> j & 1) && i > j) ++uu;
    le += uu <= u;
    ge += uu >= u;
    ++total;
  }
  EXPECT_EQ(total, 126);
  EXPECT_NEAR(t.p, std::min(1.0, 2.0 * std::min(le, ge) / total), 1e-12);
}

// With ties: the normal approximation with tie and continuity corrections, worked by hand.
// a = {1, 2, 2, 3}, b = {2, 4, 5, 6}: ranks of a 1, 3, 3, 5 (the three 2s share rank 3), U = 12 - 10
// = 2, mean 8, variance 16/12 * (9 - (27 - 3) / (8 * 7)) = 80/7, z = (|2 - 8| - 0.5) / sqrt(80/7).
TEST(BenchCompareStats, NormalApproximationWithTies) {
  RankTest t = mann_whitney_u({1, 2, 2, 3}, {2, 4, 5, 6});
  EXPECT_FALSE(t.exact);
  EXPECT_EQ(t.u, 2);
  const double z = 5.5 / std::sqrt(80.0 / 7.0);
  EXPECT_NEAR(t.p, std::erfc(z / std::sqrt(2.0)), 1e-12);
  EXPECT_NEAR(t.p, 0.1037, 1e-3);
  EXPECT_EQ(mann_whitney_u({1, 1, 1}, {1, 1, 1}).p, 1.0);  // all tied: no evidence
}

// --- verdicts on the fixed files ----------------------------------------------------------------

TEST(BenchCompare, FlagsTheInjected20PercentSlowdown) {
  Report r = compare(load("base.json"), load("new_slow.json"), Options{});
  ASSERT_EQ(r.rows.size(), 6u);
  const Row& slow = row(r, "Chain20_1K/compiled");
  EXPECT_EQ(slow.status, Status::Regression);
  EXPECT_NEAR(slow.ratio, 1.20, 0.01);
  EXPECT_TRUE(slow.exact);
  EXPECT_LT(slow.p, 0.001);
  EXPECT_EQ(r.count(Status::Regression), 1u);
  EXPECT_EQ(r.count(Status::Unchanged), 5u);
  ASSERT_EQ(r.failures().size(), 1u);
  EXPECT_EQ(r.failures()[0]->name, "Chain20_1K/compiled");
  EXPECT_EQ(r.exit_code(), 1);
  // The other way round it is an improvement; a threshold above 20% lets it pass.
  Report back = compare(load("new_slow.json"), load("base.json"), Options{});
  EXPECT_EQ(row(back, "Chain20_1K/compiled").status, Status::Improvement);
  EXPECT_EQ(back.exit_code(), 0);
  EXPECT_EQ(compare(load("base.json"), load("new_slow.json"), Options{.threshold = 0.25}).exit_code(), 0);
}

TEST(BenchCompare, IgnoresNoiseLevelChanges) {
  Report r = compare(load("base.json"), load("new_noise.json"), Options{});
  EXPECT_EQ(r.exit_code(), 0);
  EXPECT_EQ(r.count(Status::Regression), 0u);
  EXPECT_EQ(r.count(Status::Improvement), 0u);
  // a 3% shift of a steady benchmark: below the threshold, whatever the test says
  EXPECT_NEAR(row(r, "MLPStep_SGDMomentum/compiled").ratio, 1.03, 0.005);
  // a 6% shift of a noisy one (8% spread): beyond the threshold but not significant
  const Row& noisy = row(r, "GuardTrivial_n1/compiled");
  EXPECT_GT(noisy.ratio, 1.05);
  EXPECT_GE(noisy.p, 0.05);
  EXPECT_EQ(noisy.status, Status::Unchanged);
  // a file against itself: p = 1 everywhere
  for (const Row& x : compare(load("base.json"), load("base.json"), Options{}).rows) {
    EXPECT_EQ(x.status, Status::Unchanged);
    EXPECT_EQ(x.p, 1.0);
  }
}

TEST(BenchCompare, UntestedUnmatchedAndFailedRows) {
  // aggregates only: medians compared, no test; --strict fails a slowdown beyond the threshold
  Report agg = compare(load("base.json"), load("aggregates_only.json"), Options{});
  EXPECT_EQ(row(agg, "EagerAdd_16M").status, Status::Untested);
  EXPECT_NE(row(agg, "EagerAdd_16M").note.find("aggregates only (median of 8 repetitions)"), std::string::npos);
  const Row& chain = row(agg, "Chain20_1K/compiled");
  EXPECT_EQ(chain.status, Status::Untested);
  EXPECT_NEAR(chain.ratio, 34.0 / 27.4, 1e-9);
  EXPECT_EQ(row(agg, "Chain20_1K/eager").status, Status::OnlyInBase);
  EXPECT_EQ(agg.notes.size(), 1u);
  EXPECT_EQ(agg.exit_code(), 0);
  Report strict = compare(load("base.json"), load("aggregates_only.json"), Options{.strict = true});
  ASSERT_EQ(strict.failures().size(), 1u);
  EXPECT_EQ(strict.failures()[0]->name, "Chain20_1K/compiled");

  auto file = [](const std::string& text) { return parse_benchmark_json(text, "inline.json", Metric::RealTime); };
  auto reps = [](const std::string& name, std::vector<double> v, const std::string& host) {
    std::string s;
    for (double x : v)
      s += (s.empty() ? "" : ",") + std::string("{\"name\": \"") + name + "\", \"run_type\": \"iteration\", \"real_time\": " +
           std::to_string(x) + ", \"cpu_time\": 1, \"time_unit\": \"us\"}";
    return "{\"context\": {\"host_name\": \"" + host + "\"}, \"benchmarks\": [" + s + "]}";
  };
  // 3 vs 3 repetitions: the smallest possible p is 0.1, so not even a doubling is tested
  Report few = compare(file(reps("A", {1, 1.1, 1.2}, "h1")), file(reps("A", {2, 2.1, 2.2}, "h2")), Options{});
  EXPECT_EQ(few.rows[0].status, Status::Untested);
  EXPECT_NE(few.rows[0].note.find("3 vs 3 samples"), std::string::npos) << few.rows[0].note;
  EXPECT_EQ(few.exit_code(), 0);
  EXPECT_EQ(compare(file(reps("A", {1, 1.1, 1.2}, "h1")), file(reps("A", {2, 2.1, 2.2}, "h1")), Options{.strict = true})
                .exit_code(),
            1);
  ASSERT_EQ(few.notes.size(), 1u);  // different hosts
  EXPECT_NE(few.notes[0].find("machine-specific"), std::string::npos);

  Report failed = compare(load("base.json"),
                          file(R"({"benchmarks": [{"name": "EagerAdd_16M", "error_occurred": true, "error_message": "boom"},
                                                  {"name": "New/one", "real_time": 3, "cpu_time": 3}]})"),
                          Options{});
  EXPECT_EQ(row(failed, "EagerAdd_16M").status, Status::Failed);
  EXPECT_NE(row(failed, "EagerAdd_16M").note.find("new: boom"), std::string::npos);
  EXPECT_EQ(row(failed, "New/one").status, Status::OnlyInNew);
  EXPECT_EQ(failed.rows.back().name, "New/one");
  EXPECT_EQ(failed.exit_code(), 0);
  EXPECT_EQ(compare(load("base.json"), load("base.json"), Options{.filter = "^Chain20"}).rows.size(), 2u);
}

// --- outputs ------------------------------------------------------------------------------------

// Tags balance (a stack of open elements) and every '&' starts an entity: enough to catch an
// unescaped name or a missing close tag.
void expect_well_formed_xml(const std::string& s) {
  std::vector<std::string> open;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '&') {
      const size_t semi = s.find(';', i);
      ASSERT_NE(semi, std::string::npos);
      const std::string ent = s.substr(i, semi - i + 1);
      EXPECT_TRUE(ent == "&amp;" || ent == "&lt;" || ent == "&gt;" || ent == "&quot;" || ent == "&apos;") << ent;
    }
    if (s[i] != '<') continue;
    const size_t close = s.find('>', i);
    ASSERT_NE(close, std::string::npos);
    std::string tag = s.substr(i + 1, close - i - 1);
    EXPECT_EQ(tag.find('<'), std::string::npos) << tag;
    if (tag[0] == '/') {
      ASSERT_FALSE(open.empty()) << tag;
      EXPECT_EQ(open.back(), tag.substr(1));
      open.pop_back();
    } else if (tag.back() != '/') {
      open.push_back(tag.substr(0, tag.find(' ')));
    }
    i = close;
  }
  EXPECT_TRUE(open.empty());
}

size_t count_of(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

TEST(BenchCompareOutput, TableMarkdownAndSvg) {
  Report r = compare(load("base.json"), load("new_slow.json"), Options{});
  const std::string table = format_table(r);
  EXPECT_NE(table.find("FAIL: 1 benchmark fails: Chain20_1K/compiled +"), std::string::npos) << table;
  EXPECT_NE(table.find("REGRESSION"), std::string::npos);
  // aligned: every row of the table proper has the same width up to the verdict column
  std::istringstream lines(table);
  std::string line;
  std::vector<size_t> verdict_at;
  while (std::getline(lines, line))
    if (line.rfind("Chain20", 0) == 0 || line.rfind("EagerAdd", 0) == 0 || line.rfind("benchmark", 0) == 0)
      verdict_at.push_back(line.find_last_of(' '));
  ASSERT_EQ(verdict_at.size(), 4u);
  EXPECT_TRUE(std::all_of(verdict_at.begin(), verdict_at.end(), [&](size_t v) { return v == verdict_at[0]; })) << table;

  const std::string md = format_markdown(r);
  EXPECT_EQ(md.rfind("# Benchmark comparison", 0), 0u);
  size_t table_lines = 0;
  std::istringstream ml(md);
  while (std::getline(ml, line))
    if (line.rfind("| ", 0) == 0) {
      ++table_lines;
      EXPECT_EQ(count_of(line, "|") - count_of(line, "\\|"), 8u) << line;
    }
  EXPECT_EQ(table_lines, 2 + r.rows.size());
  EXPECT_NE(md.find("| Chain20\\_1K/compiled |"), std::string::npos) << md;
  EXPECT_NE(md.find("**REGRESSION**"), std::string::npos);

  const std::string svg = format_svg(r);
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  EXPECT_EQ(svg.substr(svg.size() - 7), "</svg>\n");
  expect_well_formed_xml(svg);
  EXPECT_EQ(count_of(svg, "<rect class=\"bar "), 6u);  // one bar per benchmark
  EXPECT_EQ(count_of(svg, "class=\"bar regression\""), 1u);
  EXPECT_EQ(count_of(svg, "class=\"baseline\""), 1u);
  EXPECT_EQ(count_of(svg, "class=\"threshold\""), 2u);
  // names are escaped
  BenchFile odd = parse_benchmark_json(R"({"benchmarks": [{"name": "a<b>&\"c'", "real_time": 1, "cpu_time": 1}]})",
                                       "odd.json", Metric::RealTime);
  const std::string esc = format_svg(compare(odd, odd, Options{}));
  expect_well_formed_xml(esc);
  EXPECT_NE(esc.find("a&lt;b&gt;&amp;&quot;c&apos;"), std::string::npos);
}

// --- command line -------------------------------------------------------------------------------

int cli(std::vector<std::string> args, std::string& out, std::string& err) {
  std::ostringstream o, e;
  const int rc = run_cli(args, o, e);
  out = o.str();
  err = e.str();
  return rc;
}

TEST(BenchCompareCli, ExitCodesAndReports) {
  const auto dir = std::filesystem::temp_directory_path() / ("kiln_bench_compare_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string md = (dir / "r.md").string(), svg = (dir / "c.svg").string();
  std::string out, err;
  EXPECT_EQ(cli({kData + "/base.json", kData + "/new_slow.json", "--md", md, "--svg=" + svg}, out, err), 1);
  EXPECT_NE(out.find("Chain20_1K/compiled"), std::string::npos);
  std::ifstream s(svg);
  std::string first;
  std::getline(s, first);
  EXPECT_EQ(first.rfind("<svg", 0), 0u);
  EXPECT_TRUE(std::filesystem::file_size(md) > 100);
  EXPECT_EQ(cli({kData + "/base.json", kData + "/new_noise.json", "--threshold", "5%", "--alpha", "0.05"}, out, err), 0);
  EXPECT_EQ(cli({kData + "/base.json", kData + "/new_slow.json", "--threshold=0.3"}, out, err), 0);
  EXPECT_EQ(cli({kData + "/base.json", kData + "/new_slow.json", "--metric", "cpu_time"}, out, err), 1);
  // input errors name the file
  EXPECT_EQ(cli({kData + "/base.json", kData + "/missing.json"}, out, err), 2);
  EXPECT_NE(err.find("missing.json: cannot open"), std::string::npos) << err;
  EXPECT_EQ(cli({kData + "/truncated.json", kData + "/base.json"}, out, err), 2);
  EXPECT_NE(err.find("truncated.json: invalid JSON at line"), std::string::npos) << err;
  EXPECT_EQ(cli({kData + "/base.json", kData + "/base.json", "--filter", "nothing-matches"}, out, err), 2);
  // usage errors
  for (std::vector<std::string> bad : {std::vector<std::string>{kData + "/base.json"},
                                       {kData + "/base.json", kData + "/base.json", "--threshold", "5"},
                                       {kData + "/base.json", kData + "/base.json", "--alpha", "1.5"},
                                       {kData + "/base.json", kData + "/base.json", "--metric", "wall"},
                                       {kData + "/base.json", kData + "/base.json", "--filter", "("},
                                       {kData + "/base.json", kData + "/base.json", "--frobnicate"},
                                       {kData + "/base.json", kData + "/base.json", "--md"}}) {
    EXPECT_EQ(cli(bad, out, err), 2) << bad.back();
    EXPECT_NE(err.find("usage:"), std::string::npos);
  }
  EXPECT_EQ(cli({"--help"}, out, err), 0);
  EXPECT_NE(out.find("Exit status"), std::string::npos);
  std::filesystem::remove_all(dir);
}

}  // namespace
