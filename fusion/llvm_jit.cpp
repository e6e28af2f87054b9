#include "fusion/llvm_jit.h"
#include "fusion/cache_file.h"
#include "fusion/hash.h"


#include <llvm/ExecutionEngine/Orc/ExecutionUtils.h>
#include <llvm/ExecutionEngine/Orc/LLJIT.h>
#include <llvm/IR/LegacyPassManager.h>
#include <llvm/IR/LLVMContext.h>
#include <llvm/IR/Module.h>
#include <llvm/IR/Verifier.h>
#include <llvm/MC/TargetRegistry.h>
#include <llvm/Passes/OptimizationLevel.h>
#include <llvm/Passes/PassBuilder.h>
#include <llvm/Support/MemoryBuffer.h>
#include <llvm/Support/TargetSelect.h>
#include <llvm/Support/raw_ostream.h>
#include <llvm/Target/TargetMachine.h>
#include <llvm/Target/TargetOptions.h>

#include <algorithm>
#include <chrono>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <optional>

#include "core/error.h"
#include "core/profiler.h"
#include "fusion/llvm_compat.h"
#include "fusion/llvm_render.h"

namespace kiln::fusion::llvm_jit {
namespace {

// Features that change the code LLVM generates for kernels (vector ISA and friends); the rest of
// the host's feature list (rdrnd, xsave, ...) stays out of the cache key.
bool relevant_feature(const std::string& f) {
  static const char* const kNames[] = {"sse2", "sse3", "ssse3", "sse4.1", "sse4.2", "sse4a", "popcnt", "avx", "avx2", "fma",
                                       "fma4", "f16c", "bmi", "bmi2", "lzcnt", "movbe", "avxvnni", "neon", "sve", "sve2",
                                       "fullfp16", "fp16", "dotprod", "bf16", "i8mm", "vsx", "altivec"};
  for (const char* n : kNames)
    if (f == n) return true;
  return f.rfind("avx512", 0) == 0 || f.rfind("amx", 0) == 0;
}

// The process-wide JIT and the host target. Created on first use (thread-safe static
// initialisation) and never destroyed: generated code may be called until exit.
struct Session {
  std::string error;  // why the JIT is unusable (empty when fine)
  const llvm::Target* target = nullptr;
  std::string triple, cpu, features, description;
  std::unique_ptr<llvm::orc::LLJIT> jit;
  std::atomic<uint64_t> next_dylib{0};

  Session() {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    triple = llvm::sys::getProcessTriple();
    cpu = llvm::sys::getHostCPUName().str();
    std::vector<std::string> all, shown;
    for (const auto& kv : llvm_compat::host_cpu_features()) {
      std::string name = kv.getKey().str();
      all.push_back((kv.getValue() ? "+" : "-") + name);
      if (kv.getValue() && relevant_feature(name)) shown.push_back("+" + name);
    }
    std::sort(all.begin(), all.end());
    std::sort(shown.begin(), shown.end());
    for (const std::string& f : all) features += (features.empty() ? "" : ",") + f;
    description = llvm::Triple(triple).getArchName().str() + " " + cpu;
    for (const std::string& f : shown) description += " " + f;
    description += " llvm " LLVM_VERSION_STRING;

    std::string err;
    target = llvm::TargetRegistry::lookupTarget(triple, err);
    if (!target) {
      error = "no LLVM target for " + triple + ": " + err;
      return;
    }
    auto built = llvm::orc::LLJITBuilder().create();
    if (!built) {
      error = "cannot create the ORC LLJIT: " + llvm::toString(built.takeError());
      return;
    }
    jit = std::move(*built);
  }

  void check() const { KILN_CHECK(error.empty(), "[codegen] ", error); }

  // One per compile: a TargetMachine is not thread-safe, and creating one costs microseconds.
  std::unique_ptr<llvm::TargetMachine> make_target_machine() const {
    llvm::TargetOptions options;
    // No FP contraction (no FMA formed from a*b+c), as eager kiln is compiled.
    options.AllowFPOpFusion = llvm::FPOpFusion::Standard;
    // PIC + small code model: calls into libm and other process symbols go through stubs the
    // JIT linker creates, wherever the process's libraries are mapped.
    std::unique_ptr<llvm::TargetMachine> tm(target->createTargetMachine(triple, cpu, features, options, llvm::Reloc::PIC_,
                                                                        llvm::CodeModel::Small,
                                                                        llvm_compat::kCodeGenDefault));
    KILN_CHECK(tm != nullptr, "[codegen] LLVM cannot create a TargetMachine for ", triple, " ", cpu);
    return tm;
  }
};

Session& session() {
  static Session* s = new Session();  // leaked on purpose (see Session)
  return *s;
}

std::string function_text(const llvm::Function& f) {
  std::string s;
  llvm::raw_string_ostream os(s);
  f.print(os);
  os.flush();
  return s;
}

void optimise(llvm::Module& m, llvm::TargetMachine& tm) {
  llvm::LoopAnalysisManager lam;
  llvm::FunctionAnalysisManager fam;
  llvm::CGSCCAnalysisManager cgam;
  llvm::ModuleAnalysisManager mam;
  llvm::PipelineTuningOptions pto;
  pto.LoopVectorization = true;
  pto.SLPVectorization = true;
  pto.LoopUnrolling = true;  // runtime unrolling is switched off per loop (llvm_render.cpp)
  pto.LoopInterleaving = true;
  // With the TargetMachine, TargetIRAnalysis answers for the host CPU (AVX2/AVX-512 widths
  // and costs) instead of a generic target.
  llvm::PassBuilder pb(&tm, pto);
  pb.registerModuleAnalyses(mam);
  pb.registerCGSCCAnalyses(cgam);
  pb.registerFunctionAnalyses(fam);
  pb.registerLoopAnalyses(lam);
  pb.crossRegisterProxies(lam, fam, cgam, mam);
  // O2: the loop and SLP vectorisers run as at O3; what O3 adds (more aggressive inlining and
  // loop transforms) buys nothing on kernels of straight loops and costs ~25% of compile time.
  llvm::ModulePassManager mpm = pb.buildPerModuleDefaultPipeline(llvm::OptimizationLevel::O2);
  mpm.run(m, mam);
}

// ---- disk cache -------------------------------------------------------------------------------

constexpr char kMagic[8] = {'K', 'I', 'L', 'N', 'O', 'B', 'J', '\0'};
constexpr uint32_t kFormatVersion = 1;

struct FileHeader {
  char magic[8];
  uint32_t version;
  uint32_t header_size;
  uint64_t keys_hash;
  uint64_t keys_size;
  uint64_t payload_size;
  uint64_t payload_checksum;
};
static_assert(sizeof(FileHeader) == 48);

constexpr uint64_t kChecksumSeed = 0x6b696c6e63686b73ull;  // "kilnchks"
constexpr uint64_t kMaxFileSize = uint64_t(1) << 30;

}  // namespace

const std::string& host_description() { return session().description; }

std::string compile_object(const std::vector<const Kernel*>& kernels, const std::vector<std::string>& symbols,
                           ModuleText* text, CompileTimings* timings) {
  Session& s = session();
  s.check();
  KILN_INTERNAL_ASSERT(kernels.size() == symbols.size(), "compile_object: ", kernels.size(), " kernels, ", symbols.size(),
                       " symbols");
  auto t0 = std::chrono::steady_clock::now();
  std::optional<profiler::Scope> phase;  // the profiler's event for the current phase
  phase.emplace("render", profiler::Category::Jit);
  auto lap = [&](double* into, const char* next) {
    auto t = std::chrono::steady_clock::now();
    if (into) *into = std::chrono::duration<double, std::milli>(t - t0).count();
    t0 = t;
    phase.reset();
    if (next) phase.emplace(next, profiler::Category::Jit);
  };
  std::unique_ptr<llvm::TargetMachine> tm = s.make_target_machine();
  llvm::LLVMContext ctx;  // one per compile: contexts are not thread-safe
  llvm::Module m("kiln_kernels", ctx);
  m.setTargetTriple(s.triple);
  m.setDataLayout(tm->createDataLayout());
  std::vector<llvm::Function*> fns;
  for (size_t i = 0; i < kernels.size(); ++i) fns.push_back(render_kernel(m, *kernels[i], symbols[i]));
  if (text) {
    text->before.clear();
    for (llvm::Function* f : fns) text->before.push_back(function_text(*f));
  }
  {
    std::string err;
    llvm::raw_string_ostream os(err);
    const bool broken = llvm::verifyModule(m, &os);
    os.flush();
    KILN_INTERNAL_ASSERT(!broken, "generated LLVM IR does not verify: ", err);
  }
  lap(timings ? &timings->render_ms : nullptr, "optimise");
  optimise(m, *tm);
  lap(timings ? &timings->optimise_ms : nullptr, "llvm codegen");
  if (text) {
    text->after.clear();
    for (llvm::Function* f : fns) text->after.push_back(function_text(*f));
  }
  llvm::SmallVector<char, 0> buffer;
  llvm::raw_svector_ostream os(buffer);
  llvm::legacy::PassManager codegen;
  KILN_CHECK(!tm->addPassesToEmitFile(codegen, os, nullptr, llvm_compat::kObjectFile), "[codegen] LLVM cannot emit object files for ",
             s.triple);
  codegen.run(m);
  lap(timings ? &timings->codegen_ms : nullptr, nullptr);
  return std::string(buffer.data(), buffer.size());
}

std::vector<uint64_t> load_object(const std::string& object, const std::vector<std::string>& symbols) {
  Session& s = session();
  s.check();
  llvm::orc::LLJIT& jit = *s.jit;
  std::string name = "kiln_kernels_" + std::to_string(s.next_dylib.fetch_add(1));
  auto jd = jit.createJITDylib(name);
  KILN_CHECK(static_cast<bool>(jd), "[codegen] cannot create a JITDylib: ", llvm::toString(jd.takeError()));
  auto generator = llvm::orc::DynamicLibrarySearchGenerator::GetForCurrentProcess(jit.getDataLayout().getGlobalPrefix());
  KILN_CHECK(static_cast<bool>(generator), "[codegen] cannot search the process's symbols: ", llvm::toString(generator.takeError()));
  jd->addGenerator(std::move(*generator));
  if (llvm::Error err = jit.addObjectFile(*jd, llvm::MemoryBuffer::getMemBufferCopy(object, name)))
    KILN_FAIL("[codegen] the JIT rejected the object file: ", llvm::toString(std::move(err)));
  std::vector<uint64_t> addresses;
  for (const std::string& sym : symbols) {
    auto found = jit.lookup(*jd, sym);
    KILN_CHECK(static_cast<bool>(found), "[codegen] cannot link kernel ", sym, ": ", llvm::toString(found.takeError()));
    addresses.push_back(llvm_compat::symbol_address(*found));
    KILN_CHECK(addresses.back() != 0, "[codegen] kernel ", sym, " linked at address 0");
  }
  return addresses;
}

DiskRead read_cache_file(const std::string& path, const std::string& keys, std::string* object) {
  std::string data;
  const FileRead read = read_whole_file(path, kMaxFileSize, &data);
  if (read == FileRead::Missing) return DiskRead::Missing;
  if (read != FileRead::Ok || data.size() < sizeof(FileHeader)) return DiskRead::Rejected;
  FileHeader h;
  std::memcpy(&h, data.data(), sizeof h);
  if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0 || h.version != kFormatVersion || h.header_size != sizeof(FileHeader) ||
      h.keys_size != keys.size() || h.keys_hash != hash64(keys) || h.payload_size > kMaxFileSize ||
      data.size() != sizeof(FileHeader) + h.keys_size + h.payload_size)
    return DiskRead::Rejected;
  if (std::string_view(data).substr(sizeof(FileHeader), keys.size()) != keys) return DiskRead::Rejected;
  std::string_view payload = std::string_view(data).substr(sizeof(FileHeader) + keys.size());
  if (hash64(payload, kChecksumSeed) != h.payload_checksum) return DiskRead::Rejected;
  object->assign(payload.data(), payload.size());
  return DiskRead::Hit;
}

bool write_cache_file(const std::string& path, const std::string& keys, const std::string& object) {
  FileHeader h{};
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.version = kFormatVersion;
  h.header_size = sizeof(FileHeader);
  h.keys_hash = hash64(keys);
  h.keys_size = keys.size();
  h.payload_size = object.size();
  h.payload_checksum = hash64(object, kChecksumSeed);
  return write_file_atomically(path, {std::string_view(reinterpret_cast<const char*>(&h), sizeof h), keys, object});
}

}  // namespace kiln::fusion::llvm_jit
