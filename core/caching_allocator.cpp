#include "core/caching_allocator.h"

#include <algorithm>
#include <cstdio>

#include "core/error.h"

namespace kiln::detail {

namespace {
constexpr size_t kSmallLimit = size_t{1} << 20;  // below: 512-byte granules
constexpr size_t kSmallGranule = 512;
constexpr size_t kLargeGranule = size_t{2} << 20;
std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}
}  // namespace

std::string format_bytes(size_t bytes) {
  char buf[96];
  const double b = static_cast<double>(bytes);
  if (bytes >= (size_t{1} << 30)) std::snprintf(buf, sizeof(buf), "%.2f GiB (%zu bytes)", b / (1 << 30), bytes);
  else if (bytes >= (size_t{1} << 20)) std::snprintf(buf, sizeof(buf), "%.2f MiB (%zu bytes)", b / (1 << 20), bytes);
  else std::snprintf(buf, sizeof(buf), "%zu bytes", bytes);
  return buf;
}

size_t CachingAllocator::round_size(size_t nbytes) {
  if (nbytes == 0) return kSmallGranule;
  const size_t g = nbytes < kSmallLimit ? kSmallGranule : kLargeGranule;
  KILN_CHECK(nbytes <= SIZE_MAX - g, "[alloc] a request of ", nbytes, " bytes cannot be satisfied");
  return (nbytes + g - 1) / g * g;
}

CachingAllocator::CachingAllocator(std::string what, BlockBackend backend)
    : what_(std::move(what)), backend_(std::move(backend)) {
  KILN_CHECK(backend_.alloc && backend_.free, "[alloc] a caching allocator needs a backend's alloc and free");
}

CachingAllocator::~CachingAllocator() {
  std::lock_guard<std::mutex> lock(mu_);
  for (Pending& p : pending_)
    for (void* e : p.events)
      if (backend_.destroy_event) backend_.destroy_event(e);
  for (Pending& p : pending_) backend_.free(p.ptr);
  pending_.clear();
  retained_.clear();
  release_cached_locked();
}

void CachingAllocator::collect_pending_locked() {
  if (pending_.empty()) return;
  auto done = [&](Pending& p) {
    for (void* e : p.events)
      if (!backend_.event_done(e)) return false;
    return true;
  };
  for (size_t i = 0; i < pending_.size();) {
    if (!done(pending_[i])) {
      ++i;
      continue;
    }
    Pending p = std::move(pending_[i]);
    pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
    for (void* e : p.events) backend_.destroy_event(e);
    free_.emplace(std::make_pair(p.block.stream, p.block.size), p.ptr);
    stats_.cached_bytes += p.block.size;
    --stats_.pending_blocks;
  }
}

void CachingAllocator::release_cached_locked() {
  for (auto it = free_.begin(); it != free_.end();) {
    const auto& [key, ptr] = *it;
    if (std::find(retained_.begin(), retained_.end(), key.first) != retained_.end()) {
      ++it;
      continue;
    }
    backend_.free(ptr);
    stats_.reserved_bytes -= key.second;
    stats_.cached_bytes -= key.second;
    ++stats_.backend_frees;
    it = free_.erase(it);
  }
}

void CachingAllocator::retain_stream(uint64_t stream, bool retain) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = std::find(retained_.begin(), retained_.end(), stream);
  if (retain && it == retained_.end()) retained_.push_back(stream);
  if (!retain && it != retained_.end()) retained_.erase(it);
}

uint64_t CachingAllocator::backend_alloc_locked(size_t size, size_t requested) {
  uint64_t p = backend_.alloc(size);
  if (!p) {
    // Out of memory: give back what we cache (and what other streams have finished with), retry.
    collect_pending_locked();
    if (!free_.empty()) {
      ++stats_.oom_retries;
      release_cached_locked();
      p = backend_.alloc(size);
    }
  }
  if (!p) {
    ++stats_.ooms;
    KILN_FAIL("[alloc] out of memory on ", what_, ": tried to allocate ", format_bytes(requested), " (a block of ",
              format_bytes(size), "); live tensors hold ", format_bytes(stats_.allocated_bytes), ", ",
              format_bytes(stats_.reserved_bytes - stats_.allocated_bytes), " reserved but unused",
              backend_.describe ? "; " + backend_.describe() : std::string());
  }
  stats_.reserved_bytes += size;
  stats_.peak_reserved_bytes = std::max(stats_.peak_reserved_bytes, stats_.reserved_bytes);
  return p;
}

uint64_t CachingAllocator::allocate(size_t nbytes, uint64_t stream) {
  const size_t size = round_size(nbytes);
  std::lock_guard<std::mutex> lock(mu_);
  collect_pending_locked();
  uint64_t ptr = 0;
  size_t got = size;
  auto it = free_.lower_bound({stream, size});
  // Best fit on this stream, wasting at most half of the block.
  if (it != free_.end() && it->first.first == stream && it->first.second / 2 <= size) {
    ptr = it->second;
    got = it->first.second;
    free_.erase(it);
    stats_.cached_bytes -= got;
    ++stats_.cache_hits;
  } else {
    ptr = backend_alloc_locked(size, nbytes);
    ++stats_.cache_misses;
  }
  live_[ptr] = Block{got, nbytes, stream, {}};
  stats_.allocated_bytes += got;
  stats_.requested_bytes += nbytes;
  stats_.peak_allocated_bytes = std::max(stats_.peak_allocated_bytes, stats_.allocated_bytes);
  ++stats_.allocations;
  return ptr;
}

void CachingAllocator::free(uint64_t ptr) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(ptr);
  KILN_CHECK(it != live_.end(), "[alloc] free of ", what_, " address ", hex(ptr),
             " that this allocator did not hand out (or freed twice)");
  Block b = std::move(it->second);
  live_.erase(it);
  stats_.allocated_bytes -= b.size;
  stats_.requested_bytes -= b.requested;
  ++stats_.frees;
  if (b.other_streams.empty()) {
    free_.emplace(std::make_pair(b.stream, b.size), ptr);
    stats_.cached_bytes += b.size;
    return;
  }
  Pending p{ptr, std::move(b), {}};
  for (uint64_t s : p.block.other_streams) p.events.push_back(backend_.record_event(s));
  p.block.other_streams.clear();
  pending_.push_back(std::move(p));
  ++stats_.pending_blocks;
}

void CachingAllocator::record_stream(uint64_t ptr, uint64_t stream) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.upper_bound(ptr);
  KILN_CHECK(it != live_.begin(), "[record_stream] address ", hex(ptr), " is not in a live block of ",
             what_);
  --it;
  KILN_CHECK(ptr < it->first + it->second.size, "[record_stream] address ", hex(ptr),
             " is not in a live block of ", what_);
  KILN_CHECK(backend_.record_event && backend_.event_done && backend_.destroy_event,
             "[record_stream] the backend of ", what_, " has no events");
  Block& b = it->second;
  if (stream == b.stream) return;
  if (std::find(b.other_streams.begin(), b.other_streams.end(), stream) == b.other_streams.end())
    b.other_streams.push_back(stream);
}

std::pair<uint64_t, size_t> CachingAllocator::find(uint64_t address) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.upper_bound(address);
  if (it == live_.begin()) return {0, 0};
  --it;
  if (address >= it->first + it->second.size) return {0, 0};
  return {it->first, it->second.size};
}

void CachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  collect_pending_locked();
  release_cached_locked();
}

CachingAllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void CachingAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak_allocated_bytes = stats_.allocated_bytes;
  stats_.peak_reserved_bytes = stats_.reserved_bytes;
}

}  // namespace kiln::detail
