#include "merger/merge_methods.h"

#include <gtest/gtest.h>

#include <vector>

namespace paft::merger {
namespace {

std::vector<float> Merge(MergeOptions options, const std::vector<float>& base,
                         const std::vector<std::vector<float>>& inputs,
                         const std::vector<InputWeights>& weights) {
  std::vector<const float*> ptrs;
  for (const auto& in : inputs) ptrs.push_back(in.data());
  std::vector<float> out(base.size());
  MergeTensor(options, base.data(), ptrs, weights, static_cast<int64_t>(base.size()), out.data());
  return out;
}

TEST(MergeMethodsTest, ParsesMergekitNames) {
  EXPECT_EQ(*ParseMergeMethod("ties"), MergeMethod::kTies);
  EXPECT_EQ(*ParseMergeMethod("linear"), MergeMethod::kLinear);
  EXPECT_EQ(ParseMergeMethod("dare_ties").status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(ParseMergeMethod("slerpy").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(MergeMethodsTest, LinearIsAWeightedAverage) {
  MergeOptions o{MergeMethod::kLinear, 1.0, /*normalize=*/true};
  EXPECT_EQ(Merge(o, {0, 0}, {{1, 2}, {3, 4}}, {{1, 1}, {1, 1}}), (std::vector<float>{2, 3}));
  EXPECT_EQ(Merge(o, {0, 0}, {{1, 2}, {3, 4}}, {{3, 1}, {1, 1}}),
            (std::vector<float>{1.5f, 2.5f}));
  o.normalize = false;
  EXPECT_EQ(Merge(o, {0, 0}, {{1, 2}, {3, 4}}, {{1, 1}, {1, 1}}), (std::vector<float>{4, 6}));
}

TEST(MergeMethodsTest, TaskArithmeticAddsWeightedDeltas) {
  MergeOptions o{MergeMethod::kTaskArithmetic, 1.0, false};
  // deltas [1,-1] and [0,2]; weights 1 and 0.5 -> [1, 0]
  EXPECT_EQ(Merge(o, {1, 1}, {{2, 0}, {1, 3}}, {{1, 1}, {0.5, 1}}), (std::vector<float>{2, 1}));
  o.lambda = 2.0;
  EXPECT_EQ(Merge(o, {1, 1}, {{2, 0}, {1, 3}}, {{1, 1}, {0.5, 1}}), (std::vector<float>{3, 1}));
  // Zero weights leave the base.
  o.lambda = 1.0;
  EXPECT_EQ(Merge(o, {1, 1}, {{5, 5}, {7, 7}}, {{0, 1}, {0, 1}}), (std::vector<float>{1, 1}));
}

TEST(MergeMethodsTest, TiesWithFullDensity) {
  // deltas A = [3,-1,0.5,2], B = [-1,-2,1,-3]; elected signs [+,-,+,-].
  const std::vector<float> base = {0, 0, 0, 0};
  const std::vector<std::vector<float>> in = {{3, -1, 0.5, 2}, {-1, -2, 1, -3}};
  MergeOptions o{MergeMethod::kTies, 1.0, /*normalize=*/false};
  EXPECT_EQ(Merge(o, base, in, {{1, 1}, {1, 1}}), (std::vector<float>{3, -3, 1.5, -3}));
  o.normalize = true;
  EXPECT_EQ(Merge(o, base, in, {{1, 1}, {1, 1}}), (std::vector<float>{3, -1.5, 0.75, -3}));
}

TEST(MergeMethodsTest, TiesTrimsToDensity) {
  // Top-2 by magnitude: A -> [3,0,0,2], B -> [0,-2,0,-3]; elected [+,-,0,-].
  const std::vector<float> base = {1, 1, 1, 1};
  const std::vector<std::vector<float>> in = {{4, 0, 1.5, 3}, {0, -1, 2, -2}};
  MergeOptions o{MergeMethod::kTies, 1.0, true};
  EXPECT_EQ(Merge(o, base, in, {{1, 0.5}, {1, 0.5}}), (std::vector<float>{4, -1, 1, -2}));
}

TEST(MergeMethodsTest, TiesSignElectionTieKeepsTheBase) {
  MergeOptions o{MergeMethod::kTies, 1.0, true};
  EXPECT_EQ(Merge(o, {5}, {{6}, {4}}, {{1, 1}, {1, 1}}), (std::vector<float>{5}));
}

TEST(MergeMethodsTest, TiesZeroWeightDoesNotVote) {
  MergeOptions o{MergeMethod::kTies, 1.0, true};
  // A votes +2, B (weight 0) does not move the election nor the sum.
  EXPECT_EQ(Merge(o, {0}, {{2}, {-4}}, {{1, 1}, {0, 1}}), (std::vector<float>{2}));
}

TEST(MergeMethodsTest, TopKThresholdKeepsExactlyK) {
  const std::vector<float> v = {1, -1, 1, 1};
  EXPECT_EQ(TopKThreshold(v.data(), 4, 0.5), 1.0f);
  EXPECT_EQ(TopKThreshold(v.data(), 4, 1.0), 0.0f);
  const std::vector<float> w = {0.1f, -5, 3, 0.2f, -0.3f};
  EXPECT_EQ(TopKThreshold(w.data(), 5, 0.4), 3.0f);  // keeps |-5| and |3|
  // Ties at the threshold: exactly ceil(0.5 * 4) = 2 entries survive.
  MergeOptions o{MergeMethod::kTies, 1.0, false};
  auto out = Merge(o, {0, 0, 0, 0}, {{1, -1, 1, 1}}, {{1, 0.5}});
  int kept = 0;
  for (float x : out) kept += x != 0;
  EXPECT_EQ(kept, 2);
}

}  // namespace
}  // namespace paft::merger
