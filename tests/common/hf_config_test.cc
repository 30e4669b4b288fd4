#include "common/hf_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace paft {
namespace {

using ::testing::HasSubstr;

TEST(HfConfigTest, ParsesALlamaConfig) {
  auto c = ParseModelConfig(R"({
    "model_type": "llama", "vocab_size": 32000, "hidden_size": 4096,
    "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 32, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "tie_word_embeddings": false, "hidden_act": "silu", "torch_dtype": "float16",
    "bos_token_id": 1, "eos_token_id": 2, "some_future_key": {"x": 1}})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->num_key_value_heads, 32);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_TRUE(c->raw.contains("some_future_key"));
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
  EXPECT_EQ(c->eos_token_id, 5);
}

TEST(HfConfigTest, ErrorsNameTheKey) {
  auto missing = ParseModelConfig(R"({"vocab_size": 10})");
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("'hidden_size' is required"));
  auto gqa = ParseModelConfig(R"({"vocab_size": 10, "hidden_size": 64, "intermediate_size": 8,
    "num_hidden_layers": 1, "num_attention_heads": 8, "num_key_value_heads": 3})");
  EXPECT_THAT(std::string(gqa.status().message()), HasSubstr("'num_key_value_heads'"));
  auto type = ParseModelConfig(R"({"vocab_size": "ten"})");
  EXPECT_THAT(std::string(type.status().message()), HasSubstr("'vocab_size' must be an integer"));
  auto act = ParseModelConfig(R"({"vocab_size": 10, "hidden_size": 64, "intermediate_size": 8,
    "num_hidden_layers": 1, "num_attention_heads": 8, "hidden_act": "gelu"})");
  EXPECT_THAT(std::string(act.status().message()), HasSubstr("'hidden_act'"));
  EXPECT_FALSE(ParseModelConfig("not json").ok());
}

}  // namespace
}  // namespace paft
