#include "common/hf_config.h"

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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
  if (output_bias) attention += hidden_size;
  int64_t mlp = 3 * hidden_size * intermediate_size;
  if (mlp_bias) mlp += 2 * intermediate_size + hidden_size;
  const int64_t per_layer = attention + mlp + 2 * hidden_size;
  int64_t total = vocab_size * hidden_size + num_hidden_layers * per_layer + hidden_size;
  if (!tie_word_embeddings) total += vocab_size * hidden_size;
  return total;
}

absl::StatusOr<std::vector<int64_t>> ParseTokenIdList(const json& value) {
  std::vector<int64_t> ids;
  if (value.is_null()) return ids;
  if (value.is_number_integer()) return std::vector<int64_t>{value.get<int64_t>()};
  if (value.is_array()) {
    for (const auto& id : value) {
      if (!id.is_number_integer()) break;
      ids.push_back(id.get<int64_t>());
    }
    if (ids.size() == value.size()) return ids;
  }
  return absl::InvalidArgumentError("must be an integer or a list of them");
}

const std::vector<std::string>& SupportedModelTypes() {
  static const std::vector<std::string> kTypes = {"llama", "mistral", "qwen2"};
  return kTypes;
}

namespace {

// Keys every supported family's config may carry that do not change the numbers (bookkeeping,
// inference-cache and initialisation settings), and the keys of the shared architecture.
const std::set<std::string>& CommonKeys() {
  static const std::set<std::string> kKeys = {
      // bookkeeping and settings without an effect on training or evaluation numbers
      "architectures", "_name_or_path", "transformers_version", "torch_dtype", "use_cache",
      "initializer_range",
      // read below
      "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
      "num_attention_heads", "num_key_value_heads", "max_position_embeddings", "rms_norm_eps",
      "rope_theta", "rope_scaling", "hidden_act", "tie_word_embeddings", "attention_dropout",
      "bos_token_id", "eos_token_id", "pad_token_id"};
  return kKeys;
}

// The keys of each family's transformers config class beyond CommonKeys.
const std::set<std::string>& FamilyKeys(const std::string& model_type) {
  static const std::map<std::string, std::set<std::string>> kKeys = {
      // pretraining_tp > 1 only splits the projections' matmuls in transformers: same numbers.
      {"llama", {"head_dim", "attention_bias", "mlp_bias", "pretraining_tp"}},
      {"mistral", {"head_dim", "sliding_window"}},
      {"qwen2", {"use_sliding_window", "sliding_window", "max_window_layers"}}};
  return kKeys.at(model_type);
}

absl::Status CheckKeys(const json& j, const std::string& model_type) {
  const auto& common = CommonKeys();
  const auto& family = FamilyKeys(model_type);
  for (const auto& item : j.items()) {
    const std::string& key = item.key();
    if (common.count(key) || family.count(key)) continue;
    if (key == "partial_rotary_factor") {
      return Bad(key, absl::StrCat("is not supported for model_type '", model_type,
                                   "' (its attention rotates the whole head)"));
    }
    return Bad(key, absl::StrCat("is not a key of a '", model_type,
                                 "' config that paft computes; refusing rather than ignoring it"));
  }
  return absl::OkStatus();
}

absl::Status ReadTokenIds(const json& j, ModelConfig* c) {
  PAFT_RETURN_IF_ERROR(ReadInt(j, "bos_token_id", false, &c->bos_token_id));
  PAFT_RETURN_IF_ERROR(ReadInt(j, "pad_token_id", false, &c->pad_token_id));
  const json eos = j.value("eos_token_id", json());
  auto ids = ParseTokenIdList(eos);
  if (!ids.ok()) return Bad("eos_token_id", ids.status().message());
  if (eos.is_number_integer() && eos.get<int64_t>() < 0) ids->clear();  // a negative id: none
  c->eos_token_ids = std::move(*ids);
  return absl::OkStatus();
}

// Sliding windows, attention dropout: the attention variants of the families.
absl::Status ReadAttentionVariant(const json& j, ModelConfig* c) {
  double dropout = 0;
  PAFT_RETURN_IF_ERROR(ReadDouble(j, "attention_dropout", &dropout));
  if (dropout != 0) {
    return Bad("attention_dropout", absl::StrCat("(", dropout, ") is not supported: attention "
                                                 "dropout is not implemented (only 0.0)"));
  }
  if (c->model_type == "mistral") {
    PAFT_RETURN_IF_ERROR(ReadInt(j, "sliding_window", false, &c->sliding_window));
    if (j.contains("sliding_window") && !j["sliding_window"].is_null() && c->sliding_window <= 0) {
      return Bad("sliding_window", "must be positive or null");
    }
  }
  if (c->model_type == "qwen2") {
    bool use_sliding_window = false;
    PAFT_RETURN_IF_ERROR(ReadBool(j, "use_sliding_window", &use_sliding_window));
    if (use_sliding_window) {
      return Bad("use_sliding_window",
                 "true is not supported for qwen2 (transformers releases apply its per-layer "
                 "window differently)");
    }
  }
  if (c->model_type == "llama") {
    PAFT_RETURN_IF_ERROR(ReadBool(j, "attention_bias", &c->attention_bias));
    c->output_bias = c->attention_bias;
    PAFT_RETURN_IF_ERROR(ReadBool(j, "mlp_bias", &c->mlp_bias));
  }
  if (c->model_type == "qwen2") c->attention_bias = true;  // q/k/v biases, no o_proj bias
  return absl::OkStatus();
}

absl::Status ReadShapes(const json& j, ModelConfig* c) {
  PAFT_RETURN_IF_ERROR(ReadInt(j, "vocab_size", true, &c->vocab_size));
  PAFT_RETURN_IF_ERROR(ReadInt(j, "hidden_size", true, &c->hidden_size));
  PAFT_RETURN_IF_ERROR(ReadInt(j, "intermediate_size", true, &c->intermediate_size));
  PAFT_RETURN_IF_ERROR(ReadInt(j, "num_hidden_layers", true, &c->num_hidden_layers));
  PAFT_RETURN_IF_ERROR(ReadInt(j, "num_attention_heads", true, &c->num_attention_heads));
  c->num_key_value_heads = c->num_attention_heads;
  PAFT_RETURN_IF_ERROR(ReadInt(j, "num_key_value_heads", false, &c->num_key_value_heads));
  PAFT_RETURN_IF_ERROR(ReadInt(j, "max_position_embeddings", false, &c->max_position_embeddings));
  for (auto [key, value] : {std::pair<const char*, int64_t>{"vocab_size", c->vocab_size},
                            {"hidden_size", c->hidden_size},
                            {"intermediate_size", c->intermediate_size},
                            {"num_hidden_layers", c->num_hidden_layers},
                            {"num_attention_heads", c->num_attention_heads},
                            {"num_key_value_heads", c->num_key_value_heads},
                            {"max_position_embeddings", c->max_position_embeddings}}) {
    if (value <= 0) return Bad(key, absl::StrCat("must be positive, got ", value));
  }
  if (c->num_attention_heads % c->num_key_value_heads != 0) {
    return Bad("num_key_value_heads", absl::StrCat("(", c->num_key_value_heads,
                                                   ") must divide num_attention_heads (",
                                                   c->num_attention_heads, ")"));
  }
  if (j.contains("head_dim") && !j["head_dim"].is_null()) {
    PAFT_RETURN_IF_ERROR(ReadInt(j, "head_dim", false, &c->head_dim));
    if (c->head_dim <= 0) return Bad("head_dim", "must be positive");
  } else {
    if (c->hidden_size % c->num_attention_heads != 0) {
      return Bad("hidden_size", absl::StrCat("(", c->hidden_size,
                                             ") must be divisible by num_attention_heads (",
                                             c->num_attention_heads, ")"));
    }
    c->head_dim = c->hidden_size / c->num_attention_heads;
  }
  if (c->head_dim % 2 != 0) return Bad("head_dim", "must be even for rotary embeddings");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text) {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("config.json is not a JSON object");
  }
  ModelConfig c;
  c.raw = j;
  PAFT_RETURN_IF_ERROR(ReadString(j, "model_type", &c.model_type));
  const auto& types = SupportedModelTypes();
  if (std::find(types.begin(), types.end(), c.model_type) == types.end()) {
    return Bad("model_type", absl::StrCat(c.model_type.empty() ? "is required" : absl::StrCat(
                                              "'", c.model_type, "' is not supported"),
                                          " (supported: ", absl::StrJoin(types, ", "), ")"));
  }
  PAFT_RETURN_IF_ERROR(CheckKeys(j, c.model_type));
  PAFT_RETURN_IF_ERROR(ReadShapes(j, &c));
  PAFT_RETURN_IF_ERROR(ReadDouble(j, "rms_norm_eps", &c.rms_norm_eps));
  PAFT_RETURN_IF_ERROR(ReadDouble(j, "rope_theta", &c.rope_theta));
  if (c.model_type == "mistral" && j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    return Bad("rope_scaling", "is not supported for mistral (transformers releases differ on "
                               "whether Mistral reads it)");
  }
  if (j.contains("rope_scaling")) {
    PAFT_ASSIGN_OR_RETURN(c.rope_scaling,
                          ParseRopeScaling(j["rope_scaling"], c.max_position_embeddings));
  }
  PAFT_RETURN_IF_ERROR(ReadBool(j, "tie_word_embeddings", &c.tie_word_embeddings));
  PAFT_RETURN_IF_ERROR(ReadAttentionVariant(j, &c));
  PAFT_RETURN_IF_ERROR(ReadString(j, "hidden_act", &c.hidden_act));
  PAFT_RETURN_IF_ERROR(ReadString(j, "torch_dtype", &c.torch_dtype));
  PAFT_RETURN_IF_ERROR(ReadTokenIds(j, &c));
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
  if (!config.ok()) return Annotate(config.status(), model_folder);  // "<folder>: config.json: ..."
  return config;
}

}  // namespace paft
