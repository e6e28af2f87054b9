#include "core/random.h"

namespace kiln {

void Generator::manual_seed(uint64_t seed) {
  std::lock_guard<std::mutex> g(mu_);
  seed_ = seed;
  offset_ = 0;
}

uint64_t Generator::seed() const {
  std::lock_guard<std::mutex> g(mu_);
  return seed_;
}

uint64_t Generator::offset() const {
  std::lock_guard<std::mutex> g(mu_);
  return offset_;
}

void Generator::set_offset(uint64_t offset) {
  std::lock_guard<std::mutex> g(mu_);
  offset_ = offset;
}

PhiloxKey Generator::reserve(uint64_t counters) {
  std::lock_guard<std::mutex> g(mu_);
  PhiloxKey k{seed_, offset_};
  // At least one counter, rounded up to whole batches, so consecutive calls never overlap.
  uint64_t n = counters == 0 ? 1 : counters;
  offset_ += (n + philox::kLanes - 1) / philox::kLanes * philox::kLanes;
  return k;
}

Generator& default_generator() {
  static Generator* g = new Generator();
  return *g;
}

}  // namespace kiln
