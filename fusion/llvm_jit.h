#pragma once
// The LLVM side of the CPU codegen, behind fusion/codegen.cpp (which holds the kernel cache):
// one process-wide ORC LLJIT, the host TargetMachine, the O2 pipeline, object emission, and the
// disk cache file format. No LLVM types in this header.
#include "fusion/hash.h"
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fusion/kernel_ir.h"

namespace kiln::fusion::llvm_jit {

// "x86_64 znver3 +avx +avx2 +fma ... llvm 14.0.6": architecture, host CPU, the enabled features
// that change generated code, LLVM version. Computed once.
const std::string& host_description();

// Per kernel, the function's LLVM IR before and after the O2 pipeline.
struct ModuleText {
  std::vector<std::string> before, after;
};

struct CompileTimings {
  double render_ms = 0, optimise_ms = 0, codegen_ms = 0;  // render includes verification
};

// Renders kernels[i] as function symbols[i], all into one module; verifies it, runs the O2
// pipeline for the host CPU once, and emits an ELF object (returned as bytes). Raises
// kiln::Error (kiln::InternalError for a malformed kernel or module).
std::string compile_object(const std::vector<const Kernel*>& kernels, const std::vector<std::string>& symbols,
                           ModuleText* text, CompileTimings* timings = nullptr);

// Adds an object to a fresh JITDylib of the process-wide LLJIT (libm and other process symbols
// resolve through it) and returns the addresses of `symbols`. Raises kiln::Error on failure.
// The code stays mapped for the life of the process.
std::vector<uint64_t> load_object(const std::string& object, const std::vector<std::string>& symbols);

// ---- disk cache files -----------------------------------------------------------------------
// Layout: header (magic "KILNOBJ", format version, header size, hash of the keys text, keys text
// size, payload size, payload checksum), then the keys text (the full keys of the batch, one
// per line), then the object.
enum class DiskRead { Missing, Rejected, Hit };
// Hit: *object receives the payload. Rejected: the file exists but is truncated, garbage, of
// another format version, or holds other keys.
DiskRead read_cache_file(const std::string& path, const std::string& keys, std::string* object);
// Writes a unique temporary file in the same directory, then renames it over `path` (atomic:
// readers in other processes see the old file or the new one). False on any I/O failure.
bool write_cache_file(const std::string& path, const std::string& keys, const std::string& object);

// hash64 / hex64: fusion/hash.h.

}  // namespace kiln::fusion::llvm_jit
