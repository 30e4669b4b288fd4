// tokenizer.json's "added_tokens", matched in the text before the model runs, as the HF tokenizers
// library does: tokens with `normalized: false` on the raw text, the others on each normalized
// stretch (their content normalized the same way); leftmost-longest, non-overlapping matches;
// `single_word` matches only between non-alphanumeric characters; `lstrip`/`rstrip` take the
// whitespace on that side into the token.
#ifndef PAFT_TOKENIZER_HF_ADDED_VOCABULARY_H_
#define PAFT_TOKENIZER_HF_ADDED_VOCABULARY_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "tokenizer/hf/normalizer.h"

namespace paft::tokenizer::hf {

struct AddedToken {
  uint32_t id = 0;
  std::string content;
  bool special = false, lstrip = false, rstrip = false, single_word = false, normalized = true;
};

// A stretch of text: either an added token (`id`) or text for the model.
struct Segment {
  std::string text;
  std::optional<uint32_t> id;
  bool at_start = false;  // begins at offset 0 of the original text
};

class AddedVocabulary {
 public:
  // `normalizer` (may be null) normalizes the contents of `normalized` tokens.
  static absl::StatusOr<AddedVocabulary> FromJson(const nlohmann::json& list,
                                                  const Normalizer* normalizer,
                                                  const std::string& where);

  // Splits raw text on the tokens matched without normalization.
  std::vector<Segment> SplitRaw(std::string_view text) const;
  // Splits one normalized stretch on the tokens matched after normalization.
  void SplitNormalized(const Segment& segment, std::vector<Segment>* out) const;

  const std::vector<AddedToken>& tokens() const { return tokens_; }
  std::optional<uint32_t> TokenToId(std::string_view content) const;

 private:
  // A byte trie of the patterns of one kind.
  struct Trie {
    struct Node {
      std::map<unsigned char, int> next;
      int token = -1;  // index into tokens_
    };
    std::vector<Node> nodes{Node{}};
    bool first_byte[256] = {};
    void Add(std::string_view pattern, int token);
  };
  void Split(std::string_view text, bool at_start, const Trie& trie,
             std::vector<Segment>* out) const;

  std::vector<AddedToken> tokens_;
  Trie raw_, normalized_;
};

}  // namespace paft::tokenizer::hf

#endif  // PAFT_TOKENIZER_HF_ADDED_VOCABULARY_H_
