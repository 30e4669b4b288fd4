// generation_config.json as evaluation reads it: real files of the supported families parse,
// greedy-changing settings that are not implemented are refused by name.
#include "common/generation_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace paft {
namespace {

using ::testing::HasSubstr;

ModelConfig Model() {
  auto c = ParseModelConfig(R"({"model_type": "qwen2", "vocab_size": 10, "hidden_size": 16,
    "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
    "eos_token_id": 7})");
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

TEST(GenerationConfigTest, RealFilesParse) {
  // Qwen/Qwen2.5-0.5B-Instruct's generation_config.json.
  auto qwen = ParseGenerationConfig(R"({"bos_token_id": 151643, "pad_token_id": 151643,
    "do_sample": true, "eos_token_id": [151645, 151643], "repetition_penalty": 1.1,
    "temperature": 0.7, "top_p": 0.8, "top_k": 20, "transformers_version": "4.37.0"})",
                                    Model());
  ASSERT_TRUE(qwen.ok()) << qwen.status();
  EXPECT_EQ(qwen->eos_token_ids, (std::vector<int64_t>{151645, 151643}));
  EXPECT_DOUBLE_EQ(qwen->repetition_penalty, 1.1);
  EXPECT_EQ(qwen->sampling["top_k"], 20);
  // mistralai/Mistral-7B-v0.1's: the stop token of config.json stays.
  auto mistral = ParseGenerationConfig(R"({"_from_model_config": true, "bos_token_id": 1,
    "transformers_version": "4.34.0.dev0"})",
                                       Model());
  ASSERT_TRUE(mistral.ok()) << mistral.status();
  EXPECT_EQ(mistral->eos_token_ids, (std::vector<int64_t>{7}));
  // Neutral values of greedy-changing settings are fine.
  EXPECT_TRUE(ParseGenerationConfig(R"({"num_beams": 1, "no_repeat_ngram_size": 0,
    "bad_words_ids": null, "min_length": 0})", Model()).ok());
}

TEST(GenerationConfigTest, UnimplementedGreedySettingsAreRefusedByName) {
  for (const char* text : {R"({"num_beams": 4})", R"({"no_repeat_ngram_size": 3})",
                           R"({"bad_words_ids": [[5]]})", R"({"min_new_tokens": 2})",
                           R"({"forced_eos_token_id": 2})", R"({"some_new_setting": 1})"}) {
    auto g = ParseGenerationConfig(text, Model());
    ASSERT_FALSE(g.ok()) << text;
    const std::string key = nlohmann::json::parse(text).begin().key();
    EXPECT_THAT(std::string(g.status().message()), HasSubstr("'" + key + "'")) << text;
  }
  EXPECT_THAT(std::string(ParseGenerationConfig(R"({"repetition_penalty": 0})", Model())
                              .status()
                              .message()),
              HasSubstr("'repetition_penalty' must be positive"));
  EXPECT_FALSE(ParseGenerationConfig("[1]", Model()).ok());
}

}  // namespace
}  // namespace paft
