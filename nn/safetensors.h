#pragma once
// safetensors I/O (https://github.com/huggingface/safetensors, the format PyTorch users export
// with safetensors.torch.save_file):
//   8 bytes   little-endian u64 N
//   N bytes   JSON header {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]},
//             ..., "__metadata__": {"key": "value"}}, padded with spaces
//   rest      the byte buffer; each tensor row-major, contiguous, little-endian, at
//             [begin, end) relative to the buffer's start; together they cover it without holes.
// Loading validates the whole file and raises kiln::Error (naming the file, the tensor and the
// offending values) for anything malformed; it never reads outside the input.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace kiln {

// Writes `tensors` (any device, layout and supported dtype; copied as contiguous CPU data) and
// string `metadata`. The header lists __metadata__ first, then the tensors sorted by name; the
// data is laid out by decreasing element size, then by name (as the reference writer does), so
// every tensor is aligned to its element size. The file is written to `path`.tmp and renamed.
void save(const std::map<std::string, Tensor>& tensors, const std::string& path,
          const std::map<std::string, std::string>& metadata = {});
// The same bytes, in memory.
std::vector<uint8_t> save_to_memory(const std::map<std::string, Tensor>& tensors,
                                    const std::map<std::string, std::string>& metadata = {});

// Reads every tensor of a file into fresh, contiguous CPU tensors. Supported dtypes: BOOL, U8,
// I8, I16, I32, I64, F16, BF16, F32, F64; any other (F8_*, U16, U32, U64, ...) raises.
std::map<std::string, Tensor> load(const std::string& path);
std::map<std::string, Tensor> load_from_memory(const void* data, size_t size);

// The __metadata__ map only (the header is still fully validated; tensor data is not read).
std::map<std::string, std::string> load_metadata(const std::string& path);
std::map<std::string, std::string> load_metadata_from_memory(const void* data, size_t size);

}  // namespace kiln
