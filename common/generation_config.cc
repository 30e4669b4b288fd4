#include "common/generation_config.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/status.h"

namespace paft {
namespace {

using json = nlohmann::json;

absl::Status Bad(absl::string_view key, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("generation_config.json: '", key, "' ", what));
}

// Keys without an effect on a greedy decode of a given length: bookkeeping, token ids read
// elsewhere, lengths (evaluation sets its own), and sampling-only settings.
const std::set<std::string>& InertKeys() {
  static const std::set<std::string> kKeys = {
      "_from_model_config", "transformers_version", "bos_token_id", "pad_token_id",
      "decoder_start_token_id", "max_length", "max_new_tokens", "use_cache",
      "output_scores", "output_attentions", "output_hidden_states", "return_dict_in_generate",
      "num_return_sequences", "renormalize_logits"};
  return kKeys;
}
const std::set<std::string>& SamplingKeys() {
  static const std::set<std::string> kKeys = {"do_sample", "temperature", "top_p", "top_k",
                                              "typical_p", "min_p", "epsilon_cutoff",
                                              "eta_cutoff"};
  return kKeys;
}

// Keys whose default leaves a greedy decode unchanged; any other value would change it.
bool HasNeutralValue(const std::string& key, const json& value) {
  if (value.is_null()) return true;
  if (key == "num_beams" || key == "num_beam_groups") return value == 1;
  if (key == "no_repeat_ngram_size" || key == "min_length" || key == "min_new_tokens" ||
      key == "encoder_no_repeat_ngram_size") {
    return value == 0;
  }
  if (key == "length_penalty") return true;  // beam search only
  if (key == "diversity_penalty") return value == 0.0;
  if (key == "guidance_scale") return value == 1.0;
  if (key == "bad_words_ids" || key == "suppress_tokens" || key == "begin_suppress_tokens" ||
      key == "sequence_bias") {
    return value.empty();
  }
  return false;
}

}  // namespace

absl::StatusOr<GenerationConfig> ParseGenerationConfig(const std::string& json_text,
                                                       const ModelConfig& model) {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("generation_config.json is not a JSON object");
  }
  GenerationConfig g;
  g.from_file = true;
  g.eos_token_ids = model.eos_token_ids;
  g.sampling = json::object();
  for (const auto& [key, value] : j.items()) {
    if (InertKeys().count(key)) continue;
    if (SamplingKeys().count(key)) {
      g.sampling[key] = value;
    } else if (key == "eos_token_id") {
      auto ids = ParseTokenIdList(value);
      if (!ids.ok()) return Bad(key, ids.status().message());
      g.eos_token_ids = std::move(*ids);
    } else if (key == "repetition_penalty") {
      if (!value.is_number() || !(value.get<double>() > 0)) return Bad(key, "must be positive");
      g.repetition_penalty = value.get<double>();
    } else if (!HasNeutralValue(key, value)) {
      return Bad(key, absl::StrCat("(", value.dump(),
                                   ") is not supported: evaluation decodes greedily without it"));
    }
  }
  return g;
}

absl::StatusOr<GenerationConfig> LoadGenerationConfig(const std::string& model_folder,
                                                      const ModelConfig& model) {
  const std::string path = JoinPath(model_folder, "generation_config.json");
  if (!PathExists(path)) {
    GenerationConfig g;
    g.eos_token_ids = model.eos_token_ids;
    g.sampling = nlohmann::json::object();
    return g;
  }
  PAFT_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  auto config = ParseGenerationConfig(text, model);
  if (!config.ok()) return Annotate(config.status(), model_folder);
  return config;
}

}  // namespace paft
