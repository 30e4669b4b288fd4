// The tokenizer.json pipeline on small hand-written files, against results worked out by hand
// from the HF tokenizers library's rules; the real tokenizers are in hf_golden_test.cc.
#include "tokenizer/hf/tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tokenizer/hf/added_vocabulary.h"
#include "tokenizer/hf/decoder.h"
#include "tokenizer/hf/pre_tokenizer.h"
#include "tokenizer/hf/unicode.h"

namespace paft::tokenizer::hf {
namespace {

using json = nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A byte-level BPE tokenizer: the 256 byte characters (id = byte) plus `extra` tokens and merges.
json ByteLevelJson(const std::vector<std::string>& extra, const std::vector<std::string>& merges) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[ByteToChars()[b]] = b;
  int next = 256;
  for (const auto& token : extra) vocab[token] = next++;
  return {{"normalizer", nullptr},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
          {"post_processor", nullptr},
          {"decoder", {{"type", "ByteLevel"}}},
          {"added_tokens", json::array()},
          {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
}

std::unique_ptr<HfTokenizer> Load(const json& j) {
  auto t = HfTokenizer::FromJson(j.dump(), "", "test.json");
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

std::vector<uint32_t> Ids(const HfTokenizer& t, const std::string& text) {
  auto ids = t.Encode(text);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<uint32_t>{};
}

TEST(HfTokenizerTest, MergesApplyLowestRankFirstThenLeftmost) {
  // ids: a=97, b=98, c=99; "ab"=256, "bc"=257, "aa"=258.
  auto ab_first = Load(ByteLevelJson({"ab", "bc", "aa"}, {"a b", "b c", "a a"}));
  EXPECT_THAT(Ids(*ab_first, "abc"), ElementsAre(256, 'c'));
  auto bc_first = Load(ByteLevelJson({"ab", "bc", "aa"}, {"b c", "a b", "a a"}));
  EXPECT_THAT(Ids(*bc_first, "abc"), ElementsAre('a', 257));
  EXPECT_THAT(Ids(*ab_first, "aaa"), ElementsAre(258, 'a'));  // leftmost of equal ranks
  // A space before a word joins it (GPT-2's split), as the byte character 'Ġ'.
  auto the = Load(ByteLevelJson({"Ġt", "he", "Ġthe"}, {"Ġ t", "h e", "Ġt he"}));
  EXPECT_THAT(Ids(*the, "the the"), ElementsAre('t', 257, 258));
  EXPECT_EQ(the->Decode({'t', 257, 258}), "the the");
}

TEST(HfTokenizerTest, IgnoreMergesTakesAWholeWordFromTheVocabulary) {
  json j = ByteLevelJson({"xyz"}, {});
  EXPECT_THAT(Ids(*Load(j), "xyz"), ElementsAre('x', 'y', 'z'));
  j["model"]["ignore_merges"] = true;
  EXPECT_THAT(Ids(*Load(j), "xyz"), ElementsAre(256));
}

TEST(HfTokenizerTest, ByteFallbackAndFusedUnknowns) {
  // SentencePiece-style: characters as they are, unknown ones as <0xXX> bytes or <unk>.
  json vocab = {{"<unk>", 0}, {"a", 1}, {"b", 2}, {"<0xC3>", 3}, {"<0xA9>", 4}};
  json j = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()},
                       {"unk_token", "<unk>"}, {"byte_fallback", true}, {"fuse_unk", true}}},
            {"decoder", {{"type", "Sequence"},
                         {"decoders", {{{"type", "ByteFallback"}}, {{"type", "Fuse"}}}}}}};
  auto t = Load(j);
  // é is C3 A9: both byte tokens exist. ü (C3 BC) lacks one: <unk>, fused with the next unknown.
  EXPECT_THAT(Ids(*t, "aéb"), ElementsAre(1, 3, 4, 2));
  EXPECT_THAT(Ids(*t, "aüüb"), ElementsAre(1, 0, 2));
  EXPECT_EQ(t->Decode({1, 3, 4, 2}), "aéb");
  EXPECT_EQ(t->Decode({1, 3, 2}), "a\xEF\xBF\xBD" "b");  // a lone C3 byte is not UTF-8
}

std::vector<std::string> Split(const std::string& behavior, const std::string& text,
                               bool invert = false) {
  auto pre = MakePreTokenizer({{"type", "Split"}, {"pattern", {{"String", ","}}},
                               {"behavior", behavior}, {"invert", invert}},
                              "pre_tokenizer");
  EXPECT_TRUE(pre.ok()) << pre.status();
  std::vector<Piece> pieces = {{text, true}};
  (*pre)->PreTokenize(&pieces);
  std::vector<std::string> out;
  for (const Piece& p : pieces) out.push_back(p.text);
  return out;
}

TEST(HfTokenizerTest, SplitBehaviorsAsTheLibraryDefinesThem) {
  EXPECT_THAT(Split("Removed", "a,b,,c"), ElementsAre("a", "b", "c"));
  EXPECT_THAT(Split("Isolated", "a,b,,c"), ElementsAre("a", ",", "b", ",", ",", "c"));
  EXPECT_THAT(Split("MergedWithPrevious", "a,b,,c"), ElementsAre("a,", "b,", ",", "c"));
  EXPECT_THAT(Split("MergedWithNext", "a,b,,c"), ElementsAre("a", ",b", ",", ",c"));
  EXPECT_THAT(Split("Contiguous", "a,b,,c"), ElementsAre("a", ",", "b", ",,", "c"));
  // Inverted: the pattern finds the pieces; Removed drops what it did not find.
  EXPECT_THAT(Split("Removed", "a,b,,c", /*invert=*/true), ElementsAre(",", ",", ","));
}

TEST(HfTokenizerTest, MetaspacePrependsPerSchemeAndSplitsBeforeEachSpace) {
  auto pieces = [](const std::string& scheme, bool at_start) {
    auto pre = MakePreTokenizer({{"type", "Metaspace"}, {"replacement", "\u2581"},
                                 {"prepend_scheme", scheme}, {"split", true}},
                                "pre_tokenizer");
    EXPECT_TRUE(pre.ok()) << pre.status();
    std::vector<Piece> p = {{"Hello  world", at_start}};
    EXPECT_TRUE((*pre)->PreTokenize(&p).ok());
    std::vector<std::string> out;
    for (const Piece& x : p) out.push_back(x.text);
    return out;
  };
  EXPECT_THAT(pieces("first", true), ElementsAre("\u2581Hello", "\u2581", "\u2581world"));
  EXPECT_THAT(pieces("first", false), ElementsAre("Hello", "\u2581", "\u2581world"));
  EXPECT_THAT(pieces("always", false), ElementsAre("\u2581Hello", "\u2581", "\u2581world"));
  EXPECT_THAT(pieces("never", true), ElementsAre("Hello", "\u2581", "\u2581world"));
  auto decoder = MakeDecoder({{"type", "Metaspace"}, {"replacement", "\u2581"},
                              {"prepend_scheme", "always"}},
                             "decoder");
  ASSERT_TRUE(decoder.ok()) << decoder.status();
  std::vector<std::string> tokens = {"\u2581Hello", "\u2581", "\u2581world"};
  (*decoder)->DecodeChain(&tokens);
  EXPECT_THAT(tokens, ElementsAre("Hello", " ", " world"));
  EXPECT_THAT(std::string(MakeDecoder({{"type", "Metaspace"}, {"replacement", ""}}, "decoder")
                              .status()
                              .message()),
              HasSubstr("decoder.replacement: must be one character"));
}

TEST(HfTokenizerTest, RegexSplitUsesUnicodeClassesAndLookAhead) {
  // Llama-3's split: a space run before a word keeps its last space for the word.
  auto pre = MakePreTokenizer(
      {{"type", "Split"},
       {"pattern", {{"Regex", R"((?i:'s|'t)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}}},
       {"behavior", "Isolated"},
       {"invert", false}},
      "pre_tokenizer");
  ASSERT_TRUE(pre.ok()) << pre.status();
  std::vector<Piece> pieces = {{"IT'S   über 12345\u3000x a\u180E\u180Eb", true}};
  (*pre)->PreTokenize(&pieces);
  std::vector<std::string> out;
  for (const Piece& p : pieces) out.push_back(p.text);
  // "'S" matches case-insensitively; a non-letter joins the word after it; U+180E is not
  // White_Space for Rust's \s (it is for PCRE2's own \s).
  EXPECT_THAT(out, ElementsAre("IT", "'S", "  ", " über", " ", "123", "45", "\u3000x", " a",
                               "\u180E\u180E", "b"));
}

TEST(HfTokenizerTest, AddedTokensMatchLeftmostLongestWithStripAndWordRules) {
  auto token = [](int id, const char* content, json flags) {
    flags["id"] = id;
    flags["content"] = content;
    flags["normalized"] = false;
    return flags;
  };
  const json tokens = json::array(
      {token(10, "<x>", {{"special", true}}), token(11, "<x>y", {{"special", true}}),
       token(12, "<s>", {{"special", true}, {"lstrip", true}, {"rstrip", true}}),
       token(13, "ab", {{"special", false}, {"single_word", true}})});
  auto v = AddedVocabulary::FromJson(tokens, nullptr, "added_tokens");
  ASSERT_TRUE(v.ok()) << v.status();
  auto show = [&](const std::string& text) {
    std::vector<std::string> out;
    for (const Segment& s : v->SplitRaw(text)) {
      out.push_back(s.id ? "[" + std::to_string(*s.id) + ":" + s.text + "]" : s.text);
    }
    return out;
  };
  EXPECT_THAT(show("q<x>yz<x>"), ElementsAre("q", "[11:<x>y]", "z", "[10:<x>]"));
  EXPECT_THAT(show("a  <s>\t b"), ElementsAre("a", "[12:  <s>\t ]", "b"));
  EXPECT_THAT(show("ab cab ab."), ElementsAre("[13:ab]", " cab ", "[13:ab]", "."));
}

TEST(HfTokenizerTest, SpecialTokensInTextAreMatchedBeforeTheModel) {
  json j = ByteLevelJson({}, {});
  j["added_tokens"] = {{{"id", 300}, {"content", "<|im_start|>"}, {"special", true},
                        {"normalized", false}}};
  auto t = Load(j);
  EXPECT_THAT(Ids(*t, "a<|im_start|>b"), ElementsAre('a', 300, 'b'));
  EXPECT_EQ(t->Decode({'a', 300, 'b'}), "a<|im_start|>b");
}

TEST(HfTokenizerTest, BosFromThePostProcessorAndEosFromTheConfig) {
  json j = ByteLevelJson({}, {});
  j["added_tokens"] = {{{"id", 300}, {"content", "<s>"}, {"special", true}},
                       {{"id", 301}, {"content", "</s>"}, {"special", true}}};
  j["post_processor"] = {{"type", "TemplateProcessing"},
                         {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                     {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}}};
  auto t = HfTokenizer::FromJson(j.dump(), R"({"eos_token": {"content": "</s>"}})", "t.json");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->bos_id(), 300);
  EXPECT_EQ((*t)->eos_id(), 301);
  EXPECT_EQ((*t)->vocab_size(), 302);
}

TEST(HfTokenizerTest, UnsupportedOrMalformedFilesAreRefusedByLocation) {
  auto error = [](const json& j) {
    auto t = HfTokenizer::FromJson(j.dump(), "", "tok.json");
    return t.ok() ? std::string("ok") : std::string(t.status().message());
  };
  json j = ByteLevelJson({"ab"}, {"a b"});
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}, {{"type", "Lowercase"}}}}};
  EXPECT_THAT(error(j), HasSubstr("tok.json: normalizer.normalizers[1]: normalizer type 'Lowercase' is not supported"));
  j = ByteLevelJson({"ab"}, {"a b"});
  j["model"]["type"] = "WordPiece";
  EXPECT_THAT(error(j), HasSubstr("model type 'WordPiece' is not supported"));
  j = ByteLevelJson({"ab"}, {"a b", "a q z"});
  EXPECT_THAT(error(j), HasSubstr("model: merges[1]: 'a q z' is not two tokens"));
  j = ByteLevelJson({"ab"}, {"a b"});
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}},
                        {"behavior", "Isolated"}, {"invert", false}};
  EXPECT_THAT(error(j), HasSubstr("pre_tokenizer.pattern: regex '(unclosed'"));
  j = ByteLevelJson({"ab"}, {"a b"});
  j["post_processor"] = {{"type", "RobertaProcessing"}};
  EXPECT_THAT(error(j), HasSubstr("post_processor type 'RobertaProcessing' is not supported"));
  j = ByteLevelJson({"ab"}, {"a b"});
  j["model"]["dropout"] = 0.1;
  EXPECT_THAT(error(j), HasSubstr("BPE dropout is not supported"));
  EXPECT_THAT(std::string(HfTokenizer::FromJson("{", "", "tok.json").status().message()),
              HasSubstr("tok.json: not a JSON object"));
}

}  // namespace
}  // namespace paft::tokenizer::hf
