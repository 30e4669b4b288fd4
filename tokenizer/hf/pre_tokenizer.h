// tokenizer.json's "pre_tokenizer": splits normalized text into the pieces the model encodes one
// by one. Supported types: Sequence, Split (String or Regex pattern; behaviors Removed, Isolated,
// MergedWithPrevious, MergedWithNext, Contiguous; invert), ByteLevel (GPT-2's byte-to-character
// mapping, optional prefix space and GPT-2 split regex), Metaspace; anything else is refused.
#ifndef PAFT_TOKENIZER_HF_PRE_TOKENIZER_H_
#define PAFT_TOKENIZER_HF_PRE_TOKENIZER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace paft::tokenizer::hf {

struct Piece {
  std::string text;
  bool at_start = false;  // begins at offset 0 of the original text (Metaspace's "first")
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces each piece by its splits (empty splits are dropped). Fails only when a regex match
  // fails (a PCRE2 resource limit).
  virtual absl::Status PreTokenize(std::vector<Piece>* pieces) const = 0;
};

// null gives nullptr (the whole text is one piece).
absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePreTokenizer(const nlohmann::json& j,
                                                               const std::string& where);

}  // namespace paft::tokenizer::hf

#endif  // PAFT_TOKENIZER_HF_PRE_TOKENIZER_H_
