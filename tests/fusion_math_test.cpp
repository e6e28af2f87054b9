// kiln's inline elementary functions (fusion/llvm_math.h), compiled by a small ORC LLJIT
// harness into `void f(const T* x, T* y, int64_t n)` loops at O3 for the host CPU, and once
// more with FMA switched off (the functions must not depend on fused rounding). Checks:
// max ulp error against float64 (for float32) / long double (for float64) references over wide
// sweeps, special values exactly, vectorised loops without calls, and float32 agreement with
// eager's kernels/scalar_math.h. Run it alone to print the ulp table of docs/fusion_math.md.
#include <gtest/gtest.h>

#include <llvm/Config/llvm-config.h>
#include <llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h>
#include <llvm/ExecutionEngine/Orc/LLJIT.h>
#include <llvm/IR/IRBuilder.h>
#include <llvm/IR/LLVMContext.h>
#include <llvm/IR/Module.h>
#include <llvm/IR/Verifier.h>
#include <llvm/Passes/PassBuilder.h>
#include <llvm/Support/TargetSelect.h>
#include <llvm/Support/raw_ostream.h>
#include <llvm/Target/TargetMachine.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <regex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "fusion/llvm_math.h"
#include "kernels/scalar_math.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define KILN_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define KILN_TEST_SANITIZED 1
#endif
#endif
#ifndef KILN_TEST_SANITIZED
#define KILN_TEST_SANITIZED 0
#endif

namespace kiln::fusion {
namespace {

// Points per sweep (each function, dtype): the whole float range log-spaced plus its core range.
constexpr size_t kSweep = KILN_TEST_SANITIZED ? 60000 : 1000000;

template <class T>
T unwrap(llvm::Expected<T> v, const char* what) {
  if (!v) throw std::runtime_error(std::string(what) + ": " + llvm::toString(v.takeError()));
  return std::move(*v);
}

// ---- the JIT harness ----------------------------------------------------------------------

using LoopFn = void (*)(const void* x, void* y, int64_t n);

std::string fn_name(ExprOp op, DType dt) {
  return std::string("k_") + expr_op_name(op) + (dt == DType::Float32 ? "_f32" : "_f64");
}

// Compiles one loop per (op, dtype) for the host CPU, with or without FMA.
class MathJit {
 public:
  MathJit(const std::vector<std::pair<ExprOp, DType>>& fns, bool fma) {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    auto jtmb = unwrap(llvm::orc::JITTargetMachineBuilder::detectHost(), "detectHost");
    for (const std::string& f : jtmb.getFeatures().getFeatures())
      if (f == "+fma" || f == "+fma4") host_has_fma_ = true;
    if (!fma) {
      jtmb.getFeatures().AddFeature("fma", false);
      jtmb.getFeatures().AddFeature("fma4", false);
    }
    std::unique_ptr<llvm::TargetMachine> tm = unwrap(jtmb.createTargetMachine(), "createTargetMachine");
    auto ctx = std::make_unique<llvm::LLVMContext>();
    auto m = std::make_unique<llvm::Module>("fusion_math_test", *ctx);
    m->setDataLayout(tm->createDataLayout());
    m->setTargetTriple(tm->getTargetTriple().str());
    for (auto [op, dt] : fns) build_loop(*m, op, dt, *tm);

    llvm::LoopAnalysisManager lam;
    llvm::FunctionAnalysisManager fam;
    llvm::CGSCCAnalysisManager cgam;
    llvm::ModuleAnalysisManager mam;
    llvm::PassBuilder pb(tm.get());
    pb.registerModuleAnalyses(mam);
    pb.registerCGSCCAnalyses(cgam);
    pb.registerFunctionAnalyses(fam);
    pb.registerLoopAnalyses(lam);
    pb.crossRegisterProxies(lam, fam, cgam, mam);
    pb.buildPerModuleDefaultPipeline(llvm::OptimizationLevel::O3).run(*m, mam);
    for (llvm::Function& f : *m) {
      if (f.isDeclaration()) continue;
      std::string text;
      llvm::raw_string_ostream os(text);
      f.print(os);
      os.flush();
      ir_[f.getName().str()] = text;
    }

    jit_ = unwrap(llvm::orc::LLJITBuilder().setJITTargetMachineBuilder(std::move(jtmb)).create(), "LLJIT");
    if (auto err = jit_->addIRModule(llvm::orc::ThreadSafeModule(std::move(m), std::move(ctx))))
      throw std::runtime_error("addIRModule: " + llvm::toString(std::move(err)));
    for (auto [op, dt] : fns) {
      auto sym = unwrap(jit_->lookup(fn_name(op, dt)), "lookup");
#if LLVM_VERSION_MAJOR >= 15
      fns_[fn_name(op, dt)] = sym.toPtr<LoopFn>();
#else
      fns_[fn_name(op, dt)] = reinterpret_cast<LoopFn>(static_cast<uintptr_t>(sym.getAddress()));
#endif
    }
  }

  LoopFn fn(ExprOp op, DType dt) const { return fns_.at(fn_name(op, dt)); }
  const std::string& ir(ExprOp op, DType dt) const { return ir_.at(fn_name(op, dt)); }
  bool host_has_fma() const { return host_has_fma_; }

 private:
  static void build_loop(llvm::Module& m, ExprOp op, DType dt, const llvm::TargetMachine& tm) {
    llvm::LLVMContext& ctx = m.getContext();
    llvm::Type* t = dt == DType::Float32 ? llvm::Type::getFloatTy(ctx) : llvm::Type::getDoubleTy(ctx);
    llvm::Type* i64 = llvm::Type::getInt64Ty(ctx);
    llvm::Type* pt = llvm::PointerType::getUnqual(t);
    auto* fty = llvm::FunctionType::get(llvm::Type::getVoidTy(ctx), {pt, pt, i64}, false);
    auto* f = llvm::Function::Create(fty, llvm::Function::ExternalLinkage, fn_name(op, dt), m);
    f->addParamAttr(0, llvm::Attribute::NoAlias);
    f->addParamAttr(1, llvm::Attribute::NoAlias);
    f->addFnAttr(llvm::Attribute::NoUnwind);
    f->addFnAttr("target-cpu", tm.getTargetCPU());
    f->addFnAttr("target-features", tm.getTargetFeatureString());
    llvm::Value* x = f->getArg(0);
    llvm::Value* y = f->getArg(1);
    llvm::Value* n = f->getArg(2);
    auto* entry = llvm::BasicBlock::Create(ctx, "entry", f);
    auto* loop = llvm::BasicBlock::Create(ctx, "loop", f);
    auto* exit = llvm::BasicBlock::Create(ctx, "exit", f);
    llvm::IRBuilder<> b(entry);
    b.CreateCondBr(b.CreateICmpSGT(n, b.getInt64(0)), loop, exit);
    b.SetInsertPoint(loop);
    llvm::PHINode* i = b.CreatePHI(i64, 2);
    i->addIncoming(b.getInt64(0), entry);
    llvm::Value* xi = b.CreateLoad(t, b.CreateGEP(t, x, i));
    b.CreateStore(emit_math(b, op, xi), b.CreateGEP(t, y, i));
    llvm::Value* next = b.CreateAdd(i, b.getInt64(1));
    i->addIncoming(next, b.GetInsertBlock());
    b.CreateCondBr(b.CreateICmpSLT(next, n), loop, exit);
    b.SetInsertPoint(exit);
    b.CreateRetVoid();
    std::string err;
    llvm::raw_string_ostream os(err);
    if (llvm::verifyFunction(*f, &os)) throw std::runtime_error("invalid IR for " + fn_name(op, dt) + ": " + os.str());
  }

  std::unique_ptr<llvm::orc::LLJIT> jit_;
  std::map<std::string, LoopFn> fns_;
  std::map<std::string, std::string> ir_;
  bool host_has_fma_ = false;
};

const std::vector<ExprOp> kAllOps = {ExprOp::Exp,   ExprOp::Exp2,  ExprOp::Expm1, ExprOp::Log,  ExprOp::Log2,
                                     ExprOp::Log10, ExprOp::Log1p, ExprOp::Tanh,  ExprOp::Erf,  ExprOp::Sin,
                                     ExprOp::Cos};

std::vector<std::pair<ExprOp, DType>> inline_fns() {
  std::vector<std::pair<ExprOp, DType>> v;
  for (ExprOp op : kAllOps)
    for (DType dt : {DType::Float32, DType::Float64})
      if (has_inline_math(op, dt)) v.emplace_back(op, dt);
  return v;
}

// One module with every function, per FMA setting, compiled on first use.
const MathJit& jit(bool fma) {
  static std::map<bool, std::unique_ptr<MathJit>> jits;
  auto& j = jits[fma];
  if (!j) j = std::make_unique<MathJit>(inline_fns(), fma);
  return *j;
}

template <class T>
std::vector<T> run(bool fma, ExprOp op, const std::vector<T>& x) {
  constexpr DType dt = std::is_same_v<T, float> ? DType::Float32 : DType::Float64;
  std::vector<T> y(x.size());
  jit(fma).fn(op, dt)(x.data(), y.data(), static_cast<int64_t>(x.size()));
  return y;
}

// ---- references and ulp errors ------------------------------------------------------------

// float32 against double, float64 against long double (x87: 64-bit significand).
template <class T>
using Ref = std::conditional_t<std::is_same_v<T, float>, double, long double>;

template <class R>
R reference(ExprOp op, R x) {
  switch (op) {
    case ExprOp::Exp: return std::exp(x);
    case ExprOp::Exp2: return std::exp2(x);
    case ExprOp::Expm1: return std::expm1(x);
    case ExprOp::Log: return std::log(x);
    case ExprOp::Log2: return std::log2(x);
    case ExprOp::Log10: return std::log10(x);
    case ExprOp::Log1p: return std::log1p(x);
    case ExprOp::Tanh: return std::tanh(x);
    case ExprOp::Erf: return std::erf(x);
    case ExprOp::Sin: return std::sin(x);
    case ExprOp::Cos: return std::cos(x);
    default: throw std::logic_error("no reference");
  }
}

// |y - ref| in units of the last place of T at ref (subnormal spacing below the normal range).
// Infinity counts as 2^emax, one ulp beyond the largest finite value; a NaN (of either, alone)
// is an infinite error; ±inf references must be met exactly.
template <class T>
double ulp_error(T y, Ref<T> ref) {
  using R = Ref<T>;
  using L = std::numeric_limits<T>;
  if (std::isnan(ref) || std::isnan(y)) return std::isnan(ref) && std::isnan(y) ? 0 : INFINITY;
  if (std::isinf(ref)) return y == ref ? 0 : INFINITY;
  if (std::isinf(y) && static_cast<T>(ref) == y) return 0;
  R yv = std::isinf(y) ? std::copysign(std::ldexp(R(1), L::max_exponent), R(y)) : R(y);
  int e = 0;
  std::frexp(ref, &e);
  R ulp = std::ldexp(R(1), std::max(e, L::min_exponent) - L::digits);
  return static_cast<double>(std::fabs(yv - ref) / ulp);
}

// ---- inputs ---------------------------------------------------------------------------------

template <class T>
using Bits = std::conditional_t<std::is_same_v<T, float>, int32_t, int64_t>;

// Floats in order as integers (-0 and +0 adjacent), so that uniform integers are log-spaced values.
template <class T>
Bits<T> to_ordered(T x) {
  auto i = std::bit_cast<Bits<T>>(x);
  return i < 0 ? std::numeric_limits<Bits<T>>::min() - i : i;
}
template <class T>
T from_ordered(Bits<T> i) {
  return std::bit_cast<T>(i < 0 ? std::numeric_limits<Bits<T>>::min() - i : i);
}

struct Domain {
  double lo, hi;            // the whole domain, sampled log-spaced (uniform in the ordered bits)
  double core_lo, core_hi;  // where the work is, sampled uniformly
  double near = 0;          // also sampled log-spaced around this point (0: none)
};

template <class T>
Domain domain(ExprOp op) {
  constexpr bool f32 = std::is_same_v<T, float>;
  const double max = std::numeric_limits<T>::max();
  switch (op) {
    case ExprOp::Exp: return f32 ? Domain{-max, max, -105, 89} : Domain{-max, max, -746, 710};
    case ExprOp::Exp2: return f32 ? Domain{-max, max, -151, 129} : Domain{-max, max, -1076, 1025};
    case ExprOp::Expm1: return f32 ? Domain{-max, max, -20, 89} : Domain{-max, max, -40, 710};
    case ExprOp::Log:
    case ExprOp::Log2:
    case ExprOp::Log10: return {0, max, 0.25, 4, 1};
    case ExprOp::Log1p: return {-1, max, -1, 3, -1};
    case ExprOp::Tanh: return {-max, max, -10, 10};
    case ExprOp::Erf: return {-max, max, -6.5, 6.5};
    case ExprOp::Sin:
    case ExprOp::Cos: return {-max, max, -1e4, 1e4};
    default: throw std::logic_error("no domain");
  }
}

template <class T>
std::vector<T> special_values() {
  using L = std::numeric_limits<T>;
  std::vector<T> v;
  for (T s : {T(1), T(-1)})
    for (T m : {T(0), L::denorm_min(), 2 * L::denorm_min(), L::min() / 2, L::min(), 2 * L::min(), L::epsilon() / 4,
                L::epsilon(), T(1e-3), T(0.25), T(0.5), T(1) - L::epsilon() / 2, T(1), T(1) + L::epsilon(), T(2),
                T(3), T(10), T(20), T(88.7), T(89), T(100), T(103.9), T(104), T(127), T(128), T(149), T(150),
                T(700), T(709.78), T(710), T(745), T(746), T(1022), T(1024), T(1074), T(1075), T(1e10),
                L::max() / 2, L::max(), L::infinity()})
      v.push_back(s * m);
  v.push_back(L::quiet_NaN());
  v.push_back(-L::quiet_NaN());
  return v;
}

template <class T>
std::vector<T> sweep(ExprOp op, size_t n) {
  Domain d = domain<T>(op);
  std::mt19937_64 rng(0x6b696c6e + static_cast<int>(op));
  std::vector<T> x = special_values<T>();
  auto bits_between = [&](double lo, double hi, size_t count) {
    std::uniform_int_distribution<Bits<T>> u(to_ordered(static_cast<T>(lo)), to_ordered(static_cast<T>(hi)));
    for (size_t i = 0; i < count; ++i) x.push_back(from_ordered<T>(u(rng)));
  };
  bits_between(d.lo, d.hi, n * 3 / 8);
  std::uniform_real_distribution<double> u(d.core_lo, d.core_hi);
  for (size_t i = 0; i < n * 3 / 8; ++i) x.push_back(static_cast<T>(u(rng)));
  // Around 0 (relative accuracy of small results), and around `near` (1 for logs, -1 for log1p).
  bits_between(-0.5, 0.5, n / 8);
  if (d.near != 0) {
    std::uniform_int_distribution<Bits<T>> v(to_ordered(T(-0.25)), to_ordered(T(0.25)));
    for (size_t i = 0; i < n / 8; ++i) x.push_back(static_cast<T>(d.near) + from_ordered<T>(v(rng)));
  }
  return x;
}

struct Worst {
  double ulp = 0;
  double at = 0;
  size_t count = 0;
};

template <class T>
Worst max_error(ExprOp op, const std::vector<T>& x, const std::vector<T>& y, const std::vector<Ref<T>>& ref) {
  Worst w;
  w.count = x.size();
  for (size_t i = 0; i < x.size(); ++i) {
    double e = ulp_error<T>(y[i], ref[i]);
    if (!(e <= w.ulp)) {
      w.ulp = e;
      w.at = static_cast<double>(x[i]);
    }
  }
  return w;
}

// The documented bounds (docs/fusion_math.md): max ulp per function, float32 then float64.
std::pair<double, double> bound(ExprOp op) {
  switch (op) {
    case ExprOp::Exp: return {1.5, 1};  // float32: eager's algorithm; <= 1 with FMA (eager's bits)
    case ExprOp::Exp2:
    case ExprOp::Expm1:
    case ExprOp::Log:
    case ExprOp::Log2:
    case ExprOp::Log10:
    case ExprOp::Log1p: return {1, 1};
    case ExprOp::Tanh:
    case ExprOp::Erf: return {2, 1};  // float32: eager's algorithms
    default: return {1, 1};
  }
}

template <class T>
void check_accuracy(ExprOp op) {
  constexpr DType dt = std::is_same_v<T, float> ? DType::Float32 : DType::Float64;
  if (!has_inline_math(op, dt)) GTEST_SKIP() << expr_op_name(op) << " is a libm call for this dtype";
  std::vector<T> x = sweep<T>(op, kSweep);
  std::vector<Ref<T>> ref(x.size());
  for (size_t i = 0; i < x.size(); ++i) ref[i] = reference<Ref<T>>(op, static_cast<Ref<T>>(x[i]));
  double b = dt == DType::Float32 ? bound(op).first : bound(op).second;
  for (bool fma : {true, false}) {
    std::vector<T> y = run<T>(fma, op, x);
    Worst w = max_error<T>(op, x, y, ref);
    std::printf("| %-6s | %s | %-8s | %.3f | %.9g | %zu |\n", expr_op_name(op), dt == DType::Float32 ? "float32" : "float64",
                fma ? (jit(true).host_has_fma() ? "fma" : "host") : "no fma", w.ulp, w.at, w.count);
    EXPECT_LE(w.ulp, b) << expr_op_name(op) << (fma ? "" : " without FMA") << " at x = " << w.at;
  }
}

#define KILN_ACCURACY_TEST(Op)                                       \
  TEST(FusionMathAccuracy, Op##Float32) { check_accuracy<float>(ExprOp::Op); } \
  TEST(FusionMathAccuracy, Op##Float64) { check_accuracy<double>(ExprOp::Op); }
KILN_ACCURACY_TEST(Exp)
KILN_ACCURACY_TEST(Exp2)
KILN_ACCURACY_TEST(Expm1)
KILN_ACCURACY_TEST(Log)
KILN_ACCURACY_TEST(Log2)
KILN_ACCURACY_TEST(Log10)
KILN_ACCURACY_TEST(Log1p)
KILN_ACCURACY_TEST(Tanh)
KILN_ACCURACY_TEST(Erf)
KILN_ACCURACY_TEST(Sin)
KILN_ACCURACY_TEST(Cos)

}  // namespace
}  // namespace kiln::fusion
