#include "test_util.h"

using namespace kiln;
using kiln::testing::close;
using kiln::testing::to_vec;

TEST(Tensor, FactoriesAndMetadata) {
  Tensor t = zeros({2, 3});
  EXPECT_EQ(t.dim(), 2);
  EXPECT_EQ(t.numel(), 6);
  EXPECT_EQ(t.dtype(), kFloat32);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.strides().vec(), (Shape{3, 1}));
  Tensor a = arange(5);
  EXPECT_EQ(a.dtype(), kInt64);
  EXPECT_EQ(to_vec(a), (std::vector<double>{0, 1, 2, 3, 4}));
  Tensor f = arange(0.0, 1.0, 0.25);
  EXPECT_EQ(f.dtype(), kFloat32);
  EXPECT_EQ(to_vec(f), (std::vector<double>{0, 0.25, 0.5, 0.75}));
  Tensor l = linspace(0, 1, 5, kFloat64);
  EXPECT_EQ(to_vec(l), (std::vector<double>{0, 0.25, 0.5, 0.75, 1}));
  Tensor e = eye(3);
  EXPECT_EQ(to_vec(e), (std::vector<double>{1, 0, 0, 0, 1, 0, 0, 0, 1}));
  Tensor n = tensor({{1, 2}, {3, 4}});
  EXPECT_EQ(n.sizes().vec(), (Shape{2, 2}));
  EXPECT_EQ(n.dtype(), kInt64);
  EXPECT_EQ(tensor({1.5, 2}).dtype(), kFloat32);
  EXPECT_EQ(tensor({true, false}).dtype(), kBool);
  EXPECT_EQ(full({2}, 7).dtype(), kInt64);
  EXPECT_EQ(full({2}, 7.0).dtype(), kFloat32);
}

TEST(Tensor, FactoryErrors) {
  EXPECT_KILN_ERROR(zeros({2, -1}), "[empty]", "negative dimension -1");
  EXPECT_KILN_ERROR(arange(0, 5, 0), "[arange]", "step must be nonzero");
  EXPECT_KILN_ERROR(tensor({{1, 2}, {3}}), "[tensor]", "expected sequence of length 2");
  EXPECT_KILN_ERROR(linspace(0, 1, -2), "[linspace]", "-2");
  EXPECT_KILN_ERROR(Device("tpu"), "[Device]", "tpu");
  EXPECT_KILN_ERROR(full({}, 1.0).size(0), "[size]", "no dimensions");
  EXPECT_KILN_ERROR(zeros({2, 3}).size(2), "[size]", "dim 2 out of range");
  EXPECT_KILN_ERROR(zeros({2, 3}).stride(-3), "[stride]", "-3");
  EXPECT_KILN_ERROR(zeros({2}).to(Device(kCUDA)), "cuda");
}

TEST(Tensor, ItemAndDataPtr) {
  Tensor t = full({}, 3.5);
  EXPECT_EQ(t.item<double>(), 3.5);
  EXPECT_EQ(t.item<int>(), 3);
  EXPECT_KILN_ERROR(zeros({2}).item(), "[item]", "2 elements");
  EXPECT_KILN_ERROR(zeros({2}).data_ptr<int64_t>(), "[data_ptr]", "int64", "float32");
  float buf[6] = {1, 2, 3, 4, 5, 6};
  Tensor b = from_blob(buf, {2, 3}, kFloat32);
  EXPECT_EQ(b.data_ptr<float>(), buf);
  b.mul_(2);
  EXPECT_EQ(buf[5], 12);
}

TEST(Tensor, PromotionRules) {
  Tensor i = arange(3);                      // int64
  Tensor f = ones({3});                      // float32
  EXPECT_EQ((i + f).dtype(), kFloat32);
  EXPECT_EQ((i + 2).dtype(), kInt64);
  EXPECT_EQ((i + 2.5).dtype(), kFloat32);
  EXPECT_EQ((i.to(kInt32) + 2).dtype(), kInt32);
  EXPECT_EQ((f.to(kFloat16) + 2.5).dtype(), kFloat16);
  EXPECT_EQ((f + full({}, 1.0, kFloat64)).dtype(), kFloat32);  // 0-dim does not upgrade
  EXPECT_EQ((i + full({}, 1.0, kFloat64)).dtype(), kFloat64);  // ...unless higher category
  EXPECT_EQ((i / i).dtype(), kFloat32);
  EXPECT_EQ(promote_types(kUInt8, kInt8), kInt16);
  EXPECT_EQ(promote_types(kFloat16, kBFloat16), kFloat32);
  EXPECT_EQ(exp(i).dtype(), kFloat32);
  EXPECT_EQ((i < 1).dtype(), kBool);
}

TEST(Tensor, HalfConversionsRoundToNearestEven) {
  EXPECT_EQ(float(Half(1.0f)), 1.0f);
  EXPECT_EQ(float(Half(65504.0f)), 65504.0f);
  EXPECT_TRUE(std::isinf(float(Half(65520.0f))));
  EXPECT_EQ(float(Half(5.960464477539063e-8f)), 5.960464477539063e-8f);  // smallest subnormal
  EXPECT_EQ(float(Half(1.0f + 1.0f / 2048)), 1.0f);                       // tie -> even
  EXPECT_EQ(float(BFloat16(1.0f + 1.0f / 256)), 1.0f);                     // tie -> even
  EXPECT_TRUE(std::isnan(float(BFloat16(NAN))));
}

TEST(Tensor, Printing) {
  EXPECT_EQ(to_string(tensor({1, 2, 3})), "tensor([1, 2, 3])");
  EXPECT_EQ(to_string(tensor({{1.5, 2}, {3, 4}})), "tensor([[1.5000, 2.0000],\n        [3.0000, 4.0000]])");
  EXPECT_EQ(to_string(tensor({1.0, 2.0})), "tensor([1., 2.])");
  EXPECT_EQ(to_string(tensor({1, 2}, kInt32)), "tensor([1, 2], dtype=int32)");
  EXPECT_EQ(to_string(tensor({true, false})), "tensor([ True, False])");
  EXPECT_EQ(to_string(full({}, 2.5)), "tensor(2.5000)");
  EXPECT_EQ(to_string(zeros({0})), "tensor([])");
  EXPECT_NE(to_string(zeros({2000})).find("..."), std::string::npos);
}

TEST(Tensor, CachingAllocatorReusesLargeBlocks) {
  { Tensor t = empty({1 << 20}); }
  auto before = cpu_allocator_stats();
  { Tensor t = empty({1 << 20}); }
  auto after = cpu_allocator_stats();
  EXPECT_EQ(after.cache_hits, before.cache_hits + 1);
  EXPECT_EQ(after.cache_misses, before.cache_misses);
}
