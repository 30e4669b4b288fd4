#include "merger/peft_combine.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "merger/merge_methods.h"

namespace paft::merger {

absl::StatusOr<PeftMethod> LookupPeftMethod(const std::string& name) {
  if (name == "linear" || name == "task_arithmetic") return PeftMethod::kLinear;
  if (name == "ties") return PeftMethod::kTies;
  if (name == "dare_linear") return PeftMethod::kDareLinear;
  if (name == "dare_ties") return PeftMethod::kDareTies;
  if (name == "magnitude_prune") return PeftMethod::kMagnitudePrune;
  return absl::InvalidArgumentError(
      absl::StrCat("merge method '", name, "' is not one of PEFT's combination types (linear, "
                   "task_arithmetic, ties, dare_linear, dare_ties, magnitude_prune)"));
}

namespace {

// PEFT's magnitude_based_pruning: keeps k = int(density * n) entries of largest |x| (torch.topk;
// equal magnitudes here keep the later index) -- int() truncates, unlike mergekit's count.
void PruneMagnitude(std::vector<float>& values, double density) {
  const int64_t n = static_cast<int64_t>(values.size());
  const int64_t k = std::clamp<int64_t>(static_cast<int64_t>(density * static_cast<double>(n)), 0, n);
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  auto larger = [&](int64_t x, int64_t y) {
    const float ax = std::fabs(values[x]), ay = std::fabs(values[y]);
    return ax != ay ? ax > ay : x > y;
  };
  std::nth_element(order.begin(), order.begin() + k, order.end(), larger);
  for (int64_t i = k; i < n; ++i) values[order[i]] = 0.0f;
}

}  // namespace

void PeftCombine(PeftMethod method, std::vector<PeftTensor>& inputs, std::vector<float>* out) {
  const int64_t n = static_cast<int64_t>(inputs.front().values.size());
  for (PeftTensor& t : inputs) {
    if (t.density >= 1.0) continue;  // PEFT's prune(): no pruning at density >= 1
    if (method == PeftMethod::kTies || method == PeftMethod::kMagnitudePrune) {
      PruneMagnitude(t.values, t.density);
    } else if (method == PeftMethod::kDareLinear || method == PeftMethod::kDareTies) {
      // PEFT's random_pruning(rescale=True): the kept entries divided by density.
      SparsifyRandom(t.values.data(), n, t.density, /*rescale=*/false, t.stream);
      for (float& v : t.values) v = static_cast<float>(v / t.density);
    }
  }
  out->assign(static_cast<size_t>(n), 0.0f);
  const bool consensus = method == PeftMethod::kTies || method == PeftMethod::kDareTies;
  for (int64_t j = 0; j < n; ++j) {
    double sum = 0, elect = 0;
    int agree = 0;
    if (consensus) {
      for (const PeftTensor& t : inputs) elect += t.values[j];
    }
    const float majority = elect >= 0 ? 1.0f : -1.0f;
    for (const PeftTensor& t : inputs) {
      const float v = t.values[j];
      if (consensus) {
        const float sign = v > 0 ? 1.0f : (v < 0 ? -1.0f : 0.0f);
        if (sign != majority) continue;  // a zero never agrees
        ++agree;
      }
      sum += t.weight * v;
    }
    (*out)[j] = static_cast<float>(consensus ? sum / std::max(agree, 1) : sum);
  }
}

}  // namespace paft::merger
