#include "fusion/cuda_render.h"
#include "fusion/hash.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>
#include <string_view>
#include <unordered_set>

#include "core/error.h"
#include "core/half.h"

// Shapes of the generated code (indices are `long long` throughout; `q`/`r` names below are
// illustrative):
//
// Pointwise (no reduced dims): a grid-stride loop over the flattened iteration space; the loop
// counter is split into the dims' indices, every value is computed, then every store is done.
// When the innermost dim of every access has stride 0 or 1 (constants), each row is cut into
// V-element chunks, each one 128-bit load/store per contiguous access with V lanes of arithmetic
// (V = 16 bytes / widest element, at most 8), and the rest of the row runs one point at a time.
// A uniform runtime check (base pointers aligned, parameter offsets and strides multiples of V)
// sets the chunk count; when it fails there are no chunks and the scalar loop does everything.
//
// Reductions (num_outer < dims): each outer point is owned by one thread, one warp or one block
// (CudaStrategy). Per stage its threads fold their share of the reduced points into register
// accumulators (thread t takes points t, t + width, ...) and do the stage's stores at the points
// they visit; the partial accumulators are then combined (warp: __shfl_down_sync tree, broadcast
// from lane 0; block: warps' partials through shared memory, combined in a fixed order by
// thread 0) so that every thread holds the same final value for the later stages. Stage -1
// stores run on one thread per outer point. Every thread visits the same points in every stage,
// and a barrier ends each stage that stored anything, so a later stage reading what an earlier
// one wrote sees it.
//
// Expressions are `const` locals in SSA order, emitted where used: before a stage's loop when they
// do not vary over the reduced dims (and read no buffer the kernel writes), in the loop otherwise.
// Values are computed as in the LLVM renderer (docs/cuda.md): float16/bfloat16 in float rounded
// after every op, bool as one byte in memory, integer arithmetic wrapping, float-to-int casts
// saturating with NaN -> 0, division and remainder by zero giving 0 (the ops reject them first).

namespace kiln::fusion {

const char* cuda_strategy_name(CudaStrategy s) {
  switch (s) {
    case CudaStrategy::Pointwise: return "pointwise";
    case CudaStrategy::Thread: return "thread per row";
    case CudaStrategy::Warp: return "warp per row";
    case CudaStrategy::Block: return "block per row";
  }
  return "?";
}

namespace {

bool is_half_like(DType t) { return t == DType::Float16 || t == DType::BFloat16; }

// Registers: bool is bool, float16/bfloat16 are floats holding values rounded to their precision.
const char* reg_type(DType t) {
  switch (t) {
    case DType::Bool: return "bool";
    case DType::UInt8: return "unsigned char";
    case DType::Int8: return "signed char";
    case DType::Int16: return "short";
    case DType::Int32: return "int";
    case DType::Int64: return "long long";
    case DType::Float16:
    case DType::BFloat16:
    case DType::Float32: return "float";
    case DType::Float64: return "double";
  }
  KILN_INTERNAL_ASSERT(false, "cuda renderer: unknown dtype");
  return "";
}
// Memory: bool is one byte 0/1, float16/bfloat16 their 16 bits.
const char* mem_type(DType t) {
  if (t == DType::Bool) return "unsigned char";
  if (is_half_like(t)) return "unsigned short";
  return reg_type(t);
}
bool reg_is_double(DType t) { return t == DType::Float64; }

std::string lit(int64_t v) {
  if (v == std::numeric_limits<int64_t>::min()) return "(-9223372036854775807LL - 1LL)";
  if (v < 0) return "(" + std::to_string(v) + "LL)";
  return std::to_string(v) + "LL";
}

// An exact literal of a float or double value (hexadecimal floating literals are exact).
std::string float_lit(double v, bool is_double) {
  if (std::isnan(v)) return is_double ? "kiln_nan_d()" : "kiln_nan_f()";
  if (std::isinf(v)) return std::string(v < 0 ? "(-" : "(") + (is_double ? "kiln_inf_d()" : "kiln_inf_f()") + ")";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%a", v);
  return std::string("(") + buf + (is_double ? "" : "f") + ")";
}

std::string int_text(const Int& v) { return v.is_const() ? lit(v.value) : "p" + std::to_string(v.param); }

// Largest value of an integer dtype's registers, and smallest, as C literals.
std::string int_limit(DType t, bool max) {
  switch (t) {
    case DType::Bool: return max ? "true" : "false";
    case DType::UInt8: return max ? "((unsigned char)255)" : "((unsigned char)0)";
    case DType::Int8: return max ? "((signed char)127)" : "((signed char)-128)";
    case DType::Int16: return max ? "((short)32767)" : "((short)-32768)";
    case DType::Int32: return max ? "2147483647" : "(-2147483647 - 1)";
    case DType::Int64: return max ? "9223372036854775807LL" : "(-9223372036854775807LL - 1LL)";
    default: break;
  }
  KILN_INTERNAL_ASSERT(false, "cuda renderer: ", t, " is not an integer dtype");
  return "";
}

const char* reduce_fn(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return "sum";
    case ReduceOp::Prod: return "prod";
    case ReduceOp::Max: return "max";
    case ReduceOp::Min: return "min";
  }
  return "?";
}

class Renderer {
 public:
  explicit Renderer(const Kernel& k) : k_(k), nd_(k.dims.size()), no_(static_cast<size_t>(k.num_outer)) {}

  CudaKernel render() {
    k_.verify();
    CudaKernel out;
    out.name = k_.name;
    out.symbol = "kiln_" + hex64(hash64(k_.key()));
    analyse();
    choose_strategy();
    out.strategy = strategy_;
    out.block_size = block_;
    out.vector_width = vec_;

    std::string sig = "extern \"C\" __global__ void __launch_bounds__(" + std::to_string(block_) + ") " + out.symbol + "(";
    for (size_t b = 0; b < k_.buffers.size(); ++b) {
      const Buffer& buf = k_.buffers[b];
      sig += (b ? ", " : "") + std::string(buf.written ? "" : "const ") + mem_type(buf.dtype) + "* __restrict__ b" +
             std::to_string(b);
    }
    for (int p = 0; p < k_.num_params; ++p)
      sig += (p || !k_.buffers.empty() ? ", " : "") + std::string("long long p") + std::to_string(p);
    sig += ")";
    os_ << "// " << cuda_strategy_name(strategy_);
    if (vec_ > 1) os_ << ", " << vec_ << "-lane vector fast path";
    os_ << "\n";
    depth_ = 0;
    open(sig);
    if (strategy_ == CudaStrategy::Pointwise)
      pointwise();
    else
      reduction();
    close();
    out.source = os_.str();
    return out;
  }

 private:
  // ---- analysis -------------------------------------------------------------------------
  void analyse() {
    const size_t n = k_.exprs.size();
    inner_.assign(n, 0);
    reads_written_.assign(n, 0);
    for (size_t i = 0; i < n; ++i) {
      const Expr& e = k_.exprs[i];
      for (int a = 0; a < expr_arity(e.op); ++a) {
        inner_[i] |= inner_[arg_id(e, a)];
        reads_written_[i] |= reads_written_[arg_id(e, a)];
      }
      if (e.op == ExprOp::Load) {
        const Index& ix = index(e.index);
        for (size_t d = no_; d < nd_; ++d)
          if (!is_zero(ix.strides[d])) inner_[i] = 1;
        if (k_.buffers[static_cast<size_t>(e.buffer)].written) reads_written_[i] = 1;
      }
    }
    defined_.assign(n, 0);
    load_text_.assign(n, std::string());
  }

  void choose_strategy() {
    if (no_ == nd_) {
      strategy_ = CudaStrategy::Pointwise;
      block_ = 256;
      vec_ = choose_vector_width();
      return;
    }
    bool r_const = true;
    int64_t r = 1;
    for (size_t d = no_; d < nd_; ++d) {
      if (!k_.dims[d].is_const()) r_const = false;
      else r *= k_.dims[d].value;
    }
    // Rows strided in memory but neighbouring outer points contiguous (a sum over dim 0): a
    // thread per outer point keeps the loads of a warp coalesced.
    bool column = true, any_inner_load = false;
    for (size_t i = 0; i < k_.exprs.size(); ++i) {
      const Expr& e = k_.exprs[i];
      if (e.op != ExprOp::Load || !inner_[i]) continue;
      any_inner_load = true;
      const Index& ix = index(e.index);
      if (!is_one(ix.strides[no_ - 1]) || is_one(ix.strides[nd_ - 1])) column = false;
    }
    column = column && any_inner_load;
    if (column || (r_const && r <= 16)) {
      strategy_ = CudaStrategy::Thread;
      block_ = 256;
    } else if (r_const && r <= 512) {
      strategy_ = CudaStrategy::Warp;
      block_ = 256;
    } else {
      strategy_ = CudaStrategy::Block;
      bool one_row = true;
      for (size_t d = 0; d < no_; ++d) one_row &= k_.dims[d].is_const() && k_.dims[d].value == 1;
      block_ = one_row ? 1024 : 256;  // a whole-tensor reduction: the one block may as well be big
    }
  }

  // Vector lanes for the pointwise fast path, or 1 when the layout rules it out at render time.
  int choose_vector_width() {
    const size_t last = nd_ - 1;
    std::vector<std::pair<int, int>> accesses;  // (buffer, index)
    for (int id : closure(store_roots(-1)))
      if (k_.exprs[static_cast<size_t>(id)].op == ExprOp::Load)
        accesses.emplace_back(k_.exprs[static_cast<size_t>(id)].buffer, k_.exprs[static_cast<size_t>(id)].index);
    size_t widest = 0;
    for (const Store& st : k_.stores) {
      const Int& s = index(st.index).strides[last];
      if (!is_one(s)) return 1;  // stores of a pointwise kernel walk the innermost dim
      widest = std::max(widest, itemsize(k_.buffers[static_cast<size_t>(st.buffer)].dtype));
    }
    for (auto [b, ix] : accesses) {
      const Int& s = index(ix).strides[last];
      if (!s.is_const() || (s.value != 0 && s.value != 1)) return 1;
      if (s.value == 1) widest = std::max(widest, itemsize(k_.buffers[static_cast<size_t>(b)].dtype));
    }
    if (widest == 0) return 1;
    const int v = static_cast<int>(std::min<size_t>(8, 16 / widest));
    if (v < 2) return 1;
    auto fits = [&](int ix) {
      const Index& x = index(ix);
      if (!is_one(x.strides[last])) return true;  // broadcast along the innermost dim: a scalar load
      if (x.offset.is_const() && x.offset.value % v != 0) return false;
      for (size_t d = 0; d < last; ++d)
        if (x.strides[d].is_const() && x.strides[d].value % v != 0) return false;
      return true;
    };
    for (const Store& st : k_.stores)
      if (!fits(st.index)) return 1;
    for (auto [b, ix] : accesses)
      if (!fits(ix)) return 1;
    if (k_.dims[last].is_const() && k_.dims[last].value < v) return 1;
    return v;
  }

  // ---- helpers --------------------------------------------------------------------------
  const Index& index(int ix) const { return k_.indices[static_cast<size_t>(ix)]; }
  size_t arg_id(const Expr& e, int a) const { return static_cast<size_t>(e.args[a]); }
  DType dtype_of(int id) const { return k_.exprs[static_cast<size_t>(id)].dtype; }
  static bool is_zero(const Int& v) { return v.is_const() && v.value == 0; }
  static bool is_one(const Int& v) { return v.is_const() && v.value == 1; }
  std::string name(int id) const { return "e" + std::to_string(id); }

  void line(const std::string& s) { os_ << std::string(static_cast<size_t>(2 * depth_), ' ') << s << '\n'; }
  void open(const std::string& s) {
    line(s + " {");
    ++depth_;
  }
  void close() {
    --depth_;
    line("}");
  }
  // A loop NVVM must not unroll: grid-stride and fold loops are memory bound, and unrolling them
  // multiplied code size and NVRTC time by 4 for no gain.
  void loop(const std::string& header) {
    line("#pragma unroll 1");
    open("for (" + header + ")");
  }

  // Product of dims [first, last) as an expression (constants folded).
  std::string dims_product(size_t first, size_t last) const {
    int64_t c = 1;
    std::string params;
    for (size_t d = first; d < last; ++d) {
      if (k_.dims[d].is_const())
        c *= k_.dims[d].value;
      else
        params += (params.empty() ? "" : " * ") + int_text(k_.dims[d]);
    }
    if (params.empty()) return lit(c);
    if (c == 1) return "(" + params + ")";
    return "(" + params + " * " + lit(c) + ")";
  }

  std::vector<int> store_roots(int stage) const {
    std::vector<int> roots;
    for (const Store& s : k_.stores)
      if (s.stage == stage) roots.push_back(s.value);
    return roots;
  }

  // The expressions `roots` need, in SSA (ascending) order.
  std::vector<int> closure(const std::vector<int>& roots) const {
    std::vector<char> mark(k_.exprs.size(), 0);
    std::vector<int> stack(roots.begin(), roots.end());
    while (!stack.empty()) {
      int id = stack.back();
      stack.pop_back();
      if (mark[static_cast<size_t>(id)]) continue;
      mark[static_cast<size_t>(id)] = 1;
      const Expr& e = k_.exprs[static_cast<size_t>(id)];
      for (int a = 0; a < expr_arity(e.op); ++a) stack.push_back(e.args[a]);
    }
    std::vector<int> out;
    for (size_t i = 0; i < mark.size(); ++i)
      if (mark[i]) out.push_back(static_cast<int>(i));
    return out;
  }

  // Dims in [first, last) that the loads among `ids` or the stores of `stage` address.
  std::vector<char> dims_used(const std::vector<int>& ids, int stage, size_t first, size_t last) const {
    std::vector<char> used(nd_, 0);
    auto note = [&](const Index& ix) {
      for (size_t d = first; d < last; ++d)
        if (!is_zero(ix.strides[d])) used[d] = 1;
    };
    for (int id : ids)
      if (k_.exprs[static_cast<size_t>(id)].op == ExprOp::Load) note(index(k_.exprs[static_cast<size_t>(id)].index));
    for (const Store& s : k_.stores)
      if (s.stage == stage) note(index(s.index));
    return used;
  }

  // Declares i<d> for the used dims in [first, last) from the linear position `var` (row-major).
  void decompose(const std::string& var, size_t first, size_t last, const std::vector<char>& used, const std::string& tmp) {
    size_t lo = last;
    for (size_t d = first; d < last; ++d)
      if (used[d]) {
        lo = d;
        break;
      }
    if (lo == last) return;
    if (lo == last - 1) {
      const std::string i = "i" + std::to_string(lo);
      line("const long long " + i + " = " + (lo == first ? var : var + " % " + int_text(k_.dims[lo])) + ";");
      return;
    }
    line("long long " + tmp + " = " + var + ";");
    for (size_t d = last; d-- > lo;) {
      const std::string i = "i" + std::to_string(d);
      if (d == first) {
        line("const long long " + i + " = " + tmp + ";");
        break;
      }
      if (used[d]) line("const long long " + i + " = " + tmp + " % " + int_text(k_.dims[d]) + ";");
      if (d > lo) line(tmp + " /= " + int_text(k_.dims[d]) + ";");
    }
  }

  std::string index_text(const Index& ix) const {
    std::string s = is_zero(ix.offset) ? "" : int_text(ix.offset);
    for (size_t d = 0; d < ix.strides.size(); ++d) {
      const Int& st = ix.strides[d];
      if (is_zero(st)) continue;
      s += (s.empty() ? "" : " + ") + (is_one(st) ? "" : int_text(st) + " * ") + "i" + std::to_string(d);
    }
    return s.empty() ? "0" : s;
  }

  // ---- values ---------------------------------------------------------------------------
  static std::string round_to(DType t, const std::string& x) {
    if (t == DType::Float16) return "kiln_round_f16(" + x + ")";
    if (t == DType::BFloat16) return "kiln_round_bf16(" + x + ")";
    return x;
  }

  static std::string mem_to_reg(DType t, const std::string& x) {
    switch (t) {
      case DType::Bool: return "(" + x + " != 0)";
      case DType::Float16: return "kiln_f16_to_f32(" + x + ")";
      case DType::BFloat16: return "kiln_bf16_to_f32(" + x + ")";
      default: return x;
    }
  }
  static std::string reg_to_mem(DType t, const std::string& x) {
    switch (t) {
      case DType::Bool: return "(unsigned char)" + x;
      case DType::Float16: return "kiln_f32_to_f16(" + x + ")";
      case DType::BFloat16: return "kiln_f32_to_bf16(" + x + ")";
      default: return x;
    }
  }

  // Value conversion with kiln::convert's semantics (core/dtype.h).
  static std::string cast(const std::string& x, DType from, DType to) {
    if (from == to) return x;
    const bool ff = is_floating_point(from), tf = is_floating_point(to);
    if (to == DType::Bool) return ff ? "(" + x + (reg_is_double(from) ? " != 0.0)" : " != 0.0f)") : "(" + x + " != 0)";
    if (!tf) {
      if (ff) {
        static const char* const kNames[] = {"kiln_to_u8", "kiln_to_i8", "kiln_to_i16", "kiln_to_i32", "kiln_to_i64"};
        const int which = to == DType::UInt8 ? 0 : to == DType::Int8 ? 1 : to == DType::Int16 ? 2 : to == DType::Int32 ? 3 : 4;
        return std::string(kNames[which]) + "(" + x + ")";
      }
      return std::string("((") + reg_type(to) + ")" + x + ")";
    }
    if (std::string_view(reg_type(from)) == reg_type(to) && ff) return round_to(to, x);  // float16 <-> float, ...
    return round_to(to, std::string("((") + reg_type(to) + ")" + x + ")");
  }

  std::string arg(const Expr& e, int a, DType t) const { return cast(name(e.args[a]), dtype_of(e.args[a]), t); }

  std::string constant(const Expr& e) const {
    switch (e.dtype) {
      case DType::Bool: return e.value != 0 ? "true" : "false";
      case DType::Float16: return float_lit(static_cast<float>(Half(static_cast<float>(e.value))), false);
      case DType::BFloat16: return float_lit(static_cast<float>(BFloat16(static_cast<float>(e.value))), false);
      case DType::Float32: return float_lit(static_cast<double>(static_cast<float>(e.value)), false);
      case DType::Float64: return float_lit(e.value, true);
      case DType::Int64: return lit(e.ivalue);
      default: return std::string("((") + reg_type(e.dtype) + ")" + lit(e.ivalue) + ")";  // wraps as LLVM's constants
    }
  }

  std::string compute(int id) const {
    const Expr& e = k_.exprs[static_cast<size_t>(id)];
    const DType t = e.dtype;
    switch (e.op) {
      case ExprOp::Const: return constant(e);
      case ExprOp::Load: {
        if (!load_text_[static_cast<size_t>(id)].empty()) return load_text_[static_cast<size_t>(id)];
        return mem_to_reg(t, "b" + std::to_string(e.buffer) + "[" + index_text(index(e.index)) + "]");
      }
      case ExprOp::Acc: {
        const Accumulator& a = k_.accs[static_cast<size_t>(e.acc)];
        return cast("a" + std::to_string(e.acc), a.dtype, t);
      }
      case ExprOp::Cast: return arg(e, 0, t);
      case ExprOp::IsNan: return "kiln_isnan(" + name(e.args[0]) + ")";
      case ExprOp::Not: return "(!" + arg(e, 0, DType::Bool) + ")";
      case ExprOp::And: return "(" + arg(e, 0, DType::Bool) + " && " + arg(e, 1, DType::Bool) + ")";
      case ExprOp::Or: return "(" + arg(e, 0, DType::Bool) + " || " + arg(e, 1, DType::Bool) + ")";
      case ExprOp::Lt:
      case ExprOp::Le:
      case ExprOp::Gt:
      case ExprOp::Ge:
      case ExprOp::Eq:
      case ExprOp::Ne: {
        // Ordered (false on NaN) except !=, as C++ comparisons are. Integers compare through
        // kiln_lt & co.: `x < 0` of an unsigned x with a constant 0 is a warning otherwise.
        const int which = static_cast<int>(e.op) - static_cast<int>(ExprOp::Lt);
        static const char* const kOps[] = {" < ", " <= ", " > ", " >= ", " == ", " != "};
        static const char* const kFns[] = {"kiln_lt(", "kiln_le(", "kiln_gt(", "kiln_ge(", "kiln_eq(", "kiln_ne("};
        const DType at = dtype_of(e.args[0]);
        if (is_floating_point(at)) return "(" + name(e.args[0]) + kOps[which] + arg(e, 1, at) + ")";
        return kFns[which] + name(e.args[0]) + ", " + arg(e, 1, at) + ")";
      }
      case ExprOp::Select: return "(" + arg(e, 0, DType::Bool) + " ? " + arg(e, 1, t) + " : " + arg(e, 2, t) + ")";
      default: break;
    }
    if (expr_arity(e.op) == 1) return unary(e.op, t, arg(e, 0, t));
    return binary(e.op, t, arg(e, 0, t), arg(e, 1, t));
  }

  std::string unary(ExprOp op, DType t, const std::string& x) const {
    if (!is_floating_point(t)) {
      switch (op) {
        case ExprOp::Neg: return "kiln_neg(" + x + ")";  // wraps
        case ExprOp::Abs: return "kiln_abs(" + x + ")";
        case ExprOp::Floor:
        case ExprOp::Ceil:
        case ExprOp::Round:
        case ExprOp::Trunc: return x;
        default:
          KILN_INTERNAL_ASSERT(false, "kernel ", k_.name, ": ", expr_op_name(op), " of ", t,
                               " (integer inputs of float functions must be cast first)");
      }
    }
    const bool f = !reg_is_double(t);
    auto fn = [&](const char* base) { return std::string(base) + (f ? "f(" : "(") + x + ")"; };
    switch (op) {
      case ExprOp::Neg: return "(-" + x + ")";  // exact in any precision
      case ExprOp::Abs: return fn("fabs");
      case ExprOp::Floor: return fn("floor");
      case ExprOp::Ceil: return fn("ceil");
      case ExprOp::Trunc: return fn("trunc");
      case ExprOp::Round: return fn("rint");  // half to even (the default rounding mode)
      case ExprOp::Sqrt:
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
      case ExprOp::Erf: return round_to(t, fn(expr_op_name(op)));  // the op names are CUDA's (float: +"f")
      default: KILN_INTERNAL_ASSERT(false, "kernel ", k_.name, ": ", expr_op_name(op), " is not a unary op");
    }
    return "";
  }

  std::string binary(ExprOp op, DType t, const std::string& a, const std::string& b) const {
    if (is_floating_point(t)) {
      const bool f = !reg_is_double(t);
      std::string r;
      switch (op) {
        case ExprOp::Add: r = "(" + a + " + " + b + ")"; break;
        case ExprOp::Sub: r = "(" + a + " - " + b + ")"; break;
        case ExprOp::Mul: r = "(" + a + " * " + b + ")"; break;
        case ExprOp::Div: r = "(" + a + " / " + b + ")"; break;
        case ExprOp::Fmod: r = std::string(f ? "fmodf(" : "fmod(") + a + ", " + b + ")"; break;
        case ExprOp::Pow: r = std::string(f ? "powf(" : "pow(") + a + ", " + b + ")"; break;
        default: KILN_INTERNAL_ASSERT(false, "kernel ", k_.name, ": ", expr_op_name(op), " is not a binary op");
      }
      return round_to(t, r);
    }
    if (t == DType::Bool) {
      switch (op) {
        case ExprOp::Add: return "(" + a + " || " + b + ")";   // as formulas::Add on bool
        case ExprOp::Mul: return "(" + a + " && " + b + ")";   // as formulas::Mul on bool
        case ExprOp::Sub: return "(" + a + " != " + b + ")";   // xor, as the LLVM renderer
        case ExprOp::Pow: return "(" + a + " || !" + b + ")";  // fm::pow on bool
        default: break;
      }
    }
    switch (op) {
      case ExprOp::Add: return "kiln_add(" + a + ", " + b + ")";
      case ExprOp::Sub: return "kiln_sub(" + a + ", " + b + ")";
      case ExprOp::Mul: return "kiln_mul(" + a + ", " + b + ")";
      case ExprOp::Div: return "kiln_div(" + a + ", " + b + ")";
      case ExprOp::Fmod: return "kiln_rem(" + a + ", " + b + ")";
      case ExprOp::Pow: return "kiln_pow(" + a + ", " + b + ")";
      default: KILN_INTERNAL_ASSERT(false, "kernel ", k_.name, ": ", expr_op_name(op), " is not a binary op");
    }
    return "";
  }

  // Emits `const T eN = ...;` for the ids (ascending) that `want` selects and are not defined yet.
  // `want` must select args along with their users (every filter used is closed that way).
  template <class Want>
  void define(const std::vector<int>& ids, Want&& want) {
    for (int id : ids) {
      if (defined_[static_cast<size_t>(id)] || !want(id)) continue;
      line(std::string("const ") + reg_type(dtype_of(id)) + " " + name(id) + " = " + compute(id) + ";");
      defined_[static_cast<size_t>(id)] = 1;
    }
  }

  // Every value first, then every store: an in-place kernel reads old contents even when another
  // store to the same buffer comes first in the list (as the LLVM renderer does).
  void store_all(int stage) {
    std::vector<std::pair<size_t, std::string>> pending;
    for (size_t s = 0; s < k_.stores.size(); ++s) {
      const Store& st = k_.stores[s];
      if (st.stage != stage) continue;
      const DType bt = k_.buffers[static_cast<size_t>(st.buffer)].dtype;
      const std::string v = "s" + std::to_string(s);
      line(std::string("const ") + mem_type(bt) + " " + v + " = " + reg_to_mem(bt, cast(name(st.value), dtype_of(st.value), bt)) + ";");
      pending.emplace_back(s, v);
    }
    for (const auto& [s, v] : pending) {
      const Store& st = k_.stores[s];
      line("b" + std::to_string(st.buffer) + "[" + index_text(index(st.index)) + "] = " + v + ";");
    }
  }

  // ---- pointwise ------------------------------------------------------------------------
  void pointwise() {
    const std::vector<int> ids = closure(store_roots(-1));
    const std::vector<char> used = dims_used(ids, -1, 0, nd_);
    line("const long long kiln_first = (long long)blockIdx.x * blockDim.x + threadIdx.x;");
    line("const long long kiln_step = (long long)gridDim.x * blockDim.x;");
    if (vec_ == 1) {
      loop("long long t = kiln_first; t < " + dims_product(0, nd_) + "; t += kiln_step");
      decompose("t", 0, nd_, used, "q");
      scalar_point(ids);
      close();
      return;
    }
    // Each row: V-element chunks (none when the runtime check fails), then the rest one by one.
    const size_t last = nd_ - 1;
    const std::string v = std::to_string(vec_) + "LL";
    const std::string chunks = "(" + int_text(k_.dims[last]) + " / " + v + ")";  // constant-folded when it can be
    line("const long long kiln_chunks = (" + vector_condition(ids) + ") ? " + chunks + " : 0LL;");
    if (nd_ > 1) line("const long long kiln_rows = " + dims_product(0, last) + ";");
    const std::string rows = nd_ > 1 ? "kiln_rows * " : "";
    loop("long long t = kiln_first; t < " + rows + "kiln_chunks; t += kiln_step");
    if (nd_ > 1) {
      line("const long long i" + std::to_string(last) + " = (t % " + chunks + ") * " + v + ";");
      decompose("t / " + chunks, 0, last, used, "q");
    } else {
      line("const long long i0 = t * " + v + ";");
    }
    vector_point(ids);
    close();
    line("const long long kiln_tail = " + int_text(k_.dims[last]) + " - kiln_chunks * " + v + ";");
    loop("long long t = kiln_first; t < " + rows + "kiln_tail; t += kiln_step");
    if (nd_ > 1) {
      line("const long long i" + std::to_string(last) + " = kiln_chunks * " + v + " + t % kiln_tail;");
      decompose("t / kiln_tail", 0, last, used, "q");
    } else {
      line("const long long i0 = kiln_chunks * " + v + " + t;");
    }
    scalar_point(ids);
    close();
  }

  void scalar_point(const std::vector<int>& ids) {
    const std::vector<char> saved = defined_;
    define(ids, [](int) { return true; });
    store_all(-1);
    defined_ = saved;
  }

  // Contiguous (innermost stride 1) accesses among the loads in `ids` and the stores.
  std::vector<std::pair<int, int>> unit_accesses(const std::vector<int>& ids) const {
    std::vector<std::pair<int, int>> out;  // (buffer, index)
    for (int id : ids) {
      const Expr& e = k_.exprs[static_cast<size_t>(id)];
      if (e.op == ExprOp::Load && is_one(index(e.index).strides[nd_ - 1])) out.emplace_back(e.buffer, e.index);
    }
    for (const Store& s : k_.stores) out.emplace_back(s.buffer, s.index);
    return out;
  }

  // The uniform runtime test of the vector path: aligned base pointers, and parameter offsets and
  // strides that keep every row start aligned (constant ones were checked when choosing vec_).
  std::string vector_condition(const std::vector<int>& ids) const {
    std::vector<std::string> terms;
    std::unordered_set<std::string> seen;
    auto add = [&](const std::string& t) {
      if (seen.insert(t).second) terms.push_back(t);
    };
    for (auto [b, ix] : unit_accesses(ids)) {
      const size_t bytes = static_cast<size_t>(vec_) * itemsize(k_.buffers[static_cast<size_t>(b)].dtype);
      add("((unsigned long long)b" + std::to_string(b) + " % " + std::to_string(bytes) + "ULL == 0ULL)");
      const Index& x = index(ix);
      if (!x.offset.is_const()) add("(" + int_text(x.offset) + " % " + std::to_string(vec_) + "LL == 0LL)");
      for (size_t d = 0; d + 1 < nd_; ++d)
        if (!x.strides[d].is_const()) add("(" + int_text(x.strides[d]) + " % " + std::to_string(vec_) + "LL == 0LL)");
    }
    std::string s;
    for (const std::string& t : terms) s += (s.empty() ? "" : " && ") + t;
    return s;
  }

  void vector_point(const std::vector<int>& ids) {
    const std::vector<char> saved = defined_;
    const std::string v = std::to_string(vec_);
    // Lane-dependent expressions: those reading a contiguous load.
    std::vector<char> lane(k_.exprs.size(), 0);
    for (int id : ids) {
      const Expr& e = k_.exprs[static_cast<size_t>(id)];
      if (e.op == ExprOp::Load) {
        lane[static_cast<size_t>(id)] = is_one(index(e.index).strides[nd_ - 1]);
        if (lane[static_cast<size_t>(id)]) {
          const DType bt = k_.buffers[static_cast<size_t>(e.buffer)].dtype;
          const std::string vt = std::string("kiln_vec<") + mem_type(bt) + ", " + v + ">";
          line("const " + vt + " v" + std::to_string(id) + " = *reinterpret_cast<const " + vt + "*>(b" +
               std::to_string(e.buffer) + " + (" + index_text(index(e.index)) + "));");
          load_text_[static_cast<size_t>(id)] = mem_to_reg(bt, "v" + std::to_string(id) + ".v[l]");
        }
      }
      for (int a = 0; a < expr_arity(e.op); ++a) lane[static_cast<size_t>(id)] |= lane[arg_id(e, a)];
    }
    define(ids, [&](int id) { return !lane[static_cast<size_t>(id)]; });
    std::vector<size_t> stores;
    for (size_t s = 0; s < k_.stores.size(); ++s) {
      const Store& st = k_.stores[s];
      if (st.stage != -1) continue;
      stores.push_back(s);
      line(std::string("kiln_vec<") + mem_type(k_.buffers[static_cast<size_t>(st.buffer)].dtype) + ", " + v + "> w" +
           std::to_string(s) + ";");
    }
    line("#pragma unroll");
    open("for (int l = 0; l < " + v + "; ++l)");
    define(ids, [&](int id) { return lane[static_cast<size_t>(id)] != 0; });
    for (size_t s : stores) {
      const Store& st = k_.stores[s];
      const DType bt = k_.buffers[static_cast<size_t>(st.buffer)].dtype;
      line("w" + std::to_string(s) + ".v[l] = " + reg_to_mem(bt, cast(name(st.value), dtype_of(st.value), bt)) + ";");
    }
    close();
    for (size_t s : stores) {
      const Store& st = k_.stores[s];
      const DType bt = k_.buffers[static_cast<size_t>(st.buffer)].dtype;
      const std::string vt = std::string("kiln_vec<") + mem_type(bt) + ", " + v + ">";
      line("*reinterpret_cast<" + vt + "*>(b" + std::to_string(st.buffer) + " + (" + index_text(index(st.index)) + ")) = w" +
           std::to_string(s) + ";");
    }
    for (std::string& t : load_text_) t.clear();
    defined_ = saved;
  }

  // ---- reductions -----------------------------------------------------------------------
  std::string identity(const Accumulator& a) const {
    const DType t = a.dtype;
    if (is_floating_point(t)) {
      const bool d = reg_is_double(t);
      switch (a.op) {
        case ReduceOp::Sum: return d ? "0.0" : "0.0f";
        case ReduceOp::Prod: return d ? "1.0" : "1.0f";
        case ReduceOp::Max: return d ? "(-kiln_inf_d())" : "(-kiln_inf_f())";
        case ReduceOp::Min: return d ? "kiln_inf_d()" : "kiln_inf_f()";
      }
    }
    if (t == DType::Bool) return a.op == ReduceOp::Prod || a.op == ReduceOp::Min ? "true" : "false";
    switch (a.op) {
      case ReduceOp::Sum: return std::string("((") + reg_type(t) + ")0)";
      case ReduceOp::Prod: return std::string("((") + reg_type(t) + ")1)";
      case ReduceOp::Max: return int_limit(t, false);
      case ReduceOp::Min: return int_limit(t, true);
    }
    return "";
  }

  void reduction() {
    const size_t nacc = k_.accs.size();
    if (strategy_ == CudaStrategy::Block)
      for (size_t a = 0; a < nacc; ++a)
        line(std::string("__shared__ ") + reg_type(k_.accs[a].dtype) + " kiln_s" + std::to_string(a) + "[33];");
    const std::string outer = dims_product(0, no_);
    const std::string rows = dims_product(no_, nd_);
    std::string lane_first, lane_step;
    switch (strategy_) {
      case CudaStrategy::Thread:
        line("const long long kiln_step = (long long)gridDim.x * blockDim.x;");
        loop("long long o = (long long)blockIdx.x * blockDim.x + threadIdx.x; o < " + outer + "; o += kiln_step");
        lane_first = "0";
        lane_step = "1";
        break;
      case CudaStrategy::Warp:
        line("const long long kiln_step = (long long)gridDim.x * (blockDim.x >> 5);");
        loop("long long o = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); o < " + outer + "; o += kiln_step");
        lane_first = "(threadIdx.x & 31)";
        lane_step = "32";
        break;
      case CudaStrategy::Block:
        loop("long long o = blockIdx.x; o < " + outer + "; o += gridDim.x");
        lane_first = "threadIdx.x";
        lane_step = "blockDim.x";
        break;
      case CudaStrategy::Pointwise: KILN_INTERNAL_ASSERT(false, "reduction() on a pointwise kernel");
    }
    // Outer indices: whatever any stage or the final stores address.
    std::vector<int> all_roots = store_roots(-1);
    for (const Accumulator& a : k_.accs) all_roots.push_back(a.value);
    for (const Store& s : k_.stores) all_roots.push_back(s.value);
    std::vector<char> used_outer(nd_, 0);
    {
      const std::vector<int> ids = closure(all_roots);
      for (int st = -1; st < k_.num_stages; ++st) {
        std::vector<char> u = dims_used(ids, st, 0, no_);
        for (size_t d = 0; d < no_; ++d) used_outer[d] |= u[d];
      }
    }
    decompose("o", 0, no_, used_outer, "q");
    std::fill(defined_.begin(), defined_.end(), 0);

    for (int s = 0; s < k_.num_stages; ++s) {
      std::vector<size_t> accs;
      std::vector<int> roots = store_roots(s);
      for (size_t a = 0; a < nacc; ++a)
        if (k_.accs[a].stage == s) {
          accs.push_back(a);
          roots.push_back(k_.accs[a].value);
        }
      bool stores = false;
      for (const Store& st : k_.stores) stores |= st.stage == s;
      line("// stage " + std::to_string(s));
      for (size_t a : accs)
        line(std::string(reg_type(k_.accs[a].dtype)) + " a" + std::to_string(a) + " = " + identity(k_.accs[a]) + ";");
      const std::vector<int> ids = closure(roots);
      // Invariant over the reduced dims: once per outer point, before the loop.
      define(ids, [&](int id) { return !inner_[static_cast<size_t>(id)] && !reads_written_[static_cast<size_t>(id)]; });
      loop("long long r = " + lane_first + "; r < " + rows + "; r += " + lane_step);
      decompose("r", no_, nd_, dims_used(ids, s, no_, nd_), "qr");
      const std::vector<char> saved = defined_;
      define(ids, [](int) { return true; });
      for (size_t a : accs) {
        const Accumulator& acc = k_.accs[a];
        const std::string an = "a" + std::to_string(a);
        line(an + " = kiln_" + reduce_fn(acc.op) + "(" + an + ", " + cast(name(acc.value), dtype_of(acc.value), acc.dtype) + ");");
      }
      store_all(s);
      defined_ = saved;
      close();
      combine(accs, stores);
      for (size_t a : accs)
        if (is_half_like(k_.accs[a].dtype))
          line("a" + std::to_string(a) + " = " + round_to(k_.accs[a].dtype, "a" + std::to_string(a)) + ";");
    }
    const std::vector<int> final_roots = store_roots(-1);
    if (!final_roots.empty()) {
      line("// stores at the outer point");
      const bool one = strategy_ != CudaStrategy::Thread;
      if (one) open(strategy_ == CudaStrategy::Warp ? "if ((threadIdx.x & 31) == 0)" : "if (threadIdx.x == 0)");
      define(closure(final_roots), [](int) { return true; });
      store_all(-1);
      if (one) close();
    }
    close();
  }

  // Combines the threads' partial accumulators of one stage; afterwards every thread of the outer
  // point holds the final values, and the stage's stores are visible to all of them.
  void combine(const std::vector<size_t>& accs, bool stores) {
    switch (strategy_) {
      case CudaStrategy::Thread:
      case CudaStrategy::Pointwise: return;
      case CudaStrategy::Warp:
        for (size_t a : accs) {
          const std::string an = "a" + std::to_string(a);
          line(an + " = kiln_warp_" + reduce_fn(k_.accs[a].op) + "(" + an + ");");
        }
        if (stores) line("__syncwarp();");
        return;
      case CudaStrategy::Block: {
        if (accs.empty()) {
          if (stores) line("__syncthreads();");
          return;
        }
        for (size_t a : accs) {
          const std::string an = "a" + std::to_string(a);
          line(an + " = kiln_warp_down_" + reduce_fn(k_.accs[a].op) + "(" + an + ");");
        }
        open("if ((threadIdx.x & 31) == 0)");
        for (size_t a : accs) line("kiln_s" + std::to_string(a) + "[threadIdx.x >> 5] = a" + std::to_string(a) + ";");
        close();
        line("__syncthreads();");
        // Thread 0 holds warp 0's partial; it adds the others in warp order (deterministic).
        open("if (threadIdx.x == 0)");
        for (size_t a : accs) {
          const std::string an = "a" + std::to_string(a), sn = "kiln_s" + std::to_string(a);
          line("for (unsigned w = 1; w < (blockDim.x >> 5); ++w) " + an + " = kiln_" + reduce_fn(k_.accs[a].op) + "(" + an +
               ", " + sn + "[w]);");
          line(sn + "[32] = " + an + ";");
        }
        close();
        line("__syncthreads();");
        for (size_t a : accs) line("a" + std::to_string(a) + " = kiln_s" + std::to_string(a) + "[32];");
        return;
      }
    }
  }

  const Kernel& k_;
  const size_t nd_, no_;
  std::ostringstream os_;
  int depth_ = 0;
  CudaStrategy strategy_ = CudaStrategy::Pointwise;
  int block_ = 256;
  int vec_ = 1;
  std::vector<char> inner_, reads_written_, defined_;
  std::vector<std::string> load_text_;  // a Load's text when not a plain scalar load (vector lanes)
};

const char* const kPreamble = R"CUDA(// kiln fused kernels (fusion/cuda_render.cpp). Generated code: do not edit.
template <class T, int N> struct alignas(sizeof(T) * N) kiln_vec { T v[N]; };

__device__ __forceinline__ float kiln_inf_f() { return __uint_as_float(0x7f800000u); }
__device__ __forceinline__ float kiln_nan_f() { return __uint_as_float(0x7fc00000u); }
__device__ __forceinline__ double kiln_inf_d() { return __longlong_as_double(0x7ff0000000000000LL); }
__device__ __forceinline__ double kiln_nan_d() { return __longlong_as_double(0x7ff8000000000000LL); }

// float16 <-> float: the hardware conversions (one instruction each; round to nearest even, as
// core/half.h; a NaN becomes the canonical 0x7fff where core/half.h keeps the sign: 0x7e00).
__device__ __forceinline__ float kiln_f16_to_f32(unsigned short h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}
__device__ __forceinline__ unsigned short kiln_f32_to_f16(float f) {
  unsigned short h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}
// bfloat16 <-> float: bit-exact copies of core/half.h.
__device__ __forceinline__ float kiln_bf16_to_f32(unsigned short h) { return __uint_as_float((unsigned)h << 16); }
__device__ __forceinline__ unsigned short kiln_f32_to_bf16(float f) {
  const unsigned x = __float_as_uint(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((x >> 16) | 0x40u);
  return (unsigned short)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}
__device__ __forceinline__ float kiln_round_f16(float f) { return kiln_f16_to_f32(kiln_f32_to_f16(f)); }
__device__ __forceinline__ float kiln_round_bf16(float f) { return kiln_bf16_to_f32(kiln_f32_to_bf16(f)); }

// float -> integer as kiln::convert: NaN -> 0, saturating at the type's range, else truncation.
#define KILN_TO_INT(NAME, T, LO, HI)                                                                  \
  __device__ __forceinline__ T NAME(float x) {                                                        \
    return x != x ? (T)0 : x <= (float)(LO) ? (T)(LO) : x >= (float)(HI) ? (T)(HI) : (T)x;           \
  }                                                                                                   \
  __device__ __forceinline__ T NAME(double x) {                                                       \
    return x != x ? (T)0 : x <= (double)(LO) ? (T)(LO) : x >= (double)(HI) ? (T)(HI) : (T)x;         \
  }
KILN_TO_INT(kiln_to_u8, unsigned char, 0, 255)
KILN_TO_INT(kiln_to_i8, signed char, -128, 127)
KILN_TO_INT(kiln_to_i16, short, -32768, 32767)
KILN_TO_INT(kiln_to_i32, int, -2147483647 - 1, 2147483647)
KILN_TO_INT(kiln_to_i64, long long, -9223372036854775807LL - 1LL, 9223372036854775807LL)
#undef KILN_TO_INT

// Integer comparisons (a function keeps `x < 0` of an unsigned x from being a warning).
template <class T> __device__ __forceinline__ bool kiln_lt(T a, T b) { return a < b; }
template <class T> __device__ __forceinline__ bool kiln_le(T a, T b) { return a <= b; }
template <class T> __device__ __forceinline__ bool kiln_gt(T a, T b) { return a > b; }
template <class T> __device__ __forceinline__ bool kiln_ge(T a, T b) { return a >= b; }
template <class T> __device__ __forceinline__ bool kiln_eq(T a, T b) { return a == b; }
template <class T> __device__ __forceinline__ bool kiln_ne(T a, T b) { return a != b; }

__device__ __forceinline__ bool kiln_isnan(float x) { return x != x; }
__device__ __forceinline__ bool kiln_isnan(double x) { return x != x; }

// Integer arithmetic wraps (as eager kiln, built with -fwrapv): done in unsigned types. Division
// and remainder are total: x / 0 = x % 0 = 0, MIN / -1 wraps to MIN, x % -1 = 0 (as fm::fmod).
#define KILN_INT_OPS(T, U)                                                                             \
  __device__ __forceinline__ T kiln_add(T a, T b) { return (T)((U)a + (U)b); }                        \
  __device__ __forceinline__ T kiln_sub(T a, T b) { return (T)((U)a - (U)b); }                        \
  __device__ __forceinline__ T kiln_mul(T a, T b) { return (T)((U)a * (U)b); }                        \
  __device__ __forceinline__ T kiln_neg(T a) { return (T)((U)0 - (U)a); }                             \
  __device__ __forceinline__ bool kiln_isnan(T) { return false; }                                     \
  __device__ __forceinline__ T kiln_sum(T a, T b) { return kiln_add(a, b); }                          \
  __device__ __forceinline__ T kiln_prod(T a, T b) { return kiln_mul(a, b); }                         \
  __device__ __forceinline__ T kiln_max(T a, T b) { return b > a ? b : a; }                           \
  __device__ __forceinline__ T kiln_min(T a, T b) { return b < a ? b : a; }
#define KILN_SIGNED_OPS(T, U)                                                                          \
  KILN_INT_OPS(T, U)                                                                                   \
  __device__ __forceinline__ T kiln_abs(T a) { return a < 0 ? kiln_neg(a) : a; }                      \
  __device__ __forceinline__ T kiln_div(T a, T b) {                                                   \
    return b == 0 ? (T)0 : b == (T)-1 ? kiln_neg(a) : (T)(a / b);                                     \
  }                                                                                                   \
  __device__ __forceinline__ T kiln_rem(T a, T b) { return (b == 0 || b == (T)-1) ? (T)0 : (T)(a % b); } \
  __device__ __forceinline__ T kiln_pow(T a, T b) {                                                   \
    if (b < 0) return a == 1 ? (T)1 : a == (T)-1 ? ((b & 1) ? (T)-1 : (T)1) : (T)0;                   \
    U base = (U)a, r = 1;                                                                             \
    for (T e = b; e > 0; e = (T)(e >> 1)) {                                                           \
      if (e & 1) r = r * base;                                                                        \
      base = base * base;                                                                             \
    }                                                                                                 \
    return (T)r;                                                                                      \
  }
KILN_SIGNED_OPS(signed char, unsigned)
KILN_SIGNED_OPS(short, unsigned)
KILN_SIGNED_OPS(int, unsigned)
KILN_SIGNED_OPS(long long, unsigned long long)
KILN_INT_OPS(unsigned char, unsigned)
__device__ __forceinline__ unsigned char kiln_abs(unsigned char a) { return a; }
__device__ __forceinline__ unsigned char kiln_div(unsigned char a, unsigned char b) { return b == 0 ? 0 : a / b; }
__device__ __forceinline__ unsigned char kiln_rem(unsigned char a, unsigned char b) { return b == 0 ? 0 : a % b; }
__device__ __forceinline__ unsigned char kiln_pow(unsigned char a, unsigned char b) {
  unsigned base = a, r = 1;
  for (unsigned e = b; e > 0; e >>= 1) {
    if (e & 1) r = r * base;
    base = base * base;
  }
  return (unsigned char)r;
}
#undef KILN_SIGNED_OPS
#undef KILN_INT_OPS
__device__ __forceinline__ bool kiln_neg(bool a) { return a; }
__device__ __forceinline__ bool kiln_abs(bool a) { return a; }
__device__ __forceinline__ bool kiln_isnan(bool) { return false; }
__device__ __forceinline__ bool kiln_div(bool a, bool b) { return b && a; }
__device__ __forceinline__ bool kiln_rem(bool, bool) { return false; }

// Accumulator folds. Float max/min propagate NaN: a NaN operand wins, and a NaN accumulator
// stays (nothing compares greater than it).
__device__ __forceinline__ float kiln_sum(float a, float b) { return a + b; }
__device__ __forceinline__ double kiln_sum(double a, double b) { return a + b; }
__device__ __forceinline__ bool kiln_sum(bool a, bool b) { return a || b; }
__device__ __forceinline__ float kiln_prod(float a, float b) { return a * b; }
__device__ __forceinline__ double kiln_prod(double a, double b) { return a * b; }
__device__ __forceinline__ bool kiln_prod(bool a, bool b) { return a && b; }
__device__ __forceinline__ float kiln_max(float a, float b) { return (b != b || b > a) ? b : a; }
__device__ __forceinline__ double kiln_max(double a, double b) { return (b != b || b > a) ? b : a; }
__device__ __forceinline__ bool kiln_max(bool a, bool b) { return a || b; }
__device__ __forceinline__ float kiln_min(float a, float b) { return (b != b || b < a) ? b : a; }
__device__ __forceinline__ double kiln_min(double a, double b) { return (b != b || b < a) ? b : a; }
__device__ __forceinline__ bool kiln_min(bool a, bool b) { return a && b; }

// Warp shuffles of every register type (narrow ones travel as int).
__device__ __forceinline__ float kiln_shfl_down(float v, int d) { return __shfl_down_sync(0xffffffffu, v, d); }
__device__ __forceinline__ double kiln_shfl_down(double v, int d) { return __shfl_down_sync(0xffffffffu, v, d); }
__device__ __forceinline__ int kiln_shfl_down(int v, int d) { return __shfl_down_sync(0xffffffffu, v, d); }
__device__ __forceinline__ long long kiln_shfl_down(long long v, int d) { return __shfl_down_sync(0xffffffffu, v, d); }
__device__ __forceinline__ short kiln_shfl_down(short v, int d) { return (short)__shfl_down_sync(0xffffffffu, (int)v, d); }
__device__ __forceinline__ signed char kiln_shfl_down(signed char v, int d) { return (signed char)__shfl_down_sync(0xffffffffu, (int)v, d); }
__device__ __forceinline__ unsigned char kiln_shfl_down(unsigned char v, int d) { return (unsigned char)__shfl_down_sync(0xffffffffu, (int)v, d); }
__device__ __forceinline__ bool kiln_shfl_down(bool v, int d) { return __shfl_down_sync(0xffffffffu, (int)v, d) != 0; }
__device__ __forceinline__ float kiln_shfl_first(float v) { return __shfl_sync(0xffffffffu, v, 0); }
__device__ __forceinline__ double kiln_shfl_first(double v) { return __shfl_sync(0xffffffffu, v, 0); }
__device__ __forceinline__ int kiln_shfl_first(int v) { return __shfl_sync(0xffffffffu, v, 0); }
__device__ __forceinline__ long long kiln_shfl_first(long long v) { return __shfl_sync(0xffffffffu, v, 0); }
__device__ __forceinline__ short kiln_shfl_first(short v) { return (short)__shfl_sync(0xffffffffu, (int)v, 0); }
__device__ __forceinline__ signed char kiln_shfl_first(signed char v) { return (signed char)__shfl_sync(0xffffffffu, (int)v, 0); }
__device__ __forceinline__ unsigned char kiln_shfl_first(unsigned char v) { return (unsigned char)__shfl_sync(0xffffffffu, (int)v, 0); }
__device__ __forceinline__ bool kiln_shfl_first(bool v) { return __shfl_sync(0xffffffffu, (int)v, 0) != 0; }

// Warp reductions: kiln_warp_down_<op> leaves the warp's result in lane 0 (a fixed tree, so
// every run gives the same bits); kiln_warp_<op> then broadcasts it to every lane.
#define KILN_WARP_REDUCE(OP)                                                                           \
  template <class T> __device__ __forceinline__ T kiln_warp_down_##OP(T v) {                          \
    for (int d = 16; d > 0; d >>= 1) v = kiln_##OP(v, kiln_shfl_down(v, d));                          \
    return v;                                                                                          \
  }                                                                                                    \
  template <class T> __device__ __forceinline__ T kiln_warp_##OP(T v) { return kiln_shfl_first(kiln_warp_down_##OP(v)); }
KILN_WARP_REDUCE(sum)
KILN_WARP_REDUCE(prod)
KILN_WARP_REDUCE(max)
KILN_WARP_REDUCE(min)
#undef KILN_WARP_REDUCE

)CUDA";

}  // namespace

const std::string& cuda_preamble() {
  static const std::string& text = *new std::string(kPreamble);  // never destroyed (used at exit)
  return text;
}

CudaKernel render_cuda(const Kernel& kernel) { return Renderer(kernel).render(); }

std::string cuda_translation_unit(const std::vector<CudaKernel>& kernels) {
  std::string out = cuda_preamble();
  std::unordered_set<std::string> seen;
  for (const CudaKernel& k : kernels) {
    if (!seen.insert(k.symbol).second) continue;
    out += "\n";
    out += k.source;
  }
  return out;
}

CudaLaunch cuda_launch_config(const Kernel& k, const CudaKernel& rendered, const std::vector<int64_t>& params,
                              int multiprocessors) {
  auto value = [&](const Int& v) {
    if (v.is_const()) return v.value;
    KILN_INTERNAL_ASSERT(static_cast<size_t>(v.param) < params.size(), "cuda_launch_config: kernel ", k.name, " needs p",
                         v.param, " but ", params.size(), " parameter(s) were given");
    return params[static_cast<size_t>(v.param)];
  };
  int64_t points = 1;  // outer points (all points for a pointwise kernel)
  for (int d = 0; d < k.num_outer; ++d) points *= value(k.dims[static_cast<size_t>(d)]);
  CudaLaunch l;
  l.block = static_cast<uint32_t>(rendered.block_size);
  if (points <= 0) return l;
  const int64_t block = rendered.block_size;
  int64_t blocks = 0;
  switch (rendered.strategy) {
    case CudaStrategy::Pointwise: {
      const int64_t items = (points + rendered.vector_width - 1) / rendered.vector_width;
      blocks = (items + block - 1) / block;
      break;
    }
    case CudaStrategy::Thread: blocks = (points + block - 1) / block; break;
    case CudaStrategy::Warp: blocks = (points + block / 32 - 1) / (block / 32); break;
    case CudaStrategy::Block: blocks = points; break;
  }
  // A few waves of resident blocks; the grid-stride loops take the rest.
  const int64_t cap = static_cast<int64_t>(std::max(multiprocessors, 1)) * 32;
  l.grid = static_cast<uint32_t>(std::max<int64_t>(1, std::min(blocks, cap)));
  return l;
}

}  // namespace kiln::fusion
