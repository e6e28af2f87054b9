// A libFuzzer-free driver for LLVMFuzzerTestOneInput (the CTest test safetensors_fuzz_smoke):
// runs the entry point over seed files (generated here, plus files or directories given on the
// command line) and over deterministic mutations of them: bit flips, byte edits, truncations,
// header-length edits, number and structure edits inside the JSON header (with the length field
// kept consistent, so the mutation reaches the validator rather than the framing check),
// insertions, deletions and splices. Under ASan (KILN_SANITIZE) any out-of-bounds read aborts.
//
//   safetensors_fuzz_driver [--iterations N] [--seed S] [--write-seeds DIR] [FILE|DIR ...]
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/ops.h"
#include "nn/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

using Bytes = std::vector<uint8_t>;

std::vector<Bytes> generated_seeds() {
  using namespace kiln;
  std::vector<Bytes> seeds;
  seeds.push_back(save_to_memory({{"weight", arange(6, kFloat32).view({2, 3})}, {"bias", ones({3}, kFloat64)}},
                                 {{"format", "pt"}}));
  std::map<std::string, Tensor> all;
  for (DType dt : {kBool, kUInt8, kInt8, kInt16, kInt32, kInt64, kFloat16, kBFloat16, kFloat32, kFloat64})
    all[std::string(dtype_name(dt))] = (arange(4) % 2).to(dt);
  seeds.push_back(save_to_memory(all));
  seeds.push_back(save_to_memory({{"scalar", full({}, 2.5)}, {"empty", zeros({0, 3})}, {"i", tensor({7, 8})}}));
  seeds.push_back(save_to_memory({}, {{"only", "metadata"}}));
  seeds.push_back(save_to_memory({}));
  return seeds;
}

void read_inputs(const std::filesystem::path& p, std::vector<Bytes>& out) {
  if (std::filesystem::is_directory(p)) {
    for (const auto& e : std::filesystem::directory_iterator(p))
      if (e.is_regular_file()) read_inputs(e.path(), out);
    return;
  }
  std::ifstream f(p, std::ios::binary);
  out.emplace_back(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

class Mutator {
 public:
  explicit Mutator(uint64_t seed) : rng_(seed) {}

  Bytes mutate(const std::vector<Bytes>& seeds) {
    Bytes b = seeds[below(seeds.size())];
    int rounds = 1 + static_cast<int>(below(3));
    for (int r = 0; r < rounds; ++r) mutate_once(b, seeds);
    return b;
  }

 private:
  uint64_t below(uint64_t n) { return n ? rng_() % n : 0; }

  // The header's extent as the length field claims it, clamped to the input.
  static size_t header_len(const Bytes& b) {
    if (b.size() < 8) return 0;
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | b[i];
    return static_cast<size_t>(std::min<uint64_t>(n, b.size() - 8));
  }
  static void set_len(Bytes& b, uint64_t n) {
    if (b.size() < 8) return;
    for (int i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(n >> (8 * i));
  }
  // Replaces header bytes [at, at + len) with `text` and fixes the length field.
  static void edit_header(Bytes& b, size_t at, size_t len, const std::string& text) {
    size_t n = header_len(b);
    b.erase(b.begin() + 8 + at, b.begin() + 8 + at + len);
    b.insert(b.begin() + 8 + at, text.begin(), text.end());
    set_len(b, n - len + text.size());
  }

  void mutate_once(Bytes& b, const std::vector<Bytes>& seeds) {
    static const uint8_t kBytes[] = {0, 1, 0x7f, 0x80, 0xff, '"', '[', ']', '{', '}', ',', ':', '-', '0', '9', ' ', '\\'};
    static const char* kNumbers[] = {"0", "1", "-1", "4", "7", "8", "9", "4294967296", "9223372036854775807",
                                     "9223372036854775808", "18446744073709551615", "18446744073709551616",
                                     "1e3", "2.0", "-0", "1152921504606846976"};
    static const char* kTokens[] = {"\"F32\"", "\"U32\"", "\"BOOL\"", "\"F8_E4M3\"", "[]", "{}", "null", "true",
                                    "[0,0]", "[1,2,3]", "\"__metadata__\"", "\"dtype\"", "\"shape\"",
                                    "\"data_offsets\"", "[[[[[[", "\"\\u0000\"", "\"\xc3\""};
    size_t n = header_len(b);
    switch (below(10)) {
      case 0:  // bit flips anywhere
        for (uint64_t k = 1 + below(4); k > 0 && !b.empty(); --k) b[below(b.size())] ^= static_cast<uint8_t>(1u << below(8));
        break;
      case 1:  // an interesting byte anywhere
        if (!b.empty()) b[below(b.size())] = kBytes[below(sizeof kBytes)];
        break;
      case 2:  // truncation
        b.resize(below(b.size() + 1));
        break;
      case 3: {  // header length edits
        const uint64_t sz = b.size();
        const uint64_t choices[] = {0, 1, 7, n ? n - 1 : 0, n + 1, sz >= 8 ? sz - 8 : 0, sz - 7, sz, 1ull << 32,
                                    1ull << 63, ~0ull, 100'000'001, rng_()};
        set_len(b, choices[below(std::size(choices))]);
        break;
      }
      case 4: {  // a number in the header replaced
        if (n == 0) break;
        size_t at = below(n);
        while (at < n && !(b[8 + at] >= '0' && b[8 + at] <= '9')) ++at;
        if (at == n) break;
        size_t end = at;
        while (end < n && b[8 + end] >= '0' && b[8 + end] <= '9') ++end;
        edit_header(b, at, end - at, kNumbers[below(std::size(kNumbers))]);
        break;
      }
      case 5: {  // a token inserted or substituted in the header
        if (n == 0) break;
        size_t at = below(n), len = below(std::min<size_t>(8, n - at) + 1);
        edit_header(b, at, len, kTokens[below(std::size(kTokens))]);
        break;
      }
      case 6: {  // random bytes inserted
        size_t at = below(b.size() + 1);
        Bytes ins(1 + below(8));
        for (auto& c : ins) c = static_cast<uint8_t>(rng_());
        b.insert(b.begin() + at, ins.begin(), ins.end());
        break;
      }
      case 7: {  // a range deleted
        if (b.empty()) break;
        size_t at = below(b.size()), len = 1 + below(std::min<size_t>(16, b.size() - at));
        b.erase(b.begin() + at, b.begin() + at + len);
        break;
      }
      case 8: {  // splice: head of this input, tail of another
        const Bytes& o = seeds[below(seeds.size())];
        size_t cut = below(b.size() + 1), from = below(o.size() + 1);
        b.resize(cut);
        b.insert(b.end(), o.begin() + from, o.end());
        break;
      }
      default: {  // data bytes changed (BOOL values, NaNs): the buffer after the header
        if (b.size() > 8 + n) b[8 + n + below(b.size() - 8 - n)] = static_cast<uint8_t>(rng_());
        break;
      }
    }
  }

  std::mt19937_64 rng_;
};

}  // namespace

int main(int argc, char** argv) {
  uint64_t iterations = 4000, seed = 20240611;
  std::string write_dir;
  std::vector<Bytes> seeds = generated_seeds();
  const size_t generated = seeds.size();
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--iterations" && i + 1 < argc)
      iterations = std::stoull(argv[++i]);
    else if (a == "--seed" && i + 1 < argc)
      seed = std::stoull(argv[++i]);
    else if (a == "--write-seeds" && i + 1 < argc)
      write_dir = argv[++i];
    else
      read_inputs(a, seeds);
  }
  if (!write_dir.empty()) {
    std::filesystem::create_directories(write_dir);
    for (size_t i = 0; i < generated; ++i) {
      std::ofstream f(std::filesystem::path(write_dir) / ("seed_" + std::to_string(i) + ".safetensors"), std::ios::binary);
      f.write(reinterpret_cast<const char*>(seeds[i].data()), static_cast<std::streamsize>(seeds[i].size()));
    }
  }
  // The generated seeds are valid files; if they don't load, the mutations test nothing.
  for (size_t i = 0; i < generated; ++i) {
    try {
      kiln::load_from_memory(seeds[i].data(), seeds[i].size());
    } catch (const kiln::Error& e) {
      std::fprintf(stderr, "seed %zu does not load: %s\n", i, e.what());
      return 1;
    }
  }
  for (const Bytes& s : seeds) LLVMFuzzerTestOneInput(s.data(), s.size());

  Mutator m(seed);
  uint64_t accepted = 0;
  for (uint64_t it = 0; it < iterations; ++it) {
    Bytes in = m.mutate(seeds);
    LLVMFuzzerTestOneInput(in.data(), in.size());
    try {
      kiln::load_from_memory(in.data(), in.size());
      ++accepted;
    } catch (const kiln::Error&) {
    }
  }
  std::printf("safetensors fuzz smoke: %zu seeds, %llu mutated inputs, %llu accepted, the rest rejected with kiln::Error\n",
              seeds.size(), static_cast<unsigned long long>(iterations), static_cast<unsigned long long>(accepted));
  return 0;
}
