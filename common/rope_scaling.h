// Rotary position embeddings of a Hugging Face config: `rope_theta` plus the optional
// `rope_scaling` block, computed as transformers' modeling_rope_utils (4.45-4.47, the release line
// of Llama 3.1/3.2 and Qwen2.5) does: the inverse frequency of each rotated pair of a head, and the
// factor cos and sin are multiplied by (YaRN's attention factor, 1 otherwise).
//
// Supported `rope_type` (or the legacy `type`): default, linear, dynamic (NTK), llama3, yarn.
// Anything else, and any key of the block the type does not read, is refused by name.
#ifndef PAFT_COMMON_ROPE_SCALING_H_
#define PAFT_COMMON_ROPE_SCALING_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace paft {

struct RopeScaling {
  enum class Type { kDefault, kLinear, kDynamic, kLlama3, kYarn };
  Type type = Type::kDefault;
  double factor = 1.0;  // linear, dynamic, llama3, yarn
  // llama3
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 0;
  // yarn
  double attention_factor = 1.0;  // from the block, or 0.1 ln(factor) + 1
  double beta_fast = 32.0;
  double beta_slow = 1.0;

  // The frequencies depend on the forward's length (dynamic NTK only).
  bool depends_on_length() const { return type == Type::kDynamic; }
};

// Parses the `rope_scaling` value of config.json (null or absent: the default RoPE).
// `max_position_embeddings` is the config's, checked against the block where it matters.
absl::StatusOr<RopeScaling> ParseRopeScaling(const nlohmann::json& block,
                                             int64_t max_position_embeddings);

// Inverse frequencies of the head_dim / 2 rotated pairs. `sequence_length` is the forward's
// length (the largest position + 1); only dynamic NTK reads it, and only above
// `max_position_embeddings`.
std::vector<double> RopeInverseFrequencies(const RopeScaling& scaling, double theta,
                                           int64_t head_dim, int64_t max_position_embeddings,
                                           int64_t sequence_length);

}  // namespace paft

#endif  // PAFT_COMMON_ROPE_SCALING_H_
