// The patterns of tokenizer.json (Split pre-tokenizers, Replace normalizers and decoders):
// {"String": "..."} a literal, or {"Regex": "..."} in Rust's regex syntax, run with PCRE2 (UTF and
// Unicode-property mode, JIT-compiled) after one translation: `\s` and `\S` take Rust's meaning
// (the Unicode White_Space property) instead of PCRE2's.
#ifndef PAFT_TOKENIZER_HF_PATTERN_H_
#define PAFT_TOKENIZER_HF_PATTERN_H_

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace paft::tokenizer::hf {

class Pattern {
 public:
  // `where` names the JSON location for errors ("pre_tokenizer.pretokenizers[0].pattern").
  static absl::StatusOr<Pattern> FromJson(const nlohmann::json& j, const std::string& where);
  static absl::StatusOr<Pattern> Regex(const std::string& rust_regex, const std::string& where);
  static Pattern Literal(std::string literal);

  // Every match of the pattern in `text` replaced by `content`.
  absl::StatusOr<std::string> ReplaceAll(std::string_view text, const std::string& content) const;

  // Non-overlapping matches [begin, end) from left to right; `text` must be valid UTF-8. A PCRE2
  // failure (a resource limit) is an error, never a silent "no more matches".
  // Thread-compatible (one match buffer per pattern).
  absl::Status FindMatches(std::string_view text, std::vector<std::pair<size_t, size_t>>* out) const;

 private:
  struct Regex;
  std::string literal_;
  std::shared_ptr<struct Regex> regex_;
};

}  // namespace paft::tokenizer::hf

#endif  // PAFT_TOKENIZER_HF_PATTERN_H_
