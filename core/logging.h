#pragma once
// Category logging: KILN_LOG=graph,guards,recompiles,breaks,fusion,code,perf,ops (or "all").
#include <spdlog/spdlog.h>

#include <string_view>

namespace kiln::logging {

enum class Category : uint8_t { graph, guards, recompiles, breaks, fusion, code, perf, ops, alloc, kCount };

bool enabled(Category c);
// Re-reads KILN_LOG (tests use it after setenv); returns the enabled set as text.
std::string reload_from_env();
void set_enabled(Category c, bool on);
std::string_view category_name(Category c);
spdlog::logger& logger();

}  // namespace kiln::logging

#define KILN_LOG(CAT, ...)                                                          \
  do {                                                                              \
    if (::kiln::logging::enabled(::kiln::logging::Category::CAT))                           \
      ::kiln::logging::logger().info("[" #CAT "] " __VA_ARGS__);                        \
  } while (0)
