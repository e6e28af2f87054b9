#include "nn/safetensors.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "autograd/grad_mode.h"
#include "core/ops.h"

namespace kiln {

namespace {

using json = nlohmann::json;

// Limits beyond which a header is treated as hostile rather than allocated for.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the reference implementation's limit
constexpr size_t kMaxDims = 64;
// Every dim (and the product of the non-zero ones) stays below this, so element counts, byte
// counts and contiguous strides fit in int64 even for zero-size tensors.
constexpr uint64_t kMaxElements = static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / 8;

struct DTypeName {
  const char* name;
  DType dtype;
};
constexpr DTypeName kDTypes[] = {
    {"BOOL", DType::Bool},     {"U8", DType::UInt8},    {"I8", DType::Int8},        {"I16", DType::Int16},
    {"I32", DType::Int32},     {"I64", DType::Int64},   {"F16", DType::Float16},    {"BF16", DType::BFloat16},
    {"F32", DType::Float32},   {"F64", DType::Float64},
};
// Valid safetensors dtypes kiln has no tensor type for.
constexpr const char* kUnsupportedDTypes[] = {"U16", "U32", "U64", "F8_E4M3", "F8_E5M2", "F8_E8M0",
                                              "F6_E2M3", "F6_E3M2", "F4", "C64"};

const char* safetensors_dtype(DType d) {
  for (const auto& e : kDTypes)
    if (e.dtype == d) return e.name;
  KILN_FAIL("[safetensors] dtype ", d, " has no safetensors name");
}

std::string supported_list() {
  std::string s;
  for (const auto& e : kDTypes) s += std::string(s.empty() ? "" : ", ") + e.name;
  return s;
}

// Tensor bytes are little-endian in the file; swap on a big-endian host.
void to_or_from_little_endian(void* data, size_t nbytes, size_t itemsize) {
  if constexpr (std::endian::native == std::endian::big) {
    auto* p = static_cast<uint8_t*>(data);
    for (size_t i = 0; i + itemsize <= nbytes; i += itemsize) std::reverse(p + i, p + i + itemsize);
  }
}

// Where bytes come from: a caller's buffer or an open file. Offsets are absolute.
class Source {
 public:
  virtual ~Source() = default;
  virtual uint64_t size() const = 0;
  // Reads exactly n bytes at offset (callers have checked the range against size()).
  virtual void read(uint64_t offset, void* dst, uint64_t n) = 0;
  const std::string& where() const { return where_; }

 protected:
  std::string where_;
};

class MemorySource : public Source {
 public:
  MemorySource(const void* data, size_t size) : data_(static_cast<const uint8_t*>(data)), size_(size) {
    KILN_CHECK(data_ != nullptr || size == 0, "[safetensors] load_from_memory got a null pointer with size ", size);
    where_ = "buffer of " + std::to_string(size) + " bytes";
  }
  uint64_t size() const override { return size_; }
  void read(uint64_t offset, void* dst, uint64_t n) override {
    KILN_INTERNAL_ASSERT(offset <= size_ && n <= size_ - offset, "read past the buffer");
    if (n) std::memcpy(dst, data_ + offset, n);
  }

 private:
  const uint8_t* data_;
  size_t size_;
};

class FileSource : public Source {
 public:
  explicit FileSource(const std::string& path) {
    where_ = "file '" + path + "'";
    std::error_code ec;
    KILN_CHECK(!std::filesystem::is_directory(path, ec), "[safetensors] ", where_, " is a directory");
    file_ = std::fopen(path.c_str(), "rb");
    KILN_CHECK(file_ != nullptr, "[safetensors] cannot open ", where_, ": ", std::strerror(errno));
    KILN_CHECK(fseeko(file_, 0, SEEK_END) == 0, "[safetensors] cannot seek in ", where_, ": ", std::strerror(errno));
    off_t end = ftello(file_);
    KILN_CHECK(end >= 0, "[safetensors] cannot tell the size of ", where_, ": ", std::strerror(errno));
    size_ = static_cast<uint64_t>(end);
  }
  ~FileSource() override {
    if (file_) std::fclose(file_);
  }
  uint64_t size() const override { return size_; }
  void read(uint64_t offset, void* dst, uint64_t n) override {
    KILN_INTERNAL_ASSERT(offset <= size_ && n <= size_ - offset, "read past the file");
    if (n == 0) return;
    KILN_CHECK(fseeko(file_, static_cast<off_t>(offset), SEEK_SET) == 0, "[safetensors] cannot seek in ", where_, ": ",
               std::strerror(errno));
    size_t got = std::fread(dst, 1, n, file_);
    KILN_CHECK(got == n, "[safetensors] ", where_, " ended after ", offset + got, " bytes while reading ", n,
               " bytes at offset ", offset, " (was it truncated while loading?)");
  }

 private:
  std::FILE* file_ = nullptr;
  uint64_t size_ = 0;
};

struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin, end;  // relative to the data buffer
};

struct Header {
  std::vector<Entry> entries;  // in buffer order
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;     // absolute offset of the byte buffer
};

std::string describe(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

uint64_t read_unsigned(const std::string& where, const std::string& name, const char* field, const json& v) {
  KILN_CHECK(v.is_number_unsigned(), "[safetensors] ", where, ": tensor '", name, "': ", field,
             " entries must be non-negative integers, got ", describe(v));
  return v.get<uint64_t>();
}

Entry parse_entry(const std::string& where, const std::string& name, const json& info) {
  KILN_CHECK(info.is_object(), "[safetensors] ", where, ": tensor '", name,
             "': entry must be an object with dtype, shape and data_offsets, got ", describe(info));
  for (const auto& [key, value] : info.items())
    KILN_CHECK(key == "dtype" || key == "shape" || key == "data_offsets", "[safetensors] ", where, ": tensor '", name,
               "': unknown field '", key, "'");
  for (const char* key : {"dtype", "shape", "data_offsets"})
    KILN_CHECK(info.contains(key), "[safetensors] ", where, ": tensor '", name, "': missing field '", key, "'");

  Entry e;
  e.name = name;
  const json& dt = info["dtype"];
  KILN_CHECK(dt.is_string(), "[safetensors] ", where, ": tensor '", name, "': dtype must be a string, got ", describe(dt));
  const std::string& dts = dt.get_ref<const std::string&>();
  bool found = false;
  for (const auto& d : kDTypes)
    if (dts == d.name) e.dtype = d.dtype, found = true;
  if (!found) {
    bool known = std::any_of(std::begin(kUnsupportedDTypes), std::end(kUnsupportedDTypes),
                             [&](const char* u) { return dts == u; });
    KILN_FAIL("[safetensors] ", where, ": tensor '", name, "' has ", known ? "dtype '" : "unknown dtype '",
              dts.substr(0, 40), known ? "', which kiln does not support" : "'", " (supported: ", supported_list(), ")");
  }

  const json& shape = info["shape"];
  KILN_CHECK(shape.is_array(), "[safetensors] ", where, ": tensor '", name, "': shape must be an array, got ",
             describe(shape));
  KILN_CHECK(shape.size() <= kMaxDims, "[safetensors] ", where, ": tensor '", name, "': shape has ", shape.size(),
             " dims, more than the ", kMaxDims, " kiln supports");
  uint64_t numel = 1, extent = 1;  // extent: product of the non-zero dims
  for (const json& d : shape) {
    uint64_t v = read_unsigned(where, name, "shape", d);
    KILN_CHECK(v <= kMaxElements && (v == 0 || extent <= kMaxElements / v), "[safetensors] ", where, ": tensor '",
               name, "': shape ", describe(shape), " is too large (its element count overflows)");
    if (v != 0) extent *= v;
    numel *= v;
    e.shape.push_back(static_cast<int64_t>(v));
  }

  const json& offs = info["data_offsets"];
  KILN_CHECK(offs.is_array() && offs.size() == 2, "[safetensors] ", where, ": tensor '", name,
             "': data_offsets must be an array [begin, end], got ", describe(offs));
  e.begin = read_unsigned(where, name, "data_offsets", offs[0]);
  e.end = read_unsigned(where, name, "data_offsets", offs[1]);
  KILN_CHECK(e.begin <= e.end, "[safetensors] ", where, ": tensor '", name, "': data_offsets [", e.begin, ", ", e.end,
             "] have begin > end");
  uint64_t nbytes = numel * itemsize(e.dtype);
  KILN_CHECK(e.end - e.begin == nbytes, "[safetensors] ", where, ": tensor '", name, "': data_offsets [", e.begin, ", ",
             e.end, "] span ", e.end - e.begin, " bytes but shape ", e.shape, " of ", dts, " needs ", nbytes);
  return e;
}

json parse_json(const std::string& where, const std::string& text) {
  // Rejects duplicate keys (nlohmann keeps the last silently) and nesting deeper than the format
  // has (top object > tensor entry > shape), before any deep structure is built.
  std::vector<std::set<std::string>> keys;
  std::vector<std::string> key_at_depth(4);
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) -> bool {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        KILN_CHECK(depth <= 2, "[safetensors] ", where, ": header nests deeper than the format allows",
                   depth >= 1 ? " (under key '" + key_at_depth[1] + "')" : std::string());
        if (event == json::parse_event_t::object_start) keys.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case json::parse_event_t::key: {
        const std::string& k = parsed.get_ref<const std::string&>();
        KILN_INTERNAL_ASSERT(!keys.empty() && depth >= 1 && depth <= 3, "key outside an object");
        key_at_depth[static_cast<size_t>(depth)] = k;
        if (!keys.back().insert(k).second) {
          if (depth == 1) KILN_FAIL("[safetensors] ", where, ": duplicate key '", k, "' in the header");
          KILN_FAIL("[safetensors] ", where, ": duplicate key '", k, "' in the entry of '", key_at_depth[1], "'");
        }
        break;
      }
      default:
        break;
    }
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), callback);
  } catch (const json::exception& e) {
    KILN_FAIL("[safetensors] ", where, ": header is not valid JSON: ", e.what());
  }
}

Header read_header(Source& src) {
  const std::string& where = src.where();
  const uint64_t total = src.size();
  KILN_CHECK(total >= 8, "[safetensors] ", where, ": ", total,
             " bytes is shorter than the 8-byte header length that starts a safetensors file");
  uint8_t len_bytes[8];
  src.read(0, len_bytes, 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len_bytes[i];
  KILN_CHECK(n <= kMaxHeaderBytes, "[safetensors] ", where, ": header length ", n, " exceeds the limit of ",
             kMaxHeaderBytes, " bytes");
  KILN_CHECK(n <= total - 8, "[safetensors] ", where, ": header length ", n, " exceeds the ", total - 8,
             " bytes that follow the length field");
  std::string text(n, '\0');
  src.read(8, text.data(), n);
  KILN_CHECK(n > 0 && text[0] == '{', "[safetensors] ", where, ": header must be a JSON object starting with '{'",
             n == 0 ? " (it is empty)" : "");
  json root = parse_json(where, text);
  KILN_CHECK(root.is_object(), "[safetensors] ", where, ": header must be a JSON object");

  Header h;
  h.data_start = 8 + n;
  const uint64_t data_size = total - h.data_start;
  for (const auto& [key, value] : root.items()) {
    if (key == "__metadata__") {
      KILN_CHECK(value.is_object(), "[safetensors] ", where, ": __metadata__ must be an object of strings, got ",
                 describe(value));
      for (const auto& [mk, mv] : value.items()) {
        KILN_CHECK(mv.is_string(), "[safetensors] ", where, ": __metadata__ value of '", mk, "' must be a string, got ",
                   describe(mv));
        h.metadata.emplace(mk, mv.get<std::string>());
      }
      continue;
    }
    Entry e = parse_entry(where, key, value);
    KILN_CHECK(e.end <= data_size, "[safetensors] ", where, ": tensor '", key, "': data_offsets [", e.begin, ", ", e.end,
               "] extend past the ", data_size, "-byte data buffer");
    h.entries.push_back(std::move(e));
  }

  // The offsets must tile the buffer exactly: sorted, each tensor starts where the previous ends.
  std::sort(h.entries.begin(), h.entries.end(),
            [](const Entry& a, const Entry& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  uint64_t expected = 0;
  const Entry* prev = nullptr;
  for (const Entry& e : h.entries) {
    if (e.begin != expected) {
      if (e.begin > expected)
        KILN_FAIL("[safetensors] ", where, ": bytes [", expected, ", ", e.begin, ") of the data buffer belong to no tensor",
                  " (tensor '", e.name, "' starts at ", e.begin, ")");
      KILN_FAIL("[safetensors] ", where, ": tensor '", e.name, "' at data_offsets [", e.begin, ", ", e.end,
                "] overlaps tensor '", prev->name, "' at [", prev->begin, ", ", prev->end, "]");
    }
    expected = e.end;
    prev = &e;
  }
  KILN_CHECK(expected == data_size, "[safetensors] ", where, ": the tensors cover ", expected,
             " bytes but the data buffer has ", data_size, " (trailing bytes belong to no tensor)");
  return h;
}

std::map<std::string, Tensor> read_tensors(Source& src) {
  Header h = read_header(src);
  std::map<std::string, Tensor> out;
  for (const Entry& e : h.entries) {
    Tensor t = empty(e.shape, e.dtype);
    uint64_t nbytes = e.end - e.begin;
    src.read(h.data_start + e.begin, t.data_ptr(), nbytes);
    if (e.dtype == DType::Bool) {
      // A byte other than 0 or 1 is not a C++ bool; reject rather than reinterpret it.
      const auto* p = static_cast<const uint8_t*>(t.data_ptr());
      const uint8_t* bad = std::find_if(p, p + nbytes, [](uint8_t b) { return b > 1; });
      KILN_CHECK(bad == p + nbytes, "[safetensors] ", src.where(), ": tensor '", e.name, "' of dtype BOOL holds byte ",
                 static_cast<int>(*bad), " at element ", bad - p, " (expected 0 or 1)");
    }
    to_or_from_little_endian(t.data_ptr(), nbytes, itemsize(e.dtype));
    out.emplace(e.name, std::move(t));
  }
  return out;
}

// What save writes: the padded header, then each tensor's contiguous CPU bytes in order.
struct SavePlan {
  std::string header;  // includes the 8-byte length
  std::vector<Tensor> data;
};

SavePlan plan_save(const std::map<std::string, Tensor>& tensors, const std::map<std::string, std::string>& metadata) {
  NoGradGuard no_grad;
  struct Item {
    const std::string* name;
    Tensor data;
  };
  std::vector<Item> items;
  for (const auto& [name, t] : tensors) {
    KILN_CHECK(name != "__metadata__", "[safetensors.save] '__metadata__' is reserved and can't name a tensor");
    KILN_CHECK(t.defined(), "[safetensors.save] tensor '", name, "' is undefined");
    items.push_back({&name, t.detach().cpu().contiguous()});
  }
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    return a.data.element_size() > b.data.element_size();  // then by name: `tensors` is sorted
  });
  std::map<std::string, std::pair<uint64_t, uint64_t>> offsets;
  uint64_t at = 0;
  for (const Item& it : items) {
    offsets[*it.name] = {at, at + it.data.nbytes()};
    at += it.data.nbytes();
  }

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = std::move(m);
  }
  for (const auto& [name, t] : tensors) {
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = safetensors_dtype(t.dtype());
    entry["shape"] = t.sizes().vec();
    auto [b, e] = offsets.at(name);
    entry["data_offsets"] = {b, e};
    header[name] = std::move(entry);
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::ordered_json::exception& e) {
    KILN_FAIL("[safetensors.save] a tensor name or metadata string is not valid UTF-8: ", e.what());
  }
  KILN_CHECK(text.size() <= kMaxHeaderBytes, "[safetensors.save] the header would be ", text.size(),
             " bytes, over the limit of ", kMaxHeaderBytes);
  text.append((8 - text.size() % 8) % 8, ' ');
  SavePlan plan;
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) plan.header.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  plan.header += text;
  for (Item& it : items) plan.data.push_back(std::move(it.data));
  return plan;
}

// Little-endian bytes of a contiguous CPU tensor (a copy only on big-endian hosts).
template <class Sink>
void emit_tensor(const Tensor& t, Sink&& sink) {
  if constexpr (std::endian::native == std::endian::big) {
    std::vector<uint8_t> tmp(t.nbytes());
    if (!tmp.empty()) std::memcpy(tmp.data(), t.data_ptr(), tmp.size());
    to_or_from_little_endian(tmp.data(), tmp.size(), t.element_size());
    sink(tmp.data(), tmp.size());
  } else {
    sink(t.numel() ? t.data_ptr() : nullptr, t.nbytes());
  }
}

}  // namespace

std::vector<uint8_t> save_to_memory(const std::map<std::string, Tensor>& tensors,
                                    const std::map<std::string, std::string>& metadata) {
  SavePlan plan = plan_save(tensors, metadata);
  size_t total = plan.header.size();
  for (const Tensor& t : plan.data) total += t.nbytes();
  std::vector<uint8_t> out;
  out.reserve(total);
  out.insert(out.end(), plan.header.begin(), plan.header.end());
  for (const Tensor& t : plan.data)
    emit_tensor(t, [&](const void* p, size_t n) {
      if (n) out.insert(out.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n);
    });
  return out;
}

void save(const std::map<std::string, Tensor>& tensors, const std::string& path,
          const std::map<std::string, std::string>& metadata) {
  SavePlan plan = plan_save(tensors, metadata);
  // Write beside the target and rename, so a crash never leaves a half-written file at `path`.
  const std::string tmp = path + ".tmp";
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(tmp.c_str(), "wb"), &std::fclose);
  KILN_CHECK(f != nullptr, "[safetensors.save] cannot open '", tmp, "' for writing: ", std::strerror(errno));
  bool ok = std::fwrite(plan.header.data(), 1, plan.header.size(), f.get()) == plan.header.size();
  for (const Tensor& t : plan.data)
    emit_tensor(t, [&](const void* p, size_t n) { ok = ok && (n == 0 || std::fwrite(p, 1, n, f.get()) == n); });
  int err = ok ? 0 : errno;
  if (std::fclose(f.release()) != 0 && ok) ok = false, err = errno;
  if (!ok) {
    std::remove(tmp.c_str());
    KILN_FAIL("[safetensors.save] writing '", tmp, "' failed: ", std::strerror(err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    std::remove(tmp.c_str());
    KILN_FAIL("[safetensors.save] cannot rename '", tmp, "' to '", path, "': ", std::strerror(err));
  }
}

std::map<std::string, Tensor> load(const std::string& path) {
  FileSource src(path);
  return read_tensors(src);
}

std::map<std::string, Tensor> load_from_memory(const void* data, size_t size) {
  MemorySource src(data, size);
  return read_tensors(src);
}

std::map<std::string, std::string> load_metadata(const std::string& path) {
  FileSource src(path);
  return read_header(src).metadata;
}

std::map<std::string, std::string> load_metadata_from_memory(const void* data, size_t size) {
  MemorySource src(data, size);
  return read_header(src).metadata;
}

}  // namespace kiln
