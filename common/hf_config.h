// The Hugging Face `config.json` of a Llama-family model (LlamaConfig keys; Qwen2 and Mistral use
// the same ones). Unknown keys are kept in `raw` so a config can be written back unchanged.
#ifndef PAFT_COMMON_HF_CONFIG_H_
#define PAFT_COMMON_HF_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
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
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v biases (true for qwen2)
  std::string hidden_act = "silu";
  std::string torch_dtype;  // "float32", "bfloat16", "float16" or empty
  int64_t bos_token_id = -1;
  int64_t eos_token_id = -1;
  int64_t pad_token_id = -1;
  nlohmann::json raw;  // the whole file as read

  // Number of parameters implied by the config (embeddings, layers, norms, head).
  int64_t ParameterCount() const;
};

// Copies the files of a Hugging Face model folder that travel with the weights besides
// config.json (tokenizer files, generation settings) from `from` to `to`, those that exist.
absl::Status CopyModelSideFiles(const std::string& from, const std::string& to);

// Parses and validates config.json text; errors name the offending key.
absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text);
// Reads <folder>/config.json.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_folder);

}  // namespace paft

#endif  // PAFT_COMMON_HF_CONFIG_H_
