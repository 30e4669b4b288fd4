// Real tokenizers (Llama-3, Qwen3, Gemma-3 and a Llama-2-family model) against goldens made by
// Hugging Face's own tokenizers: tests/tokenizer/golden/*.golden.json were written by
// make_goldens.py (the pinned PyPI tokenizers) from the same tokenizer files, on corpus.json's hard
// cases, so that this check runs without Python. Ids must be equal. (The larger generated corpus
// is tests/ecosystem/tokenizers_test.py, against tokenizers itself.) The tokenizer files are not
// committed: fetch_tokenizers.sh puts them in a cache ($PAFT_TOKENIZER_CACHE, else
// ~/.cache/paft/tokenizers; `./setup.sh test` runs it), and without them these tests skip.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/file_util.h"
#include "tests/testing/tokenizer_cache.h"
#include "nlohmann/json.hpp"
#include "tests/testing/process.h"
#include "tests/testing/temp_dir.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/hf/tokenizer.h"

namespace paft::tokenizer::hf {
namespace {

using json = nlohmann::json;

class HfGoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(HfGoldenTest, EncodesAndDecodesAsTheReference) {
  const std::string folder = JoinPath(testing::TokenizerCacheDir(), GetParam());
  if (!IsRegularFile(JoinPath(folder, "tokenizer.json"))) {
    GTEST_SKIP() << "no " << folder << "/tokenizer.json: run tests/tokenizer/golden/fetch_tokenizers.sh";
  }
  auto tokenizer = HfTokenizer::Load(JoinPath(folder, "tokenizer.json"),
                                     JoinPath(folder, "tokenizer_config.json"));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  auto text = ReadFileToString(JoinPath(PAFT_GOLDEN_DIR, GetParam() + ".golden.json"));
  ASSERT_TRUE(text.ok()) << text.status();
  const json goldens = json::parse(*text);
  ASSERT_GE(goldens.size(), 40u);
  int64_t ids_checked = 0;
  for (const json& g : goldens) {
    const std::string input = g["text"];
    auto ids = (*tokenizer)->Encode(input);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(json(*ids), g["ids"]) << "text: " << json(input).dump();
    EXPECT_EQ((*tokenizer)->Decode(g["ids"].get<std::vector<uint32_t>>()),
              g["decoded"].get<std::string>())
        << "text: " << json(input).dump();
    ids_checked += g["ids"].size();
  }
  RecordProperty("ids_checked", static_cast<int>(ids_checked));
}

INSTANTIATE_TEST_SUITE_P(Families, HfGoldenTest,
                         ::testing::Values("llama3", "qwen3", "gemma3", "llama2"));

// TRL's tokenization with real tokenizers: a prompt-completion pair is one sequence split where
// it and the prompt's own tokens diverge (here: where the prompt ends); a conversation's prompt
// is its rendering up to the last assistant turn with the generation prompt.
TEST(HfPrepareTest, PromptAndCompletionAreOneSequenceAsInTrl) {
  const std::string llama2 = JoinPath(testing::TokenizerCacheDir(), "llama2"), qwen3 = JoinPath(testing::TokenizerCacheDir(), "qwen3");
  if (!IsRegularFile(JoinPath(llama2, "tokenizer.json")) ||
      !IsRegularFile(JoinPath(qwen3, "tokenizer.json"))) {
    GTEST_SKIP() << "tokenizers not fetched: run tests/tokenizer/golden/fetch_tokenizers.sh";
  }
  auto spm = HfTokenizer::Load(JoinPath(llama2, "tokenizer.json"), JoinPath(llama2, "tokenizer_config.json"));
  ASSERT_TRUE(spm.ok()) << spm.status();
  const HfTokenizer& t = **spm;
  // Separately, the completion " 4" would start with its own "▁" token; in one sequence it does
  // not: the ids are those of the whole text.
  const std::string prompt = "Question: what is 2+2? Answer:", completion = " 4";
  auto prepared = PrepareJsonl(json{{"prompt", prompt}, {"completion", completion}}.dump(), {}, &t);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  const TokenExample& e = prepared->examples[0];
  std::vector<uint32_t> whole = {static_cast<uint32_t>(t.bos_id())};
  auto ids = t.Encode(prompt + completion);
  whole.insert(whole.end(), ids->begin(), ids->end());
  whole.push_back(static_cast<uint32_t>(t.eos_id()));
  std::vector<uint32_t> got = e.prompt;
  got.insert(got.end(), e.completion.begin(), e.completion.end());
  EXPECT_EQ(got, whole);
  auto prompt_ids = t.Encode(prompt);
  EXPECT_EQ(e.prompt.size(), prompt_ids->size() + 1);
  auto separate = t.Encode(completion);
  EXPECT_NE(std::vector<uint32_t>(e.completion.begin(), e.completion.end() - 1), *separate)
      << "this case should show the boundary token";

  // A conversation with Qwen3's own chat template.
  auto qwen = HfTokenizer::Load(JoinPath(qwen3, "tokenizer.json"), JoinPath(qwen3, "tokenizer_config.json"));
  auto chat = ChatTemplate::Load(JoinPath(qwen3, "tokenizer_config.json"));
  ASSERT_TRUE(qwen.ok() && chat.ok() && chat->has_value());
  PrepareOptions options;
  options.render_chat = [&](const nlohmann::ordered_json& messages, bool generation_prompt) {
    return (*chat)->Render(messages, generation_prompt);
  };
  const nlohmann::ordered_json messages = nlohmann::ordered_json::parse(
      R"([{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello, friend."}])");
  auto conversation = PrepareJsonl(nlohmann::ordered_json{{"messages", messages}}.dump(), options, qwen->get());
  ASSERT_TRUE(conversation.ok()) << conversation.status();
  const TokenExample& c = conversation->examples[0];
  auto whole_text = (*chat)->Render(messages, false);
  auto prompt_text = (*chat)->Render(nlohmann::ordered_json::array({messages[0]}), true);
  EXPECT_EQ(*prompt_text, "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n");
  std::vector<uint32_t> all = c.prompt;
  all.insert(all.end(), c.completion.begin(), c.completion.end());
  EXPECT_EQ(all, *(*qwen)->Encode(*whole_text));  // no BOS/EOS added: the template has its own
  EXPECT_EQ(c.prompt, *(*qwen)->Encode(*prompt_text));
  EXPECT_EQ((*qwen)->Decode(c.completion), "<think>\n\n</think>\n\nHello, friend.<|im_end|>\n");
  EXPECT_EQ(conversation->boundary_mismatches, 0);
}

// Every assistant turn with real templates: Gemma-3's renders earlier turns the same in longer
// conversations (the trained spans decode to the assistant messages and their end-of-turn
// tokens); Qwen3's adds reasoning blocks only after the last user turn, and this Llama-3 template
// appends an assistant header whatever add_generation_prompt says, so both are refused.
TEST(HfPrepareTest, AllAssistantTurnsWithRealTemplates) {
  const std::string gemma3 = JoinPath(testing::TokenizerCacheDir(), "gemma3"), qwen3 = JoinPath(testing::TokenizerCacheDir(), "qwen3"),
                    llama3 = JoinPath(testing::TokenizerCacheDir(), "llama3");
  for (const std::string& folder : {gemma3, qwen3, llama3}) {
    if (!IsRegularFile(JoinPath(folder, "tokenizer.json"))) {
      GTEST_SKIP() << "tokenizers not fetched: run tests/tokenizer/golden/fetch_tokenizers.sh";
    }
  }
  const std::string conversation =
      R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},)"
      R"( {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "See you."}]})";
  for (const std::string& folder : {gemma3, qwen3, llama3}) {
    auto tokenizer = HfTokenizer::Load(JoinPath(folder, "tokenizer.json"), JoinPath(folder, "tokenizer_config.json"));
    auto chat = ChatTemplate::Load(JoinPath(folder, "tokenizer_config.json"));
    ASSERT_TRUE(tokenizer.ok() && chat.ok() && chat->has_value());
    PrepareOptions options;
    options.assistant_turns = "all";
    options.render_chat = [&](const nlohmann::ordered_json& messages, bool generation_prompt) {
      return (*chat)->Render(messages, generation_prompt);
    };
    auto r = PrepareJsonl(conversation, options, tokenizer->get());
    if (folder != gemma3) {
      EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("assistant_turns=last"));
      continue;
    }
    ASSERT_TRUE(r.ok()) << r.status();
    const TokenExample& e = r->examples[0];
    std::vector<std::string> trained;
    std::vector<uint32_t> span;
    for (size_t k = 0; k <= e.completion.size(); ++k) {
      if (k < e.completion.size() && TrainedToken(e.loss_runs, static_cast<int64_t>(k))) {
        span.push_back(e.completion[k]);
      } else if (!span.empty()) {
        trained.push_back((*tokenizer)->Decode(span));
        span.clear();
      }
    }
    EXPECT_THAT(trained, ::testing::ElementsAre("Hello!<end_of_turn>\n", "See you.<end_of_turn>\n"));
  }
}

// paft-prepare --tokenizer=FOLDER --encode / --decode: the folder's tokenizer.json wins over its
// tokenizer.model, lines in, lines out; a bad line is named.
TEST(HfPrepareCliTest, EncodeAndDecodeAModelFolder) {
  const std::string folder = JoinPath(testing::TokenizerCacheDir(), "qwen3");
  if (!IsRegularFile(JoinPath(folder, "tokenizer.json"))) {
    GTEST_SKIP() << "no " << folder << "/tokenizer.json: run tests/tokenizer/golden/fetch_tokenizers.sh";
  }
  testing::TempDir dir;
  const std::string input = dir.Join("in.jsonl");
  ASSERT_TRUE(WriteFileAtomic(input, "{\"text\": \"Hello world\"}\n{\"text\": \"<|im_start|>x\"}\n").ok());
  std::string out;
  ASSERT_EQ(testing::RunCommand({"/bin/sh", "-c", std::string(PAFT_PREPARE) + " --tokenizer=" +
                                                      folder + " --encode < " + input},
                                &out),
            0)
      << out;
  EXPECT_EQ(out, "{\"ids\":[9707,1879]}\n{\"ids\":[151644,87]}\n");
  out.clear();
  ASSERT_EQ(testing::RunCommand({PAFT_PREPARE, "--tokenizer=" + folder, "--decode=9707,1879,151644"},
                                &out),
            0);
  EXPECT_EQ(out, "Hello world<|im_start|>\n");
  ASSERT_TRUE(WriteFileAtomic(input, "{\"text\": 1}\n").ok());
  out.clear();
  EXPECT_EQ(testing::RunCommand({"/bin/sh", "-c", std::string(PAFT_PREPARE) + " --tokenizer=" +
                                                      folder + " --encode < " + input},
                                &out),
            2);
  EXPECT_NE(out.find("stdin line 1"), std::string::npos) << out;
}

}  // namespace
}  // namespace paft::tokenizer::hf
