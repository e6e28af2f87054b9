#pragma once
// Whole-file reads and atomic whole-file writes for the kernel caches on disk (the LLVM object
// cache in fusion/llvm_jit.cpp, the NVRTC binary cache in fusion/nvrtc.cpp). Each cache checks
// its own header and checksum; this only gets the bytes in and out so that concurrent processes
// never see half a file.
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

namespace kiln::fusion {

enum class FileRead { Missing, Failed, Ok };

// The whole of `path` into *data. Failed: not a regular file, larger than max_size, or an I/O
// error; a file truncated while it is read comes back short (the caller's size checks reject it).
FileRead read_whole_file(const std::string& path, uint64_t max_size, std::string* data);

// Writes the parts, in order, to a unique temporary file in the same directory and renames it over
// `path`: readers see the old file or the new one, never a mix. False on any I/O failure (the
// temporary is removed then).
bool write_file_atomically(const std::string& path, std::initializer_list<std::string_view> parts);

}  // namespace kiln::fusion
