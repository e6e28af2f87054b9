#include "bench/compare/compare.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <limits>
#include <ostream>
#include <regex>
#include <set>
#include <sstream>

namespace kiln::bench {

// --- JSON ---------------------------------------------------------------------------------------

const Json* Json::find(std::string_view key) const {
  if (kind != Kind::Object) return nullptr;
  for (const auto& [k, v] : object)
    if (k == key) return &v;
  return nullptr;
}

namespace {

class Parser {
 public:
  Parser(std::string_view text, const std::string& where, bool allow_non_finite)
      : s_(text), where_(where), allow_non_finite_(allow_non_finite) {}

  Json parse_document() {
    skip_ws();
    if (pos_ == s_.size()) fail("the file is empty");
    Json v = value(0);
    skip_ws();
    if (pos_ != s_.size()) fail("unexpected text after the JSON value");
    return v;
  }

 private:
  // Deep nesting would overflow the stack; Google Benchmark files are 4 levels deep.
  static constexpr int kMaxDepth = 200;

  [[noreturn]] void fail(const std::string& what) const {
    size_t line = 1, col = 1;
    for (size_t i = 0; i < pos_ && i < s_.size(); ++i) {
      if (s_[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    throw InputError(where_ + ": invalid JSON at line " + std::to_string(line) + ", column " + std::to_string(col) +
                     ": " + what);
  }

  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }

  bool consume(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  Json value(int depth) {
    if (depth > kMaxDepth) fail("nesting deeper than " + std::to_string(kMaxDepth) + " levels");
    skip_ws();
    if (pos_ == s_.size()) fail("unexpected end of file (truncated?)");
    Json v;
    const char c = s_[pos_];
    if (c == '{') {
      v.kind = Json::Kind::Object;
      ++pos_;
      skip_ws();
      if (pos_ < s_.size() && s_[pos_] == '}') {
        ++pos_;
        return v;
      }
      for (;;) {
        skip_ws();
        if (pos_ == s_.size() || s_[pos_] != '"') fail("expected a string key in an object");
        std::string key = string_literal();
        skip_ws();
        if (pos_ == s_.size() || s_[pos_] != ':') fail("expected ':' after an object key");
        ++pos_;
        v.object.emplace_back(std::move(key), value(depth + 1));
        skip_ws();
        if (pos_ < s_.size() && s_[pos_] == ',') {
          ++pos_;
          continue;
        }
        if (pos_ < s_.size() && s_[pos_] == '}') {
          ++pos_;
          return v;
        }
        fail(pos_ == s_.size() ? "unexpected end of file inside an object (truncated?)" : "expected ',' or '}' in an object");
      }
    }
    if (c == '[') {
      v.kind = Json::Kind::Array;
      ++pos_;
      skip_ws();
      if (pos_ < s_.size() && s_[pos_] == ']') {
        ++pos_;
        return v;
      }
      for (;;) {
        v.array.push_back(value(depth + 1));
        skip_ws();
        if (pos_ < s_.size() && s_[pos_] == ',') {
          ++pos_;
          continue;
        }
        if (pos_ < s_.size() && s_[pos_] == ']') {
          ++pos_;
          return v;
        }
        fail(pos_ == s_.size() ? "unexpected end of file inside an array (truncated?)" : "expected ',' or ']' in an array");
      }
    }
    if (c == '"') {
      v.kind = Json::Kind::String;
      v.string = string_literal();
      return v;
    }
    if (consume("true")) {
      v.kind = Json::Kind::Bool;
      v.boolean = true;
      return v;
    }
    if (consume("false")) {
      v.kind = Json::Kind::Bool;
      return v;
    }
    if (consume("null")) return v;
    v.kind = Json::Kind::Number;
    v.number = number();
    return v;
  }

  double number() {
    const double inf = std::numeric_limits<double>::infinity();
    if (allow_non_finite_) {
      if (consume("NaN")) return std::numeric_limits<double>::quiet_NaN();
      if (consume("-NaN")) return std::numeric_limits<double>::quiet_NaN();
      if (consume("Infinity")) return inf;
      if (consume("-Infinity")) return -inf;
    }
    const size_t start = pos_;
    auto digits = [&] {
      const size_t d = pos_;
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
      return pos_ - d;
    };
    if (pos_ < s_.size() && s_[pos_] == '-') ++pos_;
    if (pos_ < s_.size() && s_[pos_] == '0') {
      ++pos_;
    } else if (digits() == 0) {
      pos_ = start;
      fail("expected a value (object, array, string, number, true, false or null)");
    }
    if (pos_ < s_.size() && s_[pos_] == '.') {
      ++pos_;
      if (digits() == 0) fail("expected digits after the decimal point");
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
      if (digits() == 0) fail("expected digits in the exponent");
    }
    double out = 0;
    auto [end, ec] = std::from_chars(s_.data() + start, s_.data() + pos_, out);
    if (ec == std::errc::result_out_of_range) {
      // from_chars leaves `out` unset: overflow is +-inf, underflow 0 (as strtod gives)
      size_t e = s_.find_first_of("eE", start);
      bool tiny = e != std::string_view::npos && e < pos_ && s_[e + 1] == '-';
      return tiny ? 0.0 : (s_[start] == '-' ? -inf : inf);
    }
    if (ec != std::errc() || end != s_.data() + pos_) fail("malformed number");
    return out;
  }

  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  uint32_t hex4() {
    if (pos_ + 4 > s_.size()) fail("truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const char h = s_[pos_++];
      v <<= 4;
      if (h >= '0' && h <= '9') v |= static_cast<uint32_t>(h - '0');
      else if (h >= 'a' && h <= 'f') v |= static_cast<uint32_t>(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F') v |= static_cast<uint32_t>(h - 'A' + 10);
      else fail("bad hex digit in a \\u escape");
    }
    return v;
  }

  std::string string_literal() {
    ++pos_;  // opening quote
    std::string out;
    for (;;) {
      if (pos_ >= s_.size()) fail("unterminated string");
      const char c = s_[pos_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) {
        --pos_;
        fail("control character inside a string");
      }
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) fail("unterminated string");
      const char e = s_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && s_.substr(pos_, 2) == "\\u") {
            pos_ += 2;
            const uint32_t lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail("unpaired surrogate in a \\u escape");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default:
          --pos_;
          fail(std::string("unknown escape \\") + e);
      }
    }
  }

  std::string_view s_;
  const std::string& where_;
  bool allow_non_finite_ = true;
  size_t pos_ = 0;
};

}  // namespace

Json parse_json(std::string_view text, const std::string& where, bool allow_non_finite) {
  return Parser(text, where, allow_non_finite).parse_document();
}

// --- benchmark files ----------------------------------------------------------------------------

namespace {

double unit_to_ns(const std::string& unit, const std::string& path, const std::string& name) {
  if (unit == "ns") return 1;
  if (unit == "us") return 1e3;
  if (unit == "ms") return 1e6;
  if (unit == "s") return 1e9;
  throw InputError(path + ": benchmark \"" + name + "\" has an unknown time_unit \"" + unit + "\" (expected ns, us, ms or s)");
}

std::string string_member(const Json& o, std::string_view key) {
  const Json* v = o.find(key);
  return v && v->kind == Json::Kind::String ? v->string : std::string();
}

bool true_member(const Json& o, std::string_view key) {
  const Json* v = o.find(key);
  return v && v->kind == Json::Kind::Bool && v->boolean;
}

struct Pending {
  Series series;
  int64_t family = -1, instance = -1;  // registration order, when the file has it
  std::vector<double> medians;  // aggregate medians (used when there are no iteration entries)
  int64_t aggregate_repetitions = 0;
};

}  // namespace

BenchFile parse_benchmark_json(std::string_view text, const std::string& path, Metric metric) {
  const Json doc = parse_json(text, path);
  if (doc.kind != Json::Kind::Object)
    throw InputError(path + ": the top level is not a JSON object; expected Google Benchmark output "
                            "(--benchmark_out=FILE --benchmark_out_format=json)");
  const Json* list = doc.find("benchmarks");
  if (!list || list->kind != Json::Kind::Array)
    throw InputError(path + ": no \"benchmarks\" array; expected Google Benchmark output "
                            "(--benchmark_out=FILE --benchmark_out_format=json)");
  BenchFile file;
  file.path = path;
  if (const Json* ctx = doc.find("context"); ctx && ctx->kind == Json::Kind::Object) {
    for (const auto& [k, v] : ctx->object) {
      if (v.kind == Json::Kind::String) {
        file.context[k] = v.string;
      } else if (v.kind == Json::Kind::Number) {
        std::ostringstream os;
        os << v.number;
        file.context[k] = os.str();
      }
    }
  }
  const char* key = metric == Metric::RealTime ? "real_time" : "cpu_time";
  std::vector<Pending> pending;
  std::map<std::string, size_t> index;
  size_t i = 0;
  for (const Json& b : list->array) {
    const std::string at = path + ": benchmarks[" + std::to_string(i++) + "]";
    if (b.kind != Json::Kind::Object) throw InputError(at + " is not an object");
    const std::string name = string_member(b, "name");
    if (name.empty()) throw InputError(at + " has no \"name\" string");
    std::string run_name = string_member(b, "run_name");
    if (run_name.empty()) run_name = name;
    const std::string run_type = string_member(b, "run_type");
    const bool aggregate = run_type == "aggregate";
    if (aggregate && string_member(b, "aggregate_name") != "median") continue;  // mean, stddev, cv, BigO...
    if (!run_type.empty() && !aggregate && run_type != "iteration")
      throw InputError(at + " (\"" + name + "\") has an unknown run_type \"" + run_type + "\"");
    auto [it, added] = index.emplace(run_name, pending.size());
    if (added) {
      pending.emplace_back();
      pending.back().series.name = run_name;
    }
    Pending& p = pending[it->second];
    if (const Json* f = b.find("family_index"); f && f->kind == Json::Kind::Number) p.family = static_cast<int64_t>(f->number);
    if (const Json* f = b.find("per_family_instance_index"); f && f->kind == Json::Kind::Number)
      p.instance = static_cast<int64_t>(f->number);
    if (true_member(b, "error_occurred") || true_member(b, "skipped")) {
      std::string msg = string_member(b, "error_message");
      if (msg.empty()) msg = string_member(b, "skip_message");
      p.series.error = msg.empty() ? "the benchmark reported an error" : msg;
      continue;
    }
    const Json* t = b.find(key);
    if (!t || t->kind != Json::Kind::Number)
      throw InputError(at + " (\"" + name + "\") has no numeric \"" + key + "\"");
    if (!std::isfinite(t->number) || t->number < 0)
      throw InputError(at + " (\"" + name + "\") has " + key + " = " + std::to_string(t->number) +
                       " (expected a finite time >= 0)");
    std::string unit = string_member(b, "time_unit");
    const double ns = t->number * unit_to_ns(unit.empty() ? "ns" : unit, path, name);
    if (aggregate) {
      p.medians.push_back(ns);
      if (const Json* r = b.find("repetitions"); r && r->kind == Json::Kind::Number)
        p.aggregate_repetitions = static_cast<int64_t>(r->number);
    } else {
      p.series.samples_ns.push_back(ns);
    }
  }
  // Registration order (family_index, per_family_instance_index) when every entry has it: with
  // --benchmark_enable_random_interleaving the file order differs from run to run.
  if (std::all_of(pending.begin(), pending.end(), [](const Pending& p) { return p.family >= 0; }))
    std::stable_sort(pending.begin(), pending.end(), [](const Pending& a, const Pending& b) {
      return std::pair(a.family, a.instance) < std::pair(b.family, b.instance);
    });
  for (Pending& p : pending) {
    Series& s = p.series;
    if (s.samples_ns.empty() && !p.medians.empty()) {
      s.samples_ns = {median(p.medians)};
      s.from_aggregate = true;
      s.repetitions = p.aggregate_repetitions;
    } else {
      s.repetitions = static_cast<int64_t>(s.samples_ns.size());
    }
    file.series.push_back(std::move(s));
  }
  return file;
}

BenchFile load_benchmark_json(const std::string& path, Metric metric) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": cannot open the file (does it exist, is it readable?)");
  std::ostringstream os;
  os << in.rdbuf();
  if (in.bad()) throw InputError(path + ": read error");
  return parse_benchmark_json(os.str(), path, metric);
}

// --- statistics ---------------------------------------------------------------------------------

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double min_p_value(size_t n1, size_t n2) {
  if (n1 == 0 || n2 == 0) return 1;
  // C(n1+n2, n1) as a product of ratios (exact enough in double for any realistic n)
  double c = 1;
  const size_t k = std::min(n1, n2), n = n1 + n2;
  for (size_t i = 1; i <= k; ++i) c = c * static_cast<double>(n - k + i) / static_cast<double>(i);
  return std::min(1.0, 2.0 / c);
}

namespace {

// Number of arrangements giving each value of U (0..n1*n2) for samples of n1 and n2 distinct
// values: counts(m, n)[u] = counts(m-1, n)[u-n] + counts(m, n-1)[u] (is the largest value in the
// first sample or not), built row by row in m.
std::vector<double> u_counts(size_t n1, size_t n2) {
  const size_t size = n1 * n2 + 1;
  std::vector<std::vector<double>> prev(n2 + 1, std::vector<double>(size, 0.0)), cur = prev;
  for (size_t n = 0; n <= n2; ++n) prev[n][0] = 1;  // m = 0: U = 0 in one way
  for (size_t m = 1; m <= n1; ++m) {
    for (size_t n = 0; n <= n2; ++n) {
      std::vector<double>& c = cur[n];
      std::fill(c.begin(), c.end(), 0.0);
      for (size_t u = 0; u <= m * n; ++u) {
        double v = u >= n ? prev[n][u - n] : 0.0;
        if (n > 0) v += cur[n - 1][u];
        c[u] = v;
      }
    }
    std::swap(prev, cur);
  }
  return prev[n2];
}

}  // namespace

RankTest mann_whitney_u(const std::vector<double>& a, const std::vector<double>& b) {
  RankTest r;
  const size_t n1 = a.size(), n2 = b.size(), n = n1 + n2;
  if (n1 == 0 || n2 == 0) return r;
  std::vector<std::pair<double, int>> all;
  all.reserve(n);
  for (double v : a) all.emplace_back(v, 0);
  for (double v : b) all.emplace_back(v, 1);
  std::sort(all.begin(), all.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
  double rank_sum_a = 0, tie_term = 0;
  bool ties = false;
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j < n && all[j].first == all[i].first) ++j;
    const double t = static_cast<double>(j - i);
    const double avg_rank = (static_cast<double>(i + 1) + static_cast<double>(j)) / 2;  // ranks are 1-based
    for (size_t k = i; k < j; ++k)
      if (all[k].second == 0) rank_sum_a += avg_rank;
    if (j - i > 1) {
      ties = true;
      tie_term += t * t * t - t;
    }
    i = j;
  }
  const double d1 = static_cast<double>(n1), d2 = static_cast<double>(n2), dn = static_cast<double>(n);
  r.u = rank_sum_a - d1 * (d1 + 1) / 2;
  if (!ties && n1 <= kExactMax && n2 <= kExactMax) {
    const std::vector<double> counts = u_counts(n1, n2);
    double total = 0;
    for (double c : counts) total += c;
    const size_t u = static_cast<size_t>(std::llround(r.u));
    double lower = 0, upper = 0;
    for (size_t k = 0; k < counts.size(); ++k) {
      if (k <= u) lower += counts[k];
      if (k >= u) upper += counts[k];
    }
    r.p = std::min(1.0, 2 * std::min(lower, upper) / total);
    r.exact = true;
    return r;
  }
  const double mu = d1 * d2 / 2;
  const double var = d1 * d2 / 12 * ((dn + 1) - tie_term / (dn * (dn - 1)));
  if (var <= 0) return r;  // every value equal: no evidence of a difference (p = 1)
  const double z = std::max(0.0, std::fabs(r.u - mu) - 0.5) / std::sqrt(var);
  r.p = std::min(1.0, std::erfc(z / std::sqrt(2.0)));
  return r;
}

// --- comparison ---------------------------------------------------------------------------------

const char* status_name(Status s) {
  switch (s) {
    case Status::Regression: return "REGRESSION";
    case Status::Improvement: return "improved";
    case Status::Unchanged: return "unchanged";
    case Status::Untested: return "untested";
    case Status::OnlyInBase: return "only in base";
    case Status::OnlyInNew: return "only in new";
    case Status::Failed: return "error";
  }
  return "?";
}

size_t Report::count(Status s) const {
  return static_cast<size_t>(std::count_if(rows.begin(), rows.end(), [s](const Row& r) { return r.status == s; }));
}

std::vector<const Row*> Report::failures() const {
  std::vector<const Row*> out;
  for (const Row& r : rows) {
    const bool fail = r.status == Status::Regression ||
                      (options.strict && r.status == Status::Untested && r.ratio > 1 + options.threshold) ||
                      (options.strict && r.status == Status::Failed);
    if (fail) out.push_back(&r);
  }
  return out;
}

namespace {

std::string fmt(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

std::string fmt_fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string percent(double ratio) {
  const double pc = (ratio - 1) * 100;
  return (pc >= 0 ? "+" : "") + fmt_fixed(pc, 1) + "%";
}

std::string p_text(const Row& r) {
  if (!r.has_ratio || r.status == Status::Untested) return "-";
  if (r.p < 1e-4) return "<1e-4";
  return fmt(r.p, 2);
}

std::string n_text(const Row& r) {
  auto one = [](size_t n) { return n ? std::to_string(n) : std::string("-"); };
  return one(r.n_base) + "/" + one(r.n_new);
}

std::string series_note(const Series& s, const char* side) {
  if (!s.from_aggregate) return "";
  return std::string(side) + ": aggregates only (median of " +
         (s.repetitions > 0 ? std::to_string(s.repetitions) : std::string("?")) + " repetitions)";
}

}  // namespace

Report compare(const BenchFile& base, const BenchFile& next, const Options& options) {
  Report rep;
  rep.options = options;
  rep.base_path = base.path;
  rep.new_path = next.path;
  std::regex filter;
  if (!options.filter.empty()) filter = std::regex(options.filter);
  auto selected = [&](const std::string& name) { return options.filter.empty() || std::regex_search(name, filter); };
  std::map<std::string, const Series*> in_next;
  for (const Series& s : next.series) in_next.emplace(s.name, &s);
  std::set<std::string> seen;
  bool aggregates = false;
  for (const Series& b : base.series) {
    if (!selected(b.name)) continue;
    seen.insert(b.name);
    Row row;
    row.name = b.name;
    row.n_base = b.samples_ns.size();
    row.base_ns = median(b.samples_ns);
    auto it = in_next.find(b.name);
    if (it == in_next.end()) {
      row.status = b.error.empty() ? Status::OnlyInBase : Status::Failed;
      row.note = b.error.empty() ? "" : "base: " + b.error + "; not in new";
      rep.rows.push_back(std::move(row));
      continue;
    }
    const Series& n = *it->second;
    row.n_new = n.samples_ns.size();
    row.new_ns = median(n.samples_ns);
    if (!b.error.empty() || !n.error.empty() || b.samples_ns.empty() || n.samples_ns.empty()) {
      row.status = Status::Failed;
      std::string why;
      if (!b.error.empty()) why = "base: " + b.error;
      if (!n.error.empty()) why += (why.empty() ? "" : "; ") + std::string("new: ") + n.error;
      if (why.empty()) why = "no measurements";
      row.note = why;
      rep.rows.push_back(std::move(row));
      continue;
    }
    row.has_ratio = row.base_ns > 0;
    row.ratio = row.has_ratio ? row.new_ns / row.base_ns : 0;
    for (const char* side : {"base", "new"}) {
      const std::string note = series_note(side[0] == 'b' ? b : n, side);
      if (!note.empty()) row.note += (row.note.empty() ? "" : "; ") + note;
    }
    aggregates = aggregates || b.from_aggregate || n.from_aggregate;
    const double min_p = min_p_value(row.n_base, row.n_new);
    if (!row.has_ratio) {
      row.status = Status::Failed;
      row.note = "base median is 0";
    } else if (min_p >= options.alpha) {
      row.status = Status::Untested;
      std::string why = std::to_string(row.n_base) + " vs " + std::to_string(row.n_new) +
                        " samples: the rank test cannot reach p < " + fmt(options.alpha, 3) +
                        " (smallest possible p " + fmt(min_p, 2) + ")";
      row.note = row.note.empty() ? why : row.note + "; " + why;
    } else {
      const RankTest t = mann_whitney_u(b.samples_ns, n.samples_ns);
      row.p = t.p;
      row.exact = t.exact;
      const bool significant = t.p < options.alpha;
      if (significant && row.ratio > 1 + options.threshold) row.status = Status::Regression;
      else if (significant && row.ratio < 1 - options.threshold) row.status = Status::Improvement;
      else row.status = Status::Unchanged;
    }
    rep.rows.push_back(std::move(row));
  }
  for (const Series& n : next.series) {
    if (seen.count(n.name) || !selected(n.name)) continue;
    Row row;
    row.name = n.name;
    row.n_new = n.samples_ns.size();
    row.new_ns = median(n.samples_ns);
    row.status = n.error.empty() ? Status::OnlyInNew : Status::Failed;
    if (!n.error.empty()) row.note = "new: " + n.error + "; not in base";
    rep.rows.push_back(std::move(row));
  }
  if (aggregates)
    rep.notes.push_back(
        "Some benchmarks have aggregates only (--benchmark_report_aggregates_only): their medians are compared, "
        "but no test is possible; run with --benchmark_repetitions=N (N >= 5) and without "
        "--benchmark_report_aggregates_only.");
  auto ctx = [](const BenchFile& f, const char* k) {
    auto it = f.context.find(k);
    return it == f.context.end() ? std::string() : it->second;
  };
  const std::string hb = ctx(base, "host_name"), hn = ctx(next, "host_name");
  if (!hb.empty() && !hn.empty() && hb != hn)
    rep.notes.push_back("The files come from different hosts (" + hb + " and " + hn +
                        "): baselines are machine-specific, so differences may be the machines'.");
  return rep;
}

// --- output -------------------------------------------------------------------------------------

std::string format_time(double ns) {
  if (ns <= 0) return "-";
  const char* unit = "ns";
  double v = ns;
  if (ns >= 1e9) {
    v = ns / 1e9;
    unit = "s";
  } else if (ns >= 1e6) {
    v = ns / 1e6;
    unit = "ms";
  } else if (ns >= 1e3) {
    v = ns / 1e3;
    unit = "us";
  }
  return fmt_fixed(v, v >= 100 ? 1 : v >= 10 ? 2 : 3) + " " + unit;
}

namespace {

std::string settings_line(const Report& r) {
  return std::string("metric ") + (r.options.metric == Metric::RealTime ? "real_time" : "cpu_time") + ", threshold " +
         fmt(r.options.threshold * 100, 4) + "%, alpha " + fmt(r.options.alpha, 3) +
         ", two-sided Mann-Whitney U over repetitions" + (r.options.strict ? ", strict" : "");
}

std::string change_text(const Row& r) { return r.has_ratio ? percent(r.ratio) : "-"; }
std::string ratio_text(const Row& r) { return r.has_ratio ? fmt_fixed(r.ratio, 3) : "-"; }

std::string counts(const Report& r) {
  std::ostringstream os;
  os << r.count(Status::Regression) << " regressed, " << r.count(Status::Improvement) << " improved, "
     << r.count(Status::Unchanged) << " unchanged, " << r.count(Status::Untested) << " untested, "
     << r.count(Status::OnlyInBase) + r.count(Status::OnlyInNew) << " unmatched, " << r.count(Status::Failed)
     << " failed";
  return os.str();
}

std::string summary(const Report& r) {
  std::ostringstream os;
  const auto fails = r.failures();
  if (fails.empty()) {
    os << "OK: no significant regression";
  } else {
    os << "FAIL: " << fails.size() << (fails.size() == 1 ? " benchmark fails: " : " benchmarks fail: ");
    for (size_t i = 0; i < fails.size(); ++i) {
      const Row& f = *fails[i];
      os << (i ? ", " : "") << f.name;
      if (f.has_ratio) os << " " << percent(f.ratio);
      if (f.status == Status::Regression) os << " (p " << p_text(f) << ")";
      else os << " (" << status_name(f.status) << ")";
    }
  }
  os << " [" << counts(r) << "]";
  return os.str();
}

}  // namespace

std::string format_table(const Report& r) {
  const std::vector<std::string> head = {"benchmark", "base", "new", "ratio", "change", "p", "n", "verdict"};
  std::vector<std::vector<std::string>> cells;
  for (const Row& row : r.rows)
    cells.push_back({row.name, format_time(row.base_ns), format_time(row.new_ns), ratio_text(row), change_text(row),
                     p_text(row), n_text(row), status_name(row.status)});
  std::vector<size_t> width(head.size());
  for (size_t c = 0; c < head.size(); ++c) width[c] = head[c].size();
  for (const auto& line : cells)
    for (size_t c = 0; c < line.size(); ++c) width[c] = std::max(width[c], line[c].size());
  std::ostringstream os;
  os << "base: " << r.base_path << "\nnew:  " << r.new_path << "\n" << settings_line(r) << "\n\n";
  auto emit = [&](const std::vector<std::string>& line) {
    for (size_t c = 0; c < line.size(); ++c) {
      // names and verdicts left-aligned, figures right-aligned
      const bool left = c == 0 || c + 1 == line.size();
      if (c) os << "  ";
      if (left) os << std::left << std::setw(static_cast<int>(c + 1 == line.size() ? 0 : width[c])) << line[c];
      else os << std::right << std::setw(static_cast<int>(width[c])) << line[c];
    }
    os << "\n";
  };
  emit(head);
  for (const auto& line : cells) emit(line);
  bool any_note = false;
  for (const Row& row : r.rows)
    if (!row.note.empty()) {
      if (!any_note) os << "\nnotes:\n";
      any_note = true;
      os << "  " << row.name << ": " << row.note << "\n";
    }
  for (const std::string& n : r.notes) os << "note: " << n << "\n";
  os << "\n" << summary(r) << "\n";
  return os.str();
}

namespace {

std::string md_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '|' || c == '`' || c == '*' || c == '_' || c == '<' || c == '>' || c == '[' || c == ']') out += '\\';
    out += c;
  }
  return out;
}

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out += c;
    }
  }
  return out;
}

}  // namespace

std::string format_markdown(const Report& r) {
  std::ostringstream os;
  os << "# Benchmark comparison\n\n";
  os << "- base: `" << r.base_path << "`\n- new: `" << r.new_path << "`\n- " << settings_line(r) << "\n\n";
  os << "**" << summary(r) << "**\n\n";
  os << "| benchmark | base | new | change | p | n (base/new) | verdict |\n";
  os << "| --- | ---: | ---: | ---: | ---: | ---: | --- |\n";
  for (const Row& row : r.rows) {
    std::string verdict = status_name(row.status);
    if (row.status == Status::Regression || row.status == Status::Improvement) verdict = "**" + verdict + "**";
    os << "| " << md_escape(row.name) << " | " << format_time(row.base_ns) << " | " << format_time(row.new_ns) << " | "
       << change_text(row) << " | " << p_text(row) << " | " << n_text(row) << " | " << verdict << " |\n";
  }
  bool any_note = false;
  for (const Row& row : r.rows)
    if (!row.note.empty()) {
      if (!any_note) os << "\nNotes:\n\n";
      any_note = true;
      os << "- " << md_escape(row.name) << ": " << md_escape(row.note) << "\n";
    }
  if (!r.notes.empty()) os << "\n";
  for (const std::string& n : r.notes) os << "> " << md_escape(n) << "\n";
  os << "\nchange = new median / base median - 1 (> 0: slower). A benchmark regresses when the rank test "
        "gives p < alpha and the change exceeds the threshold.\n";
  return os.str();
}

std::string format_svg(const Report& r) {
  std::vector<const Row*> bars;
  for (const Row& row : r.rows)
    if (row.has_ratio) bars.push_back(&row);
  const double t = r.options.threshold;
  // The axis spans the ratios and both threshold lines, at most [0, 3] (longer bars are cut).
  double lo = std::min(0.9, 1 - 2 * t), hi = std::max(1.1, 1 + 2 * t);
  for (const Row* b : bars) {
    lo = std::min(lo, b->ratio);
    hi = std::max(hi, b->ratio);
  }
  const double pad = 0.05 * (hi - lo);
  lo = std::max(0.0, lo - pad);
  hi = std::min(3.0, hi + pad);
  size_t longest = 10;
  for (const Row* b : bars) longest = std::max(longest, b->name.size());
  const double label_w = std::min(560.0, 16 + 6.6 * static_cast<double>(longest));
  const double plot_w = 520, row_h = 22, top = 56, value_w = 70;
  const double width = std::max(760.0, label_w + plot_w + value_w + 10);
  const double plot_h = row_h * static_cast<double>(std::max<size_t>(bars.size(), 1));
  const double height = top + plot_h + 64;
  auto x_of = [&](double ratio) { return label_w + (std::clamp(ratio, lo, hi) - lo) / (hi - lo) * plot_w; };
  auto colour = [](Status s) {
    switch (s) {
      case Status::Regression: return "#d62728";
      case Status::Improvement: return "#2ca02c";
      case Status::Untested: return "#e6a23c";
      default: return "#9e9e9e";
    }
  };
  auto cls = [](Status s) {
    switch (s) {
      case Status::Regression: return "regression";
      case Status::Improvement: return "improvement";
      case Status::Untested: return "untested";
      default: return "noise";
    }
  };
  std::ostringstream os;
  auto num = [](double v) { return fmt_fixed(v, 1); };
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << num(width) << "\" height=\"" << num(height)
     << "\" viewBox=\"0 0 " << num(width) << " " << num(height) << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  os << "<title>Benchmark ratios new/base: " << xml_escape(r.new_path) << " vs " << xml_escape(r.base_path)
     << "</title>\n";
  os << "<rect x=\"0\" y=\"0\" width=\"" << num(width) << "\" height=\"" << num(height) << "\" fill=\"white\"/>\n";
  os << "<text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">new / base median ("
     << (r.options.metric == Metric::RealTime ? "real_time" : "cpu_time") << "): &gt; 1 is slower</text>\n";
  const bool failed = r.exit_code() != 0;
  os << "<text x=\"10\" y=\"38\"><tspan font-weight=\"bold\" fill=\"" << (failed ? "#d62728" : "#2ca02c") << "\">"
     << (failed ? "FAIL" : "OK") << "</tspan><tspan fill=\"#555\"> " << counts(r) << "; threshold "
     << fmt(t * 100, 4) << "%, alpha " << fmt(r.options.alpha, 3) << "</tspan></text>\n";
  // ticks: a step giving at most 10 of them
  double step = 1;
  for (double s : {0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0})
    if ((hi - lo) / s <= 10) {
      step = s;
      break;
    }
  const double axis_y = top + plot_h;
  for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + 1e-9; v += step) {
    const double x = x_of(v);
    os << "<line class=\"tick\" x1=\"" << num(x) << "\" y1=\"" << num(top) << "\" x2=\"" << num(x) << "\" y2=\""
       << num(axis_y + 4) << "\" stroke=\"#eee\"/>\n";
    os << "<text x=\"" << num(x) << "\" y=\"" << num(axis_y + 18) << "\" text-anchor=\"middle\" fill=\"#555\">"
       << fmt(v, 3) << "</text>\n";
  }
  os << "<line x1=\"" << num(label_w) << "\" y1=\"" << num(axis_y) << "\" x2=\"" << num(label_w + plot_w) << "\" y2=\""
     << num(axis_y) << "\" stroke=\"#555\"/>\n";
  for (size_t i = 0; i < bars.size(); ++i) {
    const Row& b = *bars[i];
    const double y = top + row_h * static_cast<double>(i);
    const double x1 = x_of(std::min(1.0, b.ratio)), x2 = x_of(std::max(1.0, b.ratio));
    os << "<text x=\"" << num(label_w - 8) << "\" y=\"" << num(y + row_h * 0.68) << "\" text-anchor=\"end\">"
       << xml_escape(b.name) << "</text>\n";
    os << "<rect class=\"bar " << cls(b.status) << "\" x=\"" << num(x1) << "\" y=\"" << num(y + 3) << "\" width=\""
       << num(std::max(1.0, x2 - x1)) << "\" height=\"" << num(row_h - 6) << "\" fill=\"" << colour(b.status)
       << "\"><title>" << xml_escape(b.name) << ": " << fmt_fixed(b.ratio, 3) << " (" << percent(b.ratio) << "), "
       << status_name(b.status) << (b.status == Status::Untested ? "" : ", p " + p_text(b)) << "</title></rect>\n";
    const bool cut = b.ratio > hi || b.ratio < lo;
    os << "<text x=\"" << num(label_w + plot_w + 6) << "\" y=\"" << num(y + row_h * 0.68) << "\" fill=\""
       << colour(b.status) << "\">" << percent(b.ratio) << (cut ? " (cut)" : "") << "</text>\n";
  }
  auto vline = [&](double v, const char* stroke, const char* dash, const char* label) {
    const double x = x_of(v);
    os << "<line class=\"" << label << "\" x1=\"" << num(x) << "\" y1=\"" << num(top - 4) << "\" x2=\"" << num(x)
       << "\" y2=\"" << num(axis_y) << "\" stroke=\"" << stroke << "\" stroke-width=\"1.5\"";
    if (dash[0]) os << " stroke-dasharray=\"" << dash << "\"";
    os << "/>\n";
  };
  vline(1.0, "#000", "", "baseline");
  vline(1 + t, "#d62728", "5,4", "threshold");
  vline(1 - t, "#2ca02c", "5,4", "threshold");
  if (bars.empty())
    os << "<text x=\"" << num(label_w + plot_w / 2) << "\" y=\"" << num(top + row_h * 0.68)
       << "\" text-anchor=\"middle\" fill=\"#555\">no benchmark in both files</text>\n";
  // legend
  const double ly = axis_y + 40;
  double lx = 10;
  for (auto [s, text] : {std::pair{Status::Regression, "regression"}, std::pair{Status::Improvement, "improvement"},
                         std::pair{Status::Unchanged, "noise / within threshold"},
                         std::pair{Status::Untested, "untested (too few repetitions)"}}) {
    os << "<rect x=\"" << num(lx) << "\" y=\"" << num(ly - 10) << "\" width=\"12\" height=\"12\" fill=\"" << colour(s)
       << "\"/><text x=\"" << num(lx + 16) << "\" y=\"" << num(ly) << "\">" << text << "</text>\n";
    lx += 28 + 6.6 * static_cast<double>(std::string_view(text).size());
  }
  os << "<text x=\"" << num(lx) << "\" y=\"" << num(ly) << "\" fill=\"#555\">dashed: threshold "
     << fmt(t * 100, 4) << "%</text>\n";
  os << "</svg>\n";
  return os.str();
}

// --- command line -------------------------------------------------------------------------------

namespace {

constexpr const char* kUsage =
    "usage: kiln-bench-compare BASE.json NEW.json [--threshold 5%] [--alpha 0.05]\n"
    "                          [--metric real_time|cpu_time] [--filter REGEX] [--strict]\n"
    "                          [--md REPORT.md] [--svg CHART.svg]\n"
    "Compares two Google Benchmark JSON files (--benchmark_out_format=json, with\n"
    "--benchmark_repetitions=N) benchmark by benchmark: medians, and a two-sided Mann-Whitney U\n"
    "test over the repetitions. A benchmark regresses when p < alpha and its median is slower by\n"
    "more than the threshold.\n"
    "  --threshold X  smallest change that counts, as a percentage (5%) or a fraction (0.05); default 5%\n"
    "  --alpha A      significance level, 0 < A < 1; default 0.05\n"
    "  --metric M     real_time (default) or cpu_time\n"
    "  --filter REGEX compare only benchmarks whose name matches\n"
    "  --strict       also fail on benchmarks that errored, and on untested ones (too few\n"
    "                 repetitions) slower than the threshold\n"
    "  --md FILE      write a Markdown report;  --svg FILE  write an SVG bar chart of the ratios\n"
    "Exit status: 0 no significant regression, 1 significant regression, 2 usage or input error.\n";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

double parse_number(const std::string& flag, const std::string& text) {
  double v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(v))
    throw UsageError(flag + ": \"" + text + "\" is not a number");
  return v;
}

double parse_threshold(const std::string& text) {
  if (!text.empty() && text.back() == '%') {
    const double v = parse_number("--threshold", text.substr(0, text.size() - 1)) / 100;
    if (v < 0 || v >= 1) throw UsageError("--threshold: " + text + " is outside [0%, 100%)");
    return v;
  }
  const double v = parse_number("--threshold", text);
  if (v < 0 || v >= 1)
    throw UsageError("--threshold: " + text + " is outside [0, 1); write a percentage with % (5%) or a fraction (0.05)");
  return v;
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.close();
  if (!out) throw InputError(path + ": cannot write the file");
}

}  // namespace

int run_cli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  Options opt;
  std::vector<std::string> files;
  std::string md, svg;
  try {
    for (size_t i = 0; i < args.size(); ++i) {
      std::string a = args[i], value;
      const bool has_value_flag = a.rfind("--", 0) == 0 && a.find('=') != std::string::npos;
      if (has_value_flag) {
        value = a.substr(a.find('=') + 1);
        a = a.substr(0, a.find('='));
      }
      auto take = [&]() -> std::string {
        if (has_value_flag) return value;
        if (i + 1 >= args.size()) throw UsageError(a + " needs a value");
        return args[++i];
      };
      if (a == "-h" || a == "--help") {
        out << kUsage;
        return 0;
      } else if (a == "--threshold") {
        opt.threshold = parse_threshold(take());
      } else if (a == "--alpha") {
        const std::string v = take();
        opt.alpha = parse_number("--alpha", v);
        if (!(opt.alpha > 0 && opt.alpha < 1)) throw UsageError("--alpha: " + v + " is outside (0, 1)");
      } else if (a == "--metric") {
        const std::string v = take();
        if (v == "real_time") opt.metric = Metric::RealTime;
        else if (v == "cpu_time") opt.metric = Metric::CpuTime;
        else throw UsageError("--metric: \"" + v + "\" is neither real_time nor cpu_time");
      } else if (a == "--filter") {
        opt.filter = take();
        try {
          std::regex check(opt.filter);
        } catch (const std::regex_error& e) {
          throw UsageError("--filter: \"" + opt.filter + "\" is not a valid regular expression (" + e.what() + ")");
        }
      } else if (a == "--strict") {
        opt.strict = true;
      } else if (a == "--md") {
        md = take();
      } else if (a == "--svg") {
        svg = take();
      } else if (a.size() > 1 && a[0] == '-') {
        throw UsageError("unknown option " + a);
      } else {
        files.push_back(a);
      }
    }
    if (files.size() != 2)
      throw UsageError("expected two files, BASE.json and NEW.json (got " + std::to_string(files.size()) + ")");
  } catch (const UsageError& e) {
    err << "kiln-bench-compare: error: " << e.what() << "\n" << kUsage;
    return 2;
  }
  try {
    const BenchFile base = load_benchmark_json(files[0], opt.metric);
    const BenchFile next = load_benchmark_json(files[1], opt.metric);
    if (base.series.empty()) throw InputError(files[0] + ": the file holds no benchmarks");
    if (next.series.empty()) throw InputError(files[1] + ": the file holds no benchmarks");
    const Report rep = compare(base, next, opt);
    if (rep.rows.empty())
      throw InputError("no benchmark of " + files[0] + " or " + files[1] + " matches --filter \"" + opt.filter + "\"");
    const bool matched = std::any_of(rep.rows.begin(), rep.rows.end(), [](const Row& r) {
      return r.status != Status::OnlyInBase && r.status != Status::OnlyInNew;
    });
    if (!matched)
      throw InputError("no benchmark name is in both " + files[0] + " and " + files[1] +
                       " (different suites or filters?)");
    out << format_table(rep);
    if (!md.empty()) write_file(md, format_markdown(rep));
    if (!svg.empty()) write_file(svg, format_svg(rep));
    return rep.exit_code();
  } catch (const InputError& e) {
    err << "kiln-bench-compare: error: " << e.what() << "\n";
    return 2;
  } catch (const std::regex_error& e) {
    err << "kiln-bench-compare: error: --filter: " << e.what() << "\n";
    return 2;
  }
}

}  // namespace kiln::bench
