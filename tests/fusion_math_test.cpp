// kiln's inline elementary functions (fusion/llvm_math.h), compiled by a small ORC LLJIT
// harness into `void f(const T* x, T* y, int64_t n)` loops at O3 for the host CPU, and once
// more with FMA switched off (the functions must not depend on fused rounding). Checks:
// max ulp error against float64 (for float32) / long double (for float64) references over wide
// sweeps, special values exactly, vectorised loops without calls, and float32 agreement with
// eager's kernels/scalar_math.h. Run it alone to print the ulp table of docs/fusion_math.md.
#include <gtest/gtest.h>

#if KILN_HAVE_LLVM
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
#include <cstdlib>
#include <limits>
#include <map>
#include <memory>
#include <random>
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
// $KILN_FUSION_MATH_POINTS overrides it for longer runs.
size_t sweep_points() {
  const char* env = std::getenv("KILN_FUSION_MATH_POINTS");
  if (env && std::atoll(env) > 0) return static_cast<size_t>(std::atoll(env));
  return KILN_TEST_SANITIZED ? 60000 : 1000000;
}

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

// Compiles one loop per (op, dtype) for the host CPU, with or without FMA; `fast_builder`
// hands emit_math a builder with every fast-math flag set (it must not use them).
class MathJit {
 public:
  MathJit(const std::vector<std::pair<ExprOp, DType>>& fns, bool fma, bool fast_builder = false) {
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
    for (auto [op, dt] : fns) build_loop(*m, op, dt, *tm, fast_builder);

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
  static void build_loop(llvm::Module& m, ExprOp op, DType dt, const llvm::TargetMachine& tm, bool fast_builder) {
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
    if (fast_builder) b.setFastMathFlags(llvm::FastMathFlags::getFast());
    b.CreateStore(emit_math(b, op, xi), b.CreateGEP(t, y, i));
    if (fast_builder && !b.getFastMathFlags().isFast()) throw std::runtime_error("emit_math did not restore the flags");
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

// Compiled on first use and kept: one module per function (a test process compiles only what
// it runs), or one with every function.
const MathJit& jit(const std::vector<std::pair<ExprOp, DType>>& fns, bool fma, bool fast_builder = false) {
  static std::map<std::tuple<std::vector<std::pair<ExprOp, DType>>, bool, bool>, std::unique_ptr<MathJit>> jits;
  auto& j = jits[{fns, fma, fast_builder}];
  if (!j) j = std::make_unique<MathJit>(fns, fma, fast_builder);
  return *j;
}

template <class T>
constexpr DType dtype_of = std::is_same_v<T, float> ? DType::Float32 : DType::Float64;

// Every inline function of one dtype, in one module.
std::vector<std::pair<ExprOp, DType>> inline_fns(DType dt) {
  std::vector<std::pair<ExprOp, DType>> v;
  for (auto f : inline_fns())
    if (f.second == dt) v.push_back(f);
  return v;
}

// y = op(x) through the compiled loop: from a module of its own (the sweeps: a test process
// compiles only what it runs) or from the module of every function of the dtype (the tests
// that visit them all).
template <class T>
std::vector<T> run(bool fma, ExprOp op, const std::vector<T>& x, bool own_module = true) {
  std::vector<T> y(x.size());
  const MathJit& j = own_module ? jit({{op, dtype_of<T>}}, fma) : jit(inline_fns(dtype_of<T>), fma);
  j.fn(op, dtype_of<T>)(x.data(), y.data(), static_cast<int64_t>(x.size()));
  return y;
}

bool host_has_fma() { return jit({{ExprOp::Exp, DType::Float32}}, true).host_has_fma(); }

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
  ASSERT_TRUE(has_inline_math(op, dt)) << expr_op_name(op);
  std::vector<T> x = sweep<T>(op, sweep_points());
  std::vector<Ref<T>> ref(x.size());
  for (size_t i = 0; i < x.size(); ++i) ref[i] = reference<Ref<T>>(op, static_cast<Ref<T>>(x[i]));
  double b = dt == DType::Float32 ? bound(op).first : bound(op).second;
  for (bool fma : {true, false}) {
    std::vector<T> y = run<T>(fma, op, x);
    Worst w = max_error<T>(op, x, y, ref);
    std::printf("| %-6s | %s | %-8s | %.3f | %.17g | %zu |\n", expr_op_name(op), dt == DType::Float32 ? "float32" : "float64",
                fma ? (host_has_fma() ? "fma" : "host") : "no fma", w.ulp, w.at, w.count);
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
TEST(FusionMathAccuracy, SinFloat32) { check_accuracy<float>(ExprOp::Sin); }
TEST(FusionMathAccuracy, CosFloat32) { check_accuracy<float>(ExprOp::Cos); }

// ---- special values, exactly ------------------------------------------------------------

struct Exact {
  ExprOp op;
  double x, y;  // y NaN: any NaN; zeros compare with their sign
};

template <class T>
std::vector<Exact> exact_cases() {
  using L = std::numeric_limits<T>;
  constexpr bool f32 = std::is_same_v<T, float>;
  const double inf = INFINITY, nan = NAN, dmin = L::denorm_min(), nmin = L::min(), max = L::max();
  std::vector<Exact> v = {
      {ExprOp::Exp, inf, inf}, {ExprOp::Exp, -inf, 0}, {ExprOp::Exp, nan, nan}, {ExprOp::Exp, 0.0, 1},
      {ExprOp::Exp, -0.0, 1}, {ExprOp::Exp, dmin, 1}, {ExprOp::Exp, -dmin, 1}, {ExprOp::Exp, 1e-30, 1},
      {ExprOp::Exp, 1000, inf}, {ExprOp::Exp, -1000, 0}, {ExprOp::Exp, max, inf}, {ExprOp::Exp, -max, 0},
      {ExprOp::Exp2, inf, inf}, {ExprOp::Exp2, -inf, 0}, {ExprOp::Exp2, nan, nan}, {ExprOp::Exp2, 0.0, 1},
      {ExprOp::Exp2, -0.0, 1}, {ExprOp::Exp2, 1, 2}, {ExprOp::Exp2, 10, 1024}, {ExprOp::Exp2, -3, 0.125},
      {ExprOp::Exp2, 5000, inf}, {ExprOp::Exp2, -5000, 0},
      {ExprOp::Expm1, inf, inf}, {ExprOp::Expm1, -inf, -1}, {ExprOp::Expm1, nan, nan}, {ExprOp::Expm1, 0.0, 0.0},
      {ExprOp::Expm1, -0.0, -0.0}, {ExprOp::Expm1, dmin, dmin}, {ExprOp::Expm1, -dmin, -dmin},
      {ExprOp::Expm1, nmin, nmin}, {ExprOp::Expm1, -nmin, -nmin}, {ExprOp::Expm1, 1000, inf},
      {ExprOp::Expm1, -1000, -1}, {ExprOp::Expm1, -max, -1},
      {ExprOp::Log, 0.0, -inf}, {ExprOp::Log, -0.0, -inf}, {ExprOp::Log, -1, nan}, {ExprOp::Log, -dmin, nan},
      {ExprOp::Log, -inf, nan}, {ExprOp::Log, inf, inf}, {ExprOp::Log, nan, nan}, {ExprOp::Log, 1, 0.0},
      {ExprOp::Log2, 0.0, -inf}, {ExprOp::Log2, -0.0, -inf}, {ExprOp::Log2, -1, nan}, {ExprOp::Log2, -inf, nan},
      {ExprOp::Log2, inf, inf}, {ExprOp::Log2, nan, nan}, {ExprOp::Log2, 1, 0.0}, {ExprOp::Log2, 2, 1},
      {ExprOp::Log2, 0.5, -1}, {ExprOp::Log2, 1024, 10}, {ExprOp::Log2, dmin, f32 ? -149 : -1074},
      {ExprOp::Log2, nmin, f32 ? -126 : -1022}, {ExprOp::Log2, max, f32 ? 128 : 1024},
      {ExprOp::Log10, 0.0, -inf}, {ExprOp::Log10, -0.0, -inf}, {ExprOp::Log10, -1, nan}, {ExprOp::Log10, -inf, nan},
      {ExprOp::Log10, inf, inf}, {ExprOp::Log10, nan, nan}, {ExprOp::Log10, 1, 0.0}, {ExprOp::Log10, 10, 1},
      {ExprOp::Log10, 100, 2}, {ExprOp::Log10, 1000, 3},
      {ExprOp::Log1p, 0.0, 0.0}, {ExprOp::Log1p, -0.0, -0.0}, {ExprOp::Log1p, -1, -inf}, {ExprOp::Log1p, -2, nan},
      {ExprOp::Log1p, -inf, nan}, {ExprOp::Log1p, inf, inf}, {ExprOp::Log1p, nan, nan}, {ExprOp::Log1p, dmin, dmin},
      {ExprOp::Log1p, -dmin, -dmin}, {ExprOp::Log1p, nmin, nmin}, {ExprOp::Log1p, -nmin, -nmin},
      {ExprOp::Tanh, 0.0, 0.0}, {ExprOp::Tanh, -0.0, -0.0}, {ExprOp::Tanh, inf, 1}, {ExprOp::Tanh, -inf, -1},
      {ExprOp::Tanh, nan, nan}, {ExprOp::Tanh, 20, 1}, {ExprOp::Tanh, -20, -1}, {ExprOp::Tanh, max, 1},
      {ExprOp::Tanh, -max, -1}, {ExprOp::Tanh, dmin, dmin}, {ExprOp::Tanh, -dmin, -dmin}, {ExprOp::Tanh, nmin, nmin},
      {ExprOp::Erf, 0.0, 0.0}, {ExprOp::Erf, -0.0, -0.0}, {ExprOp::Erf, inf, 1}, {ExprOp::Erf, -inf, -1},
      {ExprOp::Erf, nan, nan}, {ExprOp::Erf, 6, 1}, {ExprOp::Erf, -6, -1}, {ExprOp::Erf, max, 1},
      {ExprOp::Erf, -max, -1}, {ExprOp::Erf, dmin, dmin}, {ExprOp::Erf, -dmin, -dmin},
      {ExprOp::Sin, 0.0, 0.0}, {ExprOp::Sin, -0.0, -0.0}, {ExprOp::Sin, inf, nan}, {ExprOp::Sin, -inf, nan},
      {ExprOp::Sin, nan, nan}, {ExprOp::Sin, dmin, dmin}, {ExprOp::Sin, -dmin, -dmin}, {ExprOp::Sin, nmin, nmin},
      {ExprOp::Cos, 0.0, 1}, {ExprOp::Cos, -0.0, 1}, {ExprOp::Cos, inf, nan}, {ExprOp::Cos, -inf, nan},
      {ExprOp::Cos, nan, nan}, {ExprOp::Cos, dmin, 1}, {ExprOp::Cos, -dmin, 1},
  };
  if (f32) {
    v.insert(v.end(), {{ExprOp::Exp, 89, inf}, {ExprOp::Exp, -104, 0}, {ExprOp::Exp2, 127, 0x1p127},
                       {ExprOp::Exp2, 128, inf}, {ExprOp::Exp2, -126, 0x1p-126}, {ExprOp::Exp2, -149, 0x1p-149},
                       {ExprOp::Exp2, -150, 0}, {ExprOp::Expm1, 89, inf}, {ExprOp::Expm1, -20, -1}});
  } else {
    v.insert(v.end(), {{ExprOp::Exp, 710, inf}, {ExprOp::Exp, -746, 0}, {ExprOp::Exp2, 1023, 0x1p1023},
                       {ExprOp::Exp2, 1024, inf}, {ExprOp::Exp2, -1022, 0x1p-1022}, {ExprOp::Exp2, -1074, 0x1p-1074},
                       {ExprOp::Exp2, -1075, 0}, {ExprOp::Expm1, 710, inf}, {ExprOp::Expm1, -40, -1}});
  }
  return v;
}

bool same(double got, double want) {
  if (std::isnan(want)) return std::isnan(got);
  return got == want && std::signbit(got) == std::signbit(want);
}

template <class T>
void check_exact() {
  for (const Exact& c : exact_cases<T>()) {
    if (!has_inline_math(c.op, dtype_of<T>)) continue;
    for (bool fma : {true, false}) {
      T y = run<T>(fma, c.op, {static_cast<T>(c.x)}, false)[0];
      EXPECT_TRUE(same(y, static_cast<T>(c.y)))
          << expr_op_name(c.op) << "(" << c.x << ") = " << y << ", expected " << c.y << (fma ? "" : " (no FMA)");
    }
  }
  // Every special value: NaN exactly when the reference is NaN (a NaN input's sign does not
  // matter), infinities and zeros (with their sign) exactly as the rounded reference, and
  // subnormal results (exp, exp2 near underflow) within the bound.
  for (ExprOp op : kAllOps) {
    if (!has_inline_math(op, dtype_of<T>)) continue;
    std::vector<T> x = special_values<T>();
    for (bool fma : {true, false}) {
      std::vector<T> y = run<T>(fma, op, x, false);
      for (size_t i = 0; i < x.size(); ++i) {
        Ref<T> ref = reference<Ref<T>>(op, static_cast<Ref<T>>(x[i]));
        T want = static_cast<T>(ref);
        if (std::isnan(want) || std::isinf(want) || want == 0 || std::isinf(y[i]) || y[i] == 0) {
          EXPECT_TRUE(same(y[i], want)) << expr_op_name(op) << "(" << x[i] << ") = " << y[i] << ", libm gives "
                                        << want << (fma ? "" : " (no FMA)");
        }
        double b = dtype_of<T> == DType::Float32 ? bound(op).first : bound(op).second;
        EXPECT_LE(ulp_error<T>(y[i], ref), b) << expr_op_name(op) << "(" << x[i] << ") = " << y[i];
      }
    }
  }
}

TEST(FusionMath, SpecialValuesFloat32) { check_exact<float>(); }
TEST(FusionMath, SpecialValuesFloat64) { check_exact<double>(); }

// NaN in, NaN out, whatever its sign and payload.
TEST(FusionMath, NanPropagates) {
  for (ExprOp op : kAllOps) {
    if (has_inline_math(op, DType::Float32)) {
      std::vector<float> x = {std::bit_cast<float>(0x7fc00001u), std::bit_cast<float>(0xffc00000u),
                              std::bit_cast<float>(0x7fbfffffu)};
      for (float y : run<float>(true, op, x, false)) EXPECT_TRUE(std::isnan(y)) << expr_op_name(op);
    }
    if (has_inline_math(op, DType::Float64)) {
      std::vector<double> x = {std::bit_cast<double>(0x7ff8000000000001ull), std::bit_cast<double>(0xfff8000000000000ull),
                               std::bit_cast<double>(0x7ff7ffffffffffffull)};
      for (double y : run<double>(true, op, x, false)) EXPECT_TRUE(std::isnan(y)) << expr_op_name(op);
    }
  }
}

// A caller's fast-math flags (nnan, ninf, nsz, contract, ...) must not leak into the functions:
// they would license deleting the special-value handling. The special values, through loops
// built with a fast-math builder, are what they are without.
TEST(FusionMath, IgnoresCallerFastMathFlags) {
  auto check = [](auto zero) {
    using T = decltype(zero);
    constexpr DType dt = dtype_of<T>;
    const MathJit& fast = jit(inline_fns(dt), true, true);
    std::vector<T> x = special_values<T>();
    for (ExprOp op : kAllOps) {
      if (!has_inline_math(op, dt)) continue;
      std::vector<T> want = run<T>(true, op, x, false), got(x.size());
      fast.fn(op, dt)(x.data(), got.data(), static_cast<int64_t>(x.size()));
      for (size_t i = 0; i < x.size(); ++i)
        EXPECT_TRUE(same(got[i], want[i])) << expr_op_name(op) << "(" << x[i] << "): " << got[i] << " with the caller's "
                                           << "fast-math flags, " << want[i] << " without";
    }
  };
  check(0.0f);
  check(0.0);
}

// ---- code shape ----------------------------------------------------------------------------

// The functions this module promises inline for both float dtypes (docs/fusion_math.md), and
// nothing for other dtypes or ops.
TEST(FusionMath, Coverage) {
  for (ExprOp op : {ExprOp::Exp, ExprOp::Exp2, ExprOp::Expm1, ExprOp::Log, ExprOp::Log2, ExprOp::Log10, ExprOp::Log1p,
                    ExprOp::Tanh, ExprOp::Erf, ExprOp::Sin, ExprOp::Cos}) {
    EXPECT_TRUE(has_inline_math(op, DType::Float32)) << expr_op_name(op);
    // float64 sin/cos would need ~1100 bits of 2/pi for their range reduction: libm.
    bool f64 = op != ExprOp::Sin && op != ExprOp::Cos;
    EXPECT_EQ(has_inline_math(op, DType::Float64), f64) << expr_op_name(op);
    for (DType dt : {DType::Float16, DType::BFloat16, DType::Int32, DType::Int64, DType::Bool})
      EXPECT_FALSE(has_inline_math(op, dt)) << expr_op_name(op);
  }
  for (ExprOp op : {ExprOp::Tan, ExprOp::Sqrt, ExprOp::Pow, ExprOp::Fmod, ExprOp::Add, ExprOp::Floor})
    EXPECT_FALSE(has_inline_math(op, DType::Float32)) << expr_op_name(op);
}

// The loops vectorise (the vectoriser only takes straight-line code without calls), and the
// only calls left are LLVM intrinsics (fmuladd), never libm.
// The widest "<N x type>" in the IR (0: none).
int vector_width(const std::string& ir, const std::string& type) {
  int widest = 0;
  const std::string tail = " x " + type + ">";
  for (size_t at = ir.find(tail); at != std::string::npos; at = ir.find(tail, at + 1)) {
    size_t open = ir.rfind('<', at);
    if (open == std::string::npos) continue;
    std::string n = ir.substr(open + 1, at - open - 1);
    if (!n.empty() && n.find_first_not_of("0123456789") == std::string::npos) widest = std::max(widest, std::stoi(n));
  }
  return widest;
}

// Names of the functions called in the IR ("call ... @name(").
std::vector<std::string> callees(const std::string& ir) {
  std::vector<std::string> names;
  for (size_t at = ir.find(" call "); at != std::string::npos; at = ir.find(" call ", at + 1)) {
    size_t name = ir.find('@', at);
    size_t end = ir.find('(', name);
    if (name != std::string::npos && end != std::string::npos) names.push_back(ir.substr(name + 1, end - name - 1));
  }
  return names;
}

TEST(FusionMath, LoopsVectoriseWithoutCalls) {
  for (auto [op, dt] : inline_fns()) {
    const std::string& ir = jit(inline_fns(dt), true).ir(op, dt);
    const char* type = dt == DType::Float32 ? "float" : "double";
    int width = vector_width(ir, type);
    std::printf("%s: <%d x %s>\n", fn_name(op, dt).c_str(), width, type);
    EXPECT_GE(width, 2) << fn_name(op, dt) << " did not vectorise:\n" << ir;
    for (const std::string& callee : callees(ir))
      EXPECT_EQ(callee.rfind("llvm.", 0), 0u) << fn_name(op, dt) << " calls " << callee;
  }
}

// ---- agreement with eager -----------------------------------------------------------------

// float32 exp/log/tanh/erf follow kernels/scalar_math.h operation for operation: with FMA in
// the target (llvm.fmuladd fused where eager calls fmaf) the bits are eager's; without, within
// the accuracy bounds of both.
TEST(FusionMath, Float32MatchesEager) {
  struct Case {
    ExprOp op;
    float (*eager)(float);
  };
  for (Case c : {Case{ExprOp::Exp, math::exp_f32}, Case{ExprOp::Log, math::log_f32}, Case{ExprOp::Tanh, math::tanh_f32},
                 Case{ExprOp::Erf, math::erf_f32}}) {
    std::vector<float> x = sweep<float>(c.op, sweep_points() / 4);
    std::vector<float> y = run<float>(true, c.op, x);
    size_t differ = 0;
    int64_t max_dist = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      float want = c.eager(x[i]);
      if (std::isnan(want) && std::isnan(y[i])) continue;
      int64_t d = std::abs(int64_t{to_ordered(y[i])} - int64_t{to_ordered(want)});
      differ += d != 0;
      max_dist = std::max(max_dist, d);
    }
    std::printf("%s float32 vs eager: %zu of %zu differ, by at most %lld ulp\n", expr_op_name(c.op), differ, x.size(),
                static_cast<long long>(max_dist));
    if (host_has_fma()) EXPECT_EQ(differ, 0u) << expr_op_name(c.op);
    else EXPECT_LE(max_dist, 2) << expr_op_name(c.op);
  }
}

}  // namespace
}  // namespace kiln::fusion

#else  // !KILN_HAVE_LLVM

// Without LLVM there is no codegen and no inline math to test.
TEST(FusionMath, NeedsLlvm) { GTEST_SKIP() << "kiln was built without LLVM"; }

#endif
