// Matrix products: mm, bmm, matmul (every rank combination, batch broadcasting), linear.
#include "core/op.h"
#include "op_table.h"

namespace kiln {
namespace {

using optable::check_case;
using optable::OpCase;

// torch.matmul on float64 contiguous tensors with plain loops (1-D operands promoted and the
// added dim removed; batch dims broadcast).
Tensor ref_matmul(const Tensor& a, const Tensor& b) {
  const bool a1 = a.dim() == 1, b1 = b.dim() == 1;
  Shape as = a.sizes().vec(), bs = b.sizes().vec();
  if (a1) as.insert(as.begin(), 1);
  if (b1) bs.push_back(1);
  const int64_t M = as[as.size() - 2], K = as.back(), N = bs.back();
  Shape abatch(as.begin(), as.end() - 2), bbatch(bs.begin(), bs.end() - 2);
  const size_t nb = std::max(abatch.size(), bbatch.size());
  abatch.insert(abatch.begin(), nb - abatch.size(), 1);
  bbatch.insert(bbatch.begin(), nb - bbatch.size(), 1);
  Shape batch(nb);
  for (size_t d = 0; d < nb; ++d) batch[d] = abatch[d] == 1 ? bbatch[d] : abatch[d];
  Shape out_shape = batch;
  if (!a1) out_shape.push_back(M);
  if (!b1) out_shape.push_back(N);
  Tensor out = empty(out_shape, kFloat64);
  const double* ap = a.data_ptr<double>();
  const double* bp = b.data_ptr<double>();
  double* op = out.data_ptr<double>();
  int64_t nbatch = 1;
  for (int64_t s : batch) nbatch *= s;
  for (int64_t t = 0; t < nbatch; ++t) {
    int64_t rem = t, ai = 0, bi = 0, astr = 1, bstr = 1;
    for (int64_t d = static_cast<int64_t>(nb) - 1; d >= 0; --d) {
      int64_t idx = rem % batch[d];
      rem /= batch[d];
      ai += (abatch[d] == 1 ? 0 : idx) * astr;
      bi += (bbatch[d] == 1 ? 0 : idx) * bstr;
      astr *= abatch[d];
      bstr *= bbatch[d];
    }
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k) s += ap[(ai * M + i) * K + k] * bp[(bi * K + k) * N + j];
        op[(t * M + i) * N + j] = s;
      }
  }
  return out;
}

// x [..., K] @ w[N, K]^T + b[N]
Tensor ref_linear(const TensorList& in) {
  const Tensor &x = in[0], &w = in[1];
  const int64_t K = w.size(1), N = w.size(0);
  Shape out_shape = x.sizes().vec();
  out_shape.back() = N;
  Tensor out = empty(out_shape, kFloat64);
  const int64_t rows = N ? out.numel() / N : 0;
  const double *xp = x.data_ptr<double>(), *wp = w.data_ptr<double>();
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = in.size() == 3 ? in[2].data_ptr<double>()[j] : 0.0;
      for (int64_t k = 0; k < K; ++k) s += xp[i * K + k] * wp[j * K + k];
      out.data_ptr<double>()[i * N + j] = s;
    }
  return out;
}

std::vector<DType> gemm_dtypes() { return {kFloat32, kFloat64, kFloat16, kBFloat16, kInt64, kInt32}; }

Tensor ref2(const TensorList& in) { return ref_matmul(in[0], in[1]); }

TEST(OpsLinalg, Mm) {
  check_case(OpCase{.name = "mm",
                    .shape_sets = {{{3, 4}, {4, 5}}, {{1, 7}, {7, 1}}, {{37, 70}, {70, 29}}, {{0, 3}, {3, 4}},
                                   {{5, 3}, {3, 0}}, {{3, 0}, {0, 4}}},
                    .dtypes = gemm_dtypes(),
                    .run = [](const TensorList& in) { return mm(in[0], in[1]); },
                    .ref = ref2,
                    .tol_scale = 10});
}

TEST(OpsLinalg, MmSmallIntegers) {
  // K small enough that int8/uint8 accumulation cannot overflow.
  check_case(OpCase{.name = "mm_small_ints",
                    .shape_sets = {{{5, 6}, {6, 9}}, {{9, 3}, {3, 70}}},
                    .dtypes = {kInt8, kUInt8, kInt16},
                    .run = [](const TensorList& in) { return mm(in[0], in[1]); },
                    .ref = ref2});
}

TEST(OpsLinalg, MmLongK) {
  // K beyond one cache block of the blocked GEMM, rows/cols off the register tile.
  check_case(OpCase{.name = "mm_long_k",
                    .shape_sets = {{{9, 300}, {300, 10}}, {{70, 530}, {530, 3}}},
                    .dtypes = {kFloat32, kFloat64, kInt64},
                    .run = [](const TensorList& in) { return mm(in[0], in[1]); },
                    .ref = ref2,
                    .tol_scale = 50});
}

TEST(OpsLinalg, Bmm) {
  check_case(OpCase{.name = "bmm",
                    .shape_sets = {{{2, 3, 4}, {2, 4, 5}}, {{3, 1, 5}, {3, 5, 1}}, {{4, 9, 17}, {4, 17, 6}},
                                   {{0, 2, 3}, {0, 3, 4}}, {{2, 3, 0}, {2, 0, 4}}, {{2, 0, 3}, {2, 3, 4}}},
                    .dtypes = gemm_dtypes(),
                    .run = [](const TensorList& in) { return bmm(in[0], in[1]); },
                    .ref = ref2,
                    .tol_scale = 10});
}

TEST(OpsLinalg, Matmul) {
  check_case(OpCase{.name = "matmul",
                    .shape_sets = {{{5}, {5}},                      // dot -> 0-dim
                                   {{4}, {4, 3}},                   // vector @ matrix
                                   {{3, 4}, {4}},                   // matrix @ vector
                                   {{3, 4}, {4, 5}},                // mm
                                   {{2, 3, 4}, {4, 5}},             // folded into one GEMM
                                   {{2, 2, 3, 4}, {4, 5}},          // two batch dims folded
                                   {{3, 4}, {2, 4, 5}},             // matrix broadcast over b's batch
                                   {{2, 3, 4}, {4}},                // batched matrix @ vector
                                   {{4}, {2, 4, 5}},                // vector @ batched matrix
                                   {{2, 1, 3, 4}, {3, 4, 5}},       // batch broadcasting both ways
                                   {{1, 3, 4}, {2, 4, 2}},          // size-1 batch broadcast
                                   {{2, 2, 3, 4}, {2, 2, 4, 5}},    // equal batches
                                   {{0, 3, 4}, {4, 5}},             // empty batch
                                   {{2, 3, 0}, {0, 4}},             // K = 0 -> zeros
                                   {{0}, {0}}},                     // empty dot -> 0
                    .dtypes = gemm_dtypes(),
                    .run = [](const TensorList& in) { return matmul(in[0], in[1]); },
                    .ref = ref2,
                    .tol_scale = 10});
}

TEST(OpsLinalg, MatmulShapes) {
  EXPECT_EQ(matmul(ones({3}), ones({3})).dim(), 0);
  EXPECT_EQ(matmul(ones({3}), ones({3, 2})).sizes(), IntArrayRef({2}));
  EXPECT_EQ(matmul(ones({2, 3}), ones({3})).sizes(), IntArrayRef({2}));
  EXPECT_EQ(matmul(ones({5, 1, 2, 3}), ones({4, 3, 6})).sizes(), IntArrayRef({5, 4, 2, 6}));
  EXPECT_EQ(matmul(ones({3}), ones({7, 3, 6})).sizes(), IntArrayRef({7, 6}));
  EXPECT_EQ(matmul(ones({7, 2, 3}), ones({3})).sizes(), IntArrayRef({7, 2}));
  EXPECT_DOUBLE_EQ(matmul(tensor({1.0, 2.0, 3.0}), tensor({4.0, 5.0, 6.0})).item<double>(), 32.0);
  EXPECT_TRUE(kiln::testing::close(matmul(ones({2, 0}), ones({0, 3})), zeros({2, 3})));
}

TEST(OpsLinalg, Linear) {
  check_case(OpCase{.name = "linear",
                    .shape_sets = {{{3, 4}, {5, 4}}, {{2, 3, 4}, {5, 4}}, {{4}, {5, 4}}, {{0, 4}, {5, 4}},
                                   {{2, 3, 17}, {9, 17}}},
                    .dtypes = gemm_dtypes(),
                    .run = [](const TensorList& in) { return linear(in[0], in[1]); },
                    .ref = ref_linear,
                    .tol_scale = 10});
  check_case(OpCase{.name = "linear_bias",
                    .shape_sets = {{{3, 4}, {5, 4}, {5}}, {{2, 3, 4}, {5, 4}, {5}}, {{4}, {5, 4}, {5}},
                                   {{3, 0}, {5, 0}, {5}}, {{2, 3, 17}, {9, 17}, {9}}, {{0, 2, 4}, {3, 4}, {3}}},
                    .dtypes = gemm_dtypes(),
                    .run = [](const TensorList& in) { return linear(in[0], in[1], in[2]); },
                    .ref = ref_linear,
                    .tol_scale = 10});
}

TEST(OpsLinalg, LinearScalarBias) {
  Tensor x = tensor({{1.0, 2.0}, {3.0, 4.0}}), w = tensor({{1.0, 1.0}, {0.0, 1.0}, {2.0, 0.0}});
  Tensor r = linear(x, w, tensor(10.0));
  EXPECT_TRUE(kiln::testing::close(r, tensor({{13.0, 12.0, 12.0}, {17.0, 14.0, 16.0}})));
  Tensor r1 = linear(x, w, tensor({10.0}));
  EXPECT_TRUE(kiln::testing::close(r1, r));
}

// out= forms write through non-contiguous outputs.
TEST(OpsLinalg, NonContiguousOut) {
  Tensor a = tensor({{1.0, 2.0}, {3.0, 4.0}, {5.0, 6.0}}, kFloat64), b = tensor({{1.0, 0.0, 2.0}, {0.0, 1.0, 1.0}}, kFloat64);
  for (DType dt : {kFloat32, kFloat64, kFloat16, kInt64}) {
    Tensor out = zeros({3, 3}, dt).t();
    call_op_out(op_def("mm"), out, {a.to(dt), b.to(dt)});
    EXPECT_TRUE(kiln::testing::close(out, ref_matmul(a, b))) << dt;
    Tensor lout = zeros({3, 3}, dt).t();
    call_op_out(op_def("linear"), lout, {a.to(dt), b.t().to(dt)});
    EXPECT_TRUE(kiln::testing::close(lout, ref_matmul(a, b))) << dt;
    Tensor bout = zeros({3, 3, 1}, dt).transpose(1, 2);
    call_op_out(op_def("matmul"), bout, {a.view({3, 1, 2}).to(dt), b.to(dt)});
    EXPECT_TRUE(kiln::testing::close(bout, ref_matmul(a.view({3, 1, 2}), b))) << dt;
  }
}

TEST(OpsLinalg, ThreadCountIndependent) {
  Tensor a = optable::random_input({64, 48}, kFloat64, {}, 7), b = optable::random_input({48, 40}, kFloat64, {}, 8);
  int nt = get_num_threads();
  set_num_threads(1);
  Tensor r1 = mm(a, b), r1f = mm(a.to(kFloat32), b.to(kFloat32));
  set_num_threads(std::max(2, nt));
  Tensor r2 = mm(a, b), r2f = mm(a.to(kFloat32), b.to(kFloat32));
  set_num_threads(nt);
  EXPECT_TRUE(kiln::testing::close(r1, r2, 1e-12, 1e-12));
  EXPECT_TRUE(kiln::testing::close(r1f, r2f, 1e-5, 1e-5));
}

TEST(OpsLinalg, Errors) {
  Tensor m23 = ones({2, 3}), m45 = ones({4, 5}), v3 = ones({3}), s = ones({});
  EXPECT_KILN_ERROR(mm(m23, m45), "[mm]", "shapes [2, 3] and [4, 5] cannot be multiplied (3 != 4)");
  EXPECT_KILN_ERROR(mm(m23, v3), "[mm]", "2-D", "[3]");
  EXPECT_KILN_ERROR(mm(ones({2, 3, 3}), ones({3, 3})), "[mm]", "2-D");
  EXPECT_KILN_ERROR(mm(m23, ones({3, 2}, kFloat64)), "[mm]", "expected m1 and m2 to have the same dtype, but got: float32 != float64");
  EXPECT_KILN_ERROR(mm(ones({2, 2}, kBool), ones({2, 2}, kBool)), "[mm]", "bool");

  EXPECT_KILN_ERROR(bmm(m23, ones({3, 2})), "[bmm]", "3-D");
  EXPECT_KILN_ERROR(bmm(ones({2, 2, 3}), ones({3, 3, 4})), "[bmm]", "batch sizes", "2 != 3");
  EXPECT_KILN_ERROR(bmm(ones({2, 2, 3}), ones({2, 4, 4})), "[bmm]", "cannot be multiplied (3 != 4)");
  EXPECT_KILN_ERROR(bmm(ones({2, 2, 3}), ones({2, 3, 4}, kInt64)), "[bmm]", "same dtype", "float32 != int64");

  EXPECT_KILN_ERROR(matmul(s, m23), "[matmul]", "at least 1D", "0D and 2D");
  EXPECT_KILN_ERROR(matmul(m23, s), "[matmul]", "2D and 0D");
  EXPECT_KILN_ERROR(matmul(m23, m45), "[matmul]", "shapes [2, 3] and [4, 5] cannot be multiplied (3 != 4)");
  EXPECT_KILN_ERROR(matmul(v3, ones({4})), "[matmul]", "shapes [3] and [4] cannot be multiplied (3 != 4)");
  EXPECT_KILN_ERROR(matmul(v3, ones({2, 4, 5})), "[matmul]", "(3 != 4)");
  EXPECT_KILN_ERROR(matmul(ones({2, 2, 3}), ones({3, 3, 4})), "[matmul]", "[2]", "[3]", "broadcast");
  EXPECT_KILN_ERROR(matmul(m23, ones({3, 2}, kFloat16)), "[matmul]", "float32 != float16");

  Tensor w = ones({5, 3});
  EXPECT_KILN_ERROR(linear(s, w), "[linear]", "0-D");
  EXPECT_KILN_ERROR(linear(m23, ones({3})), "[linear]", "weight to be 2-D", "[3]");
  EXPECT_KILN_ERROR(linear(ones({2, 4}), w), "[linear]", "cannot be multiplied (4 != 3)");
  EXPECT_KILN_ERROR(linear(m23, w, ones({4})), "[linear]", "bias", "[5]", "[4]");
  EXPECT_KILN_ERROR(linear(m23, w, ones({1, 5})), "[linear]", "bias", "[1, 5]");
  EXPECT_KILN_ERROR(linear(m23, w.to(kFloat64)), "[linear]", "input and weight", "float32 != float64");
  EXPECT_KILN_ERROR(linear(m23, w, ones({5}, kFloat64)), "[linear]", "input and bias", "float32 != float64");
  EXPECT_KILN_ERROR(linear(ones({2, 3}, kBool), ones({5, 3}, kBool)), "[linear]", "bool");
}

}  // namespace
}  // namespace kiln
