// The Hugging Face `config.json` of a supported decoder family: llama, mistral, qwen2, read as
// transformers' LlamaConfig / MistralConfig / Qwen2Config. A config is computed exactly or refused:
// a model_type outside the list, a key the family's config does not have, or a value that would
// change the numbers in a way not implemented (attention dropout, Qwen2 sliding windows, partial
// rotary) is an error naming the key. The whole file is kept in `raw` to be written back unchanged.
#ifndef PAFT_COMMON_HF_CONFIG_H_
#define PAFT_COMMON_HF_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/rope_scaling.h"
#include "nlohmann/json.hpp"

namespace paft {

struct ModelConfig {
  std::string model_type;  // "llama", "mistral", "qwen2"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // defaults to num_attention_heads
  int64_t head_dim = 0;             // defaults to hidden_size / num_attention_heads
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  // Each query attends to at most this many keys, itself included (Mistral); 0: unlimited.
  int64_t sliding_window = 0;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v biases (always for qwen2; llama's attention_bias)
  bool output_bias = false;     // o_proj bias (llama's attention_bias)
  bool mlp_bias = false;        // gate/up/down biases (llama's mlp_bias)
  std::string hidden_act = "silu";
  std::string torch_dtype;  // "float32", "bfloat16", "float16" or empty
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;  // config.json's eos_token_id, a number or a list
  int64_t pad_token_id = -1;
  nlohmann::json raw;  // the whole file as read

  // The first of eos_token_ids (-1: none).
  int64_t eos_token_id() const { return eos_token_ids.empty() ? -1 : eos_token_ids.front(); }

  // Number of parameters implied by the config (embeddings, layers, norms, head).
  int64_t ParameterCount() const;
};

// Copies the files of a Hugging Face model folder that travel with the weights besides
// config.json (tokenizer files, generation settings) from `from` to `to`, those that exist.
absl::Status CopyModelSideFiles(const std::string& from, const std::string& to);

// A token-id field of config.json or generation_config.json: null (none), an integer, or a list
// of integers. The error says what the value must be; the caller names the file and key.
absl::StatusOr<std::vector<int64_t>> ParseTokenIdList(const nlohmann::json& value);

// Model types computed exactly, in the order the docs list them.
const std::vector<std::string>& SupportedModelTypes();

// Parses and validates config.json text; errors name the offending key.
absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text);
// Reads <folder>/config.json.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_folder);

}  // namespace paft

#endif  // PAFT_COMMON_HF_CONFIG_H_
