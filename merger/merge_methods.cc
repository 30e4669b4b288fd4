#include "merger/merge_methods.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace paft::merger {
namespace {

const std::vector<MethodTraits>& Methods() {
  static const auto* methods = new std::vector<MethodTraits>{
      {"linear", true, Consensus::kNone, Sparsification::kNone, true, false},
      {"task_arithmetic", false, Consensus::kNone, Sparsification::kNone, false, false},
      {"ties", false, Consensus::kSum, Sparsification::kMagnitude, true, false},
      {"dare_linear", false, Consensus::kNone, Sparsification::kRandom, false, true},
      {"dare_ties", false, Consensus::kSum, Sparsification::kRandom, false, true},
      {"breadcrumbs", false, Consensus::kNone, Sparsification::kMagnitudeOutliers, false, false},
      {"breadcrumbs_ties", false, Consensus::kSum, Sparsification::kMagnitudeOutliers, false,
       false},
      {"magnitude_prune", false, Consensus::kNone, Sparsification::kMagnitude, false, false},
  };
  return *methods;
}

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Keeps the entries whose rank by (|value|, index), ascending, is in [lo, hi); zeroes the rest.
void KeepRankRange(float* v, int64_t n, int64_t lo, int64_t hi) {
  if (lo <= 0 && hi >= n) return;
  if (lo >= hi) {
    std::fill(v, v + n, 0.0f);
    return;
  }
  auto less = [v](uint32_t a, uint32_t b) {
    const float fa = std::fabs(v[a]), fb = std::fabs(v[b]);
    return fa != fb ? fa < fb : a < b;
  };
  std::vector<uint32_t> index(static_cast<size_t>(n));  // 4 bytes an entry: tensors < 2^32
  std::iota(index.begin(), index.end(), 0u);
  // The boundary elements: rank lo (first kept) and rank hi - 1 (last kept).
  std::nth_element(index.begin(), index.begin() + lo, index.end(), less);
  const uint32_t first = index[lo];
  std::nth_element(index.begin() + lo, index.begin() + (hi - 1), index.end(), less);
  const uint32_t last = index[hi - 1];
  index.clear();
  index.shrink_to_fit();
  // Decide every entry before zeroing any (zeroing changes the magnitudes being compared).
  std::vector<uint8_t> keep(static_cast<size_t>(n), 0);
  for (int64_t j = 0; j < n; ++j) {
    keep[j] = !less(static_cast<uint32_t>(j), first) && !less(last, static_cast<uint32_t>(j));
  }
  for (int64_t j = 0; j < n; ++j) {
    if (!keep[j]) v[j] = 0.0f;
  }
}

// Scales v so that its L1 norm becomes `l1_before` (mergekit's rescale of magnitude methods).
void RescaleL1(float* v, int64_t n, double l1_before) {
  double l1_after = 0;
  for (int64_t j = 0; j < n; ++j) l1_after += std::fabs(v[j]);
  if (l1_before < 1e-8 || l1_after < 1e-8) return;
  const double scale = l1_before / l1_after;
  for (int64_t j = 0; j < n; ++j) v[j] = static_cast<float>(v[j] * scale);
}

double L1(const float* v, int64_t n) {
  double s = 0;
  for (int64_t j = 0; j < n; ++j) s += std::fabs(v[j]);
  return s;
}

}  // namespace

absl::StatusOr<MethodTraits> LookupMergeMethod(const std::string& name) {
  std::string known;
  for (const auto& m : Methods()) {
    if (m.name == name) return m;
    absl::StrAppend(&known, known.empty() ? "" : ", ", m.name);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown merge method '", name, "' (known: ", known, ")"));
}

int64_t KeptCount(int64_t n, double density) {
  // floor, with slack so that e.g. 0.3 * 10 = 2.9999999999999996 keeps 3.
  const auto k = static_cast<int64_t>(std::floor(density * static_cast<double>(n) + 1e-9));
  return std::clamp<int64_t>(k, 0, n);
}

uint64_t TensorKey(const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : name) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

void SparsifyMagnitude(float* delta, int64_t n, double density, bool rescale) {
  if (density >= 1.0) return;
  const double before = rescale ? L1(delta, n) : 0;
  KeepRankRange(delta, n, n - KeptCount(n, density), n);
  if (rescale) RescaleL1(delta, n, before);
}

void SparsifyRandom(float* delta, int64_t n, double density, bool rescale, uint64_t stream) {
  if (density >= 1.0) return;
  const uint64_t key = SplitMix64(stream);
  const float scale = rescale ? static_cast<float>(1.0 / density) : 1.0f;
  for (int64_t j = 0; j < n; ++j) {
    const double u =
        static_cast<double>(SplitMix64(key ^ static_cast<uint64_t>(j)) >> 11) * 0x1.0p-53;
    delta[j] = u < density ? delta[j] * scale : 0.0f;
  }
}

void SparsifyMagnitudeOutliers(float* delta, int64_t n, double density, double gamma,
                               bool rescale) {
  if (density >= 1.0) return;
  const int64_t target = KeptCount(n, density);
  int64_t top = static_cast<int64_t>(std::floor(gamma * static_cast<double>(n) + 1e-9));
  int64_t bottom = n - target - top;
  if (bottom < 0) {  // drop fewer outliers to reach the target density
    top += bottom;
    bottom = 0;
  }
  const double before = rescale ? L1(delta, n) : 0;
  KeepRankRange(delta, n, bottom, n - top);
  if (rescale) RescaleL1(delta, n, before);
}

void MergeDeltas(const MergeOptions& options, const float* base,
                 const std::vector<float*>& deltas, const std::vector<InputWeights>& weights,
                 int64_t n, uint64_t tensor_key, float* out) {
  const size_t m = deltas.size();
  const MethodTraits& method = options.method;
  double weight_sum = 0;
  for (const auto& w : weights) weight_sum += w.weight;

  if (method.linear) {
    const double norm = options.normalize && weight_sum != 0 ? weight_sum : 1.0;
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (size_t i = 0; i < m; ++i) acc += weights[i].weight * (base[j] + deltas[i][j]);
      out[j] = static_cast<float>(acc / norm);
    }
    return;
  }

  for (size_t i = 0; i < m; ++i) {
    switch (method.sparsification) {
      case Sparsification::kNone:
        break;
      case Sparsification::kMagnitude:
        SparsifyMagnitude(deltas[i], n, weights[i].density, options.rescale);
        break;
      case Sparsification::kRandom:
        SparsifyRandom(deltas[i], n, weights[i].density, options.rescale,
                       SplitMix64(options.seed ^ SplitMix64(tensor_key + i)));
        break;
      case Sparsification::kMagnitudeOutliers:
        SparsifyMagnitudeOutliers(deltas[i], n, weights[i].density, weights[i].gamma,
                                  options.rescale);
        break;
    }
  }

  const double plain_divisor = std::fabs(weight_sum) < 1e-8 ? 1.0 : weight_sum;
  for (int64_t j = 0; j < n; ++j) {
    double mixed = 0, divisor = plain_divisor;
    if (method.consensus == Consensus::kSum) {
      double sign_weight = 0;
      for (size_t i = 0; i < m; ++i) sign_weight += weights[i].weight * deltas[i][j];
      const bool positive = sign_weight >= 0;
      divisor = 0;
      for (size_t i = 0; i < m; ++i) {
        const double wd = weights[i].weight * deltas[i][j];
        if (wd != 0 && (wd > 0) == positive) {
          mixed += wd;
          divisor += weights[i].weight;
        }
      }
      if (divisor == 0) divisor = 1;
    } else {
      for (size_t i = 0; i < m; ++i) mixed += weights[i].weight * deltas[i][j];
    }
    if (options.normalize) mixed /= divisor;
    out[j] = static_cast<float>(base[j] + options.lambda * mixed);
  }
}

}  // namespace paft::merger
