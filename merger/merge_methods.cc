#include "merger/merge_methods.h"

#include <algorithm>
#include <cmath>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace paft::merger {

absl::StatusOr<MergeMethod> ParseMergeMethod(const std::string& name) {
  if (name == "linear") return MergeMethod::kLinear;
  if (name == "task_arithmetic") return MergeMethod::kTaskArithmetic;
  if (name == "ties") return MergeMethod::kTies;
  if (name == "dare_linear" || name == "dare_ties" || name == "breadcrumbs" ||
      name == "magnitude_prune") {
    return absl::UnimplementedError(absl::StrCat(
        "merge method '", name, "' is not implemented yet (available: linear, task_arithmetic, "
        "ties)"));
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown merge method '", name, "'"));
}

int64_t KeptCount(int64_t n, double density) {
  // mergekit: k = int(density * numel), i.e. floor (with slack for 0.1 * 30 = 2.9999...).
  const auto k = static_cast<int64_t>(std::floor(density * static_cast<double>(n) + 1e-9));
  return std::clamp<int64_t>(k, 0, n);
}

float TopKThreshold(const float* values, int64_t n, double density) {
  if (density >= 1.0 || n == 0) return 0.0f;
  int64_t k = KeptCount(n, density);
  if (k == n) return 0.0f;
  if (k == 0) return INFINITY;
  std::vector<float> magnitudes(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) magnitudes[i] = std::fabs(values[i]);
  // The k-th largest magnitude: entries >= it are kept.
  std::nth_element(magnitudes.begin(), magnitudes.begin() + (k - 1), magnitudes.end(),
                   std::greater<float>());
  return magnitudes[k - 1];
}

void MergeTensor(const MergeOptions& options, const float* base,
                 const std::vector<const float*>& inputs,
                 const std::vector<InputWeights>& weights, int64_t n, float* out) {
  const size_t m = inputs.size();
  double weight_sum = 0;
  for (const auto& w : weights) weight_sum += w.weight;
  const double norm = options.normalize && weight_sum != 0 ? 1.0 / weight_sum : 1.0;

  if (options.method == MergeMethod::kLinear) {
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (size_t i = 0; i < m; ++i) acc += weights[i].weight * inputs[i][j];
      out[j] = static_cast<float>(acc * norm);
    }
    return;
  }
  if (options.method == MergeMethod::kTaskArithmetic) {
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (size_t i = 0; i < m; ++i) acc += weights[i].weight * (inputs[i][j] - base[j]);
      out[j] = static_cast<float>(base[j] + options.lambda * acc * norm);
    }
    return;
  }

  // TIES: trim each delta, elect a sign per entry, disjoint-merge the agreeing entries.
  std::vector<std::vector<float>> trimmed(m, std::vector<float>(static_cast<size_t>(n)));
  for (size_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) trimmed[i][j] = inputs[i][j] - base[j];
    const float threshold = TopKThreshold(trimmed[i].data(), n, weights[i].density);
    if (threshold > 0) {
      // Keep exactly the top k; entries equal to the threshold are kept in index order until k.
      const int64_t k = KeptCount(n, weights[i].density);
      int64_t above = 0;
      for (int64_t j = 0; j < n; ++j) above += std::fabs(trimmed[i][j]) > threshold ? 1 : 0;
      int64_t ties_left = k - above;
      for (int64_t j = 0; j < n; ++j) {
        const float a = std::fabs(trimmed[i][j]);
        if (a > threshold) continue;
        if (a == threshold && ties_left > 0) {
          --ties_left;
          continue;
        }
        trimmed[i][j] = 0.0f;
      }
    }
  }
  for (int64_t j = 0; j < n; ++j) {
    double elected = 0;
    for (size_t i = 0; i < m; ++i) elected += weights[i].weight * trimmed[i][j];
    double acc = 0, agreeing_weight = 0;
    if (elected != 0) {
      for (size_t i = 0; i < m; ++i) {
        const float d = trimmed[i][j];
        if (d != 0 && ((d > 0) == (elected > 0))) {
          acc += weights[i].weight * d;
          agreeing_weight += weights[i].weight;
        }
      }
    }
    if (options.normalize && agreeing_weight != 0) acc /= agreeing_weight;
    out[j] = static_cast<float>(base[j] + options.lambda * acc);
  }
}

}  // namespace paft::merger
