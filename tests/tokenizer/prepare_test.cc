#include "tokenizer/prepare.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "common/token_dataset.h"
#include "tests/testing/process.h"
#include "tests/testing/temp_dir.h"

namespace paft::tokenizer {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// One token per character: 'a' -> 97, ...; BOS 1, EOS 2.
class CharTokenizer : public Tokenizer {
 public:
  absl::StatusOr<std::vector<uint32_t>> Encode(const std::string& text) const override {
    return std::vector<uint32_t>(text.begin(), text.end());
  }
  int64_t vocab_size() const override { return 256; }
  int64_t bos_id() const override { return 1; }
  int64_t eos_id() const override { return 2; }
};

TEST(PrepareTest, PromptCompletionWithBosEos) {
  CharTokenizer tok;
  auto r = PrepareJsonl("{\"prompt\": \"ab\", \"completion\": \"c\"}\n\n", {}, &tok);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->kind, DatasetKind::kSft);
  ASSERT_EQ(r->examples.size(), 1u);
  EXPECT_THAT(r->examples[0].prompt, ElementsAre(1, 'a', 'b'));
  EXPECT_THAT(r->examples[0].completion, ElementsAre('c', 2));
}

TEST(PrepareTest, MessagesTextPreferenceAndIds) {
  CharTokenizer tok;
  PrepareOptions o;
  o.chat_template = "plain";
  o.add_bos = o.add_eos = false;
  auto m = PrepareJsonl(
      R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})",
      o, &tok);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(std::string(m->examples[0].prompt.begin(), m->examples[0].prompt.end()),
            "user: hi\nassistant: ");
  EXPECT_EQ(std::string(m->examples[0].completion.begin(), m->examples[0].completion.end()), "yo");
  auto chatml = RenderChat(nlohmann::ordered_json::parse(
      R"([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])"), "chatml");
  ASSERT_TRUE(chatml.ok());
  EXPECT_EQ(chatml->first, "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(chatml->second, "a<|im_end|>");

  auto text = PrepareJsonl(R"({"text": "xyz"})", o, &tok);
  ASSERT_TRUE(text.ok());
  EXPECT_TRUE(text->examples[0].prompt.empty());
  EXPECT_EQ(text->examples[0].completion.size(), 3u);

  auto pref = PrepareJsonl(R"({"prompt_ids": [5, 6], "chosen_ids": [7], "rejected_ids": [8, 9]})",
                           o, nullptr);
  ASSERT_TRUE(pref.ok()) << pref.status();
  EXPECT_EQ(pref->kind, DatasetKind::kPreference);
  EXPECT_THAT(pref->examples[0].rejected, ElementsAre(8, 9));
}

TEST(PrepareTest, TruncationPolicies) {
  CharTokenizer tok;
  PrepareOptions o;
  o.add_bos = o.add_eos = false;
  o.max_length = 5;
  // TRL's keep_start (the default): sequence[:5]; an example whose prompt fills max_length has
  // no completion token left and is dropped.
  const std::string line = R"({"prompt": "abcd", "completion": "xyz"})";
  auto keep_start = PrepareJsonl(line + "\n" + R"({"prompt": "abcdef", "completion": "x"})", o, &tok);
  ASSERT_TRUE(keep_start.ok()) << keep_start.status();
  ASSERT_EQ(keep_start->examples.size(), 1u);
  EXPECT_THAT(keep_start->examples[0].prompt, ElementsAre('a', 'b', 'c', 'd'));
  EXPECT_THAT(keep_start->examples[0].completion, ElementsAre('x'));
  EXPECT_EQ(keep_start->truncated, 1);
  EXPECT_EQ(keep_start->dropped, 1);
  // keep_end: sequence[-5:], the prompt's start first, then the completion's.
  o.truncation_mode = "keep_end";
  auto keep_end =
      PrepareJsonl(line + "\n" + R"({"prompt": "ab", "completion": "uvwxyz"})", o, &tok);
  ASSERT_TRUE(keep_end.ok()) << keep_end.status();
  EXPECT_THAT(keep_end->examples[0].prompt, ElementsAre('c', 'd'));
  EXPECT_THAT(keep_end->examples[0].completion, ElementsAre('x', 'y', 'z'));
  EXPECT_THAT(keep_end->examples[1].prompt, ElementsAre());
  EXPECT_THAT(keep_end->examples[1].completion, ElementsAre('v', 'w', 'x', 'y', 'z'));
  // Preference pairs: TRL cuts the two sequences separately; one prompt per pair cannot hold that.
  auto pairs = PrepareJsonl(R"({"prompt": "a", "chosen": "b", "rejected": "c"})", o, &tok);
  ASSERT_FALSE(pairs.ok());
  EXPECT_THAT(std::string(pairs.status().message()), HasSubstr("keep_end is not supported"));
  o.truncation_mode = "drop";
  auto drop = PrepareJsonl(line + "\n" + R"({"prompt": "a", "completion": "b"})", o, &tok);
  ASSERT_TRUE(drop.ok());
  EXPECT_EQ(drop->dropped, 1);
  EXPECT_EQ(drop->examples.size(), 1u);
}

// Pre-tokenized records need no tokenizer; their ids are checked against the model's vocabulary.
TEST(PrepareTest, PreTokenizedRecordsWithoutATokenizer) {
  PrepareOptions o;
  o.vocab_size = 50;
  auto ok = PrepareJsonl("{\"prompt_ids\": [1, 2], \"completion_ids\": [49]}\n"
                         "{\"prompt_ids\": [3], \"completion_ids\": [4, 5]}",
                         o, nullptr);
  ASSERT_TRUE(ok.ok()) << ok.status();
  ASSERT_EQ(ok->examples.size(), 2u);
  EXPECT_EQ(ok->examples[0].prompt, (std::vector<uint32_t>{1, 2}));  // as given: no BOS/EOS
  EXPECT_EQ(ok->examples[0].completion, (std::vector<uint32_t>{49}));
  auto outside = PrepareJsonl("{\"prompt_ids\": [1], \"chosen_ids\": [2], \"rejected_ids\": [3]}\n"
                              "{\"prompt_ids\": [1], \"chosen_ids\": [2], \"rejected_ids\": [50]}",
                              o, nullptr);
  ASSERT_FALSE(outside.ok());
  EXPECT_THAT(std::string(outside.status().message()),
              HasSubstr("line 2: 'rejected_ids' id 50 is outside the vocabulary of 50"));
  auto text = PrepareJsonl(R"({"prompt": "a", "completion": "b"})", o, nullptr);
  ASSERT_FALSE(text.ok());
  EXPECT_THAT(std::string(text.status().message()), HasSubstr("line 1: 'prompt' is text"));
}

TEST(PrepareTest, BadRecordsNameTheLineAndKey) {
  CharTokenizer tok;
  auto expect = [&](const std::string& jsonl, const std::string& fragment) {
    auto r = PrepareJsonl(jsonl, {}, &tok);
    ASSERT_FALSE(r.ok()) << jsonl;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(fragment)) << jsonl;
  };
  expect("{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\"}", "line 2: missing 'completion'");
  expect("{\"prompt\": 3, \"completion\": \"b\"}", "line 1: 'prompt' must be a string");
  expect("not json", "line 1: not a JSON object");
  expect("{\"prompt\": \"p\", \"chosen\": \"c\"}", "line 1: missing 'rejected'");
  expect("{\"prompt_ids\": [1, -2], \"completion_ids\": [3]}", "'prompt_ids' holds a non-token");
  expect("{\"prompt_ids\": [1], \"completion_ids\": [300]}", "outside the vocabulary");
  expect("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", "ending with an 'assistant' message");
  expect("", "no usable example");
}

TEST(TokenDatasetTest, RoundTripAndCorruption) {
  testing::TempDir dir;
  std::vector<TokenExample> examples = {{{1, 2}, {3}, {4, 5, 6}, {}}, {{}, {7, 8}, {9}, {}}};
  const std::string path = dir.Join("d.paftds");
  ASSERT_TRUE(WriteTokenDataset(path, DatasetKind::kPreference, examples, {{"source", "x"}}).ok());
  auto ds = TokenDataset::Open(path);
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ((*ds)->size(), 2);
  EXPECT_EQ((*ds)->kind(), DatasetKind::kPreference);
  EXPECT_THAT((*ds)->rejected(0), ElementsAre(4, 5, 6));
  EXPECT_THAT((*ds)->completion(1), ElementsAre(7, 8));
  EXPECT_TRUE((*ds)->prompt(1).empty());
  EXPECT_EQ((*ds)->header()["source"], "x");
  EXPECT_EQ((*ds)->fingerprint().size(), 16u);
  // A flipped token byte breaks the fingerprint; a cut file breaks the sizes.
  auto bytes = ReadFileToString(path);
  std::string flipped = *bytes;
  flipped[flipped.size() - 2] ^= 1;
  ASSERT_TRUE(WriteFileAtomic(path, flipped).ok());
  EXPECT_THAT(std::string(TokenDataset::Open(path).status().message()), HasSubstr("fingerprint"));
  ASSERT_TRUE(WriteFileAtomic(path, bytes->substr(0, bytes->size() - 4)).ok());
  EXPECT_EQ(TokenDataset::Open(path).status().code(), absl::StatusCode::kDataLoss);
  ASSERT_TRUE(WriteFileAtomic(path, "{\"prompt\": \"a\"}\n").ok());
  EXPECT_THAT(std::string(TokenDataset::Open(path).status().message()), HasSubstr("paft-prepare"));
}

TEST(TokenDatasetTest, LossRunsRoundTripAndMustCoverTheCompletion) {
  testing::TempDir dir;
  TokenExample e;
  e.prompt = {1, 2};
  e.completion = {3, 4, 5, 6, 7, 8};
  e.loss_runs = {2, 3, 1};  // trained 3 4, untrained 5 6 7, trained 8
  const std::string path = dir.Join("runs.paftds");
  ASSERT_TRUE(WriteTokenDataset(path, DatasetKind::kSft, {e, {{1}, {9}, {}, {}}}).ok());
  auto ds = TokenDataset::Open(path);
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_THAT((*ds)->loss_runs(0), ElementsAre(2, 3, 1));
  EXPECT_TRUE((*ds)->loss_runs(1).empty());
  EXPECT_TRUE((*ds)->rejected(0).empty());
  std::vector<bool> trained;
  for (int k = 0; k < 6; ++k) trained.push_back(TrainedToken((*ds)->loss_runs(0), k));
  EXPECT_THAT(trained, ElementsAre(true, true, false, false, false, true));
  EXPECT_TRUE(TrainedToken({}, 5));
  std::vector<uint32_t> runs = {2, 3, 1};
  TruncateRuns(&runs, 4);
  EXPECT_THAT(runs, ElementsAre(2, 2));
  // keep_end cuts from the front: trained 2, untrained 3, trained 4 -> the same tokens' flags.
  for (int cut = 0; cut <= 9; ++cut) {
    std::vector<uint32_t> front = {2, 3, 4};
    DropRunsFront(&front, cut);
    for (int k = 0; k + cut < 9; ++k) {
      EXPECT_EQ(TrainedToken(front, k), TrainedToken({2, 3, 4}, k + cut)) << cut << " " << k;
    }
  }
  std::vector<uint32_t> front = {2, 3, 4};
  DropRunsFront(&front, 3);
  EXPECT_THAT(front, ElementsAre(0, 2, 4));
  e.loss_runs = {2, 3};
  EXPECT_THAT(std::string(WriteTokenDataset(path, DatasetKind::kSft, {e}).message()),
              HasSubstr("loss runs cover 5 tokens, its completion has 6"));
}

// Every assistant turn trained: with a template "<role>: <content>\n" (prompt "assistant: "),
// one character per token, the spans of the two assistant turns are trained and the user turn
// between them is not.
TEST(PrepareTest, AllAssistantTurns) {
  CharTokenizer tok;
  PrepareOptions o;
  o.render_chat = [](const nlohmann::ordered_json& messages, bool generation_prompt)
      -> absl::StatusOr<std::string> {
    std::string out;
    for (const auto& m : messages) {
      out += m["role"].get<std::string>() + ": " + m["content"].get<std::string>() + "\n";
    }
    if (generation_prompt) out += "assistant: ";
    return out;
  };
  o.assistant_turns = "all";
  auto r = PrepareJsonl(R"({"messages": [{"role": "user", "content": "q1"},)"
                        R"( {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"},)"
                        R"( {"role": "assistant", "content": "a2"}]})",
                        o, &tok);
  ASSERT_TRUE(r.ok()) << r.status();
  const TokenExample& e = r->examples[0];
  EXPECT_EQ(std::string(e.prompt.begin(), e.prompt.end()), "user: q1\nassistant: ");
  EXPECT_EQ(std::string(e.completion.begin(), e.completion.end()), "a1\nuser: q2\nassistant: a2\n");
  // "a1\n" trained, "user: q2\nassistant: " not, "a2\n" trained.
  EXPECT_THAT(e.loss_runs, ElementsAre(3, 20, 3));
  // A template that renders an earlier turn differently once the conversation goes on.
  o.render_chat = [](const nlohmann::ordered_json& messages, bool) -> absl::StatusOr<std::string> {
    return std::to_string(messages.size());
  };
  auto refused = PrepareJsonl(R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})",
                              o, &tok);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("use assistant_turns=last"));
  o.render_chat = nullptr;
  EXPECT_THAT(std::string(PrepareJsonl("{}", o, &tok).status().message()),
              HasSubstr("needs the model's own chat template"));
}

// The real binary with a real sentencepiece model trained here by spm_train.
TEST(PrepareBinaryTest, TokenizesWithSentencepiece) {
  testing::TempDir dir;
  std::string corpus;
  const char* words[] = {"the", "cat", "sat", "on", "mat", "hello", "what", "is", "two", "plus"};
  for (int i = 0; i < 300; ++i) {
    for (int w = 0; w < 6; ++w) corpus += std::string(words[(i * 7 + w * 3) % 10]) + " ";
    corpus += "\n";
  }
  ASSERT_TRUE(WriteFileAtomic(dir.Join("corpus.txt"), corpus).ok());
  std::string out;
  ASSERT_EQ(testing::RunCommand({"/usr/bin/spm_train", "--input=" + dir.Join("corpus.txt"),
                                 "--model_prefix=" + dir.Join("tok"), "--vocab_size=40",
                                 "--model_type=bpe", "--bos_id=1", "--eos_id=2", "--unk_id=0"},
                                &out),
            0)
      << out;
  ASSERT_TRUE(WriteFileAtomic(dir.Join("sft.jsonl"),
                              "{\"prompt\": \"what is two\", \"completion\": \" the cat\"}\n")
                  .ok());
  out.clear();
  ASSERT_EQ(testing::RunCommand({PAFT_PREPARE, "--tokenizer=" + dir.Join("tok.model"),
                                 "--input=" + dir.Join("sft.jsonl"),
                                 "--output=" + dir.Join("sft.paftds")},
                                &out),
            0)
      << out;
  auto ds = TokenDataset::Open(dir.Join("sft.paftds"));
  ASSERT_TRUE(ds.ok()) << ds.status();
  ASSERT_EQ((*ds)->size(), 1);
  EXPECT_EQ((*ds)->prompt(0)[0], 1u);                           // BOS
  EXPECT_EQ((*ds)->completion(0)[(*ds)->completion(0).size() - 1], 2u);  // EOS
  // Decoding the completion (without EOS) gives the text back.
  std::vector<std::string> ids;
  for (size_t i = 0; i + 1 < (*ds)->completion(0).size(); ++i) {
    ids.push_back(std::to_string((*ds)->completion(0)[i]));
  }
  out.clear();
  ASSERT_EQ(testing::RunCommand({PAFT_PREPARE, "--tokenizer=" + dir.Join("tok.model"),
                                 "--decode=" + absl::StrJoin(ids, ",")},
                                &out),
            0);
  EXPECT_THAT(out, HasSubstr("the cat"));
  // A bad record fails with exit code 2 and names the line.
  ASSERT_TRUE(WriteFileAtomic(dir.Join("bad.jsonl"), "{\"prompt\": \"x\"}\n").ok());
  out.clear();
  EXPECT_EQ(testing::RunCommand({PAFT_PREPARE, "--tokenizer=" + dir.Join("tok.model"),
                                 "--input=" + dir.Join("bad.jsonl"),
                                 "--output=" + dir.Join("bad.paftds")},
                                &out),
            2);
  EXPECT_THAT(out, HasSubstr("line 1: missing 'completion'"));
  // --max_seq_len, the old name of --max_length, still works (the same file as --max_length);
  // beside a different --max_length it is refused, naming both.
  // The cap: one token less than the example (its completion has more than one token).
  const size_t cap = (*ds)->prompt(0).size() + (*ds)->completion(0).size() - 1;
  std::map<std::string, std::vector<std::vector<uint32_t>>> cut;  // prompt, completion, ...
  for (const std::string& flag :
       {absl::StrCat("--max_length=", cap), absl::StrCat("--max_seq_len=", cap)}) {
    out.clear();
    ASSERT_EQ(testing::RunCommand({PAFT_PREPARE, "--tokenizer=" + dir.Join("tok.model"),
                                   "--input=" + dir.Join("sft.jsonl"),
                                   "--output=" + dir.Join("cut.paftds"), flag},
                                  &out),
              0)
        << flag << ": " << out;
    auto ds6 = TokenDataset::Open(dir.Join("cut.paftds"));
    ASSERT_TRUE(ds6.ok()) << ds6.status();
    for (int64_t i = 0; i < (*ds6)->size(); ++i) {
      EXPECT_EQ((*ds6)->prompt(i).size() + (*ds6)->completion(i).size(), cap) << flag;
      const auto prompt = (*ds6)->prompt(i), completion = (*ds6)->completion(i);
      cut[flag].emplace_back(prompt.begin(), prompt.end());
      cut[flag].emplace_back(completion.begin(), completion.end());
    }
  }
  ASSERT_EQ(cut.size(), 2u);
  EXPECT_EQ(cut.begin()->second, cut.rbegin()->second);
  EXPECT_FALSE(cut.begin()->second.empty());
  out.clear();
  EXPECT_EQ(testing::RunCommand({PAFT_PREPARE, "--tokenizer=" + dir.Join("tok.model"),
                                 "--input=" + dir.Join("sft.jsonl"),
                                 "--output=" + dir.Join("cut.paftds"), "--max_seq_len=4",
                                 "--max_length=8"},
                                &out),
            2);
  EXPECT_THAT(out, HasSubstr("--max_seq_len is the old name of --max_length"));
}

}  // namespace
}  // namespace paft::tokenizer
