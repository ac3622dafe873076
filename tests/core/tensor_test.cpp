#include <gtest/gtest.h>

#include "lizard/core/half.h"
#include "lizard/core/rng.h"
#include "lizard/core/tensor.h"
#include "test_util.h"

using namespace lizard;

TEST(DType, Bf16RoundsToNearestEven) {
  // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1 + 2^-7: ties go to even (1.0).
  EXPECT_EQ(float(bf16(1.0f + 1.0f / 256)), 1.0f);
  // 1 + 3*2^-8 is halfway between 1+2^-7 and 1+2^-6: even is 1 + 2^-6.
  EXPECT_EQ(float(bf16(1.0f + 3.0f / 256)), 1.0f + 1.0f / 64);
  // Just above the halfway point rounds up.
  EXPECT_EQ(float(bf16(1.0f + 1.0f / 256 + 1.0f / 65536)), 1.0f + 1.0f / 128);
  EXPECT_TRUE(std::isnan(float(bf16(std::nanf("")))));
  EXPECT_TRUE(std::isinf(float(bf16(3.4e38f * 10))));
  EXPECT_EQ(float(bf16(-2.5f)), -2.5f);
}

TEST(DType, F16RoundTripAndEdges) {
  EXPECT_EQ(float(f16(1.0f)), 1.0f);
  EXPECT_EQ(float(f16(65504.0f)), 65504.0f);
  EXPECT_TRUE(std::isinf(float(f16(65520.0f))));
  EXPECT_EQ(float(f16(5.9604644775390625e-08f)), 5.9604644775390625e-08f);  // min subnormal
  EXPECT_EQ(float(f16(1.0f + 1.0f / 2048)), 1.0f);  // tie to even
  EXPECT_EQ(float(f16(-0.333251953125f)), -0.333251953125f);
  // Every f16 value converts to float and back exactly.
  for (uint32_t b = 0; b < 0x10000; ++b) {
    f16 h;
    h.bits = static_cast<uint16_t>(b);
    float f = float(h);
    if (std::isnan(f)) continue;
    EXPECT_EQ(f16(f).bits, h.bits) << b;
  }
}

TEST(Tensor, ViewsShareStorage) {
  Tensor t = Tensor::from_vector({0, 1, 2, 3, 4, 5}, {2, 3});
  Tensor tt = t.transpose(0, 1);
  EXPECT_EQ(tt.shape(), (Shape{3, 2}));
  EXPECT_FALSE(tt.is_contiguous());
  EXPECT_EQ(tt.contiguous().to_vector(), (std::vector<double>{0, 3, 1, 4, 2, 5}));
  Tensor s = t.slice(1, 1, 3);
  EXPECT_EQ(s.to_vector(), (std::vector<double>{1, 2, 4, 5}));
  s.fill_(9);
  EXPECT_EQ(t.to_vector(), (std::vector<double>{0, 9, 9, 3, 9, 9}));
  Tensor p = Tensor::arange(24, DType::F32).view({2, 3, 4}).permute({2, 0, 1});
  EXPECT_EQ(p.shape(), (Shape{4, 2, 3}));
  EXPECT_EQ(p.contiguous().to_vector()[1], 4.0);
  EXPECT_EQ(p.reshape({24}).to_vector()[5], 20.0);
  EXPECT_EQ(t.slice(0, 1, 2).select(0, 0).to_vector(), (std::vector<double>{3, 9, 9}));
  Tensor step = Tensor::arange(10, DType::F32).slice(0, 1, 10, 3);
  EXPECT_EQ(step.to_vector(), (std::vector<double>{1, 4, 7}));
}

TEST(Tensor, ExpandAndDtypeConversion) {
  Tensor t = Tensor::from_vector({1.5, -2.25}, {2, 1});
  Tensor e = t.expand({2, 3});
  EXPECT_EQ(e.contiguous().to_vector(), (std::vector<double>{1.5, 1.5, 1.5, -2.25, -2.25, -2.25}));
  Tensor b = t.to(DType::BF16);
  EXPECT_EQ(b.dtype(), DType::BF16);
  EXPECT_EQ(b.to_vector(), (std::vector<double>{1.5, -2.25}));
  Tensor i = Tensor::from_vector({3, 7}, {2}, DType::I64);
  EXPECT_EQ(i.to(DType::F32).to_vector(), (std::vector<double>{3, 7}));
}

TEST(Tensor, ErrorsCarryContext) {
  Tensor t = Tensor::zeros({2, 3});
  try {
    t.view({4, 2});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[4, 2]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(t.data<double>(), Error);
  EXPECT_THROW(t.select(0, 5), Error);
}

TEST(Rng, PhiloxKnownAnswerAndDeterminism) {
  // Random123 known-answer test for philox4x32-10, counter = key = 0.
  Philox4 r = philox4x32(0, 0, 0, 0, 0, 0);
  EXPECT_EQ(r.v[0], 0x6627e8d5u);
  EXPECT_EQ(r.v[1], 0xe169c58du);
  EXPECT_EQ(r.v[2], 0xbc57ac4cu);
  EXPECT_EQ(r.v[3], 0x9b00dbd8u);
  Tensor a = Tensor::uniform({1000}, -1, 1, 42, 3);
  Tensor b = Tensor::uniform({1000}, -1, 1, 42, 3);
  Tensor c = Tensor::uniform({1000}, -1, 1, 42, 4);
  EXPECT_EQ(a.to_vector(), b.to_vector());
  EXPECT_NE(a.to_vector(), c.to_vector());
  double mean = 0, var = 0;
  Tensor n = Tensor::normal({20000}, 0, 1, 7, 0);
  for (double v : n.to_vector()) mean += v;
  mean /= 20000;
  for (double v : n.to_vector()) var += (v - mean) * (v - mean);
  var /= 20000;
  EXPECT_NEAR(mean, 0.0, 0.03);
  EXPECT_NEAR(var, 1.0, 0.05);
}
