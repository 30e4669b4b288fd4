#include "common/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace paft {
namespace {

TEST(DTypeTest, NamesRoundTrip) {
  for (const char* name : {"BOOL", "U8", "I8", "F8_E4M3", "F8_E5M2", "I16", "U16", "F16", "BF16",
                           "I32", "U32", "F32", "F64", "I64", "U64"}) {
    auto dtype = DTypeFromName(name);
    ASSERT_TRUE(dtype.has_value()) << name;
    EXPECT_STREQ(DTypeName(*dtype), name);
  }
  EXPECT_FALSE(DTypeFromName("F128").has_value());
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kU64), 8u);
}

TEST(DTypeTest, Bf16KnownValues) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBf16(-2.0f), 0xc000);
  EXPECT_EQ(FloatToBf16(0.0f), 0x0000);
  // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1.0078125: ties to even (1.0).
  EXPECT_EQ(FloatToBf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  // Just above halfway rounds up.
  EXPECT_EQ(FloatToBf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)), 0x3f81);
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_FLOAT_EQ(Bf16ToFloat(0x4049), 3.140625f);
}

TEST(DTypeTest, F16KnownValues) {
  EXPECT_EQ(FloatToF16(1.0f), 0x3c00);
  EXPECT_EQ(FloatToF16(-2.0f), 0xc000);
  EXPECT_EQ(FloatToF16(65504.0f), 0x7bff);                 // largest finite half
  EXPECT_EQ(FloatToF16(65520.0f), 0x7c00);                 // rounds to infinity
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -24)), 0x0001);    // smallest subnormal
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -14)), 0x0400);    // smallest normal
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -26)), 0x0000);    // underflows to zero
  EXPECT_EQ(FloatToF16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie to even
  EXPECT_EQ(FloatToF16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);  // tie to even, upwards
  EXPECT_FLOAT_EQ(F16ToFloat(0x3555), 0.333251953125f);
  EXPECT_FLOAT_EQ(F16ToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::isinf(F16ToFloat(0x7c00)));
  EXPECT_TRUE(std::isnan(F16ToFloat(0x7e00)));
}

TEST(DTypeTest, EveryHalfRoundTripsExactly) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue;  // NaNs
    EXPECT_EQ(FloatToF16(F16ToFloat(static_cast<uint16_t>(h))), h) << std::hex << h;
    EXPECT_EQ(FloatToBf16(Bf16ToFloat(static_cast<uint16_t>(h))), h) << std::hex << h;
  }
}

TEST(DTypeTest, LoadStoreAsFloat) {
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16, DType::kF64}) {
    std::vector<uint8_t> buffer(3 * DTypeSize(dtype));
    StoreFromFloat(dtype, buffer.data(), 2, -0.75f);
    EXPECT_EQ(LoadAsFloat(dtype, buffer.data(), 2), -0.75f) << DTypeName(dtype);
    EXPECT_EQ(LoadAsFloat(dtype, buffer.data(), 0), 0.0f);
  }
}

}  // namespace
}  // namespace paft
