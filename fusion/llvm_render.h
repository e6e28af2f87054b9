#pragma once
// Kernel IR -> LLVM IR: one function per kernel,
//   void <symbol>(i8** buffers, i64* params, i64 begin, i64 end)
// whose loops the O2 pipeline turns into SIMD code (see llvm_render.cpp for the shape).
#include <llvm/IR/Function.h>
#include <llvm/IR/Module.h>

#include <string>

#include "fusion/kernel_ir.h"

namespace kiln::fusion {

// Adds the kernel's function to `module` (which has its data layout set). The kernel must
// verify(); a construct the renderer cannot express raises kiln::InternalError.
llvm::Function* render_kernel(llvm::Module& module, const Kernel& kernel, const std::string& symbol);

}  // namespace kiln::fusion
