// CUDA kernels of rows that are compositions of rows with fused CUDA kernels: argmax/argmin and
// max/min with indices, all/any, var_mean, equal, allclose, cat, tril/triu, one_hot, mse_loss,
// nll_loss and cross_entropy. Written with public ops only, so they are device-agnostic: the
// tests run each one on CPU tensors against the row's CPU kernel (cuda_compositions()), which is
// how they are checked where no GPU is.
#include "autograd/grad_mode.h"
#include "core/ops.h"
#include "core/shape.h"
#include "kernels/cuda/cuda_kernels.h"

namespace kiln {
namespace {

constexpr int kCudaIdx = static_cast<int>(DeviceType::CUDA);

// [n] int64 0..n-1 on `dev`, viewed along `dim` of a rank-`rank` tensor.
Tensor iota(int64_t n, const Device& dev, int64_t rank, int64_t dim) {
  Shape shape(static_cast<size_t>(rank), 1);
  shape[static_cast<size_t>(dim)] = n;
  return arange(n, TensorOptions(kInt64)).to(dev).view(shape);
}

void write(const Tensor& result, Tensor& out) { out.copy_(result.reshape(out.sizes())); }

// Index of the first extreme along `dim`; NaN counts as the extreme (as the CPU kernels do).
Tensor arg_extreme(const Tensor& x, int64_t dim, bool keepdim, bool max) {
  Tensor m = max ? amax(x, {dim}, true) : amin(x, {dim}, true);
  Tensor hit = logical_or(eq(x, m), ne(x, x));
  const int64_t n = x.size(dim);
  return amin(where(hit, iota(n, x.device(), x.dim(), dim), Scalar(n)), {dim}, keepdim);
}

void arg_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  NoGradGuard no_grad;
  const bool max = op.name == "argmax" || op.name == "max_dim";
  const bool with_values = op.name == "max_dim" || op.name == "min_dim";
  Tensor x = in[0];
  int64_t dim = 0;
  if (a.is_none(0)) {
    x = x.reshape({-1});
  } else {
    dim = wrap_dim(op.name, a.i(0), std::max<int64_t>(x.dim(), 1));
    if (x.dim() == 0) x = x.reshape({1});
  }
  Tensor idx = arg_extreme(x, dim, a.b(1), max);
  if (with_values) {
    write(max ? amax(x, {dim}, a.b(1)) : amin(x, {dim}, a.b(1)), out[0]);
    write(idx, out[1]);
  } else {
    write(idx, out[0]);
  }
}

void all_any_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  NoGradGuard no_grad;
  Tensor nz = in[0].ne(Scalar(0)).to(kUInt8);
  write(op.name == "all" ? amin(nz, a.ints(0), a.b(1)) : amax(nz, a.ints(0), a.b(1)), out[0]);
}

void var_mean_kernel(const OpDef&, const TensorList& in, TensorList& out, const Attrs& a) {
  NoGradGuard no_grad;
  write(var(in[0], a.ints(0), a.i(1), a.b(2)), out[0]);
  write(mean(in[0], a.ints(0), a.b(2)), out[1]);
}

void equal_kernel(const OpDef&, const TensorList& in, TensorList& out, const Attrs&) {
  NoGradGuard no_grad;
  if (in[0].sizes() != in[1].sizes()) return write(full({}, false, kBool, out[0].device()), out[0]);
  write(all(eq(in[0], in[1])), out[0]);
}

void allclose_kernel(const OpDef&, const TensorList& in, TensorList& out, const Attrs& a) {
  NoGradGuard no_grad;
  const Tensor &x = in[0], &y = in[1];
  Tensor close = le(abs(x - y), abs(y) * a.d(0) + a.d(1));
  close = logical_or(close, eq(x, y));  // equal infinities
  if (a.b(2)) close = logical_or(close, logical_and(ne(x, x), ne(y, y)));
  write(all(close), out[0]);
}

// Each input copied into its slice of the output.
void cat_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  NoGradGuard no_grad;
  Tensor& o = out[0];
  if (o.numel() == 0 && o.dim() == 1) return;
  const int64_t dim = wrap_dim(op.name, a.i(0), o.dim());
  int64_t offset = 0;
  for (const Tensor& t : in) {
    if (t.dim() == 1 && t.size(0) == 0) continue;  // PyTorch's legacy empty tensors
    Tensor slice = o.narrow(dim, offset, t.size(dim));
    slice.copy_(t);
    offset += t.size(dim);
  }
}

void tri_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  NoGradGuard no_grad;
  const Tensor& x = in[0];
  const int64_t R = x.size(-2), C = x.size(-1), k = a.i(0);
  Tensor offset = iota(C, x.device(), 2, 1) - iota(R, x.device(), 2, 0);  // col - row
  Tensor keep = op.name == "tril" ? le(offset, full({}, k, kInt64, x.device()))
                                  : ge(offset, full({}, k, kInt64, x.device()));
  write(where(keep, x, Scalar(0)).to(out[0].dtype()), out[0]);
}

void one_hot_kernel(const OpDef&, const TensorList& in, TensorList& out, const Attrs&) {
  NoGradGuard no_grad;
  const int64_t C = out[0].size(-1);
  Tensor idx = in[0].to(kInt64).unsqueeze(-1);
  write(eq(idx, iota(C, idx.device(), idx.dim(), idx.dim() - 1)), out[0]);
}

void mse_loss_kernel(const OpDef&, const TensorList& in, TensorList& out, const Attrs& a) {
  NoGradGuard no_grad;
  const DType dt = out[0].dtype();
  Tensor d = in[0].to(dt) - in[1].to(dt);
  Tensor sq = d * d;
  write(a.i(0) == 0 ? sq : a.i(0) == 1 ? sq.mean() : sq.sum(), out[0]);
}

// cross_entropy (log_softmax first) and nll_loss; PyTorch's semantics, as the CPU kernel
// (kernels/cpu/nn_loss.cpp): class-index targets with weights, ignore_index and label smoothing,
// or class-probability targets.
void class_loss(const OpDef& op, const TensorList& in, Tensor& out, int64_t reduction, int64_t ignore, double ls,
                bool take_log_softmax) {
  NoGradGuard no_grad;
  const DType dt = out.dtype();
  const Tensor x = in[0].to(dt);
  const Tensor& target = in[1];
  const int64_t cd = x.dim() == 1 ? 0 : 1, C = x.size(cd);
  const Device dev = x.device();
  Tensor logp = take_log_softmax ? log_softmax(x, cd) : x;
  Tensor w = in.size() > 2 && in[2].defined() ? in[2].to(dt) : ones({C}, TensorOptions(dt).device(dev));
  Shape wshape(static_cast<size_t>(x.dim()), 1);
  wshape[static_cast<size_t>(cd)] = C;
  Tensor wv = w.view(wshape);
  Tensor loss, denom;
  if (is_floating_point(target.dtype())) {
    Tensor tp = target.to(dt) * (1.0 - ls) + ls / static_cast<double>(C);
    loss = neg((wv * tp * logp).sum({cd}));
    denom = full({}, static_cast<double>(loss.numel()), dt, dev);
  } else {
    Tensor t = target.to(kInt64);
    Tensor bad = logical_and(t.ne(Scalar(ignore)), logical_or(t.lt(Scalar(0)), t.ge(Scalar(C))));
    if (bad.numel() > 0 && any(bad).item().to<bool>()) {
      const int64_t v = where(bad, t, Scalar(0)).abs().amax().item().to<int64_t>();
      const int64_t shown = any(logical_and(bad, t.lt(Scalar(0)))).item().to<bool>() ? -v : v;
      KILN_FAIL("[", op.name, "] target ", shown, " is out of bounds: expected a class index in [0, ", C, ") for C = ", C,
                " classes (or ignore_index ", ignore, ")");
    }
    Tensor valid = t.ne(Scalar(ignore)).to(dt);
    Tensor mask = eq(t.unsqueeze(cd), iota(C, dev, x.dim(), cd));
    Tensor zero = zeros({}, TensorOptions(dt).device(dev));
    Tensor picked = where(mask, logp * wv, zero).sum({cd});
    loss = picked * (-(1.0 - ls));
    if (ls > 0) loss = loss - (logp * wv).sum({cd}) * (ls / static_cast<double>(C));
    loss = loss * valid;
    denom = (where(mask, wv, zero).sum({cd}) * valid).sum();
  }
  write(reduction == 0 ? loss : reduction == 1 ? loss.sum() / denom : loss.sum(), out);
}

void cross_entropy_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  class_loss(op, in, out[0], a.i(0), a.i(1), a.d(2), true);
}

void nll_loss_kernel(const OpDef& op, const TensorList& in, TensorList& out, const Attrs& a) {
  class_loss(op, in, out[0], a.i(0), a.i(1), 0.0, false);
}

}  // namespace

void split_full_reduction(const OpDef& op, const Tensor& x, Tensor& out, const Attrs& a) {
  NoGradGuard no_grad;
  const bool is_mean = op.name == "mean", with_dtype = op.name == "sum" || is_mean;
  const OpDef& stage = is_mean ? op_def("sum") : op;
  // Stage dtype: the result's (sum's and mean's dtype argument; amax/amin keep the input's).
  auto reduce = [&](const Tensor& t, int64_t dim) {
    Attrs attrs{Shape{dim}, false};
    if (with_dtype) attrs.push(out.dtype());
    return call_op1(stage, {t}, attrs);
  };
  constexpr int64_t kChunks = 1024;
  const int64_t n = x.numel(), per = n / kChunks;
  Tensor flat = x.reshape({-1});
  Tensor partial = reduce(flat.narrow(0, 0, kChunks * per).view({kChunks, per}), 1);
  if (n > kChunks * per) partial = cat({partial, flat.narrow(0, kChunks * per, n - kChunks * per).to(partial.dtype())});
  Tensor total = reduce(partial, 0);
  if (is_mean) total = total / static_cast<double>(n);
  write(total, out);
}

const std::map<std::string, KernelFn>& cuda_compositions() {
  static const std::map<std::string, KernelFn> m = {
      {"argmax", &arg_kernel},         {"argmin", &arg_kernel},        {"max_dim", &arg_kernel},
      {"min_dim", &arg_kernel},        {"all", &all_any_kernel},       {"any", &all_any_kernel},
      {"var_mean", &var_mean_kernel},  {"equal", &equal_kernel},       {"allclose", &allclose_kernel},
      {"cat", &cat_kernel},            {"tril", &tri_kernel},          {"triu", &tri_kernel},
      {"one_hot", &one_hot_kernel},    {"mse_loss", &mse_loss_kernel}, {"nll_loss", &nll_loss_kernel},
      {"cross_entropy", &cross_entropy_kernel},
  };
  return m;
}

namespace ops_registration {
void register_cuda_compositions(OpRegistry& r) {
  for (const auto& [name, fn] : cuda_compositions()) r.mutable_get(name).kernels[kCudaIdx] = fn;
}
}  // namespace ops_registration

}  // namespace kiln
