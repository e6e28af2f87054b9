// Registry rows of the matrix products: mm, bmm, matmul (torch.matmul's rank rules and batch
// broadcasting) and linear (x @ w^T + b). The convolution and pooling rows register from here too.
#include "core/op.h"
#include "core/ops.h"
#include "core/shape.h"
#include "kernels/conv.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/parallel.h"
#include "kernels/matmul_operands.h"

namespace kiln {
namespace {

constexpr int kCPUIdx = static_cast<int>(DeviceType::CPU);

void check_pair_dtypes(const OpDef& op, const Tensor& a, const Tensor& b, const char* na, const char* nb) {
  KILN_CHECK(a.dtype() == b.dtype(), "[", op.name, "] expected ", na, " and ", nb,
             " to have the same dtype, but got: ", a.dtype(), " != ", b.dtype());
  KILN_CHECK(a.dtype() != DType::Bool, "[", op.name, "] is not supported for bool tensors");
}

void check_inner(const OpDef& op, const Tensor& a, const Tensor& b, int64_t ka, int64_t kb) {
  KILN_CHECK(ka == kb, "[", op.name, "] shapes ", a.sizes(), " and ", b.sizes(), " cannot be multiplied (", ka,
             " != ", kb, ")");
}

std::vector<TensorMeta> mm_infer(const OpDef& op, const TensorList& in, const Attrs&) {
  const Tensor &a = in.at(0), &b = in.at(1);
  KILN_CHECK(a.dim() == 2 && b.dim() == 2, "[mm] expected 2-D tensors, but got shapes ", a.sizes(), " and ",
             b.sizes());
  check_pair_dtypes(op, a, b, "m1", "m2");
  check_inner(op, a, b, a.size(1), b.size(0));
  return {TensorMeta{{a.size(0), b.size(1)}, a.dtype(), common_device(op, in)}};
}

std::vector<TensorMeta> bmm_infer(const OpDef& op, const TensorList& in, const Attrs&) {
  const Tensor &a = in.at(0), &b = in.at(1);
  KILN_CHECK(a.dim() == 3 && b.dim() == 3, "[bmm] expected 3-D tensors, but got shapes ", a.sizes(), " and ",
             b.sizes());
  check_pair_dtypes(op, a, b, "batch1", "batch2");
  KILN_CHECK(a.size(0) == b.size(0), "[bmm] expected batch sizes to match, but got shapes ", a.sizes(), " and ",
             b.sizes(), " (", a.size(0), " != ", b.size(0), ")");
  check_inner(op, a, b, a.size(2), b.size(1));
  return {TensorMeta{{a.size(0), a.size(1), b.size(2)}, a.dtype(), common_device(op, in)}};
}

// torch.matmul: 1-D operands get a dim prepended (a) or appended (b) that the result drops;
// the batch dims (all but the last two) broadcast.
std::vector<TensorMeta> matmul_infer(const OpDef& op, const TensorList& in, const Attrs&) {
  const Tensor &a = in.at(0), &b = in.at(1);
  KILN_CHECK(a.dim() >= 1 && b.dim() >= 1, "[matmul] both arguments to matmul need to be at least 1D, but they are ",
             a.dim(), "D and ", b.dim(), "D");
  check_pair_dtypes(op, a, b, "m1", "m2");
  const int64_t ka = a.size(-1), kb = b.dim() == 1 ? b.size(0) : b.size(-2);
  check_inner(op, a, b, ka, kb);
  IntArrayRef abatch(a.sizes().data(), a.dim() > 2 ? a.dim() - 2 : 0);
  IntArrayRef bbatch(b.sizes().data(), b.dim() > 2 ? b.dim() - 2 : 0);
  Shape out = broadcast_shapes("matmul", abatch, bbatch);
  if (a.dim() >= 2) out.push_back(a.size(-2));
  if (b.dim() >= 2) out.push_back(b.size(-1));
  return {TensorMeta{std::move(out), a.dtype(), common_device(op, in)}};
}

void matmul_cpu(const OpDef&, const TensorList& in, TensorList& out, const Attrs&) {
  MatmulOperands m = matmul_as_matrices(in[0], in[1], out[0]);
  cpu::matmul_batched(m.a, m.b, m.out);
}

// linear(x [..., K], w [N, K], b [N]?) -> [..., N]
std::vector<TensorMeta> linear_infer(const OpDef& op, const TensorList& in, const Attrs&) {
  KILN_INTERNAL_ASSERT(in.size() == 2 || in.size() == 3, "[linear] takes 2 or 3 tensors");
  const Tensor &x = in[0], &w = in[1];
  KILN_CHECK(x.dim() >= 1, "[linear] expected input to have at least 1 dimension, but got a 0-D tensor");
  KILN_CHECK(w.dim() == 2, "[linear] expected weight to be 2-D, but got weight of shape ", w.sizes());
  check_pair_dtypes(op, x, w, "input", "weight");
  KILN_CHECK(x.size(-1) == w.size(1), "[linear] shapes ", x.sizes(), " and ", w.sizes(),
             "^T cannot be multiplied (", x.size(-1), " != ", w.size(1), ")");
  if (in.size() == 3) {
    const Tensor& bias = in[2];
    KILN_CHECK(bias.dtype() == x.dtype(), "[linear] expected input and bias to have the same dtype, but got: ",
               x.dtype(), " != ", bias.dtype());
    KILN_CHECK(bias.dim() == 0 || (bias.dim() == 1 && (bias.size(0) == w.size(0) || bias.size(0) == 1)),
               "[linear] expected bias of shape [", w.size(0), "] (out_features), but got bias of shape ",
               bias.sizes());
  }
  Shape out = x.sizes().vec();
  out.back() = w.size(0);
  return {TensorMeta{std::move(out), x.dtype(), common_device(op, in)}};
}

// Writes bias[j] into every row of C[M, N]: the GEMM then accumulates onto it (beta = 1), so the
// bias costs no separate read-modify-write pass over the output.
void fill_rows_with_bias(const Tensor& bias, Tensor& c2d) {
  const int64_t M = c2d.size(0), N = c2d.size(1);
  const int64_t bs = bias.dim() == 1 && bias.size(0) != 1 ? bias.stride(0) : 0;
  KILN_DISPATCH_ALL_TYPES(c2d.dtype(), "linear", {
    const scalar_t* bp = bias.data_ptr<scalar_t>();
    scalar_t* cp = c2d.data_ptr<scalar_t>();
    cpu::parallel_for(M, std::max<int64_t>(1, cpu::kParallelGrain / std::max<int64_t>(1, N)), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        scalar_t* __restrict row = cp + i * N;
        if (bs == 1) {
          for (int64_t j = 0; j < N; ++j) row[j] = bp[j];
        } else {
          for (int64_t j = 0; j < N; ++j) row[j] = bp[j * bs];
        }
      }
    });
  });
}

void linear_cpu(const OpDef&, const TensorList& in, TensorList& out, const Attrs&) {
  const Tensor &x = in[0], &w = in[1];
  Tensor o = out[0];
  if (o.numel() == 0) return;
  const int64_t K = x.size(-1), N = w.size(0), M = x.numel() / std::max<int64_t>(1, K);
  const int64_t rows = K == 0 ? o.numel() / N : M;
  // Flatten x's leading dims into GEMM rows: a view whenever the layout allows.
  Tensor x2 = x.reshape({rows, K});
  Tensor c = o.is_contiguous() ? o : empty(o.sizes(), o.dtype());
  Tensor c2 = c.view({rows, N});
  const bool has_bias = in.size() == 3;
  if (has_bias) fill_rows_with_bias(in[2], c2);
  cpu::gemm(x.dtype(), rows, N, K, cpu::MatRef{x2.data_ptr(), x2.stride(0), x2.stride(1)},
            cpu::MatRef{w.data_ptr(), w.stride(1), w.stride(0)}, c2.data_ptr(), N, has_bias);
  if (!c.is_same(o)) o.copy_(c);
}

OpDef matmul_row(const char* name, InferFn infer, KernelFn kernel) {
  OpDef d;
  d.name = name;
  d.kind = OpKind::Matmul;
  d.infer = infer;
  d.kernels[kCPUIdx] = kernel;
  return d;
}

}  // namespace

namespace ops_registration {
void register_linalg_ops(OpRegistry& r) {
  r.add(matmul_row("mm", &mm_infer, &matmul_cpu));
  r.add(matmul_row("bmm", &bmm_infer, &matmul_cpu));
  r.add(matmul_row("matmul", &matmul_infer, &matmul_cpu));
  r.add(matmul_row("linear", &linear_infer, &linear_cpu));
  register_conv_ops(r);
}
}  // namespace ops_registration

}  // namespace kiln
