#include "common/hf_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

namespace paft {
namespace {

using ::testing::HasSubstr;

TEST(HfConfigTest, ParsesALlamaConfig) {
  auto c = ParseModelConfig(R"({
    "model_type": "llama", "vocab_size": 32000, "hidden_size": 4096,
    "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 32, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "tie_word_embeddings": false, "hidden_act": "silu", "torch_dtype": "float16",
    "bos_token_id": 1, "eos_token_id": 2})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->num_key_value_heads, 32);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_EQ(c->raw["torch_dtype"], "float16");
  // Llama-2-7B has 6,738,415,616 parameters.
  EXPECT_EQ(c->ParameterCount(), 6738415616);
}

TEST(HfConfigTest, Qwen2DefaultsToQkvBiasAndGqa) {
  auto c = ParseModelConfig(R"({"model_type": "qwen2", "vocab_size": 100, "hidden_size": 64,
    "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 8,
    "num_key_value_heads": 2, "eos_token_id": [5, 6]})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->attention_bias);
  EXPECT_EQ(c->head_dim, 8);
  EXPECT_EQ(c->eos_token_id(), 5);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int64_t>{5, 6}));
}

TEST(HfConfigTest, ErrorsNameTheKey) {
  auto missing = ParseModelConfig(R"({"model_type": "llama", "vocab_size": 10})");
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("'hidden_size' is required"));
  auto gqa = ParseModelConfig(R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 64, "intermediate_size": 8,
    "num_hidden_layers": 1, "num_attention_heads": 8, "num_key_value_heads": 3})");
  EXPECT_THAT(std::string(gqa.status().message()), HasSubstr("'num_key_value_heads'"));
  auto type = ParseModelConfig(R"({"model_type": "llama", "vocab_size": "ten"})");
  EXPECT_THAT(std::string(type.status().message()), HasSubstr("'vocab_size' must be an integer"));
  auto act = ParseModelConfig(R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 64, "intermediate_size": 8,
    "num_hidden_layers": 1, "num_attention_heads": 8, "hidden_act": "gelu"})");
  EXPECT_THAT(std::string(act.status().message()), HasSubstr("'hidden_act'"));
  EXPECT_FALSE(ParseModelConfig("not json").ok());
}


// A small valid config of `model_type` with `extra` keys merged in (null values remove a key).
absl::StatusOr<ModelConfig> Parse(const std::string& model_type, const nlohmann::json& extra) {
  nlohmann::json j = {{"model_type", model_type}, {"vocab_size", 10}, {"hidden_size", 16},
                      {"intermediate_size", 8}, {"num_hidden_layers", 1},
                      {"num_attention_heads", 2}};
  if (extra.is_object()) j.merge_patch(extra);
  return ParseModelConfig(j.dump());
}

std::string Message(const absl::StatusOr<ModelConfig>& c) {
  return c.ok() ? "ok" : std::string(c.status().message());
}

TEST(HfConfigTest, OnlyTheSupportedFamiliesAreAccepted) {
  for (const char* type : {"llama", "mistral", "qwen2"}) EXPECT_TRUE(Parse(type, {}).ok()) << type;
  EXPECT_THAT(Message(Parse("granite", {})),
              HasSubstr("'model_type' 'granite' is not supported (supported: llama, mistral, qwen2)"));
  EXPECT_THAT(Message(Parse("llama", {{"model_type", nullptr}})), HasSubstr("'model_type' is required"));
}

TEST(HfConfigTest, KeysThatWouldChangeTheNumbersAreRefusedByName) {
  EXPECT_THAT(Message(Parse("llama", {{"attn_logit_softcapping", 50.0}})),
              HasSubstr("'attn_logit_softcapping' is not a key of a 'llama' config"));
  EXPECT_THAT(Message(Parse("llama", {{"embedding_multiplier", 12.0}})),
              HasSubstr("'embedding_multiplier'"));
  EXPECT_THAT(Message(Parse("llama", {{"quantization_config", {{"quant_method", "awq"}}}})),
              HasSubstr("'quantization_config'"));
  EXPECT_THAT(Message(Parse("llama", {{"partial_rotary_factor", 0.5}})),
              HasSubstr("'partial_rotary_factor' is not supported"));
  EXPECT_THAT(Message(Parse("llama", {{"attention_dropout", 0.1}})),
              HasSubstr("'attention_dropout' (0.1) is not supported"));
  EXPECT_THAT(Message(Parse("qwen2", {{"use_sliding_window", true}})),
              HasSubstr("'use_sliding_window' true is not supported"));
  // Keys of one family are not keys of another: Qwen2 always has q/k/v biases.
  EXPECT_THAT(Message(Parse("qwen2", {{"attention_bias", false}})), HasSubstr("'attention_bias'"));
  EXPECT_THAT(Message(Parse("mistral", {{"rope_scaling", {{"type", "linear"}, {"factor", 2.0}}}})),
              HasSubstr("'rope_scaling' is not supported for mistral"));
  EXPECT_THAT(Message(Parse("mistral", {{"sliding_window", 0}})), HasSubstr("'sliding_window'"));
}

TEST(HfConfigTest, RopeScalingIsReadOrRefusedByName) {
  auto llama3 = Parse("llama", {{"rope_scaling",
                                 {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                                  {"high_freq_factor", 4.0},
                                  {"original_max_position_embeddings", 8192}}}});
  ASSERT_TRUE(llama3.ok()) << llama3.status();
  EXPECT_EQ(llama3->rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_EQ(llama3->rope_scaling.original_max_position_embeddings, 8192);
  auto yarn = Parse("qwen2", {{"rope_scaling", {{"type", "yarn"}, {"factor", 4.0}}}});
  ASSERT_TRUE(yarn.ok()) << yarn.status();
  EXPECT_NEAR(yarn->rope_scaling.attention_factor, 0.1 * std::log(4.0) + 1, 1e-12);
  EXPECT_TRUE(Parse("llama", {{"rope_scaling", {{"type", "default"}}}}).ok());

  EXPECT_THAT(Message(Parse("llama", {{"rope_scaling", {{"rope_type", "longrope"}}}})),
              HasSubstr("'rope_scaling.rope_type' 'longrope' is not supported"));
  EXPECT_THAT(Message(Parse("llama", {{"rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0}}}})),
              HasSubstr("'rope_scaling.low_freq_factor' is required"));
  EXPECT_THAT(Message(Parse("llama", {{"rope_scaling", {{"type", "linear"}}}})),
              HasSubstr("'rope_scaling.factor' is required"));
  EXPECT_THAT(Message(Parse("llama", {{"rope_scaling",
                                       {{"type", "yarn"}, {"factor", 4.0}, {"mscale", 0.7}}}})),
              HasSubstr("'rope_scaling.mscale' is not supported with rope_type 'yarn'"));
  EXPECT_THAT(Message(Parse("llama", {{"rope_scaling",
                                       {{"type", "yarn"}, {"factor", 4.0},
                                        {"original_max_position_embeddings", 4096}}}})),
              HasSubstr("'rope_scaling.original_max_position_embeddings' (4096) differs"));
  EXPECT_THAT(Message(Parse("llama", {{"rope_scaling",
                                       {{"type", "linear"}, {"rope_type", "dynamic"}, {"factor", 2.0}}}})),
              HasSubstr("contradicts"));
  EXPECT_THAT(Message(Parse("llama", {{"rope_scaling", "linear"}})),
              HasSubstr("'rope_scaling' must be an object or null"));
}

TEST(HfConfigTest, ShapesComeFromTheConfig) {
  auto c = Parse("llama", {{"head_dim", 12}, {"num_key_value_heads", 1}, {"attention_bias", true},
                           {"mlp_bias", true}, {"eos_token_id", {7, 8, 9}}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 12);
  EXPECT_TRUE(c->attention_bias && c->output_bias && c->mlp_bias);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int64_t>{7, 8, 9}));
  // Embeddings and head 2*10*16; attention q,o 2*16*24 + k,v 2*16*12 + biases 24+12+12+16;
  // MLP 3*16*8 + biases 8+8+16; norms 3*16.
  EXPECT_EQ(c->ParameterCount(), 320 + 768 + 384 + 64 + 384 + 32 + 48);
  EXPECT_THAT(Message(Parse("llama", {{"eos_token_id", {1, "two"}}})), HasSubstr("'eos_token_id'"));
}

}  // namespace
}  // namespace paft
