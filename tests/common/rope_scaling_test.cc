// RoPE scaling against closed forms: where each variant must leave the default frequencies alone,
// where it must divide them by the factor, and the values at its seams.
#include "common/rope_scaling.h"

#include <gtest/gtest.h>

#include <cmath>

namespace paft {
namespace {

using json = nlohmann::json;

RopeScaling Parse(const json& block, int64_t max_position_embeddings = 4096) {
  auto s = ParseRopeScaling(block, max_position_embeddings);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : RopeScaling{};
}

std::vector<double> Default(double theta, int64_t head_dim) {
  std::vector<double> f;
  for (int64_t i = 0; i < head_dim / 2; ++i) f.push_back(std::pow(theta, -2.0 * i / head_dim));
  return f;
}

TEST(RopeScalingTest, DefaultIsThetaToTheMinusTwoIOverD) {
  const auto f = RopeInverseFrequencies(Parse(nullptr), 10000, 8, 4096, 10);
  ASSERT_EQ(f.size(), 4u);
  EXPECT_DOUBLE_EQ(f[0], 1.0);
  EXPECT_NEAR(f[1], 0.1, 1e-15);  // 10000^(-2/8)
  EXPECT_NEAR(f[2], 0.01, 1e-15);
  EXPECT_NEAR(f[3], 0.001, 1e-15);
}

TEST(RopeScalingTest, LinearDividesEveryFrequency) {
  const auto f = RopeInverseFrequencies(Parse({{"type", "linear"}, {"factor", 4.0}}), 10000, 8, 4096, 0);
  const auto d = Default(10000, 8);
  for (size_t i = 0; i < f.size(); ++i) EXPECT_NEAR(f[i], d[i] / 4, 1e-15);
}

TEST(RopeScalingTest, DynamicNtkStretchesTheBaseOnlyPastTheContext) {
  const RopeScaling s = Parse({{"type", "dynamic"}, {"factor", 2.0}});
  const auto d = Default(10000, 8);
  const auto within = RopeInverseFrequencies(s, 10000, 8, 4096, 4096);
  for (size_t i = 0; i < d.size(); ++i) EXPECT_DOUBLE_EQ(within[i], d[i]);
  // At twice the context: base' = base * (2 * 2 - 1)^(8/6).
  const auto beyond = RopeInverseFrequencies(s, 10000, 8, 4096, 8192);
  const auto stretched = Default(10000 * std::pow(3.0, 8.0 / 6.0), 8);
  for (size_t i = 0; i < d.size(); ++i) EXPECT_NEAR(beyond[i], stretched[i], 1e-15);
  EXPECT_TRUE(s.depends_on_length());
}

TEST(RopeScalingTest, Llama3KeepsHighFrequenciesAndDividesLowOnes) {
  // Llama 3.1's block. With head_dim 16 and theta 500000 the wavelengths 2*pi/f are 6.3, 32, 167,
  // 862, 4.4e3, 2.3e4, 1.2e5, 6.1e5: below 8192/4 kept, above 8192/1 divided by 8, and the one at
  // 4.4e3 blended with weight (8192/wavelength - 1) / 3.
  const RopeScaling s = Parse({{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                               {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}});
  const auto f = RopeInverseFrequencies(s, 500000, 16, 131072, 0);
  const auto d = Default(500000, 16);
  for (int i : {0, 1, 2, 3}) EXPECT_DOUBLE_EQ(f[i], d[i]) << i;
  for (int i : {5, 6, 7}) EXPECT_NEAR(f[i], d[i] / 8, 1e-18) << i;
  const double wavelength = 2 * M_PI / d[4];
  ASSERT_GT(wavelength, 2048);
  ASSERT_LT(wavelength, 8192);
  const double blend = (8192 / wavelength - 1) / 3;
  EXPECT_NEAR(f[4], blend * d[4] + (1 - blend) * d[4] / 8, 1e-15);
}

TEST(RopeScalingTest, YarnRampsBetweenExtrapolationAndInterpolation) {
  // head_dim 64, theta 10000, context 4096: the pair index with 32 rotations over the context is
  // 64 ln(4096 / (64 pi)) / (2 ln 10000) = 10.47 (floor 10), with 1 rotation 22.51 (ceil 23).
  // Pairs up to 10 keep the default frequency, from 23 on they are divided by the factor, in
  // between a linear ramp.
  const RopeScaling s = Parse({{"type", "yarn"}, {"factor", 4.0}});
  EXPECT_NEAR(s.attention_factor, 1 + 0.1 * std::log(4.0), 1e-15);
  const auto f = RopeInverseFrequencies(s, 10000, 64, 4096, 0);
  const auto d = Default(10000, 64);
  for (int i = 0; i <= 10; ++i) EXPECT_NEAR(f[i], d[i], 1e-15) << i;
  for (int i = 23; i < 32; ++i) EXPECT_NEAR(f[i], d[i] / 4, 1e-15) << i;
  const double ramp = (16.0 - 10) / (23 - 10);
  EXPECT_NEAR(f[16], ramp * d[16] / 4 + (1 - ramp) * d[16], 1e-15);
  EXPECT_DOUBLE_EQ(Parse({{"type", "yarn"}, {"factor", 4.0}, {"attention_factor", 1.5}})
                       .attention_factor,
                   1.5);
}

}  // namespace
}  // namespace paft
