// Each method against results computed by hand, with mergekit's semantics.
#include "merger/merge_methods.h"

#include <gtest/gtest.h>

#include <set>

#include <cmath>
#include <algorithm>
#include <numeric>
#include <vector>

namespace paft::merger {
namespace {

MergeOptions Options(const std::string& method) {
  MergeOptions o;
  o.method = *LookupMergeMethod(method);
  o.normalize = o.method.default_normalize;
  o.rescale = o.method.default_rescale;
  return o;
}

// inputs are full values; deltas are formed here.
std::vector<float> Merge(const MergeOptions& options, const std::vector<float>& base,
                         const std::vector<std::vector<float>>& inputs,
                         const std::vector<InputWeights>& weights, uint64_t key = 1) {
  std::vector<std::vector<float>> deltas;
  for (const auto& in : inputs) {
    std::vector<float> d(base.size());
    for (size_t j = 0; j < base.size(); ++j) d[j] = in[j] - base[j];
    deltas.push_back(d);
  }
  std::vector<float*> ptrs;
  for (auto& d : deltas) ptrs.push_back(d.data());
  std::vector<float> out(base.size());
  MergeDeltas(options, base.data(), ptrs, weights, static_cast<int64_t>(base.size()), key,
              out.data());
  return out;
}

using V = std::vector<float>;

TEST(MergeMethodsTest, KnowsMergekitsMethodsAndDefaults) {
  EXPECT_TRUE(LookupMergeMethod("ties")->default_normalize);
  EXPECT_TRUE(LookupMergeMethod("linear")->default_normalize);
  EXPECT_FALSE(LookupMergeMethod("task_arithmetic")->default_normalize);
  EXPECT_TRUE(LookupMergeMethod("dare_ties")->default_rescale);
  EXPECT_TRUE(LookupMergeMethod("dare_linear")->default_rescale);
  EXPECT_FALSE(LookupMergeMethod("breadcrumbs")->default_rescale);
  EXPECT_EQ(LookupMergeMethod("breadcrumbs_ties")->consensus, Consensus::kSum);
  auto unknown = LookupMergeMethod("slerpy");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.status().message().find("known: linear"), absl::string_view::npos);
}

TEST(MergeMethodsTest, LinearIsAWeightedAverage) {
  auto o = Options("linear");
  EXPECT_EQ(Merge(o, {0, 0}, {{1, 2}, {3, 4}}, {{1}, {1}}), (V{2, 3}));
  EXPECT_EQ(Merge(o, {0, 0}, {{1, 2}, {3, 4}}, {{3}, {1}}), (V{1.5f, 2.5f}));
  o.normalize = false;
  EXPECT_EQ(Merge(o, {9, 9}, {{1, 2}, {3, 4}}, {{1}, {1}}), (V{4, 6}));  // base not used
}

TEST(MergeMethodsTest, TaskArithmeticAddsWeightedDeltas) {
  auto o = Options("task_arithmetic");
  // deltas [1,-1] and [0,2]; weights 1 and 0.5 -> [1, 0]
  EXPECT_EQ(Merge(o, {1, 1}, {{2, 0}, {1, 3}}, {{1}, {0.5}}), (V{2, 1}));
  o.lambda = 2.0;
  EXPECT_EQ(Merge(o, {1, 1}, {{2, 0}, {1, 3}}, {{1}, {0.5}}), (V{3, 1}));
  o.lambda = 1.0;
  o.normalize = true;  // divided by 1.5
  auto n = Merge(o, {1, 1}, {{2, 0}, {1, 3}}, {{1}, {0.5}});
  EXPECT_FLOAT_EQ(n[0], 1 + 1 / 1.5f);
  EXPECT_FLOAT_EQ(n[1], 1);
  o.normalize = false;
  EXPECT_EQ(Merge(o, {1, 1}, {{5, 5}, {7, 7}}, {{0}, {0}}), (V{1, 1}));  // zero weights
}

TEST(MergeMethodsTest, TiesWithFullDensity) {
  // deltas A = [3,-1,0.5,2], B = [-1,-2,1,-3]; sums [2,-3,1.5,-1] elect [+,-,+,-].
  const V base = {0, 0, 0, 0};
  const std::vector<V> in = {{3, -1, 0.5, 2}, {-1, -2, 1, -3}};
  auto o = Options("ties");  // normalize by default
  EXPECT_EQ(Merge(o, base, in, {{1}, {1}}), (V{3, -1.5, 0.75, -3}));
  o.normalize = false;
  EXPECT_EQ(Merge(o, base, in, {{1}, {1}}), (V{3, -3, 1.5, -3}));
}

TEST(MergeMethodsTest, TiesTrimsToDensity) {
  // Top-2 by magnitude: A -> [3,0,0,2], B -> [0,-2,0,-3]; sums [3,-2,0,-1]; at 0 the majority
  // sign is + (sum >= 0) but no kept entry is positive there, so the base stays.
  const V base = {1, 1, 1, 1};
  const std::vector<V> in = {{4, 0, 1.5, 3}, {0, -1, 2, -2}};
  EXPECT_EQ(Merge(Options("ties"), base, in, {{1, 0.5}, {1, 0.5}}), (V{4, -1, 1, -2}));
}

TEST(MergeMethodsTest, TiesSignTieElectsPositive) {
  // Deltas +1 and -1 sum to 0: mergekit's majority sign is + (sum >= 0).
  EXPECT_EQ(Merge(Options("ties"), {5}, {{6}, {4}}, {{1}, {1}}), (V{6}));
}

TEST(MergeMethodsTest, TiesWeightsEnterTheElection) {
  // A = +2 (weight 1), B = -1 (weight 3): weighted sum 2 - 3 < 0 elects -, B wins.
  EXPECT_EQ(Merge(Options("ties"), {0}, {{2}, {-1}}, {{1}, {3}}), (V{-1}));
  // A zero weight neither votes nor counts in the divisor.
  EXPECT_EQ(Merge(Options("ties"), {0}, {{2}, {-4}}, {{1}, {0}}), (V{2}));
}

TEST(MergeMethodsTest, DensityZeroAndOne) {
  // Density 1 keeps everything; below 1/n magnitude keeps one entry and breadcrumbs none;
  // int(density * n) truncates 0.57 * 100 = 56.99999999999999 to 56 (mergekit's sparsify.py).
  EXPECT_EQ(KeptCount(4, 1.0, true), 4);
  EXPECT_EQ(KeptCount(4, 0.2, true), 1);
  EXPECT_EQ(KeptCount(4, 0.2, false), 0);
  EXPECT_EQ(KeptCount(100, 0.57, true), 56);
  EXPECT_EQ(KeptCount(0, 0.5, true), 0);
  EXPECT_EQ(Merge(Options("ties"), {1, 1}, {{2, 3}}, {{1, 0.4}}), (V{1, 3}));
  EXPECT_EQ(Merge(Options("magnitude_prune"), {0, 0, 0, 0}, {{1, -4, 2, 3}}, {{1, 0.5}}),
            (V{0, -4, 0, 3}));
}

TEST(MergeMethodsTest, MagnitudeTiesAreBrokenByIndex) {
  V d = {1, -1, 1, 1};
  SparsifyMagnitude(d.data(), 4, 0.5, false);
  EXPECT_EQ(d, (V{0, 0, 1, 1}));  // equal magnitudes: the later indices rank higher
}

TEST(MergeMethodsTest, MagnitudeRescaleKeepsTheL1Norm) {
  V d = {1, -2, 3, -4};  // L1 10; top-2 keeps 3, -4 (L1 7) -> scaled by 10/7
  SparsifyMagnitude(d.data(), 4, 0.5, true);
  EXPECT_FLOAT_EQ(d[2], 3 * 10.0f / 7);
  EXPECT_FLOAT_EQ(d[3], -4 * 10.0f / 7);
  EXPECT_EQ(d[0], 0);
}

TEST(MergeMethodsTest, BreadcrumbsDropsOutliersAndSmallest) {
  // n = 10, density 0.5 keeps 5, gamma 0.2 drops the 2 largest, so the 3 smallest go too.
  V d = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  SparsifyMagnitudeOutliers(d.data(), 10, 0.5, 0.2, false);
  EXPECT_EQ(d, (V{0, 0, 0, 4, 5, 6, 7, 8, 0, 0}));
  // gamma too large for the density: fewer outliers are dropped.
  V e = {1, 2, 3, 4};
  SparsifyMagnitudeOutliers(e.data(), 4, 0.75, 0.5, false);
  EXPECT_EQ(e, (V{1, 2, 3, 0}));
  // Through the method, default gamma 0.01 on 4 entries drops no outlier.
  EXPECT_EQ(Merge(Options("breadcrumbs"), {0, 0, 0, 0}, {{-1, 2, 3, 4}}, {{1, 0.5}}),
            (V{0, 0, 3, 4}));
}

TEST(MergeMethodsTest, DareKeepsDensityFractionAndRescales) {
  const int64_t n = 200000;
  const double density = 0.3;
  V d(n);
  for (int64_t j = 0; j < n; ++j) d[j] = 0.5f + static_cast<float>(j % 7);
  const V original = d;
  SparsifyRandom(d.data(), n, density, /*rescale=*/true, /*stream=*/42);
  int64_t kept = 0;
  double sum_before = 0, sum_after = 0, kept_before = 0;
  for (int64_t j = 0; j < n; ++j) {
    sum_before += original[j];
    sum_after += d[j];
    if (d[j] != 0) {
      ++kept;
      kept_before += original[j];
    }
  }
  // Binomial(n, 0.3): sigma = sqrt(n p (1-p)) ~ 205; allow 5 sigma.
  EXPECT_NEAR(static_cast<double>(kept), density * n, 5 * std::sqrt(n * density * (1 - density)));
  // mergekit 0.1's rescale: the kept entries scaled by L1(before) / L1(kept), so the L1 norm is
  // the original's.
  const double ratio = sum_before / kept_before;
  EXPECT_NEAR(ratio, 1 / density, 0.02 / density);
  for (int64_t j = 0; j < n; ++j) {
    if (d[j] != 0) {
      ASSERT_NEAR(d[j], original[j] * ratio, 1e-5 * original[j] * ratio);
    }
  }
  EXPECT_NEAR(sum_after / sum_before, 1.0, 1e-5);
  // The same stream gives the same mask; another stream another one.
  V again = original, other = original;
  SparsifyRandom(again.data(), n, density, true, 42);
  SparsifyRandom(other.data(), n, density, true, 43);
  EXPECT_EQ(again, d);
  EXPECT_NE(other, d);
  // Without rescale the kept entries are unchanged.
  V plain = original;
  SparsifyRandom(plain.data(), n, density, false, 42);
  for (int64_t j = 0; j < n; ++j) {
    if (d[j] != 0) {
      ASSERT_EQ(plain[j], original[j]);
    }
  }
}

TEST(MergeMethodsTest, DareLinearAndTiesDependOnSeedAndTensor) {
  auto o = Options("dare_ties");
  o.seed = 7;
  V base(1000, 0.0f);
  std::vector<V> in = {V(1000, 1.0f), V(1000, -0.5f)};
  auto a = Merge(o, base, in, {{1, 0.5}, {1, 0.5}}, TensorKey("x"));
  auto b = Merge(o, base, in, {{1, 0.5}, {1, 0.5}}, TensorKey("x"));
  auto c = Merge(o, base, in, {{1, 0.5}, {1, 0.5}}, TensorKey("y"));
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  // Each entry: A kept -> A's rescaled value (its L1 back to 1000 over ~500 kept: ~2) wins the
  // sign; only B kept -> B's (~-1); none -> 0. One value per input.
  std::set<float> values(a.begin(), a.end());
  ASSERT_EQ(values.size(), 3u);
  EXPECT_NEAR(*values.rbegin(), 2.0, 0.2);
  EXPECT_NEAR(*values.begin(), -1.0, 0.1);
  EXPECT_TRUE(values.count(0.0f));
  auto linear = Options("dare_linear");
  for (float x : Merge(linear, base, in, {{1, 1}, {1, 1}})) EXPECT_FLOAT_EQ(x, 0.5f);
}

// The streaming rank selection (radix select over chunks, ties by index) against a plain sort,
// on many chunks and heavily tied values (as bf16 deltas are).
TEST(MergeMethodsTest, StreamingSelectionMatchesASort) {
  const int64_t n = 50000;
  for (double density : {0.013, 0.3, 0.5, 0.97}) {
    for (double gamma : {0.0, 0.05}) {
      V d(n);
      uint64_t state = 12345;
      for (int64_t j = 0; j < n; ++j) {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        d[j] = static_cast<float>(static_cast<int>(state >> 58) - 32) / 16.0f;  // 64 levels
      }
      std::vector<int64_t> order(n);
      std::iota(order.begin(), order.end(), 0);
      std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        const float fa = std::fabs(d[a]), fb = std::fabs(d[b]);
        return fa != fb ? fa < fb : a < b;
      });
      const int64_t target = KeptCount(n, density, /*at_least_one=*/gamma == 0);
      int64_t top = static_cast<int64_t>(gamma * n);
      if (n - target - top < 0) top = n - target;
      V expected(n, 0.0f);
      for (int64_t r = n - target - top; r < n - top; ++r) expected[order[r]] = d[order[r]];
      V got = d;
      if (gamma == 0) {
        SparsifyMagnitude(got.data(), n, density, false);
      } else {
        SparsifyMagnitudeOutliers(got.data(), n, density, gamma, false);
      }
      ASSERT_EQ(got, expected) << "density " << density << " gamma " << gamma;
    }
  }
  // Through MergeDeltas (4096-element chunks): ties on one input equals its sparsified delta.
  V base(n, 0.0f), delta(n);
  for (int64_t j = 0; j < n; ++j) delta[j] = static_cast<float>((j * 7919) % 101 - 50);
  V expected = delta;
  SparsifyMagnitude(expected.data(), n, 0.25, false);
  V out(n);
  V work = delta;
  std::vector<float*> ptrs = {work.data()};
  MergeDeltas(Options("ties"), base.data(), ptrs, {{1, 0.25}}, n, 1, out.data());
  EXPECT_EQ(out, expected);
}

}  // namespace
}  // namespace paft::merger
