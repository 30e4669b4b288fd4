#include "common/rope_scaling.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace paft {
namespace {

using json = nlohmann::json;

absl::Status Bad(absl::string_view key, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("config.json: 'rope_scaling.", key, "' ", what));
}

// A number of the block: required, or left at its default when absent or null.
absl::Status ReadNumber(const json& block, const char* key, bool required, double* out) {
  auto it = block.find(key);
  if (it == block.end() || it->is_null()) {
    return required ? Bad(key, "is required for this rope_type") : absl::OkStatus();
  }
  if (!it->is_number()) return Bad(key, "must be a number");
  *out = it->get<double>();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RopeScaling> ParseRopeScaling(const json& block, int64_t max_position_embeddings) {
  RopeScaling s;
  if (block.is_null()) return s;
  if (!block.is_object()) {
    return absl::InvalidArgumentError("config.json: 'rope_scaling' must be an object or null");
  }
  // transformers reads rope_type, then the legacy "type"; both may be present and must agree.
  std::string type;
  for (const char* key : {"type", "rope_type"}) {
    auto it = block.find(key);
    if (it == block.end() || it->is_null()) continue;
    if (!it->is_string()) return Bad(key, "must be a string");
    if (!type.empty() && type != it->get<std::string>()) {
      return Bad("rope_type", absl::StrCat("'", it->get<std::string>(), "' contradicts type '",
                                           type, "'"));
    }
    type = it->get<std::string>();
  }
  if (type.empty()) return Bad("rope_type", "is required");

  // The keys each type reads; any other key would be ignored or read by another implementation.
  std::set<std::string> known = {"type", "rope_type"};
  if (type == "default") {
    s.type = RopeScaling::Type::kDefault;
  } else if (type == "linear" || type == "dynamic") {
    s.type = type == "linear" ? RopeScaling::Type::kLinear : RopeScaling::Type::kDynamic;
    known.insert("factor");
    PAFT_RETURN_IF_ERROR(ReadNumber(block, "factor", true, &s.factor));
  } else if (type == "llama3") {
    s.type = RopeScaling::Type::kLlama3;
    known.insert({"factor", "low_freq_factor", "high_freq_factor",
                  "original_max_position_embeddings"});
    double original = 0;
    PAFT_RETURN_IF_ERROR(ReadNumber(block, "factor", true, &s.factor));
    PAFT_RETURN_IF_ERROR(ReadNumber(block, "low_freq_factor", true, &s.low_freq_factor));
    PAFT_RETURN_IF_ERROR(ReadNumber(block, "high_freq_factor", true, &s.high_freq_factor));
    PAFT_RETURN_IF_ERROR(ReadNumber(block, "original_max_position_embeddings", true, &original));
    if (original <= 0 || original != std::floor(original)) {
      return Bad("original_max_position_embeddings", "must be a positive integer");
    }
    s.original_max_position_embeddings = static_cast<int64_t>(original);
    if (!(s.low_freq_factor > 0)) return Bad("low_freq_factor", "must be positive");
    if (!(s.high_freq_factor > s.low_freq_factor)) {
      return Bad("high_freq_factor", "must be greater than low_freq_factor");
    }
  } else if (type == "yarn") {
    s.type = RopeScaling::Type::kYarn;
    known.insert({"factor", "attention_factor", "beta_fast", "beta_slow",
                  "original_max_position_embeddings"});
    PAFT_RETURN_IF_ERROR(ReadNumber(block, "factor", true, &s.factor));
    if (!(s.factor > 0)) return Bad("factor", "must be positive");
    s.attention_factor = 0.1 * std::log(s.factor) + 1.0;
    PAFT_RETURN_IF_ERROR(ReadNumber(block, "attention_factor", false, &s.attention_factor));
    // transformers reads these with `or`: 0 means the default too.
    PAFT_RETURN_IF_ERROR(ReadNumber(block, "beta_fast", false, &s.beta_fast));
    PAFT_RETURN_IF_ERROR(ReadNumber(block, "beta_slow", false, &s.beta_slow));
    if (s.beta_fast == 0) s.beta_fast = 32;
    if (s.beta_slow == 0) s.beta_slow = 1;
    if (!(s.beta_fast > 0 && s.beta_slow > 0)) return Bad("beta_fast", "and beta_slow must be positive");
    // transformers 4.45-4.47 ignore this key and use max_position_embeddings; later releases
    // derive the factor from it. Both agree only when the two are equal (Qwen2.5's YaRN block).
    double original = static_cast<double>(max_position_embeddings);
    PAFT_RETURN_IF_ERROR(ReadNumber(block, "original_max_position_embeddings", false, &original));
    if (original != static_cast<double>(max_position_embeddings)) {
      return Bad("original_max_position_embeddings",
                 absl::StrCat("(", original, ") differs from max_position_embeddings (",
                              max_position_embeddings,
                              "); transformers releases compute such a YaRN block differently, "
                              "so it is not supported"));
    }
  } else {
    return Bad("rope_type", absl::StrCat("'", type,
                                         "' is not supported (supported: default, linear, dynamic, "
                                         "llama3, yarn)"));
  }
  if (type == "linear" || type == "dynamic" || type == "llama3") {
    if (!(s.factor >= 1)) return Bad("factor", "must be at least 1");
  }
  std::vector<std::string> unknown;
  for (const auto& item : block.items()) {
    if (!known.count(item.key())) unknown.push_back(item.key());
  }
  if (!unknown.empty()) {
    return Bad(unknown.front(), absl::StrCat("is not supported with rope_type '", type,
                                             "' (unsupported keys: ", absl::StrJoin(unknown, ", "),
                                             ")"));
  }
  return s;
}

std::vector<double> RopeInverseFrequencies(const RopeScaling& s, double theta, int64_t head_dim,
                                           int64_t max_position_embeddings,
                                           int64_t sequence_length) {
  const int64_t pairs = head_dim / 2;
  const double dim = static_cast<double>(head_dim);
  double base = theta;
  if (s.type == RopeScaling::Type::kDynamic && sequence_length > max_position_embeddings) {
    // NTK-aware: stretch the base so the longest wavelength covers the longer sequence.
    const double ratio = static_cast<double>(sequence_length) / max_position_embeddings;
    base = theta * std::pow(s.factor * ratio - (s.factor - 1), dim / (dim - 2));
  }
  std::vector<double> inv_freq(pairs);
  for (int64_t i = 0; i < pairs; ++i) inv_freq[i] = 1.0 / std::pow(base, 2.0 * i / dim);

  switch (s.type) {
    case RopeScaling::Type::kDefault:
    case RopeScaling::Type::kDynamic:
      break;
    case RopeScaling::Type::kLinear:
      for (double& f : inv_freq) f /= s.factor;
      break;
    case RopeScaling::Type::kLlama3: {
      // Wavelengths above original/low_freq_factor are interpolated (÷ factor), below
      // original/high_freq_factor kept, and in between blended by a smooth factor.
      const double original = static_cast<double>(s.original_max_position_embeddings);
      const double low_freq_wavelen = original / s.low_freq_factor;
      const double high_freq_wavelen = original / s.high_freq_factor;
      for (double& f : inv_freq) {
        const double wavelen = 2 * M_PI / f;
        if (wavelen > low_freq_wavelen) {
          f = f / s.factor;
        } else if (wavelen >= high_freq_wavelen) {
          const double smooth = (original / wavelen - s.low_freq_factor) /
                                (s.high_freq_factor - s.low_freq_factor);
          f = (1 - smooth) * f / s.factor + smooth * f;
        }
      }
      break;
    }
    case RopeScaling::Type::kYarn: {
      // Dimensions whose wavelength makes fewer than beta_slow rotations over the context are
      // interpolated, more than beta_fast extrapolated, with a linear ramp in between.
      auto correction_dim = [&](double rotations) {
        return dim * std::log(max_position_embeddings / (rotations * 2 * M_PI)) /
               (2 * std::log(theta));
      };
      const double low = std::max(std::floor(correction_dim(s.beta_fast)), 0.0);
      double high = std::min(std::ceil(correction_dim(s.beta_slow)), dim - 1);
      if (low == high) high += 0.001;
      for (int64_t i = 0; i < pairs; ++i) {
        const double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);
        const double extrapolation = 1 - ramp;  // weight of the unscaled frequency
        inv_freq[i] = inv_freq[i] / s.factor * (1 - extrapolation) + inv_freq[i] * extrapolation;
      }
      break;
    }
  }
  return inv_freq;
}

}  // namespace paft
