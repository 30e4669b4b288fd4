// Golden tests per model family: each config below carries every key of the real model's
// config.json (Hugging Face hub, as published), with only the values that set sizes scaled down
// (vocabulary, widths, layer and head counts, Mistral's window, dynamic NTK's context). The
// model's logits are compared against tests/testing/reference_decoder, an independent fp64
// implementation that reads config.json itself. A new key in one of these configs that paft
// does not compute makes ParseModelConfig, and so the test, fail.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "tests/testing/reference_decoder.h"
#include "trainer/llama.h"

namespace paft::trainer {
namespace {

using json = nlohmann::json;
using ::paft::testing::RefMatrix;
using ::paft::testing::RefTensor;
using ::paft::testing::RefWeights;
using ::paft::testing::ReferenceLogits;

// meta-llama/Llama-2-7b-hf
constexpr char kLlama2[] = R"({
  "_name_or_path": "meta-llama/Llama-2-7b-hf",
  "architectures": ["LlamaForCausalLM"],
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 32,
  "initializer_range": 0.02,
  "intermediate_size": 48,
  "max_position_embeddings": 4096,
  "model_type": "llama",
  "num_attention_heads": 4,
  "num_hidden_layers": 2,
  "num_key_value_heads": 4,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": null,
  "tie_word_embeddings": false,
  "torch_dtype": "float16",
  "transformers_version": "4.31.0.dev0",
  "use_cache": true,
  "vocab_size": 96
})";

// meta-llama/Llama-3.1-8B-Instruct
constexpr char kLlama31[] = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009],
  "hidden_act": "silu",
  "hidden_size": 32,
  "initializer_range": 0.02,
  "intermediate_size": 56,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 4,
  "num_hidden_layers": 2,
  "num_key_value_heads": 2,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "rope_theta": 500000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.42.3",
  "use_cache": true,
  "vocab_size": 96
})";

// meta-llama/Llama-3.2-1B: tied embeddings and an explicit head_dim (here 12, unlike 32 / 4).
constexpr char kLlama32[] = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": 128001,
  "head_dim": 12,
  "hidden_act": "silu",
  "hidden_size": 32,
  "initializer_range": 0.02,
  "intermediate_size": 64,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 4,
  "num_hidden_layers": 2,
  "num_key_value_heads": 2,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 32.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "rope_theta": 500000.0,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.45.0.dev0",
  "use_cache": true,
  "vocab_size": 96
})";

// mistralai/Mistral-7B-v0.1: a sliding window (4096 there, 8 here so 40 tokens cross it).
constexpr char kMistral[] = R"({
  "architectures": ["MistralForCausalLM"],
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 32,
  "initializer_range": 0.02,
  "intermediate_size": 56,
  "max_position_embeddings": 32768,
  "model_type": "mistral",
  "num_attention_heads": 4,
  "num_hidden_layers": 2,
  "num_key_value_heads": 1,
  "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0,
  "sliding_window": 8,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.34.0.dev0",
  "use_cache": true,
  "vocab_size": 96
})";

// Qwen/Qwen2.5-0.5B: q/k/v biases, tied embeddings, a window that is not used.
constexpr char kQwen25[] = R"({
  "architectures": ["Qwen2ForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151643,
  "hidden_act": "silu",
  "hidden_size": 32,
  "initializer_range": 0.02,
  "intermediate_size": 48,
  "max_position_embeddings": 32768,
  "max_window_layers": 2,
  "model_type": "qwen2",
  "num_attention_heads": 4,
  "num_hidden_layers": 2,
  "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "sliding_window": 32768,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.40.1",
  "use_cache": true,
  "use_sliding_window": false,
  "vocab_size": 96
})";

// A config with one key replaced (or added).
std::string With(const std::string& base, const std::string& key, const json& value) {
  json j = json::parse(base);
  j[key] = value;
  return j.dump();
}

RefWeights WeightsOf(const LlamaForCausalLMImpl& model) {
  RefWeights out;
  for (const auto& [name, tensor] : model.HfStateDict()) {
    torch::Tensor t = tensor.detach().to(torch::kDouble).contiguous();
    RefTensor r;
    r.shape = t.sizes().vec();
    r.data.assign(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
    out[name] = std::move(r);
  }
  return out;
}

double MaxDifference(const torch::Tensor& got, const RefMatrix& want) {
  torch::Tensor g = got.to(torch::kDouble).contiguous();
  double worst = 0;
  for (size_t t = 0; t < want.size(); ++t)
    for (size_t v = 0; v < want[t].size(); ++v)
      worst = std::max(worst, std::abs(g[t][v].item<double>() - want[t][v]));
  return worst;
}

double MaxDifference(const RefMatrix& a, const RefMatrix& b) {
  double worst = 0;
  for (size_t t = 0; t < a.size(); ++t)
    for (size_t v = 0; v < a[t].size(); ++v) worst = std::max(worst, std::abs(a[t][v] - b[t][v]));
  return worst;
}

std::vector<int64_t> Tokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::vector<int64_t> ids;
  uint64_t x = seed;
  for (int64_t i = 0; i < n; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    ids.push_back(static_cast<int64_t>((x >> 33) % vocab));
  }
  return ids;
}

// Builds the family's model from `config_text` in fp64 and fp32 with the same random weights and
// checks both against the reference. `visible_key` names a key whose removal must change the
// reference's logits by far more than the tolerance (the test can see that feature).
void ExpectMatchesReference(const std::string& config_text, int64_t tokens,
                            const std::string& visible_key = "") {
  auto config = ParseModelConfig(config_text);
  ASSERT_TRUE(config.ok()) << config.status();
  torch::manual_seed(11);
  LlamaForCausalLM model64(*config, torch::kDouble);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model64->parameters()) p.copy_(torch::randn_like(p) * 0.5);
  }
  model64->eval();
  const std::vector<int64_t> ids = Tokens(tokens, config->vocab_size, 5);
  const RefWeights weights = WeightsOf(*model64);
  const RefMatrix want = ReferenceLogits(config->raw, weights, ids);

  torch::NoGradGuard no_grad;
  const torch::Tensor input = torch::tensor(ids).unsqueeze(0);
  EXPECT_LT(MaxDifference(model64->forward(input)[0], want), 2e-5) << "fp64 model";

  LlamaForCausalLM model32(*config, torch::kFloat);
  auto params64 = model64->named_parameters();
  for (auto& item : model32->named_parameters()) item.value().copy_(params64[item.key()]);
  model32->eval();
  EXPECT_LT(MaxDifference(model32->forward(input)[0], want), 1e-4) << "fp32 model";

  // Packed with another sequence (padding-free batches) and through the KV cache of generation,
  // the same numbers.
  const std::vector<int64_t> other = Tokens(7, config->vocab_size, 9);
  std::vector<int64_t> both = other;
  both.insert(both.end(), ids.begin(), ids.end());
  const torch::Tensor packed = model64->ForwardPacked(torch::tensor(both).unsqueeze(0),
                                                      {static_cast<int64_t>(other.size()), tokens});
  EXPECT_LT(MaxDifference(packed[0].narrow(0, other.size(), tokens), want), 2e-5) << "packed";
  if (!config->rope_scaling.depends_on_length()) {  // dynamic NTK: frequencies change per step
    KVCache cache;
    const int64_t head = tokens / 2;
    torch::Tensor first = model64->forward(input.narrow(1, 0, head), {}, &cache);
    torch::Tensor rest = model64->forward(input.narrow(1, head, tokens - head), {}, &cache);
    EXPECT_LT(MaxDifference(torch::cat({first, rest}, 1)[0], want), 2e-5) << "KV cache";
  }

  if (!visible_key.empty()) {
    json without = config->raw;
    without.erase(visible_key);
    EXPECT_GT(MaxDifference(ReferenceLogits(without, weights, ids), want), 1e-3)
        << "the test cannot see '" << visible_key << "'";
  }
}

TEST(ModelFamiliesTest, Llama2) { ExpectMatchesReference(kLlama2, 24); }

TEST(ModelFamiliesTest, Llama31WithLlama3RopeScaling) {
  ExpectMatchesReference(kLlama31, 40, "rope_scaling");
}

TEST(ModelFamiliesTest, Llama32TiedWithItsOwnHeadDim) {
  ExpectMatchesReference(kLlama32, 40, "rope_scaling");
}

TEST(ModelFamiliesTest, Mistral7BWithSlidingWindow) {
  ExpectMatchesReference(kMistral, 40, "sliding_window");
}

TEST(ModelFamiliesTest, Qwen25WithBiasesAndTiedEmbeddings) { ExpectMatchesReference(kQwen25, 24); }

TEST(ModelFamiliesTest, Qwen25WithItsYarnBlock) {
  // The block Qwen2.5's model cards give for long contexts.
  ExpectMatchesReference(With(kQwen25, "rope_scaling",
                              {{"factor", 4.0},
                               {"original_max_position_embeddings", 32768},
                               {"type", "yarn"}}),
                         24, "rope_scaling");
}

TEST(ModelFamiliesTest, LinearAndDynamicNtkScaling) {
  ExpectMatchesReference(With(kLlama2, "rope_scaling", {{"type", "linear"}, {"factor", 4.0}}), 24,
                         "rope_scaling");
  // Dynamic NTK changes the frequencies only past max_position_embeddings (16 here).
  const std::string dynamic =
      With(With(kLlama2, "rope_scaling", {{"type", "dynamic"}, {"factor", 2.0}}),
           "max_position_embeddings", 16);
  ExpectMatchesReference(dynamic, 40, "rope_scaling");
}

TEST(ModelFamiliesTest, LlamaBiasesOnAttentionOutputAndMlp) {
  ExpectMatchesReference(With(With(kLlama31, "attention_bias", true), "mlp_bias", true), 16);
}

}  // namespace
}  // namespace paft::trainer
