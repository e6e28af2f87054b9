#pragma once
// Kernel IR: one fused CPU kernel as a loop nest over an iteration space.
//
// The iteration space has `dims` (sizes); the first `num_outer` are kept dims: every point of
// them is independent, and the runtime splits dims[0] across threads. The remaining dims are
// reduced. For each outer point the kernel runs its `num_stages` stages in order: stage s loops
// over all reduced dims, folding the accumulators of stage s and doing the stores of stage s.
// Then the stores of stage -1 run once at the outer point. So:
//   pointwise           : num_outer = all dims, no stages, stores at stage -1
//   x.sum(-1)           : one stage folding Sum(x), then a store of Acc at stage -1
//   softmax over rows   : stage 0 Max, stage 1 Sum(exp(x - acc0)), stage 2 stores exp(x - acc0) / acc1
// Expressions are SSA (exprs[i] only refers to exprs[j < i]); an expression is evaluated where
// it is used (stage loop body or outer point), so it may only read accumulators of earlier
// stages. Loads and stores address their buffer in elements through an affine Index over all
// dims (stride 0 for dims the access does not depend on).
//
// Integers (sizes, strides, offsets) are constants, or runtime parameters read from the params
// array: a kernel built for a dynamic batch size is reused for every size.
//
// Generated function (C ABI), processing dims[0] in [begin, end):
//   void kernel(char* const* buffers, const int64_t* params, int64_t begin, int64_t end)
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace kiln::fusion {

struct Int {
  int64_t value = 0;  // constant, or the value the parameter had when the kernel was built
  int param = -1;     // >= 0: read params[param] at run time
  bool is_const() const { return param < 0; }
  static Int constant(int64_t v) { return Int{v, -1}; }
};

enum class ExprOp : uint8_t {
  Const,   // value / ivalue in `dtype`
  Load,    // buffers[buffer][index]
  Acc,     // the final value of accumulator `acc` (after its stage)
  Cast,    // args[0] converted to `dtype` (float->int truncates, ->bool is != 0)
  // unary, dtype = operand dtype (IsNan, Not: Bool)
  Neg, Abs, Exp, Exp2, Log, Log2, Log10, Log1p, Expm1, Sqrt, Sin, Cos, Tan, Tanh, Erf,
  Floor, Ceil, Round /* half to even */, Trunc, IsNan, Not,
  // binary, operands of one dtype; comparisons and And/Or give Bool
  Add, Sub, Mul, Div, Fmod, Pow, Lt, Le, Gt, Ge, Eq, Ne, And, Or,
  Select,  // args[0] (Bool) ? args[1] : args[2]
};
const char* expr_op_name(ExprOp op);
int expr_arity(ExprOp op);  // 0 for Const/Load/Acc

struct Expr {
  ExprOp op = ExprOp::Const;
  DType dtype = DType::Float32;
  int args[3] = {-1, -1, -1};
  double value = 0;    // Const of a floating or bool dtype
  int64_t ivalue = 0;  // Const of an integer dtype
  int buffer = -1;     // Load
  int index = -1;      // Load
  int acc = -1;        // Acc
};

// Element address: offset + sum over dims d of strides[d] * i_d (strides.size() == dims.size()).
struct Index {
  Int offset;
  std::vector<Int> strides;
};

struct Buffer {
  DType dtype = DType::Float32;
  bool read = false, written = false;
  std::string label;  // what it is in the graph ("%12", "input 0"), for dumps
};

enum class ReduceOp : uint8_t { Sum, Prod, Max, Min };  // Max/Min propagate NaN
const char* reduce_op_name(ReduceOp op);

struct Accumulator {
  ReduceOp op = ReduceOp::Sum;
  DType dtype = DType::Float32;  // accumulation dtype (the value's)
  int value = -1;                // expr folded at every reduced point of its stage
  int stage = 0;
};

struct Store {
  int buffer = -1;
  int index = -1;
  int value = -1;  // expr; converted to the buffer's dtype
  int stage = -1;  // -1: at the outer point, after all stages
};

struct Kernel {
  std::string name;  // symbol prefix and dump name; not part of the key
  std::vector<Int> dims;
  int num_outer = 0;
  int num_stages = 0;
  int num_params = 0;
  std::vector<Buffer> buffers;
  std::vector<Index> indices;
  std::vector<Expr> exprs;
  std::vector<Accumulator> accs;
  std::vector<Store> stores;
  // The stores write more than the last-level cache holds: the renderer streams them past the
  // cache (non-temporal, 32-byte aligned) where it can, sparing the read for ownership of every
  // written line (docs/fusion.md, "Generated code").
  bool stream_stores = false;

  // Readable listing (docs/fusion.md explains it).
  std::string str() const;
  // Canonical structure: everything that changes the generated code (not the name, not the
  // current values of parameters). Equal keys -> the same machine code.
  std::string key() const;
  // Checks the invariants the renderers rely on; raises an internal error naming the broken one.
  void verify() const;
  // Current parameter values (Int::value of every param), indexed by param id.
  std::vector<int64_t> param_values() const;
};

// What one run over the whole iteration space moves and computes (the profiler's GB/s and
// GFLOP/s; docs/profiling.md). bytes: per buffer, the elements its widest access spans (the
// product of the dims it has a non-zero stride in), once if read and once more if written.
// flops: one per evaluation of an expression with operands (casts excepted), where it is
// evaluated (once per outer point for stage -1, once per point of the stage loop otherwise),
// plus one per accumulator fold.
struct KernelCost {
  int64_t bytes = 0;
  double flops = 0;
};
KernelCost estimate_cost(const Kernel& k);

}  // namespace kiln::fusion
