#include "fusion/llvm_render.h"

#include <llvm/IR/Constants.h>
#include <llvm/IR/IRBuilder.h>
#include <llvm/IR/Intrinsics.h>
#include <llvm/IR/MDBuilder.h>

#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/half.h"
#include "fusion/llvm_compat.h"
#include "fusion/llvm_math.h"
#include "kernels/formulas.h"

// Shape of the generated function (all integers i64):
//
//   entry:   load every params[k] and buffers[b] once (before any store, so that nothing the
//            kernel writes can change them), accumulator slots as allocas (SROA makes them phis)
//   for i0 in [begin, end), i1.. in [0, dims) up to num_outer:       outer point
//     for each stage s: init its accumulators;
//       for the reduced dims (innermost = last dim): fold the accumulators, do the stores of s
//     stores of stage -1
//
// Column reductions (the kernel's loads run contiguously along the last kept dim and not along
// the reduced ones, e.g. a bias gradient summing [batch, features] over the batch) interchange
// the last kept dim inwards, in tiles of kColumnTile points whose accumulators live in arrays:
//   for the outer dims but the last; for each tile [j0, j1) of the last:
//     for each stage s: for j in tile: init its accumulators[j]
//       for the reduced dims: for j in tile: fold accumulators[j], do the stores of s
//     for j in tile: stores of stage -1
// so the innermost loop walks memory contiguously and vectorises, where the row order would
// stride by a whole row per element.
//
// Loops are rotated (guard, then a do-while with a single i64 phi counting up by one), addresses
// are `offset + sum stride_d * i_d` with nsw arithmetic, so SCEV sees affine accesses and the loop
// vectoriser needs no help. Each buffer gets its own alias scope (!alias.scope / !noalias), which
// tells the vectoriser that distinct buffers never overlap: no runtime alias checks.
// Expressions are emitted where they are used, memoised per loop body; LICM hoists the invariant
// ones (loads of buffers the loop does not write, libm calls marked readnone).

namespace kiln::fusion {
namespace {

using llvm::Type;
using llvm::Value;

bool is_unsigned_int(DType t) { return t == DType::Bool || t == DType::UInt8; }
bool is_half_like(DType t) { return t == DType::Float16 || t == DType::BFloat16; }

class Renderer {
 public:
  Renderer(llvm::Module& m, const Kernel& k) : m_(m), ctx_(m.getContext()), k_(k), b_(m.getContext()) {}

  llvm::Function* render(const std::string& symbol) {
    k_.verify();
    Type* i8p = llvm_compat::pointer_to(b_.getInt8Ty());
    Type* i64 = b_.getInt64Ty();
    auto* fty = llvm::FunctionType::get(b_.getVoidTy(), {llvm_compat::pointer_to(i8p), llvm_compat::pointer_to(i64), i64, i64}, false);
    fn_ = llvm::Function::Create(fty, llvm::Function::ExternalLinkage, symbol, m_);
    fn_->setDoesNotThrow();
    for (unsigned a = 0; a < 2; ++a) {
      fn_->addParamAttr(a, llvm::Attribute::NoCapture);
      fn_->addParamAttr(a, llvm::Attribute::ReadOnly);
    }
    llvm::Argument* buffers = fn_->getArg(0);
    llvm::Argument* params = fn_->getArg(1);
    llvm::Argument* begin = fn_->getArg(2);
    llvm::Argument* end = fn_->getArg(3);
    buffers->setName("buffers");
    params->setName("params");
    begin->setName("begin");
    end->setName("end");

    b_.SetInsertPoint(llvm::BasicBlock::Create(ctx_, "entry", fn_));
    make_alias_scopes();
    for (const Accumulator& a : k_.accs) {
      Type* t = compute_type(a.dtype);
      AccSlot slot;
      slot.value = b_.CreateAlloca(t, nullptr, "acc");
      if (is_floating_point(a.dtype) && (a.op == ReduceOp::Max || a.op == ReduceOp::Min))
        slot.saw_nan = b_.CreateAlloca(b_.getInt1Ty(), nullptr, "acc.nan");
      slots_.push_back(slot);
    }
    for (int p = 0; p < k_.num_params; ++p) {
      Value* ptr = b_.CreateConstInBoundsGEP1_64(i64, params, static_cast<uint64_t>(p));
      params_.push_back(b_.CreateAlignedLoad(i64, ptr, llvm::Align(8), "p" + std::to_string(p)));
    }
    for (size_t i = 0; i < k_.buffers.size(); ++i) {
      Value* ptr = b_.CreateConstInBoundsGEP1_64(i8p, buffers, i);
      Value* raw = b_.CreateAlignedLoad(i8p, ptr, llvm::Align(8));
      bufs_.push_back(b_.CreateBitCast(raw, llvm_compat::pointer_to(mem_type(k_.buffers[i].dtype)), "b" + std::to_string(i)));
    }
    memo_.assign(k_.exprs.size(), nullptr);
    find_inner_varying();
    acc_final_.assign(k_.accs.size(), nullptr);
    iv_.assign(k_.dims.size(), nullptr);

    stream_ = k_.stream_stores && can_stream();
    columns_ = !stream_ && column_reduction();
    if (columns_) {
      b_.SetInsertPoint(&fn_->getEntryBlock(), fn_->getEntryBlock().getFirstInsertionPt());
      for (size_t a = 0; a < k_.accs.size(); ++a) {
        auto* arr = llvm::ArrayType::get(compute_type(k_.accs[a].dtype), kColumnTile);
        tiles_.push_back({b_.CreateAlloca(arr, nullptr, "acc.tile"),
                          slots_[a].saw_nan ? b_.CreateAlloca(llvm::ArrayType::get(b_.getInt1Ty(), kColumnTile), nullptr, "acc.nan.tile")
                                            : nullptr});
      }
      b_.SetInsertPoint(&fn_->getEntryBlock());
    }
    loop_nest(0, k_.num_outer, begin, end, [&] { outer_point(); });
    // Non-temporal stores are weakly ordered: make them visible before the caller (and, after
    // the pool's barrier, other threads) reads the output.
    if (stream_) b_.CreateFence(llvm::AtomicOrdering::SequentiallyConsistent);
    b_.CreateRetVoid();
    return fn_;
  }

 private:
  struct AccSlot {
    Value* value = nullptr;    // where the accumulator lives (column mode: its tile element)
    Value* saw_nan = nullptr;  // float Max/Min: whether a NaN was folded
  };

  // ---- types ----------------------------------------------------------------------------
  // Registers: bool is i1, float16/bfloat16 are floats holding values rounded to their precision.
  Type* reg_type(DType t) {
    switch (t) {
      case DType::Bool: return b_.getInt1Ty();
      case DType::UInt8:
      case DType::Int8: return b_.getInt8Ty();
      case DType::Int16: return b_.getInt16Ty();
      case DType::Int32: return b_.getInt32Ty();
      case DType::Int64: return b_.getInt64Ty();
      case DType::Float16:
      case DType::BFloat16:
      case DType::Float32: return b_.getFloatTy();
      case DType::Float64: return b_.getDoubleTy();
    }
    KILN_INTERNAL_ASSERT(false, "llvm renderer: unknown dtype");
    return nullptr;
  }
  // Memory: bool is one byte 0/1, float16/bfloat16 their 16 bits.
  Type* mem_type(DType t) {
    if (t == DType::Bool) return b_.getInt8Ty();
    if (is_half_like(t)) return b_.getInt16Ty();
    return reg_type(t);
  }
  // Accumulators of float16/bfloat16 run in float (as eager reductions do), rounded at the end.
  Type* compute_type(DType t) { return reg_type(t); }

  Value* i64c(int64_t v) { return b_.getInt64(static_cast<uint64_t>(v)); }
  Value* int_value(const Int& v) { return v.is_const() ? i64c(v.value) : params_[static_cast<size_t>(v.param)]; }
  Value* int_const(Type* t, int64_t v) { return llvm::ConstantInt::get(t, static_cast<uint64_t>(v), true); }
  Value* float_const(Type* t, double v) { return llvm::ConstantFP::get(t, v); }

  // ---- alias scopes ---------------------------------------------------------------------
  void make_alias_scopes() {
    const size_t n = k_.buffers.size();
    if (n < 2) return;
    llvm::MDBuilder mdb(ctx_);
    llvm::MDNode* domain = mdb.createAnonymousAliasScopeDomain("kiln.buffers");
    std::vector<llvm::Metadata*> scopes;
    for (size_t i = 0; i < n; ++i) scopes.push_back(mdb.createAnonymousAliasScope(domain, "b" + std::to_string(i)));
    for (size_t i = 0; i < n; ++i) {
      scope_.push_back(llvm::MDNode::get(ctx_, {scopes[i]}));
      std::vector<llvm::Metadata*> others;
      for (size_t j = 0; j < n; ++j)
        if (j != i) others.push_back(scopes[j]);
      noalias_.push_back(llvm::MDNode::get(ctx_, others));
    }
  }
  void tag(llvm::Instruction* inst, int buffer) {
    if (scope_.empty()) return;
    inst->setMetadata(llvm::LLVMContext::MD_alias_scope, scope_[static_cast<size_t>(buffer)]);
    inst->setMetadata(llvm::LLVMContext::MD_noalias, noalias_[static_cast<size_t>(buffer)]);
  }

  // ---- loops ----------------------------------------------------------------------------
  enum class LoopKind { Normal, Scalar, Streaming };
  // for (i = lo; i < hi; ++i) body(), as guard + do-while; leaves the builder after the loop.
  template <class Body>
  void loop(size_t dim, Value* lo, Value* hi, Body&& body, LoopKind kind = LoopKind::Normal) {
    std::string name = "i" + std::to_string(dim);
    llvm::BasicBlock* pre = b_.GetInsertBlock();
    auto* head = llvm::BasicBlock::Create(ctx_, name + ".loop", fn_);
    auto* exit = llvm::BasicBlock::Create(ctx_, name + ".exit", fn_);
    b_.CreateCondBr(b_.CreateICmpSLT(lo, hi), head, exit);
    b_.SetInsertPoint(head);
    llvm::PHINode* iv = b_.CreatePHI(b_.getInt64Ty(), 2, name);
    iv->addIncoming(lo, pre);
    iv_[dim] = iv;
    body();
    iv_[dim] = nullptr;
    Value* next = b_.CreateAdd(iv, i64c(1), name + ".next", /*HasNUW=*/false, /*HasNSW=*/true);
    iv->addIncoming(next, b_.GetInsertBlock());
    llvm::BranchInst* latch = b_.CreateCondBr(b_.CreateICmpSLT(next, hi), head, exit);
    latch->setMetadata(llvm::LLVMContext::MD_loop, loop_id(kind));
    b_.SetInsertPoint(exit);
  }

  // Streaming stores (Kernel::stream_stores): pure pointwise kernels whose stores all walk the
  // innermost dim contiguously, in 4- or 8-byte elements, with every op vectorisable (a libm
  // call would leave the loop scalar, and scalar non-temporal stores are slow).
  bool can_stream() const {
    if (k_.num_stages != 0 || k_.stores.empty()) return false;
    const size_t inner = k_.dims.size() - 1;
    size_t size = 0;
    for (const Store& st : k_.stores) {
      const DType t = k_.buffers[static_cast<size_t>(st.buffer)].dtype;
      if (t == DType::Bool || is_half_like(t)) return false;
      if (size != 0 && itemsize(t) != size) return false;
      size = itemsize(t);
      const Int& stride = k_.indices[static_cast<size_t>(st.index)].strides[inner];
      if (!stride.is_const() || stride.value != 1) return false;
    }
    if (size != 4 && size != 8) return false;
    for (const Expr& e : k_.exprs) {
      if (e.op == ExprOp::Pow || e.op == ExprOp::Fmod) return false;
      if (expr_arity(e.op) == 1 && is_floating_point(e.dtype) && e.op != ExprOp::Neg && e.op != ExprOp::Abs &&
          e.op != ExprOp::Sqrt && e.op != ExprOp::Floor && e.op != ExprOp::Ceil && e.op != ExprOp::Round &&
          e.op != ExprOp::Trunc && e.op != ExprOp::Cast && e.op != ExprOp::IsNan && e.op != ExprOp::Not &&
          !has_inline_math(e.op, e.dtype == DType::Float64 ? DType::Float64 : DType::Float32))
        return false;
    }
    return true;
  }
  int64_t stream_elems() const { return kStreamAlign / static_cast<int64_t>(itemsize(k_.buffers[static_cast<size_t>(k_.stores[0].buffer)].dtype)); }
  Value* address_int(const Store& st) { return b_.CreatePtrToInt(address(st.buffer, st.index), b_.getInt64Ty()); }

  // The innermost loop of a streaming kernel: a scalar head up to the first element where store
  // 0's address is 32-byte aligned, a body of whole vectors whose stores are aligned and
  // non-temporal (when every store's address is aligned there; the ordinary vector loop
  // otherwise), and a scalar tail.
  template <class Body>
  void stream_loop(size_t dim, Value* lo, Value* hi, Body&& body) {
    const int64_t vf = stream_elems();
    const int64_t shift = vf == 8 ? 2 : 3;  // log2 of the element size
    iv_[dim] = lo;
    Value* mis = b_.CreateAnd(b_.CreateLShr(address_int(k_.stores[0]), static_cast<uint64_t>(shift)), i64c(vf - 1));
    Value* head = b_.CreateAnd(b_.CreateSub(i64c(vf), mis), i64c(vf - 1));
    Value* mid_lo = b_.CreateBinaryIntrinsic(llvm::Intrinsic::smin, b_.CreateAdd(lo, head), hi);
    Value* count = b_.CreateSub(hi, mid_lo);
    Value* mid_hi = b_.CreateAdd(mid_lo, b_.CreateAnd(count, i64c(-vf)));
    iv_[dim] = mid_lo;
    Value* aligned = b_.getTrue();
    for (const Store& st : k_.stores)
      aligned = b_.CreateAnd(aligned, b_.CreateICmpEQ(b_.CreateAnd(address_int(st), i64c(kStreamAlign - 1)), i64c(0)));
    iv_[dim] = nullptr;
    loop(dim, lo, mid_lo, body, LoopKind::Scalar);
    auto* nt = llvm::BasicBlock::Create(ctx_, "stream", fn_);
    auto* plain = llvm::BasicBlock::Create(ctx_, "nostream", fn_);
    auto* join = llvm::BasicBlock::Create(ctx_, "stream.join", fn_);
    b_.CreateCondBr(aligned, nt, plain);
    b_.SetInsertPoint(nt);
    nt_stores_ = true;
    loop(dim, mid_lo, mid_hi, body, LoopKind::Streaming);
    nt_stores_ = false;
    b_.CreateBr(join);
    b_.SetInsertPoint(plain);
    loop(dim, mid_lo, mid_hi, body);
    b_.CreateBr(join);
    b_.SetInsertPoint(join);
    loop(dim, mid_hi, hi, body, LoopKind::Scalar);
  }
  // Loop metadata: no runtime unrolling. O3 would otherwise runtime-unroll the vectorised loops
  // (x8, with prologue copies, also of outer loops), which multiplied code size and compile time
  // by 3-4 for no gain: the vectoriser's interleaving already gives the ILP. Full unrolling of
  // short constant-trip loops stays on.
  // Streaming loops: exactly one vector per iteration (no interleaving), so that with a trip
  // count that is a multiple of the width every store is a whole aligned vector. Scalar loops
  // (the head and tail of a streaming loop, under a vector) are not vectorised.
  llvm::MDNode* loop_id(LoopKind kind = LoopKind::Normal) {
    auto property = [&](const char* name, llvm::Constant* v) -> llvm::Metadata* {
      return llvm::MDNode::get(ctx_, {llvm::MDString::get(ctx_, name), llvm::ConstantAsMetadata::get(v)});
    };
    std::vector<llvm::Metadata*> ops{nullptr, llvm::MDNode::get(ctx_, {llvm::MDString::get(ctx_, "llvm.loop.unroll.runtime.disable")})};
    if (kind == LoopKind::Scalar) {
      ops.push_back(property("llvm.loop.vectorize.width", b_.getInt32(1)));
      ops.push_back(property("llvm.loop.interleave.count", b_.getInt32(1)));
    } else if (kind == LoopKind::Streaming) {
      ops.push_back(property("llvm.loop.vectorize.enable", b_.getTrue()));
      ops.push_back(property("llvm.loop.vectorize.width", b_.getInt32(static_cast<uint32_t>(stream_elems()))));
      ops.push_back(property("llvm.loop.interleave.count", b_.getInt32(1)));
    }
    llvm::MDNode* id = llvm::MDNode::getDistinct(ctx_, ops);
    id->replaceOperandWith(0, id);
    return id;
  }
  // Loops over dims [first, last); dim 0 runs over [begin, end), the others over [0, size).
  template <class Body>
  void loop_nest(size_t first, size_t last, Value* begin, Value* end, Body&& body) {
    if (first == last) {
      body();
      return;
    }
    Value* lo = first == 0 ? begin : i64c(0);
    Value* hi = first == 0 ? end : int_value(k_.dims[first]);
    if (columns_ && first + 1 == static_cast<size_t>(k_.num_outer)) {
      column_tiles(first, lo, hi);
      return;
    }
    if (stream_ && first + 1 == k_.dims.size()) {
      stream_loop(first, lo, hi, [&] { loop_nest(first + 1, last, begin, end, body); });
      return;
    }
    loop(first, lo, hi, [&] { loop_nest(first + 1, last, begin, end, body); });
  }

  void outer_point() {
    const size_t nd = k_.dims.size();
    for (int s = 0; s < k_.num_stages; ++s) {
      for (size_t a = 0; a < k_.accs.size(); ++a)
        if (k_.accs[a].stage == s) init_acc(a);
      loop_nest(static_cast<size_t>(k_.num_outer), nd, nullptr, nullptr, [&] {
        std::fill(memo_.begin(), memo_.end(), nullptr);
        for (size_t a = 0; a < k_.accs.size(); ++a)
          if (k_.accs[a].stage == s) fold_acc(a);
        store_all(s);
      });
      for (size_t a = 0; a < k_.accs.size(); ++a)
        if (k_.accs[a].stage == s) finish_acc(a);
    }
    std::fill(memo_.begin(), memo_.end(), nullptr);
    store_all(-1);
  }

  // ---- column reductions ----------------------------------------------------------------
  static constexpr int64_t kColumnTile = 64;

  // Whether to interchange (header comment): a kernel with stages whose loads run with stride 1
  // along the last kept dim and none along the innermost reduced dim. A buffer both read and
  // written (an in-place update, e.g. an optimizer step fused after a bias gradient) must be
  // accessed at one index, constant over the reduced dims: each outer point then reads and
  // writes only its own element, so running the points' stages before their stage -1 stores,
  // a tile at a time, reads what the row order reads.
  bool column_reduction() const {
    if (k_.num_stages == 0 || k_.num_outer == 0 || k_.accs.empty()) return false;
    const size_t c = static_cast<size_t>(k_.num_outer) - 1, inner = k_.dims.size() - 1;
    if (!in_place_buffers_per_point(c + 1)) return false;
    if (inner == c) return false;
    bool along_c = false;
    for (const Expr& e : k_.exprs) {
      if (e.op != ExprOp::Load) continue;
      const Index& ix = k_.indices[static_cast<size_t>(e.index)];
      const Int& sr = ix.strides[inner];
      if (sr.is_const() && sr.value == 1) return false;  // a symbolic stride: a row length, not 1
      const Int& sc = ix.strides[c];
      if (sc.is_const() && sc.value == 1) along_c = true;
    }
    return along_c;
  }

  // Every buffer both read and written is accessed at a single index (same offset and strides for
  // all its loads and stores) with zero strides over the dims from `first_reduced` on.
  bool in_place_buffers_per_point(size_t first_reduced) const {
    auto same = [](const Index& a, const Index& b) {
      auto eq = [](const Int& x, const Int& y) { return x.param == y.param && (x.param >= 0 || x.value == y.value); };
      if (!eq(a.offset, b.offset) || a.strides.size() != b.strides.size()) return false;
      for (size_t d = 0; d < a.strides.size(); ++d)
        if (!eq(a.strides[d], b.strides[d])) return false;
      return true;
    };
    for (size_t buf = 0; buf < k_.buffers.size(); ++buf) {
      if (!k_.buffers[buf].read || !k_.buffers[buf].written) continue;
      std::vector<int> uses;
      for (const Expr& e : k_.exprs)
        if (e.op == ExprOp::Load && static_cast<size_t>(e.buffer) == buf) uses.push_back(e.index);
      for (const Store& st : k_.stores)
        if (static_cast<size_t>(st.buffer) == buf) uses.push_back(st.index);
      const Index& first = k_.indices[static_cast<size_t>(uses.front())];
      for (size_t d = first_reduced; d < first.strides.size(); ++d)
        if (!first.strides[d].is_const() || first.strides[d].value != 0) return false;
      for (int u : uses)
        if (!same(first, k_.indices[static_cast<size_t>(u)])) return false;
    }
    return true;
  }

  // Points the accumulator slots at the tile elements of the current column (iv of dim c).
  void point_slots(size_t c, Value* j0) {
    Value* j = b_.CreateSub(iv_[c], j0, "j", false, true);
    for (size_t a = 0; a < k_.accs.size(); ++a) {
      slots_[a].value = b_.CreateInBoundsGEP(tiles_[a].value->getAllocatedType(), tiles_[a].value, {i64c(0), j});
      if (tiles_[a].saw_nan)
        slots_[a].saw_nan = b_.CreateInBoundsGEP(tiles_[a].saw_nan->getAllocatedType(), tiles_[a].saw_nan, {i64c(0), j});
    }
  }

  // for (j0 = lo; j0 < hi; j0 += kColumnTile): the stages with dim c innermost.
  void column_tiles(size_t c, Value* lo, Value* hi) {
    const size_t nd = k_.dims.size();
    llvm::BasicBlock* pre = b_.GetInsertBlock();
    auto* head = llvm::BasicBlock::Create(ctx_, "tile.loop", fn_);
    auto* exit = llvm::BasicBlock::Create(ctx_, "tile.exit", fn_);
    b_.CreateCondBr(b_.CreateICmpSLT(lo, hi), head, exit);
    b_.SetInsertPoint(head);
    llvm::PHINode* j0 = b_.CreatePHI(b_.getInt64Ty(), 2, "j0");
    j0->addIncoming(lo, pre);
    Value* next = b_.CreateAdd(j0, i64c(kColumnTile), "j0.next", false, true);
    Value* j1 = b_.CreateSelect(b_.CreateICmpSLT(next, hi), next, hi, "j1");
    for (int s = 0; s < k_.num_stages; ++s) {
      loop(c, j0, j1, [&] {
        point_slots(c, j0);
        for (size_t a = 0; a < k_.accs.size(); ++a)
          if (k_.accs[a].stage == s) init_acc(a);
      });
      loop_nest(static_cast<size_t>(k_.num_outer), nd, nullptr, nullptr, [&] {
        loop(c, j0, j1, [&] {
          point_slots(c, j0);
          std::fill(memo_.begin(), memo_.end(), nullptr);
          for (size_t a = 0; a < k_.accs.size(); ++a)
            if (k_.accs[a].stage < s) finish_acc(a);  // earlier stages' results, read by this one
          for (size_t a = 0; a < k_.accs.size(); ++a)
            if (k_.accs[a].stage == s) fold_acc(a);
          store_all(s);
        });
      });
    }
    loop(c, j0, j1, [&] {
      point_slots(c, j0);
      std::fill(memo_.begin(), memo_.end(), nullptr);
      for (size_t a = 0; a < k_.accs.size(); ++a) finish_acc(a);
      store_all(-1);
    });
    j0->addIncoming(next, b_.GetInsertBlock());
    b_.CreateCondBr(b_.CreateICmpSLT(next, hi), head, exit);
    b_.SetInsertPoint(exit);
  }

  // ---- memory ---------------------------------------------------------------------------
  Value* address(int buffer, int index) {
    const Index& ix = k_.indices[static_cast<size_t>(index)];
    Value* off = int_value(ix.offset);
    for (size_t d = 0; d < ix.strides.size(); ++d) {
      const Int& s = ix.strides[d];
      if (s.is_const() && s.value == 0) continue;
      KILN_INTERNAL_ASSERT(iv_[d] != nullptr, "kernel ", k_.name, ": b", buffer, " is addressed with i", d,
                           " outside the loop over it");
      Value* term = s.is_const() && s.value == 1 ? iv_[d] : b_.CreateMul(int_value(s), iv_[d], "", false, true);
      off = b_.CreateAdd(off, term, "", false, true);
    }
    DType t = k_.buffers[static_cast<size_t>(buffer)].dtype;
    return b_.CreateInBoundsGEP(mem_type(t), bufs_[static_cast<size_t>(buffer)], off);
  }

  Value* load(int buffer, int index) {
    DType t = k_.buffers[static_cast<size_t>(buffer)].dtype;
    auto* ld = b_.CreateAlignedLoad(mem_type(t), address(buffer, index), llvm::Align(itemsize(t)));
    tag(ld, buffer);
    return mem_to_reg(t, ld);
  }

  // Every value is computed before the first store: a kernel that updates a buffer in place
  // reads its old contents, even when another store to it comes first in the list.
  void store_all(int stage) {
    std::vector<std::pair<const Store*, Value*>> pending;
    for (const Store& st : k_.stores) {
      if (st.stage != stage) continue;
      DType bt = k_.buffers[static_cast<size_t>(st.buffer)].dtype;
      pending.emplace_back(&st, reg_to_mem(bt, cast(eval(st.value), k_.exprs[static_cast<size_t>(st.value)].dtype, bt)));
    }
    for (auto [st, v] : pending) {
      DType bt = k_.buffers[static_cast<size_t>(st->buffer)].dtype;
      // In a streaming loop every (vectorised) store is a whole aligned vector: stream_loop.
      const uint64_t align = nt_stores_ ? static_cast<uint64_t>(kStreamAlign) : itemsize(bt);
      auto* s = b_.CreateAlignedStore(v, address(st->buffer, st->index), llvm::Align(align));
      tag(s, st->buffer);
      if (nt_stores_)
        s->setMetadata(llvm::LLVMContext::MD_nontemporal,
                       llvm::MDNode::get(ctx_, {llvm::ConstantAsMetadata::get(b_.getInt32(1))}));
    }
  }

  Value* mem_to_reg(DType t, Value* v) {
    switch (t) {
      case DType::Bool: return b_.CreateICmpNE(v, b_.getInt8(0));
      case DType::Float16: return f16_to_f32(v);
      case DType::BFloat16: return bf16_to_f32(v);
      default: return v;
    }
  }
  Value* reg_to_mem(DType t, Value* v) {
    switch (t) {
      case DType::Bool: return b_.CreateZExt(v, b_.getInt8Ty());
      case DType::Float16: return f32_to_f16(v);
      case DType::BFloat16: return f32_to_bf16(v);
      default: return v;
    }
  }

  // Bit-exact copies of kiln::detail's conversions (core/half.h): no libcalls, vectorisable.
  Value* f16_to_f32(Value* h) {
    Type* i32 = b_.getInt32Ty();
    Value* x = b_.CreateZExt(h, i32);
    Value* sign = b_.CreateShl(b_.CreateAnd(x, 0x8000u), 16);
    Value* exp = b_.CreateAnd(b_.CreateLShr(x, 10), 0x1fu);
    Value* mant = b_.CreateAnd(x, 0x3ffu);
    Value* mant13 = b_.CreateShl(mant, 13);
    // exponent 0: mant * 2^-24 (exact), with the sign bit or'ed in
    Value* sub = b_.CreateFMul(b_.CreateUIToFP(mant, b_.getFloatTy()), float_const(b_.getFloatTy(), 5.9604644775390625e-8));
    Value* sub_bits = b_.CreateOr(b_.CreateBitCast(sub, i32), sign);
    Value* special = b_.CreateOr(b_.CreateOr(sign, b_.getInt32(0x7f800000u)), mant13);
    Value* normal = b_.CreateOr(b_.CreateOr(sign, b_.CreateShl(b_.CreateAdd(exp, b_.getInt32(112)), 23)), mant13);
    Value* bits = b_.CreateSelect(b_.CreateICmpEQ(exp, b_.getInt32(0)), sub_bits,
                                  b_.CreateSelect(b_.CreateICmpEQ(exp, b_.getInt32(31)), special, normal));
    return b_.CreateBitCast(bits, b_.getFloatTy());
  }
  Value* f32_to_f16(Value* f) {
    Type* i32 = b_.getInt32Ty();
    Value* x = b_.CreateBitCast(f, i32);
    Value* sign = b_.CreateAnd(b_.CreateLShr(x, 16), 0x8000u);
    Value* ax = b_.CreateAnd(x, 0x7fffffffu);
    Value* naninf = b_.CreateOr(sign, b_.CreateSelect(b_.CreateICmpUGT(ax, b_.getInt32(0x7f800000u)), b_.getInt32(0x7e00u),
                                                      b_.getInt32(0x7c00u)));
    Value* inf = b_.CreateOr(sign, 0x7c00u);
    // Subnormal half: round |f| * 2^24 to the nearest integer, ties to even (the input is
    // clamped so that the unused arm never converts an out-of-range value).
    Value* is_sub = b_.CreateICmpULT(ax, b_.getInt32(0x38800000u));
    Value* af = b_.CreateBitCast(b_.CreateSelect(is_sub, ax, b_.getInt32(0)), b_.getFloatTy());
    Value* scaled = b_.CreateUnaryIntrinsic(llvm::Intrinsic::roundeven,
                                            b_.CreateFMul(af, float_const(b_.getFloatTy(), 16777216.0)));
    Value* sub = b_.CreateOr(sign, b_.CreateFPToUI(scaled, i32));
    Value* odd = b_.CreateAnd(b_.CreateLShr(ax, 13), 1u);
    Value* normal = b_.CreateOr(sign, b_.CreateLShr(b_.CreateAdd(b_.CreateAdd(ax, b_.getInt32(0xc8000fffu)), odd), 13));
    Value* bits = b_.CreateSelect(
        b_.CreateICmpUGE(ax, b_.getInt32(0x7f800000u)), naninf,
        b_.CreateSelect(b_.CreateICmpUGE(ax, b_.getInt32(0x477ff000u)), inf, b_.CreateSelect(is_sub, sub, normal)));
    return b_.CreateTrunc(bits, b_.getInt16Ty());
  }
  Value* bf16_to_f32(Value* h) { return b_.CreateBitCast(b_.CreateShl(b_.CreateZExt(h, b_.getInt32Ty()), 16), b_.getFloatTy()); }
  Value* f32_to_bf16(Value* f) {
    Value* x = b_.CreateBitCast(f, b_.getInt32Ty());
    Value* is_nan = b_.CreateICmpUGT(b_.CreateAnd(x, 0x7fffffffu), b_.getInt32(0x7f800000u));
    Value* quiet = b_.CreateOr(b_.CreateLShr(x, 16), 0x40u);
    Value* rounded = b_.CreateLShr(b_.CreateAdd(b_.CreateAdd(x, b_.getInt32(0x7fffu)), b_.CreateAnd(b_.CreateLShr(x, 16), 1u)), 16);
    return b_.CreateTrunc(b_.CreateSelect(is_nan, quiet, rounded), b_.getInt16Ty());
  }
  // A float register holding a float16/bfloat16 value: round a float result to that precision.
  Value* round_to(DType t, Value* v) {
    if (t == DType::Float16) return f16_to_f32(f32_to_f16(v));
    if (t == DType::BFloat16) return bf16_to_f32(f32_to_bf16(v));
    return v;
  }

  // ---- expressions ----------------------------------------------------------------------
  DType dtype_of(int e) const { return k_.exprs[static_cast<size_t>(e)].dtype; }

  // Evaluates expr `root` in the current loop body (memoised), without recursion: fused
  // graphs can produce long chains.
  Value* eval(int root) {
    if (memo_[static_cast<size_t>(root)]) return memo_[static_cast<size_t>(root)];
    std::vector<int> stack{root};
    while (!stack.empty()) {
      int id = stack.back();
      const Expr& e = k_.exprs[static_cast<size_t>(id)];
      if (memo_[static_cast<size_t>(id)]) {
        stack.pop_back();
        continue;
      }
      bool ready = true;
      for (int a = 0; a < expr_arity(e.op); ++a)
        if (!memo_[static_cast<size_t>(e.args[a])]) {
          stack.push_back(e.args[a]);
          ready = false;
        }
      if (!ready) continue;
      memo_[static_cast<size_t>(id)] = compute(e);
      stack.pop_back();
    }
    return memo_[static_cast<size_t>(root)];
  }

  // Argument `a` of `e` converted to dtype `t` (a no-op when the IR is well typed).
  Value* arg(const Expr& e, int a, DType t) { return cast(memo_[static_cast<size_t>(e.args[a])], dtype_of(e.args[a]), t); }

  Value* constant(const Expr& e) {
    Type* t = reg_type(e.dtype);
    switch (e.dtype) {
      case DType::Bool: return b_.getInt1(e.value != 0);
      case DType::Float16: return float_const(t, static_cast<float>(Half(static_cast<float>(e.value))));
      case DType::BFloat16: return float_const(t, static_cast<float>(BFloat16(static_cast<float>(e.value))));
      case DType::Float32: return float_const(t, static_cast<double>(static_cast<float>(e.value)));
      case DType::Float64: return float_const(t, e.value);
      default: return int_const(t, e.ivalue);
    }
  }

  Value* compute(const Expr& e) {
    const DType t = e.dtype;
    switch (e.op) {
      case ExprOp::Const: return constant(e);
      case ExprOp::Load: return load(e.buffer, e.index);
      case ExprOp::Acc: {
        const size_t a = static_cast<size_t>(e.acc);
        KILN_INTERNAL_ASSERT(acc_final_[a] != nullptr, "kernel ", k_.name, ": acc", a, " read before its stage ran");
        return cast(acc_final_[a], k_.accs[a].dtype, t);
      }
      case ExprOp::Cast: return cast(memo_[static_cast<size_t>(e.args[0])], dtype_of(e.args[0]), t);
      case ExprOp::IsNan: {
        DType at = dtype_of(e.args[0]);
        Value* x = memo_[static_cast<size_t>(e.args[0])];
        return is_floating_point(at) ? b_.CreateFCmpUNO(x, x) : b_.getFalse();
      }
      case ExprOp::Not: return b_.CreateNot(to_bool(memo_[static_cast<size_t>(e.args[0])], dtype_of(e.args[0])));
      case ExprOp::And:
        return b_.CreateAnd(to_bool(memo_[static_cast<size_t>(e.args[0])], dtype_of(e.args[0])),
                            to_bool(memo_[static_cast<size_t>(e.args[1])], dtype_of(e.args[1])));
      case ExprOp::Or:
        return b_.CreateOr(to_bool(memo_[static_cast<size_t>(e.args[0])], dtype_of(e.args[0])),
                           to_bool(memo_[static_cast<size_t>(e.args[1])], dtype_of(e.args[1])));
      case ExprOp::Lt:
      case ExprOp::Le:
      case ExprOp::Gt:
      case ExprOp::Ge:
      case ExprOp::Eq:
      case ExprOp::Ne: {
        DType at = dtype_of(e.args[0]);
        return compare(e.op, at, memo_[static_cast<size_t>(e.args[0])], arg(e, 1, at));
      }
      case ExprOp::Select: return b_.CreateSelect(arg(e, 0, DType::Bool), arg(e, 1, t), arg(e, 2, t));
      default: break;
    }
    if (expr_arity(e.op) == 1) return unary(e.op, t, arg(e, 0, t));
    // A division by a value fixed over the reduced dims (a row's sum, a norm) multiplies by its
    // reciprocal, computed once per outer point (LICM hoists it): one divide per row instead of
    // one per element, as the eager softmax and layer_norm kernels do. The result may differ from
    // the correctly rounded quotient by one ulp (docs/fusion.md, tolerances).
    if (e.op == ExprOp::Div && is_floating_point(t) && !inner_varying_[static_cast<size_t>(e.args[1])] &&
        inner_varying_[static_cast<size_t>(e.args[0])]) {
      Value* d = arg(e, 1, t);
      Value* recip = b_.CreateFDiv(float_const(d->getType(), 1.0), d, "recip");
      return round_to(t, b_.CreateFMul(arg(e, 0, t), recip));
    }
    return binary(e.op, t, arg(e, 0, t), arg(e, 1, t));
  }

  // inner_varying_[e]: whether expr e changes along the reduced (inner) dims, i.e. reads memory
  // at an index with a non-zero stride over one of them.
  void find_inner_varying() {
    inner_varying_.assign(k_.exprs.size(), 0);
    std::vector<char> done(k_.exprs.size(), 0);
    for (size_t root = 0; root < k_.exprs.size(); ++root) {
      std::vector<int> stack{static_cast<int>(root)};
      while (!stack.empty()) {
        const size_t id = static_cast<size_t>(stack.back());
        if (done[id]) {
          stack.pop_back();
          continue;
        }
        const Expr& e = k_.exprs[id];
        bool ready = true;
        for (int a = 0; a < expr_arity(e.op); ++a)
          if (!done[static_cast<size_t>(e.args[a])]) {
            stack.push_back(e.args[a]);
            ready = false;
          }
        if (!ready) continue;
        char v = 0;
        if (e.op == ExprOp::Load) {
          const Index& ix = k_.indices[static_cast<size_t>(e.index)];
          for (size_t d = static_cast<size_t>(k_.num_outer); d < ix.strides.size(); ++d)
            if (!(ix.strides[d].is_const() && ix.strides[d].value == 0)) v = 1;
        }
        for (int a = 0; a < expr_arity(e.op); ++a) v |= inner_varying_[static_cast<size_t>(e.args[a])];
        inner_varying_[id] = v;
        done[id] = 1;
        stack.pop_back();
      }
    }
  }

  Value* to_bool(Value* v, DType t) { return cast(v, t, DType::Bool); }

  Value* compare(ExprOp op, DType t, Value* a, Value* b) {
    using P = llvm::CmpInst::Predicate;
    if (is_floating_point(t)) {
      // Ordered (false on NaN) except Ne, as C++ comparisons.
      P p = op == ExprOp::Lt ? P::FCMP_OLT : op == ExprOp::Le ? P::FCMP_OLE : op == ExprOp::Gt ? P::FCMP_OGT
          : op == ExprOp::Ge ? P::FCMP_OGE : op == ExprOp::Eq ? P::FCMP_OEQ : P::FCMP_UNE;
      return b_.CreateFCmp(p, a, b);
    }
    const bool u = is_unsigned_int(t);
    P p = op == ExprOp::Lt ? (u ? P::ICMP_ULT : P::ICMP_SLT)
        : op == ExprOp::Le ? (u ? P::ICMP_ULE : P::ICMP_SLE)
        : op == ExprOp::Gt ? (u ? P::ICMP_UGT : P::ICMP_SGT)
        : op == ExprOp::Ge ? (u ? P::ICMP_UGE : P::ICMP_SGE)
        : op == ExprOp::Eq ? P::ICMP_EQ : P::ICMP_NE;
    return b_.CreateICmp(p, a, b);
  }

  // Value conversion with kiln::convert's semantics (core/dtype.h).
  Value* cast(Value* v, DType from, DType to) {
    if (from == to) return v;
    Type* tt = reg_type(to);
    const bool ff = is_floating_point(from), tf = is_floating_point(to);
    if (to == DType::Bool)  // x != 0; NaN != 0 is true
      return ff ? b_.CreateFCmpUNE(v, float_const(v->getType(), 0.0)) : b_.CreateICmpNE(v, int_const(v->getType(), 0));
    if (!ff && !tf) return b_.CreateIntCast(v, tt, !is_unsigned_int(from));
    if (!ff && tf) {
      Value* r = is_unsigned_int(from) ? b_.CreateUIToFP(v, tt) : b_.CreateSIToFP(v, tt);
      return round_to(to, r);
    }
    if (ff && !tf) {
      // Saturating, NaN -> 0: exactly kiln::convert, and never poison (plain fptosi would be for
      // out-of-range values).
      auto id = is_unsigned_int(to) ? llvm::Intrinsic::fptoui_sat : llvm::Intrinsic::fptosi_sat;
      return b_.CreateIntrinsic(id, {tt, v->getType()}, {v});
    }
    // float -> float: float16/bfloat16 registers are floats already.
    Value* r = v;
    if (v->getType() != tt) r = tt->isDoubleTy() ? b_.CreateFPExt(v, tt) : b_.CreateFPTrunc(v, tt);
    return round_to(to, r);
  }

  Value* libm_call(ExprOp op, Type* t, std::initializer_list<Value*> args) {
    std::string name = expr_op_name(op);  // the op names are libm's (float variants add "f")
    if (t->isFloatTy()) name += "f";
    std::vector<Type*> arg_types(args.size(), t);
    llvm::FunctionCallee callee = m_.getOrInsertFunction(name, llvm::FunctionType::get(t, arg_types, false));
    if (auto* f = llvm::dyn_cast<llvm::Function>(callee.getCallee())) {
      // As eager kiln's build (-fno-math-errno): pure functions, so LICM/CSE may move them.
      f->setDoesNotThrow();
      f->setDoesNotAccessMemory();
      f->setWillReturn();
    }
    llvm::CallInst* call = b_.CreateCall(callee, args);
    call->setDoesNotThrow();
    call->setDoesNotAccessMemory();
    return call;
  }

  Value* unary(ExprOp op, DType t, Value* x) {
    Type* ty = x->getType();
    if (!is_floating_point(t)) {
      switch (op) {
        case ExprOp::Neg: return b_.CreateSub(int_const(ty, 0), x);  // wraps
        case ExprOp::Abs:
          if (is_unsigned_int(t)) return x;
          return b_.CreateSelect(b_.CreateICmpSLT(x, int_const(ty, 0)), b_.CreateSub(int_const(ty, 0), x), x);
        case ExprOp::Floor:
        case ExprOp::Ceil:
        case ExprOp::Round:
        case ExprOp::Trunc: return x;
        default:
          KILN_INTERNAL_ASSERT(false, "kernel ", k_.name, ": ", expr_op_name(op), " of ", t,
                               " (integer inputs of float functions must be cast first)");
      }
    }
    Value* r = nullptr;
    switch (op) {
      case ExprOp::Neg: return b_.CreateFNeg(x);  // exact in any precision
      case ExprOp::Abs: return b_.CreateUnaryIntrinsic(llvm::Intrinsic::fabs, x);
      case ExprOp::Floor: return b_.CreateUnaryIntrinsic(llvm::Intrinsic::floor, x);
      case ExprOp::Ceil: return b_.CreateUnaryIntrinsic(llvm::Intrinsic::ceil, x);
      case ExprOp::Trunc: return b_.CreateUnaryIntrinsic(llvm::Intrinsic::trunc, x);
      case ExprOp::Round: return b_.CreateUnaryIntrinsic(llvm::Intrinsic::roundeven, x);  // half to even
      case ExprOp::Sqrt: r = b_.CreateUnaryIntrinsic(llvm::Intrinsic::sqrt, x); break;
      case ExprOp::Exp:
      case ExprOp::Exp2:
      case ExprOp::Log:
      case ExprOp::Log2:
      case ExprOp::Log10:
      case ExprOp::Log1p:
      case ExprOp::Expm1:
      case ExprOp::Sin:
      case ExprOp::Cos:
      case ExprOp::Tan:
      case ExprOp::Tanh:
      case ExprOp::Erf: {
        DType ct = ty->isDoubleTy() ? DType::Float64 : DType::Float32;
        r = has_inline_math(op, ct) ? emit_math(b_, op, x) : libm_call(op, ty, {x});
        break;
      }
      default: KILN_INTERNAL_ASSERT(false, "kernel ", k_.name, ": ", expr_op_name(op), " is not a unary op");
    }
    return round_to(t, r);
  }

  // pow(a, c) for a constant exponent that fm::pow_shortcut names (kernels/formulas.h), computed
  // as the eager kernel does. Null for any other exponent (a libm call).
  Value* pow_by_constant(Value* a, Value* b) {
    auto* c = llvm::dyn_cast<llvm::ConstantFP>(b);
    if (!c) return nullptr;
    bool lost = false;
    llvm::APFloat v = c->getValueAPF();
    v.convert(llvm::APFloat::IEEEdouble(), llvm::APFloat::rmNearestTiesToEven, &lost);  // exact from f32/f64
    switch (fm::pow_shortcut(v.convertToDouble())) {
      case fm::PowShortcut::Square: return b_.CreateFMul(a, a);
      case fm::PowShortcut::Identity: return a;
      case fm::PowShortcut::Reciprocal: return b_.CreateFDiv(float_const(a->getType(), 1.0), a);
      case fm::PowShortcut::None: break;
    }
    return nullptr;
  }

  Value* binary(ExprOp op, DType t, Value* a, Value* b) {
    Type* ty = a->getType();
    if (is_floating_point(t)) {
      Value* r = nullptr;
      switch (op) {
        case ExprOp::Add: r = b_.CreateFAdd(a, b); break;
        case ExprOp::Sub: r = b_.CreateFSub(a, b); break;
        case ExprOp::Mul: r = b_.CreateFMul(a, b); break;
        case ExprOp::Div: r = b_.CreateFDiv(a, b); break;
        case ExprOp::Fmod: r = b_.CreateFRem(a, b); break;  // frem is C fmod
        case ExprOp::Pow:
          r = pow_by_constant(a, b);
          if (!r) r = libm_call(op, ty, {a, b});
          break;
        default: KILN_INTERNAL_ASSERT(false, "kernel ", k_.name, ": ", expr_op_name(op), " is not a binary op");
      }
      return round_to(t, r);
    }
    if (t == DType::Bool) {
      switch (op) {
        case ExprOp::Add: return b_.CreateOr(a, b);   // as formulas::Add on bool
        case ExprOp::Mul: return b_.CreateAnd(a, b);  // as formulas::Mul on bool
        case ExprOp::Sub: return b_.CreateXor(a, b);
        case ExprOp::Pow: return b_.CreateOr(a, b_.CreateNot(b));  // fm::pow on bool: a || !b
        default: break;
      }
    }
    switch (op) {
      // Wrapping (no nsw/nuw), as eager kiln built with -fwrapv.
      case ExprOp::Add: return b_.CreateAdd(a, b);
      case ExprOp::Sub: return b_.CreateSub(a, b);
      case ExprOp::Mul: return b_.CreateMul(a, b);
      case ExprOp::Div: return int_div(t, a, b, false);
      case ExprOp::Fmod: return int_div(t, a, b, true);
      case ExprOp::Pow: return int_pow(t, a, b);
      default: KILN_INTERNAL_ASSERT(false, "kernel ", k_.name, ": ", expr_op_name(op), " is not a binary op");
    }
    (void)ty;
    return nullptr;
  }

  // C++ truncating division / remainder made total: x / 0 = x % 0 = 0 (the ops reject zero
  // divisors before they get here), MIN / -1 wraps to MIN, x % -1 = 0 (as fm::fmod).
  Value* int_div(DType t, Value* a, Value* b, bool rem) {
    Type* ty = a->getType();
    Value* zero = int_const(ty, 0);
    Value* bz = b_.CreateICmpEQ(b, zero);
    if (is_unsigned_int(t)) {
      Value* safe = b_.CreateSelect(bz, int_const(ty, 1), b);
      Value* q = rem ? b_.CreateURem(a, safe) : b_.CreateUDiv(a, safe);
      return b_.CreateSelect(bz, zero, q);
    }
    Value* bm1 = b_.CreateICmpEQ(b, int_const(ty, -1));
    Value* safe = b_.CreateSelect(b_.CreateOr(bz, bm1), int_const(ty, 1), b);
    Value* q = rem ? b_.CreateSRem(a, safe) : b_.CreateSDiv(a, safe);
    Value* r = b_.CreateSelect(bm1, rem ? zero : b_.CreateSub(zero, a), q);
    return b_.CreateSelect(bz, zero, r);
  }

  // fm::pow on integers: square-and-multiply over the exponent's bits, unrolled into selects
  // (straight-line, so loops around it stay vectorisable); negative exponents as fm::pow.
  Value* int_pow(DType t, Value* a, Value* e) {
    Type* ty = a->getType();
    const unsigned bits = ty->getIntegerBitWidth();
    const bool sgn = !is_unsigned_int(t);
    Value* one = int_const(ty, 1);
    Value* r = one;
    Value* base = a;
    for (unsigned k = 0; k < (sgn ? bits - 1 : bits); ++k) {
      Value* bit = b_.CreateICmpNE(b_.CreateAnd(b_.CreateLShr(e, k), one), int_const(ty, 0));
      r = b_.CreateSelect(bit, b_.CreateMul(r, base), r);
      base = b_.CreateMul(base, base);
    }
    if (!sgn) return r;
    Value* minus1 = int_const(ty, -1);
    Value* odd = b_.CreateICmpNE(b_.CreateAnd(e, one), int_const(ty, 0));
    Value* neg = b_.CreateSelect(b_.CreateICmpEQ(a, one), one,
                                 b_.CreateSelect(b_.CreateICmpEQ(a, minus1), b_.CreateSelect(odd, minus1, one), int_const(ty, 0)));
    return b_.CreateSelect(b_.CreateICmpSLT(e, int_const(ty, 0)), neg, r);
  }

  // ---- accumulators ---------------------------------------------------------------------
  void init_acc(size_t a) {
    const Accumulator& acc = k_.accs[a];
    Type* ty = compute_type(acc.dtype);
    Value* init = nullptr;
    const bool fl = is_floating_point(acc.dtype);
    const unsigned bits = fl ? 0 : ty->getIntegerBitWidth();
    switch (acc.op) {
      case ReduceOp::Sum: init = fl ? float_const(ty, 0.0) : int_const(ty, 0); break;
      case ReduceOp::Prod: init = fl ? float_const(ty, 1.0) : int_const(ty, 1); break;
      case ReduceOp::Max:
        init = fl ? float_const(ty, -std::numeric_limits<double>::infinity())
                  : llvm::ConstantInt::get(ty, is_unsigned_int(acc.dtype) ? llvm::APInt::getMinValue(bits) : llvm::APInt::getSignedMinValue(bits));
        break;
      case ReduceOp::Min:
        init = fl ? float_const(ty, std::numeric_limits<double>::infinity())
                  : llvm::ConstantInt::get(ty, is_unsigned_int(acc.dtype) ? llvm::APInt::getMaxValue(bits) : llvm::APInt::getSignedMaxValue(bits));
        break;
    }
    b_.CreateStore(init, slots_[a].value);
    if (slots_[a].saw_nan) b_.CreateStore(b_.getFalse(), slots_[a].saw_nan);
  }

  void fold_acc(size_t a) {
    const Accumulator& acc = k_.accs[a];
    const AccSlot& slot = slots_[a];
    Type* ty = compute_type(acc.dtype);
    Value* v = cast(eval(acc.value), dtype_of(acc.value), acc.dtype);
    Value* cur = b_.CreateLoad(ty, slot.value);
    Value* next = nullptr;
    const bool fl = is_floating_point(acc.dtype);
    const bool is_bool = acc.dtype == DType::Bool;
    if (acc.op == ReduceOp::Sum || acc.op == ReduceOp::Prod) {
      if (fl) {
        // `reassoc` (and only that) lets the vectoriser split the sum/product into SIMD lanes:
        // the summation order changes (like any blocked reduction), the result stays within
        // rounding tolerance; NaN/inf/signed zero semantics are untouched.
        llvm::IRBuilderBase::FastMathFlagGuard guard(b_);
        llvm::FastMathFlags fmf;
        fmf.setAllowReassoc();
        b_.setFastMathFlags(fmf);
        next = acc.op == ReduceOp::Sum ? b_.CreateFAdd(cur, v) : b_.CreateFMul(cur, v);
      } else if (is_bool) {
        next = acc.op == ReduceOp::Sum ? b_.CreateOr(cur, v) : b_.CreateAnd(cur, v);
      } else {
        next = acc.op == ReduceOp::Sum ? b_.CreateAdd(cur, v) : b_.CreateMul(cur, v);
      }
    } else {
      const bool is_max = acc.op == ReduceOp::Max;
      if (fl) {
        // NaN-propagating max/min as a NaN-free max/min plus an "any NaN" flag (merged in
        // finish_acc): both are reductions the vectoriser recognises, unlike a select chain
        // that keeps a NaN accumulator. The max itself never sees a NaN (NaN inputs are
        // replaced by the identity), so nnan is exact; nsz: +0 and -0 tie either way.
        Value* nan = b_.CreateFCmpUNO(v, v);
        Value* ident = float_const(ty, is_max ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity());
        Value* clean = b_.CreateSelect(nan, ident, v);
        {
          llvm::IRBuilderBase::FastMathFlagGuard guard(b_);
          llvm::FastMathFlags fmf;
          fmf.setNoNaNs();
          fmf.setNoSignedZeros();
          b_.setFastMathFlags(fmf);
          Value* better = is_max ? b_.CreateFCmpOGT(clean, cur) : b_.CreateFCmpOLT(clean, cur);
          next = b_.CreateSelect(better, clean, cur);
        }
        Value* seen = b_.CreateLoad(b_.getInt1Ty(), slot.saw_nan);
        b_.CreateStore(b_.CreateOr(seen, nan), slot.saw_nan);
      } else if (is_bool) {
        next = is_max ? b_.CreateOr(cur, v) : b_.CreateAnd(cur, v);
      } else {
        Value* better = compare(is_max ? ExprOp::Gt : ExprOp::Lt, acc.dtype, v, cur);
        next = b_.CreateSelect(better, v, cur);
      }
    }
    b_.CreateStore(next, slot.value);
  }

  void finish_acc(size_t a) {
    const Accumulator& acc = k_.accs[a];
    const AccSlot& slot = slots_[a];
    Type* ty = compute_type(acc.dtype);
    Value* v = b_.CreateLoad(ty, slot.value, "acc" + std::to_string(a));
    if (slot.saw_nan)
      v = b_.CreateSelect(b_.CreateLoad(b_.getInt1Ty(), slot.saw_nan), llvm::ConstantFP::getNaN(ty), v);
    acc_final_[a] = round_to(acc.dtype, v);
  }

  llvm::Module& m_;
  llvm::LLVMContext& ctx_;
  const Kernel& k_;
  llvm::IRBuilder<> b_;
  llvm::Function* fn_ = nullptr;
  std::vector<Value*> params_, bufs_, iv_, memo_, acc_final_;
  std::vector<AccSlot> slots_;
  struct AccTile {
    llvm::AllocaInst* value = nullptr;    // [kColumnTile x type]
    llvm::AllocaInst* saw_nan = nullptr;  // [kColumnTile x i1]
  };
  std::vector<AccTile> tiles_;  // column mode only
  bool columns_ = false;        // column reductions: the last kept dim is interchanged inwards
  std::vector<llvm::MDNode*> scope_, noalias_;
  std::vector<char> inner_varying_;  // per expr (find_inner_varying)
  static constexpr int64_t kStreamAlign = 32;  // bytes: one AVX vector
  bool stream_ = false;      // this kernel's innermost loops are streaming loops
  bool nt_stores_ = false;   // emitting the body of a streaming loop
};

}  // namespace

llvm::Function* render_kernel(llvm::Module& module, const Kernel& kernel, const std::string& symbol) {
  return Renderer(module, kernel).render(symbol);
}

}  // namespace kiln::fusion
