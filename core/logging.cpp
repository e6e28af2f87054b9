#include "core/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <sstream>

namespace kiln::logging {
namespace {
constexpr size_t kN = static_cast<size_t>(Category::kCount);
constexpr std::array<std::string_view, kN> kNames = {"graph", "guards", "recompiles", "breaks", "fusion",
                                                      "code",  "perf",   "ops",        "alloc"};
std::array<std::atomic<bool>, kN>& flags() {
  static std::array<std::atomic<bool>, kN> f{};
  return f;
}
std::once_flag g_once;
void ensure_loaded() { std::call_once(g_once, [] { reload_from_env(); }); }
}  // namespace

std::string_view category_name(Category c) { return kNames[static_cast<size_t>(c)]; }

std::string reload_from_env() {
  for (auto& f : flags()) f.store(false);
  const char* env = std::getenv("KILN_LOG");
  std::string spec = env ? env : "";
  std::stringstream ss(spec);
  std::string item, on;
  while (std::getline(ss, item, ',')) {
    for (size_t i = 0; i < kN; ++i)
      if (item == "all" || item == kNames[i]) flags()[i].store(true);
  }
  for (size_t i = 0; i < kN; ++i)
    if (flags()[i].load()) on += (on.empty() ? "" : ",") + std::string(kNames[i]);
  return on;
}

bool enabled(Category c) {
  ensure_loaded();
  return flags()[static_cast<size_t>(c)].load(std::memory_order_relaxed);
}

void set_enabled(Category c, bool on) {
  ensure_loaded();
  flags()[static_cast<size_t>(c)].store(on);
}

spdlog::logger& logger() {
  static std::shared_ptr<spdlog::logger> l = [] {
    auto lg = spdlog::stderr_color_mt("kiln");
    lg->set_pattern("[kiln %T.%e] %v");
    return lg;
  }();
  return *l;
}

}  // namespace kiln::logging
