#include "fusion/kernel_ir.h"

#include <algorithm>
#include <sstream>

#include "core/error.h"
#include "jit/graph.h"

namespace kiln::fusion {

const char* expr_op_name(ExprOp op) {
  switch (op) {
    case ExprOp::Const: return "const";
    case ExprOp::Load: return "load";
    case ExprOp::Acc: return "acc";
    case ExprOp::Cast: return "cast";
    case ExprOp::Neg: return "neg";
    case ExprOp::Abs: return "abs";
    case ExprOp::Exp: return "exp";
    case ExprOp::Exp2: return "exp2";
    case ExprOp::Log: return "log";
    case ExprOp::Log2: return "log2";
    case ExprOp::Log10: return "log10";
    case ExprOp::Log1p: return "log1p";
    case ExprOp::Expm1: return "expm1";
    case ExprOp::Sqrt: return "sqrt";
    case ExprOp::Sin: return "sin";
    case ExprOp::Cos: return "cos";
    case ExprOp::Tan: return "tan";
    case ExprOp::Tanh: return "tanh";
    case ExprOp::Erf: return "erf";
    case ExprOp::Floor: return "floor";
    case ExprOp::Ceil: return "ceil";
    case ExprOp::Round: return "round";
    case ExprOp::Trunc: return "trunc";
    case ExprOp::IsNan: return "isnan";
    case ExprOp::Not: return "not";
    case ExprOp::Add: return "add";
    case ExprOp::Sub: return "sub";
    case ExprOp::Mul: return "mul";
    case ExprOp::Div: return "div";
    case ExprOp::Fmod: return "fmod";
    case ExprOp::Pow: return "pow";
    case ExprOp::Lt: return "lt";
    case ExprOp::Le: return "le";
    case ExprOp::Gt: return "gt";
    case ExprOp::Ge: return "ge";
    case ExprOp::Eq: return "eq";
    case ExprOp::Ne: return "ne";
    case ExprOp::And: return "and";
    case ExprOp::Or: return "or";
    case ExprOp::Select: return "select";
  }
  return "?";
}

int expr_arity(ExprOp op) {
  switch (op) {
    case ExprOp::Const:
    case ExprOp::Load:
    case ExprOp::Acc: return 0;
    case ExprOp::Select: return 3;
    default: return op >= ExprOp::Add ? 2 : 1;
  }
}

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return "sum";
    case ReduceOp::Prod: return "prod";
    case ReduceOp::Max: return "max";
    case ReduceOp::Min: return "min";
  }
  return "?";
}

namespace {

std::ostream& operator<<(std::ostream& os, const Int& v) {
  if (v.is_const()) return os << v.value;
  return os << "p" << v.param << "(=" << v.value << ")";
}

void key_int(std::ostream& os, const Int& v) {
  if (v.is_const())
    os << v.value;
  else
    os << "p" << v.param;
}

std::string index_str(const Kernel& k, const Index& ix) {
  std::ostringstream os;
  bool any = false;
  for (size_t d = 0; d < ix.strides.size(); ++d) {
    const Int& s = ix.strides[d];
    if (s.is_const() && s.value == 0) continue;
    if (any) os << " + ";
    any = true;
    if (!(s.is_const() && s.value == 1)) os << s << "*";
    os << "i" << d;
  }
  if (!(ix.offset.is_const() && ix.offset.value == 0) || !any) {
    if (any) os << " + ";
    os << ix.offset;
  }
  return os.str();
}

std::string expr_str(const Kernel& k, const Expr& e) {
  std::ostringstream os;
  os << jit::dtype_short_name(e.dtype) << " ";
  switch (e.op) {
    case ExprOp::Const:
      if (is_integral(e.dtype, false))
        os << e.ivalue;
      else
        os << e.value;
      break;
    case ExprOp::Load: os << "load b" << e.buffer << "[" << index_str(k, k.indices.at(static_cast<size_t>(e.index))) << "]"; break;
    case ExprOp::Acc: os << "acc" << e.acc; break;
    default: {
      os << expr_op_name(e.op) << "(";
      for (int a = 0; a < expr_arity(e.op); ++a) os << (a ? ", " : "") << "e" << e.args[a];
      os << ")";
    }
  }
  return os.str();
}

}  // namespace

std::string Kernel::str() const {
  std::ostringstream os;
  os << "kernel " << name << "(";
  for (size_t b = 0; b < buffers.size(); ++b)
    os << (b ? ", " : "") << "b" << b << ": " << jit::dtype_short_name(buffers[b].dtype) << "*"
       << (buffers[b].written ? (buffers[b].read ? " inout" : " out") : " in") << " " << buffers[b].label;
  os << ")\n  dims [";
  for (size_t d = 0; d < dims.size(); ++d) os << (d ? ", " : "") << "i" << d << " < " << dims[d];
  os << "]  outer i0..i" << num_outer - 1 << " (i0 split across threads)";
  if (num_params) os << "  params " << num_params;
  if (stream_stores) os << "  streaming stores";
  os << "\n";
  for (size_t i = 0; i < exprs.size(); ++i) os << "  e" << i << " = " << expr_str(*this, exprs[i]) << "\n";
  for (int s = 0; s < num_stages; ++s) {
    os << "  stage " << s << ": for i" << num_outer << "..i" << dims.size() - 1 << "\n";
    for (size_t a = 0; a < accs.size(); ++a)
      if (accs[a].stage == s)
        os << "    acc" << a << " = " << reduce_op_name(accs[a].op) << "(e" << accs[a].value << ") as "
           << jit::dtype_short_name(accs[a].dtype) << "\n";
    for (const Store& st : stores)
      if (st.stage == s)
        os << "    b" << st.buffer << "[" << index_str(*this, indices.at(static_cast<size_t>(st.index))) << "] = e" << st.value
           << "\n";
  }
  for (const Store& st : stores)
    if (st.stage < 0)
      os << "  b" << st.buffer << "[" << index_str(*this, indices.at(static_cast<size_t>(st.index))) << "] = e" << st.value << "\n";
  return os.str();
}

std::string Kernel::key() const {
  std::ostringstream os;
  os.precision(17);
  os << "d";
  for (const Int& d : dims) {
    os << ",";
    key_int(os, d);
  }
  os << "|o" << num_outer << "|s" << num_stages << "|p" << num_params << (stream_stores ? "|nt" : "") << "|b";
  for (const Buffer& b : buffers) os << static_cast<int>(b.dtype) << (b.read ? "r" : "") << (b.written ? "w" : "") << ",";
  os << "|x";
  for (const Index& ix : indices) {
    key_int(os, ix.offset);
    for (const Int& s : ix.strides) {
      os << ":";
      key_int(os, s);
    }
    os << ";";
  }
  os << "|e";
  for (const Expr& e : exprs) {
    os << static_cast<int>(e.op) << "." << static_cast<int>(e.dtype);
    switch (e.op) {
      case ExprOp::Const: os << "=" << e.value << "/" << e.ivalue; break;
      case ExprOp::Load: os << "@" << e.buffer << "/" << e.index; break;
      case ExprOp::Acc: os << "@" << e.acc; break;
      default:
        for (int a = 0; a < expr_arity(e.op); ++a) os << "," << e.args[a];
    }
    os << ";";
  }
  os << "|a";
  for (const Accumulator& a : accs)
    os << static_cast<int>(a.op) << "." << static_cast<int>(a.dtype) << "." << a.value << "." << a.stage << ";";
  os << "|w";
  for (const Store& s : stores) os << s.buffer << "." << s.index << "." << s.value << "." << s.stage << ";";
  return os.str();
}

void Kernel::verify() const {
  const size_t nd = dims.size();
  KILN_INTERNAL_ASSERT(num_outer >= 1 && static_cast<size_t>(num_outer) <= nd, "kernel ", name, ": num_outer ", num_outer,
                       " with ", nd, " dims");
  KILN_INTERNAL_ASSERT((num_stages > 0) == (static_cast<size_t>(num_outer) < nd), "kernel ", name,
                       ": stages exist exactly when there are reduced dims");
  auto check_int = [&](const Int& v, const char* what) {
    KILN_INTERNAL_ASSERT(v.param < num_params, "kernel ", name, ": ", what, " uses param ", v.param, " of ", num_params);
  };
  for (const Int& d : dims) check_int(d, "dim");
  for (const Index& ix : indices) {
    KILN_INTERNAL_ASSERT(ix.strides.size() == nd, "kernel ", name, ": index with ", ix.strides.size(), " strides for ", nd,
                         " dims");
    check_int(ix.offset, "offset");
    for (const Int& s : ix.strides) check_int(s, "stride");
  }
  // The stage at which each expr can be evaluated: the latest stage of an accumulator it reads.
  std::vector<int> ready(exprs.size(), -1);
  std::vector<char> inner(exprs.size(), 0);  // reads the reduced dims
  for (size_t i = 0; i < exprs.size(); ++i) {
    const Expr& e = exprs[i];
    for (int a = 0; a < expr_arity(e.op); ++a) {
      KILN_INTERNAL_ASSERT(e.args[a] >= 0 && static_cast<size_t>(e.args[a]) < i, "kernel ", name, ": e", i,
                           " refers to e", e.args[a]);
      ready[i] = std::max(ready[i], ready[static_cast<size_t>(e.args[a])]);
      inner[i] |= inner[static_cast<size_t>(e.args[a])];
    }
    if (e.op == ExprOp::Load) {
      KILN_INTERNAL_ASSERT(e.buffer >= 0 && static_cast<size_t>(e.buffer) < buffers.size() && buffers[static_cast<size_t>(e.buffer)].read,
                           "kernel ", name, ": e", i, " loads from b", e.buffer, " which is not a read buffer");
      KILN_INTERNAL_ASSERT(e.index >= 0 && static_cast<size_t>(e.index) < indices.size(), "kernel ", name, ": e", i, " bad index");
      KILN_INTERNAL_ASSERT(e.dtype == buffers[static_cast<size_t>(e.buffer)].dtype, "kernel ", name, ": e", i,
                           " loads a different dtype than its buffer's");
      const Index& ix = indices[static_cast<size_t>(e.index)];
      for (size_t d = static_cast<size_t>(num_outer); d < nd; ++d)
        if (!(ix.strides[d].is_const() && ix.strides[d].value == 0)) inner[i] = 1;
    }
    if (e.op == ExprOp::Acc) {
      KILN_INTERNAL_ASSERT(e.acc >= 0 && static_cast<size_t>(e.acc) < accs.size(), "kernel ", name, ": e", i, " bad acc");
      ready[i] = std::max(ready[i], accs[static_cast<size_t>(e.acc)].stage);
    }
  }
  for (size_t a = 0; a < accs.size(); ++a) {
    const Accumulator& acc = accs[a];
    KILN_INTERNAL_ASSERT(acc.stage >= 0 && acc.stage < num_stages && acc.value >= 0 && static_cast<size_t>(acc.value) < exprs.size(),
                         "kernel ", name, ": acc", a, " malformed");
    KILN_INTERNAL_ASSERT(ready[static_cast<size_t>(acc.value)] < acc.stage, "kernel ", name, ": acc", a, " (stage ", acc.stage,
                         ") reads an accumulator of its own or a later stage");
  }
  for (const Store& s : stores) {
    KILN_INTERNAL_ASSERT(s.buffer >= 0 && static_cast<size_t>(s.buffer) < buffers.size() && buffers[static_cast<size_t>(s.buffer)].written,
                         "kernel ", name, ": store to b", s.buffer, " which is not a written buffer");
    KILN_INTERNAL_ASSERT(s.value >= 0 && static_cast<size_t>(s.value) < exprs.size() && s.index >= 0 &&
                             static_cast<size_t>(s.index) < indices.size(),
                         "kernel ", name, ": malformed store");
    KILN_INTERNAL_ASSERT(s.stage < num_stages, "kernel ", name, ": store at stage ", s.stage);
    if (s.stage >= 0)
      KILN_INTERNAL_ASSERT(ready[static_cast<size_t>(s.value)] < s.stage, "kernel ", name, ": a store at stage ", s.stage,
                           " reads an accumulator of its own or a later stage");
    else
      KILN_INTERNAL_ASSERT(!inner[static_cast<size_t>(s.value)], "kernel ", name,
                           ": a store at the outer point reads values that vary over reduced dims");
  }
}

std::vector<int64_t> Kernel::param_values() const {
  std::vector<int64_t> out(static_cast<size_t>(num_params), 0);
  auto note = [&](const Int& v) {
    if (!v.is_const()) out.at(static_cast<size_t>(v.param)) = v.value;
  };
  for (const Int& d : dims) note(d);
  for (const Index& ix : indices) {
    note(ix.offset);
    for (const Int& s : ix.strides) note(s);
  }
  return out;
}

KernelCost estimate_cost(const Kernel& k) {
  KernelCost c;
  const size_t nd = k.dims.size();
  double outer = 1, inner = 1;
  for (size_t d = 0; d < nd; ++d)
    (static_cast<int>(d) < k.num_outer ? outer : inner) *= static_cast<double>(std::max<int64_t>(k.dims[d].value, 0));
  // Where each expression is evaluated: context 0 is the outer point (stage -1), s + 1 stage s.
  const size_t nctx = static_cast<size_t>(std::max(k.num_stages, 0)) + 1;
  std::vector<std::vector<char>> used(k.exprs.size(), std::vector<char>(nctx, 0));
  auto ctx = [&](int stage) { return std::min(static_cast<size_t>(stage + 1), nctx - 1); };
  for (const Store& s : k.stores)
    if (s.value >= 0) used[static_cast<size_t>(s.value)][ctx(s.stage)] = 1;
  for (const Accumulator& a : k.accs) {
    if (a.value >= 0) used[static_cast<size_t>(a.value)][ctx(a.stage)] = 1;
    c.flops += outer * inner;  // the fold
  }
  for (size_t i = k.exprs.size(); i-- > 0;) {
    const Expr& e = k.exprs[i];
    const int arity = expr_arity(e.op);
    for (size_t x = 0; x < nctx; ++x) {
      if (!used[i][x]) continue;
      if (arity > 0 && e.op != ExprOp::Cast) c.flops += x == 0 ? outer : outer * inner;
      for (int a = 0; a < arity; ++a)
        if (e.args[a] >= 0) used[static_cast<size_t>(e.args[a])][x] = 1;
    }
  }
  std::vector<double> elems(k.buffers.size(), 0);
  auto access = [&](int buffer, int index) {
    if (buffer < 0 || index < 0 || static_cast<size_t>(buffer) >= elems.size()) return;
    const Index& ix = k.indices[static_cast<size_t>(index)];
    double n = 1;
    for (size_t d = 0; d < nd && d < ix.strides.size(); ++d)
      if (!ix.strides[d].is_const() || ix.strides[d].value != 0) n *= static_cast<double>(std::max<int64_t>(k.dims[d].value, 0));
    elems[static_cast<size_t>(buffer)] = std::max(elems[static_cast<size_t>(buffer)], n);
  };
  for (const Expr& e : k.exprs)
    if (e.op == ExprOp::Load) access(e.buffer, e.index);
  for (const Store& s : k.stores) access(s.buffer, s.index);
  double bytes = 0;
  for (size_t b = 0; b < k.buffers.size(); ++b) {
    const Buffer& buf = k.buffers[b];
    bytes += elems[b] * static_cast<double>(itemsize(buf.dtype)) * ((buf.read ? 1 : 0) + (buf.written ? 1 : 0));
  }
  c.bytes = static_cast<int64_t>(bytes);
  return c;
}

}  // namespace kiln::fusion
