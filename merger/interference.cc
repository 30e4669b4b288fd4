#include "merger/interference.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "merger/merge_methods.h"

namespace paft::merger {

absl::Status ValidateInterference(const InterferenceOptions& options, size_t inputs) {
  if (!(options.density >= 0 && options.density <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("density must be in (0, 1] (0: no interference report), not ", options.density));
  }
  if (!options.weights.empty() && options.weights.size() != inputs) {
    return absl::InvalidArgumentError(absl::StrCat("weights: ", options.weights.size(),
                                                   " given for ", inputs, " inputs"));
  }
  for (double w : options.weights) {
    if (!std::isfinite(w)) return absl::InvalidArgumentError("weights must be finite numbers");
  }
  if (options.enabled() && inputs < 2) {
    return absl::InvalidArgumentError("interference (density) needs at least two inputs");
  }
  return absl::OkStatus();
}

void Interference::Add(const Interference& o) {
  if (o.empty()) return;
  if (empty()) {
    *this = o;
    return;
  }
  shared += o.shared;
  conflicts += o.conflicts;
  for (size_t i = 0; i < mass.size(); ++i) {
    conflicts_won[i] += o.conflicts_won[i];
    mass[i] += o.mass[i];
    kept_mass[i] += o.kept_mass[i];
    elected_mass[i] += o.elected_mass[i];
  }
}

Interference MeasureInterference(const std::vector<const float*>& deltas, int64_t n,
                                 const InterferenceOptions& options) {
  const size_t m = deltas.size();
  Interference r;
  r.conflicts_won.assign(m, 0);
  r.mass.assign(m, 0);
  r.kept_mass.assign(m, 0);
  r.elected_mass.assign(m, 0);
  // Trimmed copies (the merge's own exact top-k), and the weighted sum that elects the sign,
  // in float and in input order as the merge sums it. Signs are those of w_i * trimmed_i.
  std::vector<std::vector<float>> trimmed(m);
  std::vector<float> weight(m, 1.0f), vote(static_cast<size_t>(n), 0.0f);
  for (size_t i = 0; i < m; ++i) {
    if (!options.weights.empty()) weight[i] = static_cast<float>(options.weights[i]);
    trimmed[i].assign(deltas[i], deltas[i] + n);
    SparsifyMagnitude(trimmed[i].data(), n, options.density, /*rescale=*/false);
    for (int64_t j = 0; j < n; ++j) vote[j] += weight[i] * trimmed[i][j];
  }
  for (int64_t j = 0; j < n; ++j) {
    const bool elected_positive = vote[j] >= 0.0f;
    int kept = 0;
    bool positive = false, negative = false;
    for (size_t i = 0; i < m; ++i) {
      const double d = std::fabs(deltas[i][j]);
      const float wt = weight[i] * trimmed[i][j];
      r.mass[i] += d;
      if (wt == 0.0f) continue;  // trimmed away (or a zero weight): no sign
      ++kept;
      positive |= wt > 0;
      negative |= wt < 0;
      r.kept_mass[i] += d;
      if ((wt > 0) == elected_positive) r.elected_mass[i] += d;
    }
    if (kept < 2) continue;
    ++r.shared;
    if (!(positive && negative)) continue;
    ++r.conflicts;
    for (size_t i = 0; i < m; ++i) {
      const float wt = weight[i] * trimmed[i][j];
      if (wt != 0.0f && (wt > 0) == elected_positive) ++r.conflicts_won[i];
    }
  }
  return r;
}

}  // namespace paft::merger
