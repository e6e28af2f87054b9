#pragma once
// The differences between the LLVM releases kiln builds against (14 through 19), in one place.
// The renderer itself only uses explicitly typed loads/GEPs and PointerType::getUnqual, which mean
// the same with LLVM 14's typed pointers and the opaque pointers of 15+.
#include <llvm/Config/llvm-config.h>
#include <llvm/ADT/StringMap.h>
#include <llvm/IR/DerivedTypes.h>
#include <llvm/Support/CodeGen.h>

#if LLVM_VERSION_MAJOR >= 17
#include <llvm/TargetParser/Host.h>
#else
#include <llvm/Support/Host.h>
#endif

#include <cstdint>

#if LLVM_VERSION_MAJOR < 14 || LLVM_VERSION_MAJOR > 19
#error "kiln's codegen supports LLVM 14 through 19"
#endif

namespace kiln::fusion::llvm_compat {

// Features of the host CPU ("avx2" -> true); LLVM 19 returns the map instead of filling one.
inline llvm::StringMap<bool> host_cpu_features() {
#if LLVM_VERSION_MAJOR >= 19
  return llvm::sys::getHostCPUFeatures();
#else
  llvm::StringMap<bool> features;
  if (!llvm::sys::getHostCPUFeatures(features)) features.clear();
  return features;
#endif
}

// CodeGenOpt::Level became the enum class CodeGenOptLevel in LLVM 18, CGFT_* CodeGenFileType::*.
#if LLVM_VERSION_MAJOR >= 18
inline constexpr llvm::CodeGenOptLevel kCodeGenAggressive = llvm::CodeGenOptLevel::Aggressive;
inline constexpr llvm::CodeGenOptLevel kCodeGenDefault = llvm::CodeGenOptLevel::Default;
inline constexpr llvm::CodeGenFileType kObjectFile = llvm::CodeGenFileType::ObjectFile;
#else
inline constexpr llvm::CodeGenOpt::Level kCodeGenAggressive = llvm::CodeGenOpt::Aggressive;
inline constexpr llvm::CodeGenOpt::Level kCodeGenDefault = llvm::CodeGenOpt::Default;
inline constexpr llvm::CodeGenFileType kObjectFile = llvm::CGFT_ObjectFile;
#endif

// `T*` in address space 0 (a plain `ptr` with opaque pointers).
inline llvm::PointerType* pointer_to(llvm::Type* element) { return llvm::PointerType::getUnqual(element); }

// LLJIT::lookup returns a JITEvaluatedSymbol (14) or an ExecutorAddr (15+); either way an address.
template <class Symbol>
uint64_t symbol_address(const Symbol& s) {
  if constexpr (requires { s.getValue(); })
    return static_cast<uint64_t>(s.getValue());
  else
    return static_cast<uint64_t>(s.getAddress());
}

}  // namespace kiln::fusion::llvm_compat
