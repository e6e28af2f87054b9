#include "fusion/llvm_math.h"

#include "core/error.h"

namespace kiln::fusion {

// The inline implementations are not written yet: every elementary function is a libm call.
bool has_inline_math(ExprOp, DType) { return false; }

llvm::Value* emit_math(llvm::IRBuilderBase&, ExprOp op, llvm::Value*) {
  KILN_INTERNAL_ASSERT(false, "emit_math: no inline implementation of ", expr_op_name(op));
  return nullptr;
}

}  // namespace kiln::fusion
