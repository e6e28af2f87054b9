#include "core/profiler.h"

#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <tuple>

#include "core/error.h"
#include "core/tensor.h"

namespace kiln::profiler {

namespace detail {
std::atomic<bool> g_enabled{false};
}

std::string_view category_name(Category c) {
  switch (c) {
    case Category::Op: return "op";
    case Category::Jit: return "jit";
    case Category::Run: return "run";
    case Category::Node: return "node";
    case Category::Kernel: return "kernel";
    case Category::Extern: return "extern";
    case Category::Blas: return "blas";
    case Category::Autograd: return "autograd";
    case Category::User: return "user";
    case Category::Alloc: return "alloc";
    case Category::Free: return "free";
  }
  return "?";
}

namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Events of one thread in one session. Only its thread appends; stop() drains it. The mutex is
// uncontended except at that moment, and taken only while profiling.
struct ThreadBuffer {
  std::mutex mu;
  std::vector<std::unique_ptr<Event>> events;  // pointers: growing the buffer moves no events
  int tid = 0;
  std::string name;
};

struct Session {
  uint64_t id = 0;
  Options options;
  int64_t start_ns = 0;
  std::mutex mu;  // guards buffers
  std::vector<std::shared_ptr<ThreadBuffer>> buffers;
  std::atomic<int64_t> next_flow{1};
  std::atomic<int64_t> net_bytes{0};
};

std::mutex g_mu;                         // guards g_session
std::shared_ptr<Session> g_session;      // the recording session, or null
std::atomic<uint64_t> g_session_id{0};   // its id (0: none)
uint64_t g_next_session = 0;             // under g_mu

struct ThreadState {
  uint64_t session = 0;
  std::shared_ptr<Session> sess;
  std::shared_ptr<ThreadBuffer> buf;
  int depth = 0;
  uint64_t seq = 0;
};
thread_local ThreadState t_state;

std::string thread_label() {
  char name[64] = {0};
  pthread_getname_np(pthread_self(), name, sizeof(name));
  const long tid = static_cast<long>(::syscall(SYS_gettid));
  std::string s = name[0] ? name : "thread";
  if (tid == static_cast<long>(::getpid())) s += " (main)";
  return s + " [" + std::to_string(tid) + "]";
}

// This thread's state, registered with the recording session; null when none records.
ThreadState* current() {
  const uint64_t id = g_session_id.load(std::memory_order_acquire);
  if (id == 0) return nullptr;
  ThreadState& t = t_state;
  if (t.session == id) return &t;
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_session || g_session->id != id) return nullptr;
  auto buf = std::make_shared<ThreadBuffer>();
  buf->name = thread_label();
  {
    std::lock_guard<std::mutex> l(g_session->mu);
    g_session->buffers.push_back(buf);
    buf->tid = static_cast<int>(g_session->buffers.size());
  }
  t.session = id;
  t.sess = g_session;
  t.buf = std::move(buf);
  return &t;
}

void push(ThreadState& t, std::unique_ptr<Event> e) {
  std::lock_guard<std::mutex> lock(t.buf->mu);
  t.buf->events.push_back(std::move(e));
}

void append_sizes(std::string& s, const Tensor& t) {
  if (!t.defined()) {
    s += "None";
    return;
  }
  s += '[';
  char buf[24];
  const IntArrayRef sizes = t.sizes();
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (d) s += ", ";
    s.append(buf, std::to_chars(buf, buf + sizeof(buf), sizes[d]).ptr);
  }
  s += ']';
}

}  // namespace

// --- recording -----------------------------------------------------------------------------------

void Scope::begin(std::string_view name, Category category) {
  ThreadState* t = current();
  if (!t) return;
  ev_ = std::make_unique<Event>();
  ev_->category = category;
  ev_->name = std::string(name);
  ev_->seq = t->seq++;
  ev_->depth = t->depth++;
  session_ = t->session;
  ev_->start_ns = now_ns();
}

void Scope::end() {
  ev_->dur_ns = now_ns() - ev_->start_ns;
  ThreadState& t = t_state;
  --t.depth;
  if (t.session == session_ && t.buf) push(t, std::move(ev_));
  ev_.reset();
}

int64_t Scope::close() {
  if (!ev_) return 0;
  const int64_t d = now_ns() - ev_->start_ns;
  end();
  return d;
}

namespace detail {

void describe_inputs(Event& e, const std::vector<Tensor>& inputs) {
  ThreadState* t = current();
  const bool shapes = t && t->sess->options.record_shapes;
  if (shapes) e.shapes = "[";
  bool first = true;
  for (const Tensor& x : inputs) {
    if (shapes) {
      if (!first) e.shapes += ", ";
      append_sizes(e.shapes, x);
    }
    first = false;
    if (!x.defined()) continue;
    if (e.dtype.empty()) {
      e.dtype = std::string(dtype_name(x.dtype()));
      e.device = x.device().str();
    }
    const Storage& st = x.impl()->storage();
    if (st && !st->is_lazy()) e.bytes += static_cast<int64_t>(x.nbytes());
  }
  if (shapes) e.shapes += "]";
}

void add_written(Event& e, const Tensor& out) {
  if (!out.defined()) return;
  if (e.dtype.empty()) {
    e.dtype = std::string(dtype_name(out.dtype()));
    e.device = out.device().str();
  }
  e.bytes += static_cast<int64_t>(out.nbytes());
}

void add_written(Event& e, const std::vector<Tensor>& outputs) {
  for (const Tensor& o : outputs) add_written(e, o);
}

int64_t new_flow_id() {
  ThreadState* t = current();
  return t ? t->sess->next_flow.fetch_add(1, std::memory_order_relaxed) : 0;
}

namespace {
void record_instant(Category c, size_t nbytes, const char* how) {
  ThreadState* t = current();
  if (!t) return;
  const Options& o = t->sess->options;
  if (!o.record_allocations && !o.record_memory) return;
  const int64_t n = static_cast<int64_t>(nbytes);
  const int64_t net = t->sess->net_bytes.fetch_add(c == Category::Alloc ? n : -n, std::memory_order_relaxed) +
                      (c == Category::Alloc ? n : -n);
  auto e = std::make_unique<Event>();
  e->category = c;
  e->name = c == Category::Alloc ? "alloc" : "free";
  e->seq = t->seq++;
  e->depth = t->depth;
  e->start_ns = now_ns();
  e->bytes = n;
  e->detail = how;
  if (o.record_memory) e->args.emplace_back("net_bytes", std::to_string(net));
  push(*t, std::move(e));
}
}  // namespace

void record_alloc(size_t nbytes, const char* how) { record_instant(Category::Alloc, nbytes, how); }
void record_free(size_t nbytes, const char* how) { record_instant(Category::Free, nbytes, how); }

}  // namespace detail

// --- the session -----------------------------------------------------------------------------------

struct Profile::Impl {
  std::shared_ptr<Session> session;
  bool recording = false;
  std::vector<Event> events;
  std::vector<std::string> thread_names{""};
  int64_t total_ns = 0;
};

Profile::Profile(Options options) : impl_(std::make_unique<Impl>()) {
  std::lock_guard<std::mutex> lock(g_mu);
  KILN_CHECK(!g_session, "[profiler] a Profile is already recording (one at a time): stop it before starting another");
  auto s = std::make_shared<Session>();
  s->id = ++g_next_session;
  s->options = options;
  s->start_ns = now_ns();
  g_session = s;
  impl_->session = s;
  impl_->recording = true;
  g_session_id.store(s->id, std::memory_order_release);
  detail::g_enabled.store(true, std::memory_order_release);
}

Profile::~Profile() { stop(); }

bool Profile::recording() const { return impl_->recording; }

void Profile::stop() {
  if (!impl_->recording) return;
  impl_->recording = false;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    detail::g_enabled.store(false, std::memory_order_release);
    g_session_id.store(0, std::memory_order_release);
    g_session.reset();
  }
  Session& s = *impl_->session;
  std::vector<std::shared_ptr<ThreadBuffer>> buffers;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    buffers = s.buffers;
  }
  std::vector<std::unique_ptr<Event>> gathered;
  impl_->thread_names.assign(buffers.size() + 1, "");
  for (const auto& b : buffers) {
    std::lock_guard<std::mutex> lock(b->mu);
    impl_->thread_names[static_cast<size_t>(b->tid)] = b->name;
    for (auto& e : b->events) {
      e->tid = b->tid;
      e->start_ns = std::max<int64_t>(0, e->start_ns - s.start_ns);
      gathered.push_back(std::move(e));
    }
    b->events.clear();
    b->events.shrink_to_fit();
  }
  std::sort(gathered.begin(), gathered.end(),
            [](const auto& a, const auto& b) { return std::tie(a->tid, a->seq) < std::tie(b->tid, b->seq); });
  std::vector<Event>& all = impl_->events;
  all.reserve(gathered.size());
  for (auto& e : gathered) all.push_back(std::move(*e));
  gathered.clear();
  // Nesting: within a thread, in order of beginning, the enclosing event is the latest one still
  // open at a smaller depth. Self time = duration minus the children's durations.
  std::vector<int> open;
  int tid = -1;
  for (size_t i = 0; i < all.size(); ++i) {
    Event& e = all[i];
    if (e.tid != tid) open.clear(), tid = e.tid;
    while (!open.empty() && all[static_cast<size_t>(open.back())].depth >= e.depth) open.pop_back();
    e.parent = open.empty() ? -1 : open.back();
    e.self_ns = e.dur_ns;
    if (e.instant()) continue;
    if (e.parent >= 0) all[static_cast<size_t>(e.parent)].self_ns -= e.dur_ns;
    else impl_->total_ns += e.dur_ns;
    open.push_back(static_cast<int>(i));
  }
}

const std::vector<Event>& Profile::events() {
  stop();
  return impl_->events;
}

const std::vector<std::string>& Profile::thread_names() {
  stop();
  return impl_->thread_names;
}

int64_t Profile::total_ns() {
  stop();
  return impl_->total_ns;
}

// --- summary -------------------------------------------------------------------------------------

std::vector<Row> Profile::summary(GroupBy group_by, SortBy sort_by) {
  stop();
  std::map<std::tuple<int, std::string, std::string>, Row> groups;
  for (const Event& e : impl_->events) {
    if (e.instant()) continue;
    std::tuple<int, std::string, std::string> key{static_cast<int>(e.category), "", ""};
    if (group_by != GroupBy::Category) std::get<1>(key) = e.name;
    if (group_by == GroupBy::NameAndShapes) std::get<2>(key) = e.shapes;
    Row& r = groups[key];
    if (r.calls == 0) {
      r.category = e.category;
      r.name = group_by == GroupBy::Category ? std::string(category_name(e.category)) : e.name;
      r.shapes = std::get<2>(key);
    }
    ++r.calls;
    r.self_ns += e.self_ns;
    r.total_ns += e.dur_ns;
    r.bytes += e.bytes;
    r.flops += e.flops;
  }
  std::vector<Row> rows;
  rows.reserve(groups.size());
  for (auto& [k, r] : groups) rows.push_back(std::move(r));
  auto metric = [&](const Row& r) -> double {
    switch (sort_by) {
      case SortBy::SelfTime: return static_cast<double>(r.self_ns);
      case SortBy::TotalTime: return static_cast<double>(r.total_ns);
      case SortBy::Calls: return static_cast<double>(r.calls);
      case SortBy::AvgTime: return r.avg_ns();
      case SortBy::Bytes: return static_cast<double>(r.bytes);
      case SortBy::Name: return 0;
    }
    return 0;
  };
  std::stable_sort(rows.begin(), rows.end(), [&](const Row& a, const Row& b) {
    const double ma = metric(a), mb = metric(b);
    if (ma != mb) return ma > mb;
    return std::tie(a.name, a.shapes) < std::tie(b.name, b.shapes);
  });
  return rows;
}

namespace {

std::string fmt_time(double ns) {
  char buf[32];
  if (ns >= 1e9) std::snprintf(buf, sizeof(buf), "%.3fs", ns / 1e9);
  else if (ns >= 1e6) std::snprintf(buf, sizeof(buf), "%.3fms", ns / 1e6);
  else std::snprintf(buf, sizeof(buf), "%.3fus", ns / 1e3);
  return buf;
}

std::string fmt_bytes(double b) {
  char buf[32];
  if (b <= 0) return "";
  if (b >= 1e9) std::snprintf(buf, sizeof(buf), "%.2f GB", b / 1e9);
  else if (b >= 1e6) std::snprintf(buf, sizeof(buf), "%.2f MB", b / 1e6);
  else if (b >= 1e3) std::snprintf(buf, sizeof(buf), "%.2f KB", b / 1e3);
  else std::snprintf(buf, sizeof(buf), "%.0f B", b);
  return buf;
}

std::string fmt_rate(double v) {
  if (v <= 0 || !std::isfinite(v)) return "";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f", v);
  return buf;
}

}  // namespace

std::string Profile::table(SortBy sort_by, GroupBy group_by, size_t row_limit) {
  std::vector<Row> rows = summary(group_by, sort_by);
  const double total = static_cast<double>(impl_->total_ns);
  std::vector<std::string> head{"Name", "Kind", "Calls", "Self", "Self %", "Total", "Avg", "Bytes", "GB/s", "GFLOP/s"};
  if (group_by == GroupBy::NameAndShapes) head.insert(head.begin() + 1, "Input shapes");
  std::vector<std::vector<std::string>> cells;
  const size_t shown = row_limit == 0 ? rows.size() : std::min(rows.size(), row_limit);
  for (size_t i = 0; i < shown; ++i) {
    const Row& r = rows[i];
    std::string name = r.name.size() > 60 ? r.name.substr(0, 57) + "..." : r.name;
    char pct[16];
    std::snprintf(pct, sizeof(pct), "%.2f%%", total > 0 ? 100.0 * static_cast<double>(r.self_ns) / total : 0.0);
    std::vector<std::string> c{name,
                               std::string(category_name(r.category)),
                               std::to_string(r.calls),
                               fmt_time(static_cast<double>(r.self_ns)),
                               pct,
                               fmt_time(static_cast<double>(r.total_ns)),
                               fmt_time(r.avg_ns()),
                               fmt_bytes(static_cast<double>(r.bytes)),
                               r.bytes ? fmt_rate(r.gb_per_s()) : "",
                               r.flops > 0 ? fmt_rate(r.gflop_per_s()) : ""};
    if (group_by == GroupBy::NameAndShapes)
      c.insert(c.begin() + 1, r.shapes.size() > 50 ? r.shapes.substr(0, 47) + "..." : r.shapes);
    cells.push_back(std::move(c));
  }
  std::vector<size_t> width(head.size());
  for (size_t j = 0; j < head.size(); ++j) width[j] = head[j].size();
  for (const auto& c : cells)
    for (size_t j = 0; j < c.size(); ++j) width[j] = std::max(width[j], c[j].size());
  const size_t text_cols = group_by == GroupBy::NameAndShapes ? 3 : 2;  // left-aligned
  auto line = [&](const std::vector<std::string>& c) {
    std::string s;
    for (size_t j = 0; j < c.size(); ++j) {
      const std::string pad(width[j] - c[j].size(), ' ');
      s += j < text_cols ? c[j] + pad : pad + c[j];
      s += j + 1 < c.size() ? "  " : "\n";
    }
    return s;
  };
  std::string rule;
  for (size_t j = 0; j < width.size(); ++j) rule += std::string(width[j], '-') + (j + 1 < width.size() ? "  " : "\n");
  std::string out = rule + line(head) + rule;
  for (const auto& c : cells) out += line(c);
  out += rule;
  int64_t n_events = 0, allocs = 0, frees = 0, alloc_bytes = 0, free_bytes = 0, hits = 0;
  for (const Event& e : impl_->events) {
    if (!e.instant()) ++n_events;
    if (e.category == Category::Alloc) ++allocs, alloc_bytes += e.bytes, hits += e.detail == "cache hit";
    if (e.category == Category::Free) ++frees, free_bytes += e.bytes;
  }
  if (shown < rows.size()) out += std::to_string(rows.size() - shown) + " more row(s) not shown (row_limit)\n";
  out += "Self time total: " + fmt_time(total) + " (" + std::to_string(n_events) + " events on " +
         std::to_string(impl_->thread_names.size() - 1) + " thread(s); the wall time of top-level events, summed over threads)\n";
  if (allocs || frees)
    out += "Allocator: " + std::to_string(allocs) + " allocation(s) of " + fmt_bytes(static_cast<double>(alloc_bytes)) +
           " (" + std::to_string(hits) + " from the cache), " + std::to_string(frees) + " free(s) of " +
           fmt_bytes(static_cast<double>(free_bytes)) + "\n";
  return out;
}

// --- Chrome trace ----------------------------------------------------------------------------------

namespace {

// JSON string contents: escapes quotes, backslashes and control characters; bytes that are not
// valid UTF-8 become U+FFFD, so the file always parses.
void json_str(std::string& out, std::string_view s) {
  out += '"';
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
      ++i;
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
      ++i;
    } else if (c < 0x80) {
      out += static_cast<char>(c);
      ++i;
    } else {
      const size_t len = c >= 0xf0 && c < 0xf5 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
      bool ok = len > 0 && i + len <= s.size();
      for (size_t k = 1; ok && k < len; ++k) ok = (static_cast<unsigned char>(s[i + k]) & 0xc0) == 0x80;
      if (ok && len == 3) {
        const auto c1 = static_cast<unsigned char>(s[i + 1]);
        ok = !(c == 0xe0 && c1 < 0xa0) && !(c == 0xed && c1 >= 0xa0);  // overlong, surrogates
      }
      if (ok && len == 4) {
        const auto c1 = static_cast<unsigned char>(s[i + 1]);
        ok = !(c == 0xf0 && c1 < 0x90) && !(c == 0xf4 && c1 >= 0x90);
      }
      if (ok) {
        out.append(s.data() + i, len);
        i += len;
      } else {
        out += "\\ufffd";
        ++i;
      }
    }
  }
  out += '"';
}

// Microseconds with nanosecond digits, from integer nanoseconds (exact; never NaN or inf).
void json_us(std::string& out, int64_t ns) {
  if (ns < 0) ns = 0;
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%" PRId64 ".%03" PRId64, ns / 1000, ns % 1000);
  out += buf;
}

void json_num(std::string& out, double v) {
  if (!std::isfinite(v)) v = 0;
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%.6g", v);
  out += buf;
}

void json_key(std::string& out, bool& first, std::string_view k) {
  if (!first) out += ',';
  first = false;
  json_str(out, k);
  out += ':';
}

}  // namespace

std::string Profile::to_chrome_trace() {
  stop();
  const std::vector<Event>& ev = impl_->events;
  const std::string pid = std::to_string(static_cast<long>(::getpid()));
  std::string out;
  out.reserve(256 * ev.size() + 1024);
  out += "{\"traceEvents\":[\n";
  bool first_event = true;
  auto begin_event = [&] {
    if (!first_event) out += ",\n";
    first_event = false;
  };
  begin_event();
  out += "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":" + pid + ",\"tid\":0,\"args\":{\"name\":\"kiln\"}}";
  for (size_t t = 1; t < impl_->thread_names.size(); ++t) {
    begin_event();
    out += "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":" + pid + ",\"tid\":" + std::to_string(t) + ",\"args\":{\"name\":";
    json_str(out, impl_->thread_names[t]);
    out += "}}";
    begin_event();
    out += "{\"name\":\"thread_sort_index\",\"ph\":\"M\",\"pid\":" + pid + ",\"tid\":" + std::to_string(t) +
           ",\"args\":{\"sort_index\":" + std::to_string(t) + "}}";
  }
  // Flow ends bind inside their slices: the start just after the node began (before its kernel
  // began), the end just after the kernel began.
  std::map<int64_t, const Event*> flow_target;
  for (const Event& e : ev)
    if (e.flow_in) flow_target[e.flow_in] = &e;
  for (const Event& e : ev) {
    begin_event();
    out += "{\"name\":";
    json_str(out, e.name);
    out += ",\"cat\":";
    json_str(out, category_name(e.category));
    out += e.instant() ? ",\"ph\":\"i\",\"s\":\"t\"" : ",\"ph\":\"X\"";
    out += ",\"pid\":" + pid + ",\"tid\":" + std::to_string(e.tid) + ",\"ts\":";
    json_us(out, e.start_ns);
    if (!e.instant()) {
      out += ",\"dur\":";
      json_us(out, e.dur_ns);
    }
    out += ",\"args\":{";
    bool first = true;
    if (!e.shapes.empty()) json_key(out, first, "shapes"), json_str(out, e.shapes);
    if (!e.dtype.empty()) json_key(out, first, "dtype"), json_str(out, e.dtype);
    if (!e.device.empty()) json_key(out, first, "device"), json_str(out, e.device);
    if (e.bytes) {
      json_key(out, first, "bytes");
      out += std::to_string(e.bytes);
      if (!e.instant() && e.dur_ns > 0) json_key(out, first, "GB/s"), json_num(out, e.gb_per_s());
    }
    if (e.flops > 0) {
      json_key(out, first, "flops");
      json_num(out, e.flops);
      if (e.dur_ns > 0) json_key(out, first, "GFLOP/s"), json_num(out, e.gflop_per_s());
    }
    if (!e.detail.empty()) json_key(out, first, "detail"), json_str(out, e.detail);
    for (const auto& [k, v] : e.args) json_key(out, first, k), json_str(out, v);
    if (!e.instant()) json_key(out, first, "self_us"), json_us(out, e.self_ns);
    out += "}}";
    if (e.category == Category::Alloc || e.category == Category::Free)
      for (const auto& [k, v] : e.args) {
        if (k != "net_bytes") continue;
        begin_event();
        out += "{\"name\":\"cpu memory\",\"ph\":\"C\",\"pid\":" + pid + ",\"ts\":";
        json_us(out, e.start_ns);
        out += ",\"args\":{\"bytes\":" + std::to_string(std::stoll(v)) + "}}";
      }
    if (e.flow_out) {
      auto it = flow_target.find(e.flow_out);
      if (it != flow_target.end()) {
        const Event& k = *it->second;
        int64_t s_ts = e.start_ns + 1, f_ts = k.start_ns + 1;
        if (k.tid == e.tid && k.start_ns <= e.start_ns + 1) s_ts = e.start_ns;
        if (k.dur_ns < 2) f_ts = k.start_ns;
        const std::string common = ",\"cat\":\"flow\",\"name\":\"node to kernel\",\"id\":" + std::to_string(e.flow_out);
        begin_event();
        out += "{\"ph\":\"s\"" + common + ",\"pid\":" + pid + ",\"tid\":" + std::to_string(e.tid) + ",\"ts\":";
        json_us(out, s_ts);
        out += "}";
        begin_event();
        out += "{\"ph\":\"f\",\"bp\":\"e\"" + common + ",\"pid\":" + pid + ",\"tid\":" + std::to_string(k.tid) + ",\"ts\":";
        json_us(out, f_ts);
        out += "}";
      }
    }
  }
  out += "\n],\"displayTimeUnit\":\"ms\",\"otherData\":{\"producer\":\"kiln profiler\",\"self_time_total_us\":";
  json_us(out, impl_->total_ns);
  out += "}}\n";
  return out;
}

void Profile::save_chrome_trace(const std::string& path) {
  const std::string text = to_chrome_trace();
  std::ofstream f(path, std::ios::binary);
  KILN_CHECK(f.good(), "[profiler] cannot open ", path, " to write the trace");
  f << text;
  f.close();
  KILN_CHECK(f.good(), "[profiler] writing the trace to ", path, " failed");
}

}  // namespace kiln::profiler
