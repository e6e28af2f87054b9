#pragma once
// kiln's own elementary functions, emitted inline as LLVM IR: straight-line arithmetic,
// selects and bit casts (no calls, no branches), so the loop vectoriser turns them into SIMD.
// Accuracy per function is documented in docs/fusion_math.md and tested against float64.
#include <llvm/IR/IRBuilder.h>

#include "fusion/kernel_ir.h"

namespace kiln::fusion {

// Whether `op` on `dtype` (Float32 or Float64) has an inline implementation here; other
// elementary functions are calls into libm.
bool has_inline_math(ExprOp op, DType dtype);
// Emits op(x) for a scalar float or double `x` (has_inline_math must be true).
llvm::Value* emit_math(llvm::IRBuilderBase& b, ExprOp op, llvm::Value* x);

}  // namespace kiln::fusion
