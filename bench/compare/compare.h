#pragma once
// kiln-bench-compare: compares two Google Benchmark JSON files (a baseline and a new run) benchmark
// by benchmark, with a rank test over the repetitions, and reports a table, Markdown and an SVG
// chart. This library holds all of it (the executable is main.cpp); it depends on nothing but the
// standard library, so the tool builds where Google Benchmark and Python are absent.
// docs/perf-testing.md is the user's guide.
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln::bench {

// A file that cannot be read or is not Google Benchmark JSON; the message names the file and the
// problem (with line and column for syntax errors).
class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// --- JSON ---------------------------------------------------------------------------------------

// A parsed JSON value. Besides RFC 8259 it accepts NaN, Infinity and -Infinity, which Google
// Benchmark writes for such counter values.
struct Json {
  enum class Kind : uint8_t { Null, Bool, Number, String, Array, Object };
  Kind kind = Kind::Null;
  bool boolean = false;
  double number = 0;
  std::string string;
  std::vector<Json> array;
  std::vector<std::pair<std::string, Json>> object;  // in file order

  const Json* find(std::string_view key) const;  // object member, or nullptr
};

// Throws InputError("<where>: line L, column C: <problem>"). `allow_non_finite` false: strict
// RFC 8259, as Chrome/Perfetto read traces (the profiler's tests parse its traces so).
Json parse_json(std::string_view text, const std::string& where, bool allow_non_finite = true);

// --- benchmark files ----------------------------------------------------------------------------

enum class Metric : uint8_t { RealTime, CpuTime };

// The measurements of one benchmark (one run_name) in one file.
struct Series {
  std::string name;
  std::vector<double> samples_ns;  // per repetition, in nanoseconds
  bool from_aggregate = false;     // the file held aggregates only: samples_ns is the one median
  int64_t repetitions = 0;         // repetitions the file reports (from_aggregate), else samples
  std::string error;               // the run's error message (the benchmark failed or was skipped)
};

struct BenchFile {
  std::string path;
  std::vector<Series> series;                  // in registration order (file order without it)
  std::map<std::string, std::string> context;  // host_name, date, num_cpus... (strings as written)
};

// Per-repetition entries ("run_type": "iteration") are grouped by run_name (name when absent) and
// ordered by family_index / per_family_instance_index when every entry has them.
// A benchmark with only aggregate entries (--benchmark_report_aggregates_only) keeps its median.
BenchFile parse_benchmark_json(std::string_view text, const std::string& path, Metric metric);
BenchFile load_benchmark_json(const std::string& path, Metric metric);

// --- statistics ---------------------------------------------------------------------------------

double median(std::vector<double> v);

struct RankTest {
  double u = 0;        // Mann-Whitney U of the first sample
  double p = 1;        // two-sided p-value
  bool exact = false;  // exact null distribution (no ties, both samples <= kExactMax)
};
constexpr size_t kExactMax = 50;

// Two-sided Mann-Whitney U test. Exact when there are no ties and both samples have at most
// kExactMax values; otherwise the normal approximation with tie and continuity corrections.
RankTest mann_whitney_u(const std::vector<double>& a, const std::vector<double>& b);

// The smallest two-sided p-value the exact test can return for these sample sizes: 2 / C(n1+n2, n1).
// When it is not below alpha, no difference can be significant (3 vs 3 repetitions: 0.1).
double min_p_value(size_t n1, size_t n2);

// --- comparison ---------------------------------------------------------------------------------

struct Options {
  double threshold = 0.05;  // a change smaller than this fraction of the base median is noise
  double alpha = 0.05;      // significance level of the rank test
  Metric metric = Metric::RealTime;
  bool strict = false;      // untested slowdowns beyond the threshold and failed runs also fail
  std::string filter;       // ECMAScript regex searched in names (empty: all)
};

enum class Status : uint8_t {
  Regression,   // significant and slower than base by more than the threshold
  Improvement,  // significant and faster by more than the threshold
  Unchanged,    // not significant, or within the threshold
  Untested,     // too few repetitions for the test to reach alpha (the ratio is still shown)
  OnlyInBase,
  OnlyInNew,
  Failed,       // the benchmark reported an error in either file
};
const char* status_name(Status s);

struct Row {
  std::string name;
  Status status = Status::Unchanged;
  double base_ns = 0, new_ns = 0;  // medians (0 when absent)
  double ratio = 0;                // new / base (0 when there is none)
  double p = 1;
  bool exact = false;
  bool has_ratio = false;
  size_t n_base = 0, n_new = 0;
  std::string note;  // why a row is untested or failed, aggregate fallbacks
};

struct Report {
  Options options;
  std::string base_path, new_path;
  std::vector<Row> rows;  // base file order, then the names only in the new file
  std::vector<std::string> notes;

  size_t count(Status s) const;
  // Rows that fail the run: regressions, plus (strict) untested slowdowns and failed runs.
  std::vector<const Row*> failures() const;
  int exit_code() const { return failures().empty() ? 0 : 1; }
};

Report compare(const BenchFile& base, const BenchFile& next, const Options& options);

std::string format_time(double ns);
std::string format_table(const Report& r);     // aligned plain text, with a summary line
std::string format_markdown(const Report& r);  // GitHub-flavoured
std::string format_svg(const Report& r);       // one bar per benchmark with a ratio

// The command line, with its exit codes: 0 no significant regression, 1 a significant regression,
// 2 usage or input error (message on `err`).
int run_cli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace kiln::bench
