// View ops (kernels/view.cpp, core/tensor.cpp): storage sharing, sizes/strides/offsets as PyTorch
// gives them (written out by hand), writes and in-place ops through views, reshape copying only
// when it must, overlapping in-place ops, and error paths.
#include "test_util.h"

using namespace kiln;
using kiln::testing::close;
using kiln::testing::to_vec;

namespace {

Tensor iota(IntArrayRef sizes, DType dt = kFloat32) { return arange(shape_numel(sizes), dt).reshape(sizes); }

bool shares(const Tensor& a, const Tensor& b) { return a.impl()->storage() == b.impl()->storage(); }

// Sizes, strides (elements) and offset of a view, and that data_ptr is base + offset.
void expect_geometry(const Tensor& v, const Tensor& base, Shape sizes, Shape strides, int64_t offset) {
  EXPECT_TRUE(shares(v, base));
  EXPECT_EQ(v.sizes().vec(), sizes);
  EXPECT_EQ(v.strides().vec(), strides);
  EXPECT_EQ(v.storage_offset(), offset);
  EXPECT_EQ(static_cast<char*>(v.data_ptr()),
            static_cast<char*>(base.data_ptr()) + (offset - base.storage_offset()) * static_cast<int64_t>(base.element_size()));
}

}  // namespace

TEST(Views, ViewSharesStorageAndStrides) {
  Tensor x = iota({2, 3, 4});
  Tensor v = x.view({6, 4});
  expect_geometry(v, x, {6, 4}, {4, 1}, 0);
  v.select(0, 4).select(0, 1).fill_(-5.0);  // x[1][1][1]
  EXPECT_EQ(x[1][1][1].item<double>(), -5.0);
  expect_geometry(x.view({-1}), x, {24}, {1}, 0);
  expect_geometry(x.view({2, -1, 3}), x, {2, 4, 3}, {12, 3, 1}, 0);
  expect_geometry(x.view_as(zeros({4, 6})), x, {4, 6}, {6, 1}, 0);
  // A strided but compatible view: dims 0 and 1 of a step-2 slice merge.
  Tensor s = x.slice(2, 0, std::nullopt, 2);
  expect_geometry(s, x, {2, 3, 2}, {12, 4, 2}, 0);
  expect_geometry(s.view({6, 2}), x, {6, 2}, {4, 2}, 0);
  expect_geometry(s.view({6, 1, 2}), x, {6, 1, 2}, {4, 4, 2}, 0);
  expect_geometry(s.view({12}), x, {12}, {2}, 0);  // evenly strided: one chunk
  // 0-dim and size-1 views.
  Tensor z = full({}, 3.0);
  expect_geometry(z.view({1, 1}), z, {1, 1}, {1, 1}, 0);
  expect_geometry(z.view({1}).view({}), z, {}, {}, 0);
  Tensor e = zeros({0, 3});
  expect_geometry(e.view({3, 0}), e, {3, 0}, {1, 1}, 0);
}

TEST(Views, ViewErrors) {
  Tensor x = iota({2, 3, 4});
  EXPECT_KILN_ERROR(x.transpose(0, 1).view({24}), "[view]", "view size [24]", "not compatible", "stride",
                    "use reshape");
  EXPECT_KILN_ERROR(x.slice(2, 0, 3).view({18}), "[view]", "not compatible");
  EXPECT_KILN_ERROR(x.view({5, 5}), "[view]", "[5, 5]", "invalid for input of size 24");
  EXPECT_KILN_ERROR(x.view({-1, -1}), "[view]", "only one dimension can be inferred");
  EXPECT_KILN_ERROR(x.view({-1, 5}), "[view]", "invalid for input of size 24");
  EXPECT_KILN_ERROR(x.view({2, -2, 6}), "[view]", "invalid shape dimension -2");
  EXPECT_KILN_ERROR(zeros({0, 3}).view({-1, 0}), "[view]", "invalid for input of size 0");
}

TEST(Views, ReshapeCopiesOnlyWhenItMust) {
  Tensor x = iota({2, 3, 4});
  expect_geometry(x.reshape({4, 6}), x, {4, 6}, {6, 1}, 0);
  expect_geometry(x.reshape({-1}), x, {24}, {1}, 0);
  Tensor t = x.transpose(1, 2);  // [2, 4, 3] strides [12, 1, 4]
  expect_geometry(t.reshape({2, 4, 3}), x, {2, 4, 3}, {12, 1, 4}, 0);  // same shape: a view
  expect_geometry(t.reshape({2, 4, 3, 1}), x, {2, 4, 3, 1}, {12, 1, 4, 4}, 0);  // computeStride
  // Merging dims that are not adjacent in memory needs a copy, with the right values.
  Tensor c = t.reshape({2, 12});
  EXPECT_FALSE(shares(c, x));
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_TRUE(close(c, t.contiguous().view({2, 12}), 0, 0));
  c.fill_(0.0);
  EXPECT_EQ(x[1][2][3].item<double>(), 23.0);  // the copy is not the base
  // Expanded tensors: splitting a broadcast dim is a view, flattening it is not.
  Tensor b = tensor({1.0, 2.0, 3.0, 4.0}).unsqueeze(0).expand({3, 4});
  expect_geometry(b.reshape({3, 2, 2}), b, {3, 2, 2}, {0, 2, 1}, 0);
  Tensor f = b.reshape({12});
  EXPECT_FALSE(shares(f, b));
  EXPECT_EQ(to_vec(f), (std::vector<double>{1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4}));
  // A sliced tensor whose kept dims are still contiguous among themselves.
  Tensor n = x.narrow(0, 1, 1);  // offset 12
  expect_geometry(n.reshape({3, 4}), x, {3, 4}, {4, 1}, 12);
  Tensor m = x.narrow(2, 1, 2);  // [2, 3, 2] strides [12, 4, 1] offset 1
  expect_geometry(m.reshape({6, 2}), x, {6, 2}, {4, 1}, 1);
  EXPECT_FALSE(shares(m.reshape({12}), x));
  expect_geometry(x.reshape_as(zeros({6, 4})), x, {6, 4}, {4, 1}, 0);
  EXPECT_KILN_ERROR(x.reshape({5, -1}), "[reshape]", "invalid for input of size 24");
}

TEST(Views, PermuteTransposeT) {
  Tensor x = iota({2, 3, 4});
  expect_geometry(x.permute({2, 0, 1}), x, {4, 2, 3}, {1, 12, 4}, 0);
  expect_geometry(x.permute({-1, -2, -3}), x, {4, 3, 2}, {1, 4, 12}, 0);
  expect_geometry(x.transpose(0, 2), x, {4, 3, 2}, {1, 4, 12}, 0);
  expect_geometry(x.transpose(-1, 1), x, {2, 4, 3}, {12, 1, 4}, 0);
  expect_geometry(x.transpose(1, 1), x, {2, 3, 4}, {12, 4, 1}, 0);
  expect_geometry(x.mT(), x, {2, 4, 3}, {12, 1, 4}, 0);
  Tensor m = iota({3, 5});
  expect_geometry(m.t(), m, {5, 3}, {1, 5}, 0);
  expect_geometry(m.t().t(), m, {3, 5}, {5, 1}, 0);
  Tensor v = iota({4});
  expect_geometry(v.t(), v, {4}, {1}, 0);
  Tensor z = full({}, 2.0);
  expect_geometry(z.t(), z, {}, {}, 0);
  expect_geometry(z.transpose(0, -1), z, {}, {}, 0);
  expect_geometry(z.permute({}), z, {}, {}, 0);
  // Writes through a permuted view.
  x.permute({2, 0, 1})[3][1][2].fill_(100.0);
  EXPECT_EQ(x[1][2][3].item<double>(), 100.0);
  m.t()[4][0].fill_(-1.0);
  EXPECT_EQ(m[0][4].item<double>(), -1.0);

  EXPECT_KILN_ERROR(x.permute({0, 1}), "[permute]", "number of dims don't match", "3");
  EXPECT_KILN_ERROR(x.permute({0, 1, 1}), "[permute]", "dim 1 appears multiple times");
  EXPECT_KILN_ERROR(x.permute({0, 1, 3}), "[permute]", "dim 3 out of range");
  EXPECT_KILN_ERROR(x.transpose(0, 3), "[transpose]", "dim 3 out of range");
  EXPECT_KILN_ERROR(x.transpose(-4, 0), "[transpose]", "dim -4");
  EXPECT_KILN_ERROR(z.transpose(0, 1), "[transpose]", "dim 1 out of range");
  EXPECT_KILN_ERROR(x.t(), "[t]", "<= 2 dimensions", "3D");
}

TEST(Views, UnsqueezeSqueeze) {
  Tensor x = iota({2, 3, 4});
  expect_geometry(x.unsqueeze(0), x, {1, 2, 3, 4}, {24, 12, 4, 1}, 0);
  expect_geometry(x.unsqueeze(1), x, {2, 1, 3, 4}, {12, 12, 4, 1}, 0);
  expect_geometry(x.unsqueeze(3), x, {2, 3, 4, 1}, {12, 4, 1, 1}, 0);
  expect_geometry(x.unsqueeze(-1), x, {2, 3, 4, 1}, {12, 4, 1, 1}, 0);
  expect_geometry(x.unsqueeze(-4), x, {1, 2, 3, 4}, {24, 12, 4, 1}, 0);
  Tensor t = x.transpose(0, 2);  // [4, 3, 2] strides [1, 4, 12]
  expect_geometry(t.unsqueeze(1), x, {4, 1, 3, 2}, {1, 12, 4, 12}, 0);
  Tensor z = full({}, 1.0);
  expect_geometry(z.unsqueeze(0), z, {1}, {1}, 0);
  expect_geometry(z.unsqueeze(-1), z, {1}, {1}, 0);

  Tensor y = iota({2, 1, 3, 1});
  expect_geometry(y.squeeze(), y, {2, 3}, {3, 1}, 0);
  expect_geometry(y.squeeze(1), y, {2, 3, 1}, {3, 1, 1}, 0);
  expect_geometry(y.squeeze(-1), y, {2, 1, 3}, {3, 3, 1}, 0);
  expect_geometry(y.squeeze(0), y, {2, 1, 3, 1}, {3, 3, 1, 1}, 0);  // size 2: unchanged
  expect_geometry(z.squeeze(), z, {}, {}, 0);
  expect_geometry(z.squeeze(0), z, {}, {}, 0);
  expect_geometry(y.squeeze(1).squeeze(-1), y, {2, 3}, {3, 1}, 0);
  y.squeeze()[1][2].fill_(9.0);
  EXPECT_EQ(y[1][0][2][0].item<double>(), 9.0);

  EXPECT_KILN_ERROR(x.unsqueeze(4), "[unsqueeze]", "dim 4 out of range");
  EXPECT_KILN_ERROR(x.unsqueeze(-5), "[unsqueeze]", "dim -5");
  EXPECT_KILN_ERROR(y.squeeze(4), "[squeeze]", "dim 4 out of range");
  EXPECT_KILN_ERROR(z.squeeze(1), "[squeeze]", "dim 1 out of range");
}

TEST(Views, FlattenUnflatten) {
  Tensor x = iota({2, 3, 4});
  expect_geometry(x.flatten(), x, {24}, {1}, 0);
  expect_geometry(x.flatten(1), x, {2, 12}, {12, 1}, 0);
  expect_geometry(x.flatten(0, 1), x, {6, 4}, {4, 1}, 0);
  expect_geometry(x.flatten(-2, -1), x, {2, 12}, {12, 1}, 0);
  expect_geometry(x.flatten(1, 1), x, {2, 3, 4}, {12, 4, 1}, 0);
  Tensor t = x.transpose(1, 2);
  Tensor f = t.flatten(1);  // must copy
  EXPECT_FALSE(shares(f, x));
  EXPECT_TRUE(close(f, t.contiguous().view({2, 12}), 0, 0));
  expect_geometry(t.flatten(0, 0), x, {2, 4, 3}, {12, 1, 4}, 0);
  EXPECT_EQ(full({}, 5.0).flatten().sizes().vec(), (Shape{1}));

  expect_geometry(x.unflatten(2, {2, 2}), x, {2, 3, 2, 2}, {12, 4, 2, 1}, 0);
  expect_geometry(x.unflatten(-1, {-1, 1}), x, {2, 3, 4, 1}, {12, 4, 1, 1}, 0);
  expect_geometry(x.flatten().unflatten(0, {4, 6}), x, {4, 6}, {6, 1}, 0);
  expect_geometry(t.unflatten(1, {2, 2}), x, {2, 2, 2, 3}, {12, 2, 1, 4}, 0);

  EXPECT_KILN_ERROR(x.flatten(2, 1), "[flatten]", "start_dim (2) cannot come after end_dim (1)");
  EXPECT_KILN_ERROR(x.flatten(3), "[flatten]", "dim 3 out of range");
  EXPECT_KILN_ERROR(full({}, 5.0).flatten(2), "[flatten]", "dim 2 out of range");
  EXPECT_KILN_ERROR(x.unflatten(1, {2, 2}), "[unflatten]", "[2, 2]", "invalid for input of size 3");
  EXPECT_KILN_ERROR(x.unflatten(1, {}), "[unflatten]", "non-empty");
  EXPECT_KILN_ERROR(x.unflatten(3, {1}), "[unflatten]", "dim 3 out of range");
}

TEST(Views, Expand) {
  Tensor x = iota({3, 1});
  expect_geometry(x.expand({3, 4}), x, {3, 4}, {1, 0}, 0);
  expect_geometry(x.expand({2, 3, 4}), x, {2, 3, 4}, {0, 1, 0}, 0);
  expect_geometry(x.expand({-1, 5}), x, {3, 5}, {1, 0}, 0);
  expect_geometry(x.expand({3, 0}), x, {3, 0}, {1, 0}, 0);
  expect_geometry(x.expand({0, 3, 1}), x, {0, 3, 1}, {0, 1, 1}, 0);
  expect_geometry(x.expand_as(zeros({2, 3, 2})), x, {2, 3, 2}, {0, 1, 0}, 0);
  Tensor z = full({}, 7.0);
  expect_geometry(z.expand({2, 2}), z, {2, 2}, {0, 0}, 0);
  EXPECT_EQ(to_vec(x.expand({3, 2})), (std::vector<double>{0, 0, 1, 1, 2, 2}));
  // Reads through an expanded view see later writes to the base.
  Tensor e = x.expand({3, 2});
  x.fill_(4.0);
  EXPECT_EQ(to_vec(e), std::vector<double>(6, 4.0));

  EXPECT_KILN_ERROR(x.expand({4}), "[expand]", "number of sizes provided (1)", "(2)");
  EXPECT_KILN_ERROR(x.expand({4, 4}), "[expand]", "expanded size of the tensor (4)", "existing size (3)",
                    "dimension 0");
  EXPECT_KILN_ERROR(x.expand({-1, 3, 4}), "[expand]", "-1", "leading, non-existing dimension 0");
  EXPECT_KILN_ERROR(x.expand({3, -2}), "[expand]", "-2");
}

TEST(Views, NarrowSelectSlice) {
  Tensor x = iota({4, 5});
  expect_geometry(x.narrow(0, 1, 2), x, {2, 5}, {5, 1}, 5);
  expect_geometry(x.narrow(1, 2, 3), x, {4, 3}, {5, 1}, 2);
  expect_geometry(x.narrow(-1, -2, 2), x, {4, 2}, {5, 1}, 3);
  expect_geometry(x.narrow(0, 4, 0), x, {0, 5}, {5, 1}, 20);
  expect_geometry(x.narrow(1, 1, 3).narrow(0, 2, 2), x, {2, 3}, {5, 1}, 11);
  expect_geometry(x.select(0, 2), x, {5}, {1}, 10);
  expect_geometry(x.select(1, -1), x, {4}, {5}, 4);
  expect_geometry(x[3], x, {5}, {1}, 15);
  expect_geometry(x[3][4], x, {}, {}, 19);
  expect_geometry(x.t().select(0, 1), x, {4}, {5}, 1);

  Tensor v = iota({10});
  expect_geometry(v.slice(0, 1, 8, 3), v, {3}, {3}, 1);
  EXPECT_EQ(to_vec(v.slice(0, 1, 8, 3)), (std::vector<double>{1, 4, 7}));
  expect_geometry(v.slice(0, -4), v, {4}, {1}, 6);
  expect_geometry(v.slice(0, std::nullopt, -7, 2), v, {2}, {2}, 0);
  expect_geometry(v.slice(0, 2, 100, 4), v, {2}, {4}, 2);
  expect_geometry(v.slice(0, -100, 3), v, {3}, {1}, 0);
  expect_geometry(v.slice(0, 7, 3), v, {0}, {1}, 7);
  expect_geometry(v.slice(0, 12, 20), v, {0}, {1}, 10);
  expect_geometry(x.slice(1, 1, std::nullopt, 2), x, {4, 2}, {5, 2}, 1);
  expect_geometry(x.slice(0, 1, 4, 2).slice(1, 0, 5, 3), x, {2, 2}, {10, 3}, 5);

  EXPECT_KILN_ERROR(x.narrow(0, 5, 0), "[narrow]", "start 5 out of range", "size 4");
  EXPECT_KILN_ERROR(x.narrow(0, -5, 1), "[narrow]", "start -5");
  EXPECT_KILN_ERROR(x.narrow(1, 3, 3), "[narrow]", "start (3) + length (3) exceeds dimension size (5)");
  EXPECT_KILN_ERROR(x.narrow(1, 0, -1), "[narrow]", "length (-1)");
  EXPECT_KILN_ERROR(x.narrow(2, 0, 1), "[narrow]", "dim 2 out of range");
  EXPECT_KILN_ERROR(full({}, 1.0).narrow(0, 0, 1), "[narrow]", "0-dim");
  EXPECT_KILN_ERROR(x.select(0, 4), "[select]", "index 4 out of range", "dimension 0");
  EXPECT_KILN_ERROR(x.select(1, -6), "[select]", "index -6 out of range", "dimension 1");
  EXPECT_KILN_ERROR(x.select(2, 0), "[select]", "dim 2 out of range");
  EXPECT_KILN_ERROR(full({}, 1.0).select(0, 0), "[select]", "0-dim");
  EXPECT_KILN_ERROR(x[7], "[select]", "index 7");
  EXPECT_KILN_ERROR(v.slice(0, 0, 5, 0), "[slice]", "step must be positive", "0");
  EXPECT_KILN_ERROR(v.slice(0, 0, 5, -1), "[slice]", "step must be positive", "-1");
  EXPECT_KILN_ERROR(v.slice(1), "[slice]", "dim 1 out of range");
  EXPECT_KILN_ERROR(full({}, 1.0).slice(0), "[slice]", "0-dim");
}

TEST(Views, UnfoldAsStridedDiagonal) {
  Tensor v = iota({7});
  expect_geometry(v.unfold(0, 3, 2), v, {3, 3}, {2, 1}, 0);
  EXPECT_EQ(to_vec(v.unfold(0, 3, 2)), (std::vector<double>{0, 1, 2, 2, 3, 4, 4, 5, 6}));
  expect_geometry(v.unfold(0, 7, 1), v, {1, 7}, {1, 1}, 0);
  expect_geometry(v.unfold(0, 0, 3), v, {3, 0}, {3, 1}, 0);
  Tensor x = iota({3, 4});
  expect_geometry(x.unfold(1, 2, 1), x, {3, 3, 2}, {4, 1, 1}, 0);
  expect_geometry(x.unfold(0, 2, 1), x, {2, 4, 2}, {4, 1, 4}, 0);
  Tensor z = full({}, 3.0);
  expect_geometry(z.unfold(0, 1, 1), z, {1}, {1}, 0);
  // Overlapping windows alias the same elements.
  v.unfold(0, 3, 2)[1][0].fill_(-2.0);
  EXPECT_EQ(v.unfold(0, 3, 2)[0][2].item<double>(), -2.0);

  expect_geometry(x.as_strided({2, 2}, {1, 2}, 1), x, {2, 2}, {1, 2}, 1);
  EXPECT_EQ(to_vec(x.as_strided({2, 2}, {1, 2}, 1)), (std::vector<double>{1, 3, 2, 4}));
  expect_geometry(x.as_strided({3, 3}, {1, 1}), x, {3, 3}, {1, 1}, 0);  // overlapping
  expect_geometry(x.narrow(0, 1, 1).as_strided({2}, {4}), x, {2}, {4}, 4);  // offset defaults to the view's
  expect_geometry(x.narrow(0, 2, 1).as_strided({12}, {1}, 0), x, {12}, {1}, 0);  // bounds are the storage's
  expect_geometry(x.as_strided({0, 5}, {100, 100}, 11), x, {0, 5}, {100, 100}, 11);
  expect_geometry(x.as_strided({}, {}, 11), x, {}, {}, 11);
  x.as_strided({3}, {5}, 0).fill_(0.0);  // the diagonal
  EXPECT_EQ(to_vec(x.diagonal()), (std::vector<double>{0, 0, 0}));

  Tensor y = iota({3, 4});
  expect_geometry(y.diagonal(), y, {3}, {5}, 0);
  expect_geometry(y.diagonal(1), y, {3}, {5}, 1);
  expect_geometry(y.diagonal(2), y, {2}, {5}, 2);
  expect_geometry(y.diagonal(-1), y, {2}, {5}, 4);
  expect_geometry(y.diagonal(4), y, {0}, {5}, 0);
  expect_geometry(y.diagonal(-3), y, {0}, {5}, 0);
  expect_geometry(y.diagonal(0, 1, 0), y, {3}, {5}, 0);
  EXPECT_EQ(to_vec(y.diagonal(-1)), (std::vector<double>{4, 9}));
  Tensor w = iota({2, 3, 4});
  expect_geometry(w.diagonal(0, 1, 2), w, {2, 3}, {12, 5}, 0);
  expect_geometry(w.diagonal(1, 0, 2), w, {3, 2}, {4, 13}, 1);
  expect_geometry(w.diagonal(-1, -1, 1), w, {2, 3}, {12, 5}, 1);
  y.diagonal(1).mul_(10.0);
  EXPECT_EQ(to_vec(y.narrow(0, 0, 1)), (std::vector<double>{0, 10, 2, 3}));

  EXPECT_KILN_ERROR(v.unfold(0, 8, 1), "[unfold]", "maximum size", "7", "size is 8");
  EXPECT_KILN_ERROR(v.unfold(0, 2, 0), "[unfold]", "step is 0");
  EXPECT_KILN_ERROR(v.unfold(0, -1, 1), "[unfold]", "-1");
  EXPECT_KILN_ERROR(v.unfold(1, 2, 1), "[unfold]", "dim 1 out of range");
  EXPECT_KILN_ERROR(x.as_strided({3, 4}, {4, 1}, 1), "[as_strided]", "require a storage of 13", "holds only 12");
  EXPECT_KILN_ERROR(x.as_strided({2, 2}, {11, 1}), "[as_strided]", "storage of 13", "12");
  EXPECT_KILN_ERROR(x.narrow(0, 2, 1).as_strided({5}, {1}), "[as_strided]", "storage of 13");
  EXPECT_KILN_ERROR(x.as_strided({2}, {-1}, 5), "[as_strided]", "negative strides");
  EXPECT_KILN_ERROR(x.as_strided({2, 2}, {1}), "[as_strided]", "mismatch in length of strides (1) and sizes (2)");
  EXPECT_KILN_ERROR(x.as_strided({-2}, {1}), "[as_strided]", "negative dimension -2");
  EXPECT_KILN_ERROR(x.as_strided({2}, {1}, -1), "[as_strided]", "negative storage offset -1");
  EXPECT_KILN_ERROR(v.diagonal(), "[diagonal]", "at least 2 dims", "1");
  EXPECT_KILN_ERROR(y.diagonal(0, 1, 1), "[diagonal]", "cannot be identical");
  EXPECT_KILN_ERROR(y.diagonal(0, 0, -2), "[diagonal]", "cannot be identical");
  EXPECT_KILN_ERROR(y.diagonal(0, 0, 2), "[diagonal]", "dim 2 out of range");
}

TEST(Views, DetachAndAlias) {
  Tensor x = iota({2, 3}).requires_grad_();
  Tensor d = x.detach();
  expect_geometry(d, x, {2, 3}, {3, 1}, 0);
  EXPECT_FALSE(d.requires_grad());
  EXPECT_TRUE(x.requires_grad());
  EXPECT_FALSE(d.is_same(x));
  d[1][1].fill_(42.0);
  EXPECT_EQ(x[1][1].item<double>(), 42.0);
  Tensor td = x.t().detach();
  expect_geometry(td, x, {3, 2}, {1, 3}, 0);
  EXPECT_TRUE(x.t().requires_grad());  // views keep the flag
}

TEST(Views, InPlaceOpsWriteThroughViews) {
  Tensor x = iota({4, 5});
  Tensor ref = iota({4, 5}).to(kFloat64);
  auto expect_base = [&](const char* what) {
    SCOPED_TRACE(what);
    EXPECT_TRUE(close(x, ref, 0, 0));
  };
  auto set = [&](int64_t i, int64_t j, double v) { ref.data_ptr<double>()[i * 5 + j] = v; };
  auto get = [&](int64_t i, int64_t j) { return ref.data_ptr<double>()[i * 5 + j]; };

  // add_ on a transposed, sliced view: columns 1 and 3 (as rows of x.t()).
  const uint32_t v0 = x._version();
  Tensor cols = x.t().slice(0, 1, std::nullopt, 2);  // [2, 4]
  cols.add_(100.0);
  for (int64_t i = 0; i < 4; ++i) {
    set(i, 1, get(i, 1) + 100);
    set(i, 3, get(i, 3) + 100);
  }
  expect_base("add_ scalar on x.t()[1::2]");
  EXPECT_GT(x._version(), v0);

  // mul_ by a tensor on a narrowed view.
  Tensor blk = x.narrow(0, 1, 2).narrow(1, 2, 2);
  blk.mul_(tensor({{2.0f, 3.0f}, {4.0f, 5.0f}}));
  set(1, 2, get(1, 2) * 2); set(1, 3, get(1, 3) * 3); set(2, 2, get(2, 2) * 4); set(2, 3, get(2, 3) * 5);
  expect_base("mul_ on a block");

  // fill_ and zero_ on select / diagonal views.
  x.select(1, 0).fill_(-1.0);
  for (int64_t i = 0; i < 4; ++i) set(i, 0, -1);
  expect_base("fill_ on a column");
  x.diagonal(1).zero_();
  for (int64_t i = 0; i < 4; ++i) set(i, i + 1, 0);
  expect_base("zero_ on a diagonal");

  // copy_ from another tensor (with broadcasting and a dtype cast) into a strided view.
  x.slice(0, 0, std::nullopt, 3).copy_(tensor({7, 8, 9, 10, 11}));
  for (int64_t j = 0; j < 5; ++j) {
    set(0, j, 7 + j);
    set(3, j, 7 + j);
  }
  expect_base("copy_ into rows 0 and 3");
  x.t()[4].copy_(tensor({1.5, 2.5, 3.5, 4.5}, kFloat64));
  for (int64_t i = 0; i < 4; ++i) set(i, 4, 1.5 + i);
  expect_base("copy_ into the last column");

  // Operators and other in-place ops through views.
  Tensor row = x[2];
  row += 1.0;
  row *= 2.0;
  for (int64_t j = 0; j < 5; ++j) set(2, j, (get(2, j) + 1) * 2);
  expect_base("+= and *= on a row");
  x.t().sub_(x.t().narrow(0, 0, 1));  // every column minus column 0 (read before written)
  {
    std::vector<double> c0(4);
    for (int64_t i = 0; i < 4; ++i) c0[i] = get(i, 0);
    for (int64_t i = 0; i < 4; ++i)
      for (int64_t j = 0; j < 5; ++j) set(i, j, get(i, j) - c0[i]);
  }
  expect_base("sub_ of an overlapping column");
}

TEST(Views, OverlappingInPlaceMatchesOutOfPlace) {
  for (DType dt : {kFloat32, kFloat64, kInt64}) {
    SCOPED_TRACE(dtype_name(dt));
    for (int64_t n : {int64_t(3), int64_t(17), dt == kFloat32 ? int64_t(200) : int64_t(9)}) {  // 200: parallel
      Tensor x = iota({n, n}, dt);
      x.mul_(x.narrow(1, 0, 1).add(1));  // rows scaled differently, so x != x.t()
      Tensor expected = x + x.t();
      x.add_(x.t());
      EXPECT_TRUE(close(x, expected, 0, 0));
      Tensor y = iota({n, n}, dt);
      Tensor e2 = y.t().contiguous();
      y.copy_(y.t());
      EXPECT_TRUE(close(y, e2, 0, 0));
      Tensor m = iota({n, n}, dt);
      Tensor e3 = m * m.t();
      m.mul_(m.t());
      EXPECT_TRUE(close(m, e3, 0, 0));
    }
  }
  // Shifted windows of one buffer.
  Tensor b = iota({10}, kFloat64);
  Tensor lo = b.narrow(0, 0, 9), hi = b.narrow(0, 1, 9);
  Tensor e = lo + hi;
  lo.add_(hi);
  EXPECT_TRUE(close(lo, e, 0, 0));
  EXPECT_EQ(b[9].item<double>(), 9.0);
  Tensor c = iota({10}, kFloat64);
  Tensor e4 = c.narrow(0, 0, 9).clone();
  c.narrow(0, 1, 9).copy_(c.narrow(0, 0, 9));
  EXPECT_TRUE(close(c.narrow(0, 1, 9), e4, 0, 0));
  // An expanded (self-overlapping) source.
  Tensor s = iota({3, 3}, kFloat64);
  Tensor e5 = s + s.select(0, 0).expand({3, 3});
  s.add_(s.select(0, 0).expand({3, 3}));
  EXPECT_TRUE(close(s, e5, 0, 0));
}

TEST(Views, SizeAndStrideOfZeroDim) {
  Tensor z = full({}, 1.0);
  EXPECT_EQ(z.dim(), 0);
  EXPECT_KILN_ERROR(z.size(0), "[size]", "no dimensions");
  EXPECT_KILN_ERROR(z.stride(-1), "[stride]", "no dimensions");
  Tensor x = iota({2, 3});
  EXPECT_EQ(x.size(-1), 3);
  EXPECT_EQ(x.stride(-2), 3);
  EXPECT_KILN_ERROR(x.size(2), "[size]", "dim 2 out of range");
  EXPECT_KILN_ERROR(x.stride(-3), "[stride]", "dim -3 out of range");
}
