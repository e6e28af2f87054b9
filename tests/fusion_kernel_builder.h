#pragma once
// Hand-built kernel IR for the codegen and cache suites: a small builder over fusion::Kernel and
// a runner that calls a compiled kernel on std::vector buffers.
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

#include "fusion/codegen.h"
#include "fusion/kernel_ir.h"

namespace kiln::testing {

struct KernelBuilder {
  fusion::Kernel k;

  explicit KernelBuilder(std::string name) { k.name = std::move(name); }

  static fusion::Int c(int64_t v) { return fusion::Int::constant(v); }
  fusion::Int param(int64_t value) { return fusion::Int{value, k.num_params++}; }

  KernelBuilder& dims(std::vector<fusion::Int> d, int num_outer) {
    k.dims = std::move(d);
    k.num_outer = num_outer;
    return *this;
  }
  int buffer(DType t, bool read, bool written, std::string label = "") {
    k.buffers.push_back({t, read, written, std::move(label)});
    return static_cast<int>(k.buffers.size()) - 1;
  }
  int index(fusion::Int offset, std::vector<fusion::Int> strides) {
    k.indices.push_back({offset, std::move(strides)});
    return static_cast<int>(k.indices.size()) - 1;
  }
  int expr(const fusion::Expr& e) {
    k.exprs.push_back(e);
    return static_cast<int>(k.exprs.size()) - 1;
  }
  int constant(DType t, double v) {
    fusion::Expr e;
    e.op = fusion::ExprOp::Const;
    e.dtype = t;
    e.value = v;
    e.ivalue = static_cast<int64_t>(v);
    return expr(e);
  }
  int iconstant(DType t, int64_t v) {
    fusion::Expr e;
    e.op = fusion::ExprOp::Const;
    e.dtype = t;
    e.ivalue = v;
    e.value = static_cast<double>(v);
    return expr(e);
  }
  int load(int buffer, int index) {
    fusion::Expr e;
    e.op = fusion::ExprOp::Load;
    e.dtype = k.buffers.at(static_cast<size_t>(buffer)).dtype;
    e.buffer = buffer;
    e.index = index;
    return expr(e);
  }
  int acc_value(int acc) {
    fusion::Expr e;
    e.op = fusion::ExprOp::Acc;
    e.dtype = k.accs.at(static_cast<size_t>(acc)).dtype;
    e.acc = acc;
    return expr(e);
  }
  int op(fusion::ExprOp o, DType t, int a, int b = -1, int c = -1) {
    fusion::Expr e;
    e.op = o;
    e.dtype = t;
    e.args[0] = a;
    e.args[1] = b;
    e.args[2] = c;
    return expr(e);
  }
  int cast(DType t, int a) { return op(fusion::ExprOp::Cast, t, a); }
  int acc(fusion::ReduceOp o, DType t, int value, int stage) {
    k.accs.push_back({o, t, value, stage});
    k.num_stages = std::max(k.num_stages, stage + 1);
    return static_cast<int>(k.accs.size()) - 1;
  }
  void store(int buffer, int index, int value, int stage = -1) {
    k.stores.push_back({buffer, index, value, stage});
    k.num_stages = std::max(k.num_stages, stage + 1);
  }
};

// Calls `fn` over dims[0] in [begin, end) with the given buffers (base pointers) and params.
inline void run_kernel(const fusion::CompiledKernel& ck, std::initializer_list<void*> buffers, std::vector<int64_t> params,
                       int64_t begin, int64_t end) {
  std::vector<char*> bases;
  for (void* p : buffers) bases.push_back(static_cast<char*>(p));
  ck.fn(bases.data(), params.empty() ? nullptr : params.data(), begin, end);
}

inline std::shared_ptr<const fusion::CompiledKernel> compile_one(const fusion::Kernel& k, fusion::CodegenOptions options = {}) {
  return fusion::compile_kernels({&k}, options).at(0);
}

}  // namespace kiln::testing
