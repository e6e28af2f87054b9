// safetensors: round trips of every dtype and layout, a byte-exact file, files as other writers
// lay them out, and every kind of malformed input raising kiln::Error.
#include <bit>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "nn/safetensors.h"
#include "test_util.h"

using namespace kiln;
using kiln::testing::to_vec;

namespace {

using Bytes = std::vector<uint8_t>;

std::string temp_path(const std::string& name) {
  return (std::filesystem::path(::testing::TempDir()) / ("kiln_safetensors_" + name)).string();
}

Bytes read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(f), {});
}

void write_file(const std::string& path, const Bytes& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

void put_u64(Bytes& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

// A file from a header text and data bytes, the length field computed (not padded).
Bytes make_file(const std::string& header, const Bytes& data = {}) {
  Bytes out;
  put_u64(out, header.size());
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

template <class T>
void put_le(Bytes& out, T v) {
  uint8_t b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // the test host is little-endian (checked below)
  out.insert(out.end(), b, b + sizeof(T));
}

Bytes raw_bytes(const Tensor& t) {
  Tensor c = t.contiguous();
  const auto* p = static_cast<const uint8_t*>(c.data_ptr());
  return c.numel() ? Bytes(p, p + c.nbytes()) : Bytes{};
}

void expect_same(const Tensor& got, const Tensor& want, const std::string& name) {
  ASSERT_TRUE(got.defined()) << name;
  EXPECT_EQ(got.dtype(), want.dtype()) << name;
  EXPECT_EQ(got.sizes().vec(), want.sizes().vec()) << name;
  EXPECT_TRUE(got.is_contiguous()) << name;
  EXPECT_EQ(raw_bytes(got), raw_bytes(want)) << name;  // bit-exact, NaN payloads included
}

Tensor values_of(DType dt, Shape shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  if (dt == kBool) return (arange(n) % 3 == 0).view(shape);
  Tensor t = (arange(n, kFloat64) * 1.5 - 4.0).to(dt);
  if (is_floating_point(dt) && n >= 3) {
    // Special values survive bit-exactly.
    t.view({-1})[0].fill_(std::numeric_limits<double>::infinity());
    t.view({-1})[1].fill_(std::numeric_limits<double>::quiet_NaN());
    t.view({-1})[2].fill_(-0.0);
  }
  return t.view(shape);
}

constexpr DType kAllDTypes[] = {kBool, kUInt8, kInt8, kInt16, kInt32, kInt64, kFloat16, kBFloat16, kFloat32, kFloat64};

}  // namespace

TEST(Safetensors, RoundTripEveryDTypeAndShape) {
  std::map<std::string, Tensor> tensors;
  for (DType dt : kAllDTypes) {
    std::string n(dtype_name(dt));
    tensors[n + "_2x3"] = values_of(dt, {2, 3});
    tensors[n + "_scalar"] = values_of(dt, {});
    tensors[n + "_empty"] = values_of(dt, {0});
    tensors[n + "_3x0x2"] = values_of(dt, {3, 0, 2});
  }
  std::string path = temp_path("roundtrip.safetensors");
  save(tensors, path);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  std::map<std::string, Tensor> loaded = load(path);
  ASSERT_EQ(loaded.size(), tensors.size());
  for (const auto& [name, t] : tensors) expect_same(loaded.at(name), t, name);
  // The in-memory form is the same bytes as the file.
  Bytes mem = save_to_memory(tensors);
  EXPECT_EQ(mem, read_file(path));
  std::map<std::string, Tensor> from_mem = load_from_memory(mem.data(), mem.size());
  for (const auto& [name, t] : tensors) expect_same(from_mem.at(name), t, name);
  EXPECT_TRUE(load_metadata(path).empty());
  std::remove(path.c_str());
}

TEST(Safetensors, NonContiguousAndOffsetInputsAreSavedAsTheirValues) {
  Tensor base = arange(24, kFloat32).view({2, 3, 4});
  std::map<std::string, Tensor> tensors{
      {"transposed", base.transpose(0, 2)},        // [4, 3, 2], permuted strides
      {"sliced", base.slice(2, 1, 4, 2)},          // a step, and a storage offset
      {"expanded", tensor({1.0, 2.0}).view({2, 1}).expand({2, 3})},  // stride 0
      {"row", base[1][2]},                          // offset view into the middle
  };
  Tensor g = ones({3}).requires_grad_();
  tensors["requires_grad"] = g * 2.0;  // saved without its graph
  Bytes mem = save_to_memory(tensors);
  auto loaded = load_from_memory(mem.data(), mem.size());
  for (const auto& [name, t] : tensors) {
    EXPECT_EQ(loaded.at(name).sizes().vec(), t.sizes().vec()) << name;
    EXPECT_EQ(to_vec(loaded.at(name)), to_vec(t.detach())) << name;
    EXPECT_FALSE(loaded.at(name).requires_grad());
  }
}

TEST(Safetensors, Metadata) {
  std::map<std::string, std::string> meta{{"format", "pt"}, {"note", "quotes \" and \\ and unicode \xc3\xa9"}, {"", ""}};
  std::string path = temp_path("meta.safetensors");
  save({{"w", ones({2})}}, path, meta);
  EXPECT_EQ(load_metadata(path), meta);
  EXPECT_EQ(load(path).size(), 1u);
  Bytes mem = save_to_memory({}, meta);  // no tensors at all is a valid file
  EXPECT_EQ(load_metadata_from_memory(mem.data(), mem.size()), meta);
  EXPECT_TRUE(load_from_memory(mem.data(), mem.size()).empty());
  std::remove(path.c_str());
}

TEST(Safetensors, ByteExactAgainstAHandBuiltFile) {
  ASSERT_EQ(std::endian::native, std::endian::little);
  // Header: __metadata__ first, tensors by name, fields dtype/shape/data_offsets, compact JSON.
  // Data: by decreasing element size then name: "b" (F32) before "a" (I16), then "c" (U8).
  std::string header =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"I16","shape":[1],"data_offsets":[8,10]},)"
      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"c":{"dtype":"U8","shape":[2,0],"data_offsets":[10,10]}})";
  while (header.size() % 8 != 0) header += ' ';
  Bytes data;
  put_le<float>(data, 1.0f);
  put_le<float>(data, -2.5f);
  put_le<int16_t>(data, 7);
  Bytes expected = make_file(header, data);
  ASSERT_EQ((expected.size() - data.size()) % 8, 0u);

  std::map<std::string, Tensor> tensors{
      {"b", tensor({1.0f, -2.5f})}, {"a", tensor(std::vector<int16_t>{7})}, {"c", zeros({2, 0}, kUInt8)}};
  EXPECT_EQ(save_to_memory(tensors, {{"format", "pt"}}), expected);
  std::string path = temp_path("exact.safetensors");
  save(tensors, path, {{"format", "pt"}});
  EXPECT_EQ(read_file(path), expected);
  std::remove(path.c_str());
}

TEST(Safetensors, LoadsFilesLaidOutByOtherWriters) {
  // As other writers may emit: whitespace, fields in another order, __metadata__ last, tensors
  // in the buffer in a different order than in the header, padding spaces.
  Bytes data;
  put_le<double>(data, 0.5);
  put_le<int64_t>(data, -3);
  put_le<int64_t>(data, 4);
  data.push_back(1);
  data.push_back(0);
  std::string header = R"({ "z" : {"data_offsets": [0, 8], "shape": [], "dtype": "F64"},
    "flags": {"shape": [2], "dtype": "BOOL", "data_offsets": [24, 26]},
    "idx": {"dtype": "I64", "data_offsets": [8, 24], "shape": [1, 2]},
    "__metadata__": {"format": "pt"} }      )";
  Bytes file = make_file(header, data);
  auto t = load_from_memory(file.data(), file.size());
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t.at("z").dim(), 0);
  EXPECT_EQ(t.at("z").item<double>(), 0.5);
  EXPECT_EQ(t.at("idx").dtype(), kInt64);
  EXPECT_EQ(to_vec(t.at("idx")), (std::vector<double>{-3, 4}));
  EXPECT_EQ(t.at("idx").sizes().vec(), (Shape{1, 2}));
  EXPECT_EQ(to_vec(t.at("flags")), (std::vector<double>{1, 0}));
  EXPECT_EQ(load_metadata_from_memory(file.data(), file.size()).at("format"), "pt");
}

TEST(Safetensors, LengthAndFramingErrors) {
  Bytes tiny{1, 2, 3};
  EXPECT_KILN_ERROR(load_from_memory(tiny.data(), tiny.size()), "[safetensors]", "3 bytes is shorter than the 8-byte");
  EXPECT_KILN_ERROR(load_from_memory(nullptr, 0), "0 bytes is shorter");
  Bytes f;
  put_u64(f, 100);
  f.push_back('{');
  EXPECT_KILN_ERROR(load_from_memory(f.data(), f.size()), "header length 100 exceeds the 1 bytes that follow");
  Bytes huge;
  put_u64(huge, 200'000'000);
  EXPECT_KILN_ERROR(load_from_memory(huge.data(), huge.size()), "header length 200000000 exceeds the limit of 100000000");
  Bytes max;
  put_u64(max, std::numeric_limits<uint64_t>::max());
  EXPECT_KILN_ERROR(load_from_memory(max.data(), max.size()), "header length 18446744073709551615");
  Bytes empty_header = make_file("");
  EXPECT_KILN_ERROR(load_from_memory(empty_header.data(), empty_header.size()), "starting with '{'", "empty");
  Bytes array = make_file("[]");
  EXPECT_KILN_ERROR(load_from_memory(array.data(), array.size()), "header must be a JSON object starting with '{'");
  EXPECT_KILN_ERROR(load_from_memory(nullptr, 16), "null pointer with size 16");
}

TEST(Safetensors, MalformedHeaders) {
  auto expect_error = [](const std::string& header, const Bytes& data, std::vector<const char*> fragments) {
    Bytes file = make_file(header, data);
    bool thrown = false;
    try {
      load_from_memory(file.data(), file.size());
    } catch (const Error& e) {
      thrown = true;
      std::string msg = e.what();
      for (const char* f : fragments)
        EXPECT_NE(msg.find(f), std::string::npos) << "header " << header << "\nmessage '" << msg << "' lacks '" << f << "'";
    }
    EXPECT_TRUE(thrown) << "no error for header " << header;
  };
  const Bytes eight(8, 0);
  const std::string ok_entry = R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  // JSON itself
  expect_error(R"({"a": )", {}, {"header is not valid JSON"});
  expect_error(R"({"a": 1} trailing)", {}, {"not valid JSON"});
  expect_error("{\"a\xff\": 1}", {}, {"not valid JSON"});  // invalid UTF-8
  expect_error(std::string("{\"a\":\0}", 7), {}, {"not valid JSON"});
  expect_error(R"({"a": )" + ok_entry + R"(, "a": )" + ok_entry + "}", eight, {"duplicate key 'a' in the header"});
  expect_error(R"({"a": {"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})", eight,
               {"duplicate key 'dtype' in the entry of 'a'"});
  expect_error(R"({"__metadata__": {"k":"1","k":"2"}})", {}, {"duplicate key 'k'"});
  expect_error(R"({"a": {"shape": [[[[[[1]]]]]]}})", {}, {"nests deeper than the format allows", "'a'"});
  expect_error("{\"a\":" + std::string(100000, '[') , {}, {"nests deeper"});
  // entry structure and field types
  expect_error(R"({"a": 5})", {}, {"tensor 'a'", "entry must be an object", "got 5"});
  expect_error(R"({"a": {"shape":[2],"data_offsets":[0,8]}})", eight, {"tensor 'a'", "missing field 'dtype'"});
  expect_error(R"({"a": {"dtype":"F32","data_offsets":[0,8]}})", eight, {"missing field 'shape'"});
  expect_error(R"({"a": {"dtype":"F32","shape":[2]}})", eight, {"missing field 'data_offsets'"});
  expect_error(R"({"a": {"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":1}})", eight, {"unknown field 'extra'"});
  expect_error(R"({"a": {"dtype":32,"shape":[2],"data_offsets":[0,8]}})", eight, {"dtype must be a string, got 32"});
  expect_error(R"({"a": {"dtype":"F32","shape":2,"data_offsets":[0,8]}})", eight, {"shape must be an array, got 2"});
  expect_error(R"({"a": {"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", eight,
               {"shape entries must be non-negative integers, got -2"});
  expect_error(R"({"a": {"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", eight, {"shape entries", "got 2.0"});
  expect_error(R"({"a": {"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", eight, {"shape entries", "got \"2\""});
  expect_error(R"({"a": {"dtype":"F32","shape":[2],"data_offsets":[0]}})", eight,
               {"data_offsets must be an array [begin, end], got [0]"});
  expect_error(R"({"a": {"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}})", eight, {"data_offsets must be an array"});
  expect_error(R"({"a": {"dtype":"F32","shape":[2],"data_offsets":[-1,8]}})", eight,
               {"data_offsets entries must be non-negative integers, got -1"});
  expect_error(R"({"a": {"dtype":"F32","shape":[2],"data_offsets":[0,1e3]}})", eight, {"data_offsets entries"});
  // dtypes
  expect_error(R"({"a": {"dtype":"U32","shape":[2],"data_offsets":[0,8]}})", eight,
               {"tensor 'a' has dtype 'U32', which kiln does not support", "supported: BOOL, U8"});
  expect_error(R"({"a": {"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}})", eight, {"dtype 'F8_E4M3'"});
  expect_error(R"({"a": {"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})", eight, {"unknown dtype 'Q7'"});
  // shapes
  expect_error(R"({"a": {"dtype":"F32","shape":[4611686018427387904, 4],"data_offsets":[0,8]}})", eight,
               {"tensor 'a'", "is too large"});
  expect_error(R"({"a": {"dtype":"F32","shape":[0, 4294967296, 4294967296],"data_offsets":[0,0]}})", {},
               {"too large"});  // zero elements, but its strides would overflow
  expect_error(R"({"a": {"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,8]}})", eight, {"too large"});
  expect_error(R"({"a": {"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}})", {},
               {"too large"});  // the element count wraps to 0 in 64 bits
  std::string many_dims = "[" + std::string(65 * 2 - 1, ',') + "]";
  for (size_t i = 1; i < many_dims.size(); i += 2) many_dims[i] = '1';
  expect_error(R"({"a": {"dtype":"F32","shape":)" + many_dims + R"(,"data_offsets":[0,4]}})", Bytes(4, 0),
               {"shape has 65 dims, more than the 64"});
  // offsets against the buffer
  expect_error(R"({"a": {"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", eight,
               {"tensor 'a'", "data_offsets [8, 0] have begin > end"});
  expect_error(R"({"a": {"dtype":"F32","shape":[2],"data_offsets":[0,12]}})", eight,
               {"data_offsets [0, 12] span 12 bytes but shape [2] of F32 needs 8"});
  expect_error(R"({"a": {"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", eight,
               {"data_offsets [0, 16] extend past the 8-byte data buffer"});
  expect_error(R"({"a": {"dtype":"F32","shape":[2],"data_offsets":[18446744073709551607,18446744073709551615]}})",
               eight, {"extend past"});
  expect_error(R"({"a": {"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
               Bytes(12, 0), {"tensor 'b' at data_offsets [4, 12] overlaps tensor 'a' at [0, 8]"});
  expect_error(R"({"a": {"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
               Bytes(12, 0), {"bytes [4, 8) of the data buffer belong to no tensor", "'b' starts at 8"});
  expect_error(R"({"a": {"dtype":"F32","shape":[2],"data_offsets":[0,8]},"z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
               eight, {"tensor 'z'", "overlaps tensor 'a'"});
  expect_error(R"({"a": {"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", Bytes(9, 0),
               {"the tensors cover 8 bytes but the data buffer has 9"});
  expect_error(R"({"a": {"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", eight, {"bytes [0, 4)", "no tensor"});
  // metadata
  expect_error(R"({"__metadata__": [1]})", {}, {"__metadata__ must be an object of strings, got [1]"});
  expect_error(R"({"__metadata__": {"k": 1}})", {}, {"__metadata__ value of 'k' must be a string, got 1"});
  // values
  expect_error(R"({"m": {"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}})", Bytes{1, 0, 2},
               {"tensor 'm' of dtype BOOL holds byte 2 at element 2"});
}

TEST(Safetensors, FileErrors) {
  EXPECT_KILN_ERROR(load(temp_path("does_not_exist.safetensors")), "[safetensors] cannot open file",
                    "does_not_exist.safetensors", "No such file");
  EXPECT_KILN_ERROR(load(::testing::TempDir()), "is a directory");
  std::string path = temp_path("truncated.safetensors");
  Bytes good = save_to_memory({{"w", ones({4})}});
  write_file(path, Bytes(good.begin(), good.end() - 1));
  const std::string where = "file '" + path + "'";
  EXPECT_KILN_ERROR(load(path), where.c_str(), "data_offsets [0, 16] extend past the 15-byte data buffer");
  EXPECT_KILN_ERROR(load_metadata(path), "extend past the 15-byte data buffer");
  std::remove(path.c_str());
  EXPECT_KILN_ERROR(save({{"w", ones({1})}}, "/nonexistent_dir_kiln/x.safetensors"), "[safetensors.save] cannot open",
                    "/nonexistent_dir_kiln/x.safetensors.tmp");
}

TEST(Safetensors, SaveErrors) {
  EXPECT_KILN_ERROR(save_to_memory({{"__metadata__", ones({1})}}), "[safetensors.save]", "'__metadata__' is reserved");
  EXPECT_KILN_ERROR(save_to_memory({{"w", Tensor()}}), "[safetensors.save]", "tensor 'w' is undefined");
  EXPECT_KILN_ERROR(save_to_memory({{"bad\xff", ones({1})}}), "[safetensors.save]", "not valid UTF-8");
  EXPECT_KILN_ERROR(save_to_memory({{"w", ones({1})}}, {{"k", "\xc3"}}), "not valid UTF-8");
}
