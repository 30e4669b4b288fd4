// tokenizer.json's "normalizer": applied to each stretch of text between added tokens before
// pre-tokenization. Supported types: Sequence, NFC, NFD, NFKC, NFKD (utf8proc), Prepend, Replace,
// Strip; anything else is refused by name.
#ifndef PAFT_TOKENIZER_HF_NORMALIZER_H_
#define PAFT_TOKENIZER_HF_NORMALIZER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace paft::tokenizer::hf {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual absl::Status Normalize(std::string* text) const = 0;
};

// null gives nullptr (no normalization). `where` names the JSON location for errors.
absl::StatusOr<std::unique_ptr<Normalizer>> MakeNormalizer(const nlohmann::json& j,
                                                           const std::string& where);

}  // namespace paft::tokenizer::hf

#endif  // PAFT_TOKENIZER_HF_NORMALIZER_H_
