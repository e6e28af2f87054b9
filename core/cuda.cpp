#include "core/cuda.h"

#include <atomic>
#include <mutex>

#include "core/error.h"
#include "core/logging.h"

namespace kiln {
namespace {
std::atomic<int> g_precision{0};  // 0 highest, 1 high, 2 medium
const char* const kPrecisions[] = {"highest", "high", "medium"};

struct FallbackCounts {
  std::mutex mu;
  std::map<std::string, int64_t> counts;
};
FallbackCounts& fallback_counts() {
  static auto* c = new FallbackCounts();
  return *c;
}
}  // namespace

void set_float32_matmul_precision(const std::string& precision) {
  for (int i = 0; i < 3; ++i)
    if (precision == kPrecisions[i]) {
      g_precision.store(i, std::memory_order_relaxed);
      return;
    }
  KILN_FAIL("[set_float32_matmul_precision] expected \"highest\", \"high\" or \"medium\", got \"", precision, "\"");
}

std::string get_float32_matmul_precision() { return kPrecisions[g_precision.load(std::memory_order_relaxed)]; }

namespace cuda {
std::map<std::string, int64_t> host_fallback_counts() {
  FallbackCounts& c = fallback_counts();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.counts;
}
void reset_host_fallback_counts() {
  FallbackCounts& c = fallback_counts();
  std::lock_guard<std::mutex> lock(c.mu);
  c.counts.clear();
}
}  // namespace cuda

namespace detail {
void count_host_fallback(const std::string& op) {
  FallbackCounts& c = fallback_counts();
  bool first = false;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    first = c.counts[op]++ == 0;
  }
  if (first) KILN_LOG(perf, "[{}] has no CUDA kernel for these arguments: it runs on the CPU on host copies", op);
}
bool tf32_matmul_allowed() { return g_precision.load(std::memory_order_relaxed) != 0; }
}  // namespace detail

}  // namespace kiln
