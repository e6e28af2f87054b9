// Structure and indexing ops: op-table rows (float64 loop references, every dtype, layouts) and
// error paths for cat, stack, split, split_with_sizes, chunk, unbind, index_select, gather,
// scatter, scatter_add, embedding, one_hot, tril, triu.
#include <memory>
#include <random>

#include "core/op.h"
#include "op_table.h"

using namespace kiln;
using namespace kiln::optable;
using kiln::testing::close;
using kiln::testing::to_vec;

namespace {

// --- float64 reference helpers (plain loops over contiguous data) -------------------------------

const double* P(const Tensor& t) { return t.data_ptr<double>(); }
double* W(const Tensor& t) { return t.data_ptr<double>(); }

std::vector<int64_t> unravel(int64_t lin, IntArrayRef s) {
  std::vector<int64_t> idx(s.size());
  for (int64_t d = static_cast<int64_t>(s.size()) - 1; d >= 0; --d) {
    idx[d] = lin % s[d];
    lin /= s[d];
  }
  return idx;
}
int64_t ravel(const std::vector<int64_t>& idx, IntArrayRef s) {
  int64_t o = 0;
  for (size_t d = 0; d < s.size(); ++d) o = o * s[d] + idx[d];
  return o;
}
int64_t wrapd(int64_t d, int64_t nd) { return d < 0 ? d + std::max<int64_t>(nd, 1) : d; }
// A 0-dim tensor seen as [1] (the rank gather/scatter/index_select give it).
Tensor nonempty(const Tensor& t) { return t.dim() == 0 ? t.reshape({1}) : t; }
bool legacy_empty(const Tensor& t) { return t.dim() == 1 && t.size(0) == 0; }

Tensor ref_cat(const TensorList& in, int64_t dim) {
  TensorList v;
  for (const Tensor& t : in)
    if (!legacy_empty(t)) v.push_back(t);
  if (v.empty()) return empty({0}, kFloat64);
  const int64_t d = wrapd(dim, v[0].dim());
  Shape os = v[0].sizes().vec();
  os[d] = 0;
  for (const Tensor& t : v) os[d] += t.size(d);
  Tensor out = empty(os, kFloat64);
  for (int64_t lin = 0; lin < out.numel(); ++lin) {
    auto idx = unravel(lin, os);
    int64_t k = idx[d];
    size_t j = 0;
    while (k >= v[j].size(d)) k -= v[j++].size(d);
    idx[d] = k;
    W(out)[lin] = P(v[j])[ravel(idx, v[j].sizes())];
  }
  return out;
}

Tensor ref_index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  Tensor xe = nonempty(x);
  const int64_t d = wrapd(dim, x.dim());
  Shape os = xe.sizes().vec();
  os[d] = index.numel();
  Tensor out = empty(os, kFloat64);
  for (int64_t lin = 0; lin < out.numel(); ++lin) {
    auto idx = unravel(lin, os);
    idx[d] = static_cast<int64_t>(P(index)[idx[d]]);
    W(out)[lin] = P(xe)[ravel(idx, xe.sizes())];
  }
  return x.dim() == 0 ? out.reshape({}) : out;
}

Tensor ref_gather(const Tensor& x, int64_t dim, const Tensor& index) {
  Tensor xe = nonempty(x), ie = nonempty(index);
  const int64_t d = wrapd(dim, x.dim());
  Tensor out = empty(ie.sizes(), kFloat64);
  for (int64_t lin = 0; lin < ie.numel(); ++lin) {
    auto idx = unravel(lin, ie.sizes());
    idx[d] = static_cast<int64_t>(P(ie)[lin]);
    W(out)[lin] = P(xe)[ravel(idx, xe.sizes())];
  }
  return out.reshape(index.sizes());
}

// src undefined: scatter `value`. mode: 0 assign, 1 add, 2 logical or (bool scatter_add).
Tensor ref_scatter(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src, double value, int mode) {
  Tensor out = nonempty(x).clone();
  Tensor ie = nonempty(index);
  Tensor se = src.defined() ? nonempty(src) : Tensor();
  const int64_t d = wrapd(dim, x.dim());
  for (int64_t lin = 0; lin < ie.numel(); ++lin) {
    auto idx = unravel(lin, ie.sizes());
    const double s = se.defined() ? P(se)[ravel(idx, se.sizes())] : value;
    idx[d] = static_cast<int64_t>(P(ie)[lin]);
    double& o = W(out)[ravel(idx, out.sizes())];
    o = mode == 0 ? s : mode == 1 ? o + s : ((o != 0 || s != 0) ? 1.0 : 0.0);
  }
  return out.reshape(x.sizes());
}

Tensor ref_embedding(const Tensor& w, const Tensor& idx) {
  Shape os = idx.sizes().vec();
  const int64_t D = w.size(1);
  os.push_back(D);
  Tensor out = empty(os, kFloat64);
  for (int64_t i = 0; i < idx.numel(); ++i)
    for (int64_t j = 0; j < D; ++j) W(out)[i * D + j] = P(w)[static_cast<int64_t>(P(idx)[i]) * D + j];
  return out;
}

Tensor ref_tri(const Tensor& x, int64_t k, bool lower) {
  Tensor out = empty(x.sizes(), kFloat64);
  const int64_t M = x.size(-2), N = x.size(-1);
  for (int64_t lin = 0; lin < x.numel(); ++lin) {
    const int64_t j = lin % N, i = (lin / N) % M;
    const bool keep = lower ? j - i <= k : j - i >= k;
    W(out)[lin] = keep ? P(x)[lin] : 0.0;
  }
  return out;
}

// --- index generators -----------------------------------------------------------------------

// Uniform indices in [0, n).
Tensor rand_index(const Shape& s, int64_t n, DType dt, uint64_t seed) {
  std::mt19937_64 g(seed);
  Tensor t = empty(s, kInt64);
  std::uniform_int_distribution<int64_t> u(0, std::max<int64_t>(n - 1, 0));
  for (int64_t i = 0; i < t.numel(); ++i) t.data_ptr<int64_t>()[i] = u(g);
  return t.to(dt);
}

// Distinct indices along `dim` at every other position (a prefix of a permutation of [0, n)),
// so that scatter's result does not depend on the write order.
Tensor perm_index(const Shape& s, int64_t dim, int64_t n, DType dt, uint64_t seed) {
  std::mt19937_64 g(seed);
  Shape ns = s.empty() ? Shape{1} : s;
  const int64_t d = wrapd(dim, static_cast<int64_t>(s.size()));
  Tensor t = empty(ns, kInt64);
  int64_t* p = t.data_ptr<int64_t>();
  std::vector<int64_t> perm(static_cast<size_t>(n));
  for (int64_t lin = 0; lin < t.numel(); ++lin) {
    auto idx = unravel(lin, ns);
    if (idx[d] != 0) continue;
    for (int64_t i = 0; i < n; ++i) perm[i] = i;
    std::shuffle(perm.begin(), perm.end(), g);
    for (int64_t k = 0; k < ns[d]; ++k) {
      idx[d] = k;
      p[ravel(idx, ns)] = perm[k];
    }
  }
  return t.reshape(s).to(dt);
}

struct Gen {
  uint64_t seed = 4242;
  Shape self;
  Tensor data(const Shape& s, DType dt) { return random_input(s, dt, Domain{}, ++seed); }
  int64_t dim_size(int64_t dim) const { return self.empty() ? 1 : self[wrapd(dim, static_cast<int64_t>(self.size()))]; }
};

DType same(DType d) { return d; }

}  // namespace

// --- cat / stack ------------------------------------------------------------------------------

TEST(IndexOps, CatTable) {
  struct Variant {
    int64_t dim;
    std::vector<std::vector<Shape>> sets;
  };
  std::vector<Variant> variants = {
      {0, {{{2, 3}, {4, 3}}, {{1, 5}, {2, 5}, {3, 5}}, {{0, 3}, {2, 3}}, {{0}, {2, 3}}, {{3}, {4}}}},
      {1, {{{2, 3}, {2, 1}}, {{2, 0}, {2, 4}}, {{2, 3, 4}, {2, 2, 4}, {2, 1, 4}}, {{2, 3}, {0}, {2, 2}}}},
      {-1, {{{2, 3, 2}, {2, 3, 5}}, {{4, 3}, {4, 3}}, {{0}, {0}}}},
      {2, {{{2, 3, 4}, {2, 3, 1}}}},
  };
  for (const auto& v : variants) {
    OpCase c;
    c.name = "cat/dim=" + std::to_string(v.dim);
    c.shape_sets = v.sets;
    c.dtypes = all_dtypes();
    c.run = [d = v.dim](const TensorList& in) { return cat(in, d); };
    c.ref = [d = v.dim](const TensorList& in) { return ref_cat(in, d); };
    c.out_dtype = same;
    check_case(c);
  }
}

TEST(IndexOps, CatPromotesAcrossInputs) {
  // Input 1 is always int32 (and a legacy empty float64 tensor joins the promotion).
  auto g = std::make_shared<Gen>();
  OpCase c;
  c.name = "cat/promote";
  c.shape_sets = {{{2, 3}, {1, 3}}, {{3, 2}, {3, 2}}};
  c.dtypes = all_dtypes();
  c.fixed_dtype_inputs = {1};
  c.make_input = [g](size_t i, const Shape& s, DType dt) { return g->data(s, i == 1 ? kInt32 : dt); };
  c.run = [](const TensorList& in) { return cat(in, 0); };
  c.ref = [](const TensorList& in) { return ref_cat(in, 0); };
  c.out_dtype = [](DType d) { return promote_types(d, kInt32); };
  check_case(c);

  Tensor r = cat({ones({2}, kInt32), empty({0}, kFloat64), full({1}, true)});
  EXPECT_EQ(r.dtype(), kFloat64);
  EXPECT_EQ(to_vec(r), (std::vector<double>{1, 1, 1}));
  EXPECT_EQ(cat({ones({2}, kUInt8), ones({1}, kInt8)}).dtype(), kInt16);
  EXPECT_EQ(cat({ones({2}, kFloat16), ones({1}, kBFloat16)}).dtype(), kFloat32);
  // Only legacy empty tensors: result [0] of the promoted dtype, dim unchecked (as PyTorch).
  Tensor e = cat({empty({0}, kInt64), empty({0}, kFloat32)}, 3);
  EXPECT_EQ(e.sizes().vec(), (Shape{0}));
  EXPECT_EQ(e.dtype(), kFloat32);
}

TEST(IndexOps, CatLargeBlocksAndMixedLayouts) {
  // Above the parallel threshold, contiguous (memcpy) and strided (copy kernel) inputs mixed.
  Tensor a = random_input({300, 70}, kFloat32, {}, 1);
  Tensor b = random_input({130, 300}, kFloat32, {}, 2).t();
  Tensor c = random_input({300, 50}, kFloat32, {}, 3);
  Tensor r = cat({a, b, c}, 1);
  EXPECT_EQ(r.dtype(), kFloat32);
  EXPECT_TRUE(close(r, ref_cat({a.to(kFloat64), b.to(kFloat64).contiguous(), c.to(kFloat64)}, 1), 0, 0));
  Tensor r64 = cat({a, b, c.to(kFloat64)}, 1);
  EXPECT_EQ(r64.dtype(), kFloat64);
  EXPECT_TRUE(close(r64, r, 0, 0));
  Tensor r0 = cat({a.t(), b.t().contiguous(), c.t()}, 0);
  EXPECT_TRUE(close(r0, r.t(), 0, 0));
  // Pieces of work that start and end inside output rows, and stack's one-element blocks.
  Tensor p = random_input({301, 70}, kInt32, {}, 5), q = random_input({301, 53}, kInt32, {}, 6);
  EXPECT_TRUE(close(cat({p, q}, 1), ref_cat({p.to(kFloat64), q.to(kFloat64)}, 1), 0, 0));
  Tensor s1 = random_input({157, 71}, kFloat16, {}, 7), s2 = random_input({157, 71}, kFloat16, {}, 8);
  Tensor st = stack({s1, s2, s1}, -1);
  EXPECT_EQ(st.sizes().vec(), (Shape{157, 71, 3}));
  EXPECT_TRUE(close(st, ref_cat({s1.to(kFloat64).unsqueeze(2), s2.to(kFloat64).unsqueeze(2), s1.to(kFloat64).unsqueeze(2)}, 2), 0, 0));
  Tensor big = random_input({100000}, kFloat32, {}, 4);
  EXPECT_TRUE(close(cat({big, big}), ref_cat({big.to(kFloat64), big.to(kFloat64)}, 0), 0, 0));
}

TEST(IndexOps, StackTable) {
  for (int64_t dim : {0, 1, -1}) {
    OpCase c;
    c.name = "stack/dim=" + std::to_string(dim);
    c.shape_sets = {{{2, 3}, {2, 3}}, {{2, 3}, {2, 3}, {2, 3}}, {{0, 3}, {0, 3}}, {{4}, {4}}};
    if (dim != 1) c.shape_sets.push_back({{}, {}});
    c.dtypes = all_dtypes();
    c.run = [dim](const TensorList& in) { return stack(in, dim); };
    c.ref = [dim](const TensorList& in) {
      TensorList u;
      for (const Tensor& t : in) u.push_back(t.unsqueeze(wrapd(dim, t.dim() + 1)));
      return ref_cat(u, wrapd(dim, in[0].dim() + 1));
    };
    c.out_dtype = same;
    check_case(c);
  }
  Tensor s = stack({tensor({1, 2}), tensor({3, 4}), tensor({5, 6})}, 1);
  EXPECT_EQ(s.sizes().vec(), (Shape{2, 3}));
  EXPECT_EQ(to_vec(s), (std::vector<double>{1, 3, 5, 2, 4, 6}));
  EXPECT_EQ(stack({full({}, 1.0), full({}, 2.0)}).sizes().vec(), (Shape{2}));
  EXPECT_EQ(stack({zeros({0}), zeros({0})}).sizes().vec(), (Shape{2, 0}));  // not skipped like cat
  EXPECT_EQ(stack({ones({2}, kInt32), ones({2}, kFloat64)}).dtype(), kFloat64);
}

TEST(IndexOps, CatStackErrors) {
  EXPECT_KILN_ERROR(cat({}), "[cat]", "non-empty list");
  EXPECT_KILN_ERROR(cat({ones({2}), full({}, 1.0)}), "[cat]", "zero-dimensional", "position 1");
  EXPECT_KILN_ERROR(cat({ones({2, 3}), ones({3})}), "[cat]", "same number of dimensions", "2 and 1");
  EXPECT_KILN_ERROR(cat({ones({2, 3}), ones({2, 4})}, 0), "[cat]", "dimension 0", "Expected size 3",
                    "got size 4", "tensor number 1");
  EXPECT_KILN_ERROR(cat({ones({2, 3}), ones({2, 3})}, 2), "[cat]", "dim 2 out of range");
  EXPECT_KILN_ERROR(cat({ones({2, 3}), ones({2, 3})}, -3), "[cat]", "dim -3");
  EXPECT_KILN_ERROR(cat({ones({2}), Tensor()}), "[cat]", "argument 1", "undefined");
  EXPECT_KILN_ERROR(stack({}), "[stack]", "non-empty list");
  EXPECT_KILN_ERROR(stack({ones({2, 3}), ones({3, 2})}), "[stack]", "equal size", "[2, 3]", "[3, 2]", "entry 1");
  EXPECT_KILN_ERROR(stack({ones({2, 3}), ones({2, 3})}, 3), "[stack]", "dim 3 out of range");
  EXPECT_KILN_ERROR(stack({ones({2}), Tensor()}), "[stack]", "argument 1", "undefined");
}

// --- split / split_with_sizes / chunk / unbind --------------------------------------------------

namespace {
Shape sizes_along(const std::vector<Tensor>& parts, int64_t d) {
  Shape s;
  for (const Tensor& p : parts) s.push_back(p.size(d));
  return s;
}
// Every piece is a view into x's storage at the expected offset, and the pieces tile x.
void expect_views_tiling(const Tensor& x, const std::vector<Tensor>& parts, int64_t d) {
  int64_t start = 0;
  for (const Tensor& p : parts) {
    EXPECT_EQ(p.impl()->storage(), x.impl()->storage());
    EXPECT_EQ(p.storage_offset(), x.storage_offset() + start * x.stride(d));
    EXPECT_EQ(p.strides(), x.strides());
    EXPECT_TRUE(close(p, x.narrow(d, start, p.size(d)), 0, 0));
    start += p.size(d);
  }
  EXPECT_EQ(start, x.size(d));
}
}  // namespace

TEST(IndexOps, SplitChunkUnbindAreViews) {
  Tensor x = arange(30, kFloat32).reshape({5, 6});
  auto s = split(x, 2);
  EXPECT_EQ(sizes_along(s, 0), (Shape{2, 2, 1}));
  expect_views_tiling(x, s, 0);
  auto s1 = x.split(4, 1);
  EXPECT_EQ(sizes_along(s1, 1), (Shape{4, 2}));
  expect_views_tiling(x, s1, 1);
  EXPECT_EQ(sizes_along(split(x, 10, -1), 1), (Shape{6}));  // split_size > dim size: one piece
  EXPECT_EQ(sizes_along(split(zeros({0, 3}), 3), 0), (Shape{0}));
  EXPECT_EQ(sizes_along(split(zeros({0, 3}), 0), 0), (Shape{0}));

  auto w = split_with_sizes(x, {1, 0, 3, 2}, 1);
  EXPECT_EQ(sizes_along(w, 1), (Shape{1, 0, 3, 2}));
  expect_views_tiling(x, w, 1);
  EXPECT_EQ(split_with_sizes(zeros({0}), {0, 0}).size(), 2u);

  // torch.chunk sizes: ceil(n / chunks) each, so fewer chunks may come back.
  EXPECT_EQ(sizes_along(chunk(x, 3, 0), 0), (Shape{2, 2, 1}));
  EXPECT_EQ(sizes_along(chunk(x, 4, 1), 1), (Shape{2, 2, 2}));
  EXPECT_EQ(sizes_along(chunk(x, 6, 1), 1), (Shape{1, 1, 1, 1, 1, 1}));
  EXPECT_EQ(sizes_along(chunk(x, 10, 0), 0), (Shape{1, 1, 1, 1, 1}));
  EXPECT_EQ(sizes_along(chunk(zeros({0, 2}), 3, 0), 0), (Shape{0, 0, 0}));
  EXPECT_EQ(sizes_along(x.chunk(1, 1), 1), (Shape{6}));
  expect_views_tiling(x, chunk(x, 4, -1), 1);

  // Pieces of a non-contiguous tensor are views too, and writes reach the base.
  Tensor xt = x.t();
  auto c = chunk(xt, 2, 1);
  EXPECT_EQ(sizes_along(c, 1), (Shape{3, 2}));
  expect_views_tiling(xt, c, 1);
  c[1].fill_(-1.0);
  EXPECT_EQ(x[4][0].item<double>(), -1.0);
  EXPECT_EQ(x[2][5].item<double>(), 17.0);

  auto u = unbind(x, 1);
  ASSERT_EQ(u.size(), 6u);
  for (int64_t j = 0; j < 6; ++j) {
    EXPECT_EQ(u[j].sizes().vec(), (Shape{5}));
    EXPECT_EQ(u[j].impl()->storage(), x.impl()->storage());
    EXPECT_EQ(u[j].storage_offset(), j);
    EXPECT_EQ(u[j].stride(0), 6);
  }
  u[2].zero_();
  EXPECT_EQ(x[1][2].item<double>(), 0.0);
  EXPECT_EQ(x.unbind(-2).size(), 5u);
  EXPECT_EQ(unbind(zeros({0, 3})).size(), 0u);
  EXPECT_EQ(unbind(zeros({3})).at(1).dim(), 0);
}

TEST(IndexOps, SplitChunkUnbindErrors) {
  Tensor x = zeros({4, 3});
  EXPECT_KILN_ERROR(split(full({}, 1.0), 1), "[split]", "1-dimensional");
  EXPECT_KILN_ERROR(split(x, -1), "[split]", "non-negative", "-1");
  EXPECT_KILN_ERROR(split(x, 0), "[split]", "split_size can only be 0", "4");
  EXPECT_KILN_ERROR(split(x, 2, 2), "[split]", "dim 2 out of range");
  EXPECT_KILN_ERROR(split_with_sizes(full({}, 1.0), {1}), "[split_with_sizes]", "1-dimensional");
  EXPECT_KILN_ERROR(split_with_sizes(x, {2, -1, 3}), "[split_with_sizes]", "non-negative", "[2, -1, 3]");
  EXPECT_KILN_ERROR(split_with_sizes(x, {2, 1}), "[split_with_sizes]", "sum exactly to 4", "dimension 0", "[2, 1]");
  EXPECT_KILN_ERROR(split_with_sizes(x, {2, 1}, -3), "[split_with_sizes]", "dim -3");
  EXPECT_KILN_ERROR(chunk(x, 0), "[chunk]", "greater than 0", "0");
  EXPECT_KILN_ERROR(chunk(x, -2), "[chunk]", "-2");
  EXPECT_KILN_ERROR(chunk(full({}, 1.0), 2), "[chunk]", "1-dimensional");
  EXPECT_KILN_ERROR(chunk(x, 2, 5), "[chunk]", "dim 5");
  EXPECT_KILN_ERROR(unbind(full({}, 1.0)), "[unbind]", "no dimensions");
  EXPECT_KILN_ERROR(unbind(x, 2), "[unbind]", "dim 2 out of range");
}

// --- index_select / embedding -------------------------------------------------------------------

namespace {
// index_select and gather share sample inputs: data, then an index valid for `dim`.
using IndexRunFn = Tensor (*)(const Tensor&, int64_t, const Tensor&);
using IndexRefFn = Tensor (*)(const Tensor&, int64_t, const Tensor&);
OpCase indexed_case(const std::string& op, IndexRunFn run, IndexRefFn ref, int64_t dim,
                    std::vector<std::vector<Shape>> sets, DType idx_dt) {
  auto g = std::make_shared<Gen>();
  OpCase c;
  c.name = op + "/dim=" + std::to_string(dim) + "/" + std::string(dtype_name(idx_dt));
  c.shape_sets = std::move(sets);
  c.dtypes = all_dtypes();
  c.fixed_dtype_inputs = {1};
  c.make_input = [g, dim, idx_dt](size_t i, const Shape& s, DType dt) {
    if (i == 0) {
      g->self = s;
      return g->data(s, dt);
    }
    return rand_index(s, g->dim_size(dim), idx_dt, ++g->seed);
  };
  c.run = [run, dim](const TensorList& in) { return run(in[0], dim, in[1]); };
  c.ref = [ref, dim](const TensorList& in) { return ref(in[0], dim, in[1]); };
  c.out_dtype = same;
  return c;
}

OpCase index_select_case(int64_t dim, std::vector<std::vector<Shape>> sets, DType idx_dt) {
  return indexed_case("index_select", &kiln::index_select, &ref_index_select, dim, std::move(sets), idx_dt);
}
}  // namespace

TEST(IndexOps, IndexSelectTable) {
  check_case(index_select_case(0, {{{5, 3}, {7}}, {{4}, {2}}, {{3, 4, 2}, {0}}, {{3, 0}, {4}}, {{}, {1}}, {{}, {}}},
                               kInt64));
  check_case(index_select_case(1, {{{5, 3}, {4}}, {{2, 6, 3}, {6}}, {{2, 5, 3}, {}}}, kInt64));
  check_case(index_select_case(-1, {{{4, 6}, {3}}, {{2, 3, 5}, {8}}, {{3}, {5}}}, kInt32));
  check_case(index_select_case(2, {{{2, 3, 4}, {4}}}, kInt32));
}

TEST(IndexOps, IndexSelectLargeAndStridedIndex) {
  Tensor x = random_input({400, 100}, kFloat32, {}, 5);
  Tensor idx = rand_index({600}, 400, kInt64, 6);
  EXPECT_TRUE(close(index_select(x, 0, idx), ref_index_select(x.to(kFloat64), 0, idx.to(kFloat64)), 0, 0));
  Tensor idx1 = rand_index({500}, 100, kInt32, 7);
  EXPECT_TRUE(close(x.index_select(1, idx1), ref_index_select(x.to(kFloat64), 1, idx1.to(kFloat64)), 0, 0));
  // A strided index view and a self whose inner dims cannot be merged.
  Tensor sidx = rand_index({2, 9}, 6, kInt64, 8).select(0, 1).slice(0, 0, std::nullopt, 2);
  Tensor y = random_input({6, 4, 5}, kFloat64, {}, 9).permute({0, 2, 1});
  EXPECT_TRUE(close(index_select(y, 0, sidx), ref_index_select(y.contiguous(), 0, sidx.to(kFloat64)), 0, 0));
  EXPECT_EQ(to_vec(index_select(tensor({10, 20, 30}), 0, tensor({2, 0, 2}))), (std::vector<double>{30, 10, 30}));
}

TEST(IndexOps, IndexSelectErrors) {
  Tensor x = zeros({5, 3});
  EXPECT_KILN_ERROR(index_select(x, 0, tensor({1, 7})), "[index_select]", "index 7 is out of range for dimension 0 with size 5");
  EXPECT_KILN_ERROR(index_select(x, 1, tensor({-1})), "[index_select]", "index -1", "dimension 1 with size 3");
  EXPECT_KILN_ERROR(index_select(x, 0, tensor({{1, 2}})), "[index_select]", "vector", "[1, 2]");
  EXPECT_KILN_ERROR(index_select(x, 0, tensor({1.0, 2.0})), "[index_select]", "int64 or int32", "float32");
  EXPECT_KILN_ERROR(index_select(x, 0, tensor({1}, kInt16)), "[index_select]", "int16");
  EXPECT_KILN_ERROR(index_select(x, 2, tensor({1})), "[index_select]", "dim 2 out of range");
  EXPECT_KILN_ERROR(index_select(full({}, 1.0), 0, tensor({0, 0})), "[index_select]", "0-dim", "2 values");
  EXPECT_KILN_ERROR(index_select(full({}, 1.0), 0, tensor({1})), "[index_select]", "index 1", "size 1");
  EXPECT_KILN_ERROR(index_select(zeros({0, 3}), 0, tensor({0})), "[index_select]", "index 0", "size 0");
  EXPECT_KILN_ERROR(index_select(x, 0, Tensor()), "[index_select]", "undefined");
}

TEST(IndexOps, EmbeddingTable) {
  for (DType idx_dt : {kInt64, kInt32}) {
    auto g = std::make_shared<Gen>();
    OpCase c;
    c.name = std::string("embedding/") + std::string(dtype_name(idx_dt));
    c.shape_sets = {{{10, 4}, {3}}, {{10, 4}, {2, 3}}, {{6, 3}, {}}, {{5, 0}, {2, 2}}, {{7, 2}, {0}}, {{3, 5}, {2, 0, 3}}};
    c.dtypes = all_dtypes();
    c.fixed_dtype_inputs = {1};
    c.make_input = [g, idx_dt](size_t i, const Shape& s, DType dt) {
      if (i == 0) {
        g->self = s;
        return g->data(s, dt);
      }
      return rand_index(s, g->self[0], idx_dt, ++g->seed);
    };
    c.run = [](const TensorList& in) { return embedding(in[0], in[1]); };
    c.ref = [](const TensorList& in) { return ref_embedding(in[0], in[1]); };
    c.out_dtype = same;
    check_case(c);
  }
  // padding_idx only matters for gradients: the row is still looked up.
  Tensor w = arange(12, kFloat32).reshape({4, 3});
  Tensor r = embedding(w, tensor({{0, 3}, {3, 1}}), 3);
  EXPECT_EQ(r.sizes().vec(), (Shape{2, 2, 3}));
  EXPECT_EQ(to_vec(r), (std::vector<double>{0, 1, 2, 9, 10, 11, 9, 10, 11, 3, 4, 5}));
  EXPECT_TRUE(close(embedding(w, tensor({1}), -4), w.narrow(0, 1, 1), 0, 0));
  EXPECT_TRUE(close(embedding(w.t().contiguous().t(), tensor({2, 0})), embedding(w, tensor({2, 0})), 0, 0));
}

TEST(IndexOps, EmbeddingErrors) {
  Tensor w = zeros({5, 3});
  EXPECT_KILN_ERROR(embedding(zeros({5}), tensor({1})), "[embedding]", "'weight' must be 2-D", "[5]");
  EXPECT_KILN_ERROR(embedding(w, tensor({1.0})), "[embedding]", "indices", "int64 or int32", "float32");
  EXPECT_KILN_ERROR(embedding(w, tensor({{1, 5}})), "[embedding]", "index 5 is out of range for dimension 0 with size 5");
  EXPECT_KILN_ERROR(embedding(w, tensor({-1})), "[embedding]", "index -1", "size 5");
  EXPECT_KILN_ERROR(embedding(w, tensor({1}), 5), "[embedding]", "padding_idx 5", "5 rows");
  EXPECT_KILN_ERROR(embedding(w, tensor({1}), -6), "[embedding]", "padding_idx -6");
  EXPECT_KILN_ERROR(embedding(Tensor(), tensor({1})), "[embedding]", "undefined");
}

// --- gather / scatter / scatter_add ----------------------------------------------------------------

namespace {
const std::vector<std::vector<Shape>> kGatherSets0 = {
    {{5, 3}, {4, 3}}, {{5, 3}, {7, 2}}, {{4}, {6}}, {{3, 4, 2}, {2, 3, 2}}, {{3, 2}, {0, 2}}, {{0, 3}, {0, 2}},
    {{}, {}}, {{}, {1}}, {{1}, {}}};
const std::vector<std::vector<Shape>> kGatherSets1 = {
    {{5, 3}, {4, 5}}, {{2, 4, 3}, {2, 6, 1}}, {{3, 6}, {2, 2}}, {{4, 3}, {4, 0}}};
const std::vector<std::vector<Shape>> kGatherSetsLast = {{{5, 3}, {5, 4}}, {{2, 3, 4}, {1, 2, 5}}, {{6}, {3}}};

OpCase gather_case(int64_t dim, std::vector<std::vector<Shape>> sets, DType idx_dt) {
  return indexed_case("gather", &kiln::gather, &ref_gather, dim, std::move(sets), idx_dt);
}

// scatter sets: {self, index, src}; index.size(dim) <= self.size(dim) (distinct indices).
const std::vector<std::vector<Shape>> kScatterSets0 = {
    {{5, 3}, {4, 3}, {4, 3}}, {{5, 3}, {2, 2}, {3, 3}}, {{6}, {4}, {5}}, {{4, 3, 2}, {3, 2, 2}, {3, 3, 2}},
    {{3, 2}, {0, 2}, {0, 2}}, {{0, 2}, {0, 2}, {0, 2}}, {{}, {}, {}}, {{}, {1}, {1}}};
const std::vector<std::vector<Shape>> kScatterSets1 = {
    {{3, 6}, {3, 4}, {3, 5}}, {{2, 5, 3}, {2, 5, 3}, {2, 5, 3}}, {{4, 3}, {2, 0}, {2, 2}}};
const std::vector<std::vector<Shape>> kScatterSetsLast = {{{4, 5}, {3, 5}, {4, 5}}, {{2, 3, 6}, {2, 2, 4}, {2, 2, 4}}};

enum class ScatterKind { Src, Value, Add, AddBool };

OpCase scatter_case(ScatterKind kind, int64_t dim, std::vector<std::vector<Shape>> sets, DType idx_dt) {
  auto g = std::make_shared<Gen>();
  static const char* names[] = {"scatter", "scatter/value", "scatter_add", "scatter_add/bool"};
  OpCase c;
  c.name = std::string(names[static_cast<int>(kind)]) + "/dim=" + std::to_string(dim) + "/" +
           std::string(dtype_name(idx_dt));
  if (kind == ScatterKind::Value)
    for (auto& s : sets) s.pop_back();
  c.shape_sets = std::move(sets);
  c.dtypes = kind == ScatterKind::AddBool ? std::vector<DType>{kBool} : all_dtypes();
  if (kind == ScatterKind::Add) c.dtypes.pop_back();  // bool has its own row (or, not +)
  c.fixed_dtype_inputs = {1};
  c.tol_scale = kind == ScatterKind::Add ? 4.0 : 1.0;  // low-precision sums round after each add
  const bool distinct = kind == ScatterKind::Src || kind == ScatterKind::Value;
  c.make_input = [g, dim, idx_dt, distinct](size_t i, const Shape& s, DType dt) {
    if (i == 0) g->self = s;
    if (i != 1) return g->data(s, dt);
    return distinct ? perm_index(s, dim, g->dim_size(dim), idx_dt, ++g->seed)
                    : rand_index(s, g->dim_size(dim), idx_dt, ++g->seed);
  };
  switch (kind) {
    case ScatterKind::Src:
      c.run = [dim](const TensorList& in) { return scatter(in[0], dim, in[1], in[2]); };
      c.ref = [dim](const TensorList& in) { return ref_scatter(in[0], dim, in[1], in[2], 0, 0); };
      break;
    case ScatterKind::Value:
      c.run = [dim](const TensorList& in) { return scatter(in[0], dim, in[1], Scalar(1)); };
      c.ref = [dim](const TensorList& in) { return ref_scatter(in[0], dim, in[1], Tensor(), 1.0, 0); };
      break;
    case ScatterKind::Add:
    case ScatterKind::AddBool:
      c.run = [dim](const TensorList& in) { return scatter_add(in[0], dim, in[1], in[2]); };
      c.ref = [dim, kind](const TensorList& in) {
        return ref_scatter(in[0], dim, in[1], in[2], 0, kind == ScatterKind::Add ? 1 : 2);
      };
      break;
  }
  c.out_dtype = same;
  return c;
}
}  // namespace

TEST(IndexOps, GatherTable) {
  check_case(gather_case(0, kGatherSets0, kInt64));
  check_case(gather_case(1, kGatherSets1, kInt64));
  check_case(gather_case(-1, kGatherSetsLast, kInt32));
  check_case(gather_case(-2, {{{3, 4}, {5, 2}}}, kInt32));
}

TEST(IndexOps, ScatterTable) {
  for (ScatterKind k : {ScatterKind::Src, ScatterKind::Value, ScatterKind::Add, ScatterKind::AddBool}) {
    check_case(scatter_case(k, 0, kScatterSets0, kInt64));
    check_case(scatter_case(k, 1, kScatterSets1, kInt32));
    check_case(scatter_case(k, -1, kScatterSetsLast, kInt64));
  }
}

TEST(IndexOps, GatherScatterSemantics) {
  Tensor x = tensor({{1, 2}, {3, 4}});
  EXPECT_EQ(to_vec(gather(x, 1, tensor({{0, 0}, {1, 0}}))), (std::vector<double>{1, 1, 4, 3}));
  EXPECT_EQ(to_vec(x.gather(0, tensor({{1, 0}}))), (std::vector<double>{3, 2}));
  // scatter is out of place; scatter_add accumulates duplicates.
  Tensor z = zeros({3, 5});
  Tensor src = arange(1, 11, 1, kFloat32).reshape({2, 5});
  Tensor r = z.scatter(0, tensor({{0, 1, 2, 0, 0}, {2, 0, 0, 1, 2}}), src);
  EXPECT_EQ(to_vec(r), (std::vector<double>{1, 7, 8, 4, 5, 0, 2, 0, 9, 0, 6, 0, 3, 0, 10}));
  EXPECT_EQ(to_vec(z), std::vector<double>(15, 0.0));
  Tensor a = scatter_add(zeros({3}), 0, tensor({0, 2, 0, 0}), tensor({1.0, 2.0, 3.0, 4.0}));
  EXPECT_EQ(to_vec(a), (std::vector<double>{8, 0, 2}));
  Tensor v = scatter(zeros({2, 3}, kInt64), 1, tensor({{2}, {0}}), Scalar(7));
  EXPECT_EQ(v.dtype(), kInt64);
  EXPECT_EQ(to_vec(v), (std::vector<double>{0, 0, 7, 7, 0, 0}));
  EXPECT_EQ(to_vec(scatter(zeros({2}), 0, tensor({1}), Scalar(2.5))), (std::vector<double>{0, 2.5}));
  // int overflow wraps as in PyTorch.
  Tensor o = scatter_add(full({1}, INT64_MAX, kInt64), 0, tensor({0}), full({1}, 1, kInt64));
  EXPECT_EQ(o.item<int64_t>(), INT64_MIN);
  // Strided index and src views.
  Tensor idx = tensor({{0, 1}, {1, 0}, {2, 2}}).t();  // [2, 3], strides [1, 2]
  Tensor s = arange(6, kFloat64).reshape({3, 2}).t();
  EXPECT_TRUE(close(gather(s, 0, idx.narrow(0, 0, 1) * 0), s.narrow(0, 0, 1), 0, 0));
  EXPECT_TRUE(close(scatter_add(zeros({3, 3}, kFloat64), 1, idx, s),
                    ref_scatter(zeros({3, 3}, kFloat64), 1, idx.contiguous().to(kFloat64), s.contiguous(), 0, 1), 0, 0));
}

TEST(IndexOps, GatherScatterLarge) {
  // Above the parallel threshold along every loop order.
  Tensor x = random_input({300, 200}, kFloat32, {}, 11);
  for (int64_t d : {0, 1}) {
    Tensor idx = rand_index({250, 180}, x.size(d), kInt64, 12 + d);
    EXPECT_TRUE(close(gather(x, d, idx), ref_gather(x.to(kFloat64), d, idx.to(kFloat64)), 0, 0));
    Tensor src = random_input({250, 180}, kFloat64, {}, 14 + d);
    Tensor base = zeros({300, 200}, kFloat64);
    EXPECT_TRUE(close(scatter_add(base, d, idx, src), ref_scatter(base, d, idx.to(kFloat64), src, 0, 1), 1e-12, 1e-12));
    Tensor pidx = perm_index({250, 180}, d, x.size(d), kInt32, 16 + d);
    EXPECT_TRUE(close(scatter(base, d, pidx, src), ref_scatter(base, d, pidx.to(kFloat64), src, 0, 0), 0, 0));
  }
}

TEST(IndexOps, GatherErrors) {
  Tensor x = zeros({2, 5});
  EXPECT_KILN_ERROR(gather(x, 1, tensor({{0, 7}})), "[gather]", "index 7 is out of bounds for dimension 1 with size 5");
  EXPECT_KILN_ERROR(gather(x, 0, tensor({{-1}})), "[gather]", "index -1", "dimension 0 with size 2");
  EXPECT_KILN_ERROR(gather(x, 0, tensor({0, 1})), "[gather]", "same number of dimensions", "index has 1", "input has 2");
  EXPECT_KILN_ERROR(gather(x, 0, zeros({1, 6}, kInt64)), "[gather]", "size does not match at dimension 1", "[1, 6]",
                    "[2, 5]");
  EXPECT_KILN_ERROR(gather(x, 0, zeros({1, 1})), "[gather]", "int64 or int32", "float32");
  EXPECT_KILN_ERROR(gather(x, 2, zeros({1, 1}, kInt64)), "[gather]", "dim 2 out of range");
  EXPECT_KILN_ERROR(gather(full({}, 1.0), 0, tensor({1})), "[gather]", "index 1", "size 1");
  // Large index: the error crosses the parallel loop as a kiln::Error.
  Tensor big = zeros({200, 200}, kInt64);
  big.select(0, 150).fill_(200);
  EXPECT_KILN_ERROR(gather(zeros({200, 200}), 1, big), "[gather]", "index 200", "dimension 1 with size 200");
}

TEST(IndexOps, ScatterErrors) {
  Tensor x = zeros({3, 4});
  Tensor idx = tensor({{0, 1}});
  Tensor src = ones({2, 2});
  EXPECT_KILN_ERROR(scatter(x, 0, tensor({{3}}), src), "[scatter]", "index 3 is out of bounds for dimension 0 with size 3");
  EXPECT_KILN_ERROR(scatter(x, 1, tensor({{-2}}), Scalar(1)), "[scatter]", "index -2", "dimension 1 with size 4");
  EXPECT_KILN_ERROR(scatter(x, 0, idx, ones({2, 2}, kFloat64)), "[scatter]", "self.dtype", "float32", "float64");
  EXPECT_KILN_ERROR(scatter(x, 0, tensor({{0, 1, 2}}), ones({1, 2})), "[scatter]", "src", "[1, 3]", "[1, 2]");
  EXPECT_KILN_ERROR(scatter(x, 0, zeros({1, 5}, kInt64), ones({1, 5})), "[scatter]", "dimension 1", "[1, 5]", "[3, 4]");
  EXPECT_KILN_ERROR(scatter(x, 0, tensor({0}), src), "[scatter]", "same number of dimensions", "self");
  EXPECT_KILN_ERROR(scatter(x, 0, idx, ones({4})), "[scatter]", "same number of dimensions", "src");
  EXPECT_KILN_ERROR(scatter(x, 0, zeros({1, 2}), src), "[scatter]", "int64 or int32", "float32");
  EXPECT_KILN_ERROR(scatter(x, -3, idx, src), "[scatter]", "dim -3 out of range");
  EXPECT_KILN_ERROR(scatter_add(x, 1, tensor({{4}}), src), "[scatter_add]", "index 4 is out of bounds for dimension 1 with size 4");
  EXPECT_KILN_ERROR(scatter_add(x, 1, tensor({{-1}}), src), "[scatter_add]", "index -1");
  EXPECT_KILN_ERROR(scatter_add(x, 0, idx, ones({2, 2}, kInt64)), "[scatter_add]", "self.dtype", "int64");
  EXPECT_KILN_ERROR(scatter_add(x, 0, zeros({1, 5}, kInt64), ones({1, 5})), "[scatter_add]", "dimension 1", "[1, 5]");
  EXPECT_EQ(to_vec(scatter_add(x, 0, zeros({4, 1}, kInt64), ones({4, 1})).select(1, 0)), (std::vector<double>{4, 0, 0}));
  EXPECT_KILN_ERROR(scatter_add(x, 0, tensor({{0, 1, 2}}), src), "[scatter_add]", "src", "[2, 2]");
  EXPECT_KILN_ERROR(scatter_add(x, 0, tensor({{0}}, kInt16), src), "[scatter_add]", "int16");
  EXPECT_KILN_ERROR(scatter_add(x, 0, Tensor(), src), "[scatter_add]", "undefined");
}

// --- one_hot ------------------------------------------------------------------------------------

TEST(IndexOps, OneHotTable) {
  for (int64_t classes : {-1, 6}) {
    for (DType idx_dt : {kInt64, kInt32}) {
      auto g = std::make_shared<Gen>();
      OpCase c;
      c.name = "one_hot/" + std::to_string(classes) + "/" + std::string(dtype_name(idx_dt));
      c.shape_sets = {{{5}}, {{2, 3}}, {{}}, {{2, 1, 4}}};
      if (classes > 0) c.shape_sets.push_back({{0, 3}});
      c.dtypes = {idx_dt};
      c.fixed_dtype_inputs = {0};
      c.make_input = [g, idx_dt](size_t, const Shape& s, DType) { return rand_index(s, 5, idx_dt, ++g->seed); };
      c.run = [classes](const TensorList& in) { return one_hot(in[0], classes); };
      c.ref = [classes](const TensorList& in) {
        const double* p = P(in[0]);
        int64_t C = classes;
        if (C < 0) C = static_cast<int64_t>(*std::max_element(p, p + in[0].numel())) + 1;
        Shape s = in[0].sizes().vec();
        s.push_back(C);
        Tensor out = zeros(s, kFloat64);
        for (int64_t i = 0; i < in[0].numel(); ++i) W(out)[i * C + static_cast<int64_t>(p[i])] = 1;
        return out;
      };
      c.out_dtype = [](DType) { return kInt64; };
      check_case(c);
    }
  }
  Tensor r = one_hot(tensor({2, 0}));
  EXPECT_EQ(r.sizes().vec(), (Shape{2, 3}));
  EXPECT_EQ(to_vec(r), (std::vector<double>{0, 0, 1, 1, 0, 0}));
  EXPECT_EQ(one_hot(tensor({0, 0})).sizes().vec(), (Shape{2, 1}));
  EXPECT_EQ(one_hot(zeros({0}, kInt64), 3).sizes().vec(), (Shape{0, 3}));
  EXPECT_EQ(to_vec(one_hot(tensor({1, 0, 3}).slice(0, 0, std::nullopt, 2), 5)),
            (std::vector<double>{0, 1, 0, 0, 0, 0, 0, 0, 1, 0}));
  Tensor big = rand_index({40000}, 3, kInt64, 77);
  auto hv = to_vec(one_hot(big, 3));
  auto bv = to_vec(big);
  double total = 0;
  for (size_t i = 0; i < bv.size(); ++i) {
    total += hv[i * 3] + hv[i * 3 + 1] + hv[i * 3 + 2];
    EXPECT_EQ(hv[i * 3 + static_cast<size_t>(bv[i])], 1.0);
  }
  EXPECT_EQ(total, 40000.0);
}

TEST(IndexOps, OneHotErrors) {
  EXPECT_KILN_ERROR(one_hot(tensor({1.0})), "[one_hot]", "int64", "float32");
  EXPECT_KILN_ERROR(one_hot(tensor({1, -2, 0})), "[one_hot]", "non-negative", "-2");
  EXPECT_KILN_ERROR(one_hot(tensor({1, 3}), 3), "[one_hot]", "smaller than num_classes (3)", "3");
  EXPECT_KILN_ERROR(one_hot(tensor({0}), 0), "[one_hot]", "num_classes (0)");
  EXPECT_KILN_ERROR(one_hot(zeros({0}, kInt64)), "[one_hot]", "empty tensor", "-1");
  EXPECT_KILN_ERROR(one_hot(zeros({0}, kInt64), 0), "[one_hot]", "empty tensor", "0");
  EXPECT_KILN_ERROR(one_hot(tensor({1}), -2), "[one_hot]", "num_classes", "-2");
  EXPECT_KILN_ERROR(one_hot(Tensor()), "[one_hot]", "undefined");
}

// --- tril / triu ----------------------------------------------------------------------------------

TEST(IndexOps, TrilTriuTable) {
  for (bool lower : {true, false}) {
    for (int64_t k : {0, 1, -1, 2, -3, 100, -100}) {
      OpCase c;
      c.name = std::string(lower ? "tril" : "triu") + "/k=" + std::to_string(k);
      c.shape_sets = {{{4, 4}}, {{3, 5}}, {{5, 2}}, {{2, 3, 4}}, {{2, 1, 3, 3}}, {{0, 3}}, {{3, 0}}, {{2, 0, 2}}, {{1, 1}}};
      c.dtypes = all_dtypes();
      c.run = [k, lower](const TensorList& in) { return lower ? tril(in[0], k) : triu(in[0], k); };
      c.ref = [k, lower](const TensorList& in) { return ref_tri(in[0], k, lower); };
      c.out_dtype = same;
      check_case(c);
    }
  }
  Tensor x = ones({3, 3}, kInt64);
  EXPECT_EQ(to_vec(x.tril()), (std::vector<double>{1, 0, 0, 1, 1, 0, 1, 1, 1}));
  EXPECT_EQ(to_vec(x.triu(1)), (std::vector<double>{0, 1, 1, 0, 0, 1, 0, 0, 0}));
  EXPECT_EQ(to_vec(tril(x, INT64_MAX)), std::vector<double>(9, 1.0));
  EXPECT_EQ(to_vec(triu(x, INT64_MIN)), std::vector<double>(9, 1.0));
  EXPECT_EQ(to_vec(tril(x, INT64_MIN)), std::vector<double>(9, 0.0));
  Tensor big = random_input({4, 130, 150}, kFloat32, {}, 21);
  EXPECT_TRUE(close(triu(big.transpose(1, 2), -5), ref_tri(big.transpose(1, 2).contiguous().to(kFloat64), -5, false), 0, 0));
  EXPECT_TRUE(close(tril(big, 7), ref_tri(big.to(kFloat64), 7, true), 0, 0));
}

TEST(IndexOps, TrilTriuErrors) {
  EXPECT_KILN_ERROR(tril(ones({3})), "[tril]", "at least 2 dimensions", "[3]");
  EXPECT_KILN_ERROR(triu(full({}, 1.0), 1), "[triu]", "at least 2 dimensions", "[]");
  EXPECT_KILN_ERROR(tril(Tensor()), "[tril]", "undefined");
}

TEST(IndexOps, RowsAreRegistered) {
  for (const char* name : {"cat", "index_select", "gather", "scatter", "scatter_add", "embedding", "one_hot", "tril", "triu"}) {
    const OpDef* d = OpRegistry::instance().find(name);
    ASSERT_NE(d, nullptr) << name;
    EXPECT_NE(d->kernels[static_cast<int>(DeviceType::CPU)], nullptr) << name;
  }
}
