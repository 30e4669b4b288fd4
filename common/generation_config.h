// A model folder's generation_config.json, as evaluation decodes with it. Evaluation decodes
// greedily (its exact-match metric compares against one reference completion), so the sampling
// settings (do_sample, temperature, top_p, top_k, ...) are read, reported and not applied; the
// settings that change a greedy decode are applied (stop tokens, repetition_penalty) or, when not
// implemented, refused by name.
#ifndef PAFT_COMMON_GENERATION_CONFIG_H_
#define PAFT_COMMON_GENERATION_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/hf_config.h"
#include "nlohmann/json.hpp"

namespace paft {

struct GenerationConfig {
  // Generation stops at any of these: generation_config.json's eos_token_id, else config.json's.
  std::vector<int64_t> eos_token_ids;
  double repetition_penalty = 1.0;  // transformers' RepetitionPenaltyLogitsProcessor
  nlohmann::json sampling;          // the sampling settings found (not applied by greedy decoding)
  bool from_file = false;           // generation_config.json exists
};

// Parses generation_config.json text; errors name the key.
absl::StatusOr<GenerationConfig> ParseGenerationConfig(const std::string& json_text,
                                                       const ModelConfig& model);
// Reads <folder>/generation_config.json; without one, the stop tokens of config.json.
absl::StatusOr<GenerationConfig> LoadGenerationConfig(const std::string& model_folder,
                                                      const ModelConfig& model);

}  // namespace paft

#endif  // PAFT_COMMON_GENERATION_CONFIG_H_
