#include "common/hf_config.h"

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/status.h"

namespace paft {
namespace {

using json = nlohmann::json;

absl::Status Bad(absl::string_view key, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("config.json: '", key, "' ", what));
}

absl::Status ReadInt(const json& j, const char* key, bool required, int64_t* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    return required ? Bad(key, "is required") : absl::OkStatus();
  }
  if (!it->is_number_integer()) return Bad(key, "must be an integer");
  *out = it->get<int64_t>();
  return absl::OkStatus();
}

absl::Status ReadDouble(const json& j, const char* key, double* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) return Bad(key, "must be a number");
  *out = it->get<double>();
  return absl::OkStatus();
}

absl::Status ReadBool(const json& j, const char* key, bool* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) return Bad(key, "must be a boolean");
  *out = it->get<bool>();
  return absl::OkStatus();
}

absl::Status ReadString(const json& j, const char* key, std::string* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_string()) return Bad(key, "must be a string");
  *out = it->get<std::string>();
  return absl::OkStatus();
}

}  // namespace

int64_t ModelConfig::ParameterCount() const {
  const int64_t kv_dim = num_key_value_heads * head_dim;
  const int64_t q_dim = num_attention_heads * head_dim;
  int64_t attention = hidden_size * q_dim + 2 * hidden_size * kv_dim + q_dim * hidden_size;
  if (attention_bias) attention += q_dim + 2 * kv_dim;
  const int64_t mlp = 3 * hidden_size * intermediate_size;
  const int64_t per_layer = attention + mlp + 2 * hidden_size;
  int64_t total = vocab_size * hidden_size + num_hidden_layers * per_layer + hidden_size;
  if (!tie_word_embeddings) total += vocab_size * hidden_size;
  return total;
}

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text) {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("config.json is not a JSON object");
  }
  ModelConfig c;
  c.raw = j;
  PAFT_RETURN_IF_ERROR(ReadString(j, "model_type", &c.model_type));
  PAFT_RETURN_IF_ERROR(ReadInt(j, "vocab_size", true, &c.vocab_size));
  PAFT_RETURN_IF_ERROR(ReadInt(j, "hidden_size", true, &c.hidden_size));
  PAFT_RETURN_IF_ERROR(ReadInt(j, "intermediate_size", true, &c.intermediate_size));
  PAFT_RETURN_IF_ERROR(ReadInt(j, "num_hidden_layers", true, &c.num_hidden_layers));
  PAFT_RETURN_IF_ERROR(ReadInt(j, "num_attention_heads", true, &c.num_attention_heads));
  c.num_key_value_heads = c.num_attention_heads;
  PAFT_RETURN_IF_ERROR(ReadInt(j, "num_key_value_heads", false, &c.num_key_value_heads));
  PAFT_RETURN_IF_ERROR(ReadInt(j, "max_position_embeddings", false, &c.max_position_embeddings));
  PAFT_RETURN_IF_ERROR(ReadDouble(j, "rms_norm_eps", &c.rms_norm_eps));
  PAFT_RETURN_IF_ERROR(ReadDouble(j, "rope_theta", &c.rope_theta));
  PAFT_RETURN_IF_ERROR(ReadBool(j, "tie_word_embeddings", &c.tie_word_embeddings));
  c.attention_bias = c.model_type == "qwen2";
  PAFT_RETURN_IF_ERROR(ReadBool(j, "attention_bias", &c.attention_bias));
  PAFT_RETURN_IF_ERROR(ReadString(j, "hidden_act", &c.hidden_act));
  PAFT_RETURN_IF_ERROR(ReadString(j, "torch_dtype", &c.torch_dtype));
  PAFT_RETURN_IF_ERROR(ReadInt(j, "bos_token_id", false, &c.bos_token_id));
  // eos_token_id may be a list in newer configs; keep the first.
  if (j.contains("eos_token_id") && j["eos_token_id"].is_array() && !j["eos_token_id"].empty() &&
      j["eos_token_id"][0].is_number_integer()) {
    c.eos_token_id = j["eos_token_id"][0].get<int64_t>();
  } else {
    PAFT_RETURN_IF_ERROR(ReadInt(j, "eos_token_id", false, &c.eos_token_id));
  }
  PAFT_RETURN_IF_ERROR(ReadInt(j, "pad_token_id", false, &c.pad_token_id));

  for (auto [key, value] : {std::pair<const char*, int64_t>{"vocab_size", c.vocab_size},
                            {"hidden_size", c.hidden_size},
                            {"intermediate_size", c.intermediate_size},
                            {"num_hidden_layers", c.num_hidden_layers},
                            {"num_attention_heads", c.num_attention_heads},
                            {"num_key_value_heads", c.num_key_value_heads},
                            {"max_position_embeddings", c.max_position_embeddings}}) {
    if (value <= 0) return Bad(key, absl::StrCat("must be positive, got ", value));
  }
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return Bad("num_key_value_heads", absl::StrCat("(", c.num_key_value_heads,
                                                   ") must divide num_attention_heads (",
                                                   c.num_attention_heads, ")"));
  }
  if (j.contains("head_dim") && !j["head_dim"].is_null()) {
    PAFT_RETURN_IF_ERROR(ReadInt(j, "head_dim", false, &c.head_dim));
    if (c.head_dim <= 0) return Bad("head_dim", "must be positive");
  } else {
    if (c.hidden_size % c.num_attention_heads != 0) {
      return Bad("hidden_size", absl::StrCat("(", c.hidden_size,
                                             ") must be divisible by num_attention_heads (",
                                             c.num_attention_heads, ")"));
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  if (c.head_dim % 2 != 0) return Bad("head_dim", "must be even for rotary embeddings");
  if (c.rms_norm_eps <= 0) return Bad("rms_norm_eps", "must be positive");
  if (c.rope_theta <= 0) return Bad("rope_theta", "must be positive");
  if (c.hidden_act != "silu") {
    return Bad("hidden_act", absl::StrCat("'", c.hidden_act, "' is not supported (only silu)"));
  }
  return c;
}

absl::Status CopyModelSideFiles(const std::string& from, const std::string& to) {
  for (const char* name : {"generation_config.json", "tokenizer.json", "tokenizer.model",
                           "tokenizer_config.json", "special_tokens_map.json"}) {
    const std::string source = JoinPath(from, name);
    if (IsRegularFile(source)) PAFT_RETURN_IF_ERROR(CopyFileDurably(source, JoinPath(to, name)));
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_folder) {
  const std::string path = JoinPath(model_folder, "config.json");
  PAFT_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  auto config = ParseModelConfig(text);
  if (!config.ok()) return Annotate(config.status(), path);
  return config;
}

}  // namespace paft
