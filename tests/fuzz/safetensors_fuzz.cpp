// Fuzz entry point for the safetensors loader. Any input must either load or raise kiln::Error
// (never crash, hang or read out of bounds), and whatever loads must survive save -> load with
// the same tensors and metadata. Built as a libFuzzer target with clang (KILN_BUILD_FUZZERS) and,
// with any compiler, into the smoke driver (fuzz_driver.cpp) that CTest runs.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

#include "core/error.h"
#include "nn/safetensors.h"

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "safetensors fuzz invariant violated: %s\n", what);
  std::abort();
}

bool same_bytes(const kiln::Tensor& a, const kiln::Tensor& b) {
  if (a.dtype() != b.dtype() || a.sizes() != b.sizes() || !a.is_contiguous() || !b.is_contiguous()) return false;
  return a.nbytes() == 0 || std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()) == 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::map<std::string, kiln::Tensor> tensors;
  std::map<std::string, std::string> metadata;
  try {
    tensors = kiln::load_from_memory(data, size);
    metadata = kiln::load_metadata_from_memory(data, size);
  } catch (const kiln::Error&) {
    return 0;  // rejected with a clear error: the expected outcome for most inputs
  }
  // Accepted: a save/load round trip must reproduce it exactly (errors here are bugs, not rejections).
  std::vector<uint8_t> again = kiln::save_to_memory(tensors, metadata);
  std::map<std::string, kiln::Tensor> reloaded = kiln::load_from_memory(again.data(), again.size());
  if (kiln::load_metadata_from_memory(again.data(), again.size()) != metadata) fail("metadata changed in a round trip");
  if (reloaded.size() != tensors.size()) fail("tensor count changed in a round trip");
  for (const auto& [name, t] : tensors) {
    auto it = reloaded.find(name);
    if (it == reloaded.end() || !same_bytes(it->second, t)) fail("a tensor changed in a round trip");
  }
  return 0;
}
