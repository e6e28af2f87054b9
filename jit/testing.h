#pragma once
// Compile-regression checks for GoogleTest suites: pin that a model compiles a known number of
// times, never recompiles and never breaks its graph, with the JIT's own reasons in the failure.
//
//   #include <kiln/kiln.h>
//   #include "jit/testing.h"      // test code only: it includes <gtest/gtest.h>
//
//   auto step = kiln::jit::compile(train_step);
//   EXPECT_MAX_COMPILES(step(x, y), 1);                // an expression ...
//   EXPECT_MAX_COMPILES([&] { for (int i = 0; i < 10; ++i) step(x, y); }, 1);  // ... or a lambda
//   EXPECT_NO_RECOMPILES(step(x_other_batch, y));
//   EXPECT_NO_GRAPH_BREAKS(step(x, y));
//   ASSERT_MAX_COMPILES / ASSERT_NO_RECOMPILES / ASSERT_NO_GRAPH_BREAKS stop the test instead.
//
// A failure reads, e.g.:
//   step(x32, y32) compiled 1 time(s) (at most 0 expected) since the check started:
//   1 compile (1 recompile), 0 graph breaks, 1 capture, 0 fallbacks
//     recompile step: input[0].sizes[0]: 64 -> 32 (now dynamic)
//
// The counts are deltas of kiln::jit::stats(), which is process-wide: compiled functions running
// on other threads meanwhile are counted too, and jit::reset() belongs before a check, not inside.
// Not part of <kiln/kiln.h>: GoogleTest is a test dependency, not a library one. docs/perf-testing.md.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "jit/compile.h"

namespace kiln::jit {

// Counts what the JIT did since construction (or the last restart()), from jit::stats() deltas.
// stop() freezes the counts; until then every query reads the live stats.
class CompileCounter {
 public:
  CompileCounter() : before_(stats()) {}

  void restart() {
    before_ = stats();
    after_.reset();
  }
  void stop() { after_ = stats(); }

  int64_t compiles() const { return delta().compiles; }  // cache entries created: first compiles + recompiles
  int64_t recompiles() const { return static_cast<int64_t>(delta().recompiles.size()); }
  int64_t graph_breaks() const { return static_cast<int64_t>(delta().graph_breaks.size()); }
  int64_t captures() const { return delta().captures; }  // calls that ran the function under capture
  int64_t replays() const { return delta().replays; }    // calls served without running it
  int64_t calls() const { return delta().calls; }
  // Segments that ran uncompiled (recompile limit, compile failure) or on the interpreter because
  // the native backend failed.
  int64_t fallbacks() const {
    const Stats d = delta();
    return d.eager_fallbacks + d.codegen_fallbacks;
  }
  std::vector<RecompileEvent> recompile_events() const { return delta().recompiles; }
  std::vector<RecompileEvent> graph_break_events() const { return delta().graph_breaks; }
  std::vector<RecompileEvent> fallback_events() const { return delta().fallbacks; }  // the first 1000 (stats() keeps no more)

  // The counters since the start; vectors hold the events since the start.
  Stats delta() const {
    const Stats now = after_ ? *after_ : stats();
    // jit::reset() since the start: count from zero (the snapshot no longer applies).
    const bool was_reset = now.calls < before_.calls || now.compiles < before_.compiles ||
                           now.recompiles.size() < before_.recompiles.size() ||
                           now.graph_breaks.size() < before_.graph_breaks.size();
    if (was_reset) return now;
    Stats d = now;
    d.calls -= before_.calls;
    d.captures -= before_.captures;
    d.replays -= before_.replays;
    d.compiles -= before_.compiles;
    d.cache_hits -= before_.cache_hits;
    d.cache_misses -= before_.cache_misses;
    d.shared_graph_hits -= before_.shared_graph_hits;
    d.eager_fallbacks -= before_.eager_fallbacks;
    d.fused_kernels -= before_.fused_kernels;
    d.kernels_compiled -= before_.kernels_compiled;
    d.kernel_cache_hits -= before_.kernel_cache_hits;
    d.codegen_fallbacks -= before_.codegen_fallbacks;
    d.async_compiles -= before_.async_compiles;
    d.capture_ms -= before_.capture_ms;
    d.passes_ms -= before_.passes_ms;
    d.compile_ms -= before_.compile_ms;
    d.run_ms -= before_.run_ms;
    d.fusion_ms -= before_.fusion_ms;
    d.codegen_ms -= before_.codegen_ms;
    auto since = [](const std::vector<RecompileEvent>& all, size_t from) {
      return std::vector<RecompileEvent>(all.begin() + static_cast<std::ptrdiff_t>(std::min(from, all.size())), all.end());
    };
    d.recompiles = since(now.recompiles, before_.recompiles.size());
    d.graph_breaks = since(now.graph_breaks, before_.graph_breaks.size());
    d.fallbacks = since(now.fallbacks, before_.fallbacks.size());
    return d;
  }

  // "2 compiles (1 recompile), 0 graph breaks, 3 captures, 0 fallbacks" and one line per distinct
  // event (at most 10 of each kind).
  std::string str() const {
    const Stats d = delta();
    std::ostringstream os;
    auto plural = [&](int64_t n, const char* one, const char* many) { os << n << " " << (n == 1 ? one : many); };
    plural(d.compiles, "compile", "compiles");
    os << " (";
    plural(static_cast<int64_t>(d.recompiles.size()), "recompile", "recompiles");
    os << "), ";
    plural(static_cast<int64_t>(d.graph_breaks.size()), "graph break", "graph breaks");
    os << ", ";
    plural(d.captures, "capture", "captures");
    os << ", ";
    plural(d.eager_fallbacks + d.codegen_fallbacks, "fallback", "fallbacks");
    // identical events once, with their count, in order of first appearance
    auto events = [&](const std::vector<RecompileEvent>& v, const char* what) {
      std::vector<std::pair<const RecompileEvent*, int64_t>> distinct;
      for (const RecompileEvent& e : v) {
        auto it = std::find_if(distinct.begin(), distinct.end(), [&](const auto& d) {
          return d.first->function == e.function && d.first->reason == e.reason;
        });
        if (it == distinct.end()) distinct.emplace_back(&e, 1);
        else ++it->second;
      }
      for (size_t i = 0; i < distinct.size() && i < 10; ++i) {
        os << "\n  " << what << " " << distinct[i].first->function << ": " << distinct[i].first->reason;
        if (distinct[i].second > 1) os << " (x" << distinct[i].second << ")";
      }
      if (distinct.size() > 10) os << "\n  ... and " << distinct.size() - 10 << " other " << what << " reasons";
    };
    events(d.recompiles, "recompile");
    events(d.graph_breaks, "break");
    events(d.fallbacks, "fallback");
    return os.str();
  }

 private:
  Stats before_;
  std::optional<Stats> after_;
};

namespace testing {

// A nullary callable is called; a compiled function is called when its wrapped function is
// nullary (Compiled's operator() cannot be probed without instantiating it).
template <class T>
struct is_nullary : std::is_invocable<T&> {};
template <class F>
struct is_nullary<Compiled<F>> : std::is_invocable<F&> {};

// Runs the checked code: `body` returns the macro argument's value (an expression's result, or a
// lambda, which is then called).
template <class Body>
CompileCounter count(Body&& body) {
  CompileCounter c;
  if constexpr (std::is_void_v<decltype(body())>) {
    body();
  } else {
    decltype(auto) value = body();
    if constexpr (is_nullary<std::remove_cvref_t<decltype(value)>>::value) value();
    else (void)value;
  }
  c.stop();
  return c;
}

inline ::testing::AssertionResult fail(const char* code, const std::string& what, const CompileCounter& c) {
  return ::testing::AssertionFailure() << code << " " << what << " since the check started:\n" << c.str();
}

// Predicate formatters for EXPECT_PRED_FORMAT1 (the counter is the one argument).
struct MaxCompiles {
  const char* code;
  int64_t limit;
  ::testing::AssertionResult operator()(const char*, const CompileCounter& c) const {
    if (c.compiles() <= limit) return ::testing::AssertionSuccess();
    return fail(code, "compiled " + std::to_string(c.compiles()) + " time(s) (at most " + std::to_string(limit) + " expected)", c);
  }
};
struct NoRecompiles {
  const char* code;
  ::testing::AssertionResult operator()(const char*, const CompileCounter& c) const {
    if (c.recompiles() == 0) return ::testing::AssertionSuccess();
    return fail(code, "recompiled " + std::to_string(c.recompiles()) + " time(s) (none expected)", c);
  }
};
struct NoGraphBreaks {
  const char* code;
  ::testing::AssertionResult operator()(const char*, const CompileCounter& c) const {
    if (c.graph_breaks() == 0) return ::testing::AssertionSuccess();
    return fail(code, "hit " + std::to_string(c.graph_breaks()) + " graph break(s) (none expected)", c);
  }
};

}  // namespace testing
}  // namespace kiln::jit

// `code`: an expression (evaluated once) or a nullary lambda (called once). Wrap code holding a
// top-level comma in parentheses or a lambda. The NO_ variants take the code as variadic
// arguments, so commas need no wrapping there.
#define KILN_JIT_COUNT_(...) ::kiln::jit::testing::count([&]() -> decltype(auto) { return (__VA_ARGS__); })

#define EXPECT_MAX_COMPILES(code, n) \
  EXPECT_PRED_FORMAT1((::kiln::jit::testing::MaxCompiles{#code, static_cast<int64_t>(n)}), KILN_JIT_COUNT_(code))
#define ASSERT_MAX_COMPILES(code, n) \
  ASSERT_PRED_FORMAT1((::kiln::jit::testing::MaxCompiles{#code, static_cast<int64_t>(n)}), KILN_JIT_COUNT_(code))
#define EXPECT_NO_RECOMPILES(...) \
  EXPECT_PRED_FORMAT1((::kiln::jit::testing::NoRecompiles{#__VA_ARGS__}), KILN_JIT_COUNT_(__VA_ARGS__))
#define ASSERT_NO_RECOMPILES(...) \
  ASSERT_PRED_FORMAT1((::kiln::jit::testing::NoRecompiles{#__VA_ARGS__}), KILN_JIT_COUNT_(__VA_ARGS__))
#define EXPECT_NO_GRAPH_BREAKS(...) \
  EXPECT_PRED_FORMAT1((::kiln::jit::testing::NoGraphBreaks{#__VA_ARGS__}), KILN_JIT_COUNT_(__VA_ARGS__))
#define ASSERT_NO_GRAPH_BREAKS(...) \
  ASSERT_PRED_FORMAT1((::kiln::jit::testing::NoGraphBreaks{#__VA_ARGS__}), KILN_JIT_COUNT_(__VA_ARGS__))
