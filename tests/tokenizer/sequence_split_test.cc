// TRL 1.16's prompt/answer boundary and implicit prompts (tokenizer/sequence_split.h), through
// PrepareJsonl as paft-prepare runs it. TRL's own tokenization of real tokenizer files is
// compared in tests/ecosystem/trl_test.py; these cases pin the rules with a tokenizer whose
// merges are known.
#include "tokenizer/sequence_split.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "nlohmann/json.hpp"
#include "tokenizer/prepare.h"

namespace paft::tokenizer {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::ordered_json;

// One token per byte, except that "xy" is one token (300): a merge across a boundary. BOS 1, EOS 2.
class MergingTokenizer : public Tokenizer {
 public:
  absl::StatusOr<std::vector<uint32_t>> Encode(const std::string& text) const override {
    std::vector<uint32_t> ids;
    for (size_t i = 0; i < text.size(); ++i) {
      if (text.compare(i, 2, "xy") == 0) {
        ids.push_back(300);
        ++i;
      } else {
        ids.push_back(static_cast<unsigned char>(text[i]));
      }
    }
    return ids;
  }
  int64_t vocab_size() const override { return 400; }
  int64_t bos_id() const override { return 1; }
  int64_t eos_id() const override { return 2; }
};

TEST(SequenceSplitTest, TheCompletionStartsWhereThePromptAndTheWholeDiverge) {
  MergingTokenizer tok;
  // "ax" + "yb": the whole is [BOS a 300 b EOS]; the prompt alone [BOS a x] shares [BOS a]: the
  // merged token belongs to the completion (TRL 1.16), not to the prompt.
  auto r = PrepareJsonl(R"({"prompt": "ax", "completion": "yb"})", {}, &tok);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->examples[0].prompt, ElementsAre(1, 'a'));
  EXPECT_THAT(r->examples[0].completion, ElementsAre(300, 'b', 2));
  EXPECT_EQ(r->boundary_mismatches, 1);
  // A clean boundary: the prompt's own tokens.
  auto clean = PrepareJsonl(R"({"prompt": "ab", "completion": "c"})", {}, &tok);
  ASSERT_TRUE(clean.ok());
  EXPECT_THAT(clean->examples[0].prompt, ElementsAre(1, 'a', 'b'));
  EXPECT_EQ(clean->boundary_mismatches, 0);
}

TEST(SequenceSplitTest, PreferencePairsAreWholeSequencesSplitAtTheEarlierDivergence) {
  MergingTokenizer tok;
  // chosen merges into the prompt's last token, rejected does not: both answers start at the
  // earlier boundary, so the prompt is one for both (TRL's min of the two prefixes).
  auto r = PrepareJsonl(R"({"prompt": "ax", "chosen": "yc", "rejected": "zd"})", {}, &tok);
  ASSERT_TRUE(r.ok()) << r.status();
  const TokenExample& e = r->examples[0];
  EXPECT_THAT(e.prompt, ElementsAre(1, 'a'));
  EXPECT_THAT(e.completion, ElementsAre(300, 'c', 2));
  EXPECT_THAT(e.rejected, ElementsAre('x', 'z', 'd', 2));
  EXPECT_EQ(r->boundary_mismatches, 1);
  // EOS is not doubled when an answer ends with it already.
  MergingTokenizer plain;
  auto eos = PrepareJsonl("{\"prompt\": \"p\", \"chosen\": \"c\\u0002\", \"rejected\": \"r\"}", {}, &plain);
  ASSERT_TRUE(eos.ok()) << eos.status();
  EXPECT_THAT(eos->examples[0].completion, ElementsAre('c', 2));
}

TEST(SequenceSplitTest, ImplicitPromptsAreTheSharedBeginning) {
  // Strings: the common beginning, giving its trailing space to the answers (TRL's
  // extract_prompt), at a code point boundary ("é" and "è" share their first byte).
  auto text = ExtractPrompt(json("Q: sky? A: blue"), json("Q: sky? A: green"));
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ((*text)[0], "Q: sky? A:");
  EXPECT_EQ((*text)[1], " blue");
  EXPECT_EQ((*text)[2], " green");
  auto accents = ExtractPrompt(json("caf\xC3\xA9"), json("caf\xC3\xA8"));
  ASSERT_TRUE(accents.ok());
  EXPECT_EQ((*accents)[0], "caf");
  // Conversations: the shared leading messages.
  const json chosen = json::parse(R"([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])");
  const json rejected = json::parse(R"([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "go"}])");
  auto chat = ExtractPrompt(chosen, rejected);
  ASSERT_TRUE(chat.ok());
  EXPECT_EQ((*chat)[0], json::parse(R"([{"role": "user", "content": "hi"}])"));
  EXPECT_EQ((*chat)[2], json::parse(R"([{"role": "assistant", "content": "go"}])"));
  // No prompt to take, or no preference left: refused, not guessed.
  EXPECT_THAT(std::string(ExtractPrompt(json("abc"), json("xyz")).status().message()),
              HasSubstr("no common beginning"));
  EXPECT_THAT(std::string(ExtractPrompt(json("abc"), json("abcd")).status().message()),
              HasSubstr("prefix of the other"));
  EXPECT_THAT(std::string(ExtractPrompt(json("abc"), chosen).status().message()),
              HasSubstr("both be strings or both be lists"));

  // Through PrepareJsonl: the same pair as with the prompt given.
  MergingTokenizer tok;
  auto implicit = PrepareJsonl(R"({"chosen": "Q: A: yes", "rejected": "Q: A: no"})", {}, &tok);
  auto given = PrepareJsonl(R"({"prompt": "Q: A:", "chosen": " yes", "rejected": " no"})", {}, &tok);
  ASSERT_TRUE(implicit.ok() && given.ok()) << implicit.status();
  EXPECT_EQ(implicit->examples[0].prompt, given->examples[0].prompt);
  EXPECT_EQ(implicit->examples[0].completion, given->examples[0].completion);
  EXPECT_EQ(implicit->examples[0].rejected, given->examples[0].rejected);
  auto bad = PrepareJsonl("{\"chosen\": \"a\", \"rejected\": \"a\"}", {}, &tok);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("line 1: 'chosen' and 'rejected'"));
}

// A chat template stand-in: "<role>content|" per message, "<assistant>" as the generation prompt.
PrepareOptions ChatOptions() {
  PrepareOptions o;
  o.render_chat = [](const json& messages, bool generation_prompt) -> absl::StatusOr<std::string> {
    std::string out;
    for (const json& m : messages) out += "<" + m["role"].get<std::string>() + ">" + m["content"].get<std::string>() + "|";
    return generation_prompt ? out + "<assistant>" : out;
  };
  return o;
}

std::string Text(const std::vector<uint32_t>& ids) { return std::string(ids.begin(), ids.end()); }

TEST(SequenceSplitTest, ConversationalRecordsAreRenderedWholeWithoutBosOrEos) {
  MergingTokenizer tok;
  const PrepareOptions o = ChatOptions();
  // TRL's conversational prompt-completion, and "messages" whose last turn is the completion:
  // the same example.
  auto pc = PrepareJsonl(
      R"({"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": "a"}]})",
      o, &tok);
  auto messages = PrepareJsonl(
      R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})", o, &tok);
  ASSERT_TRUE(pc.ok()) << pc.status();
  ASSERT_TRUE(messages.ok()) << messages.status();
  EXPECT_EQ(Text(pc->examples[0].prompt), "<user>q|<assistant>");
  EXPECT_EQ(Text(pc->examples[0].completion), "a|");
  EXPECT_EQ(messages->examples[0].prompt, pc->examples[0].prompt);
  EXPECT_EQ(messages->examples[0].completion, pc->examples[0].completion);
  // Preference conversations: each answer the rest of its whole rendering; no EOS added (TRL
  // 1.16 adds none to conversations: the template ends the turn).
  auto pref = PrepareJsonl(
      R"({"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "yes"}],)"
      R"( "rejected": [{"role": "assistant", "content": "no"}]})",
      o, &tok);
  ASSERT_TRUE(pref.ok()) << pref.status();
  EXPECT_EQ(Text(pref->examples[0].prompt), "<user>q|<assistant>");
  EXPECT_EQ(Text(pref->examples[0].completion), "yes|");
  EXPECT_EQ(Text(pref->examples[0].rejected), "no|");
  // Without the model's template a conversational preference record cannot be rendered.
  auto no_template = PrepareJsonl(
      R"({"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "yes"}],)"
      R"( "rejected": [{"role": "assistant", "content": "no"}]})",
      PrepareOptions{}, &tok);
  EXPECT_THAT(std::string(no_template.status().message()), HasSubstr("need the model's chat template"));
}

}  // namespace
}  // namespace paft::tokenizer
