// UTF-8 and Unicode helpers of the tokenizer.json pipeline: code point iteration, the Unicode
// properties the HF tokenizers library tests (Rust's char::is_whitespace, is_alphanumeric; from
// ICU), normalization forms (utf8proc), and GPT-2's byte-to-character table of byte-level BPE.
#ifndef PAFT_TOKENIZER_HF_UNICODE_H_
#define PAFT_TOKENIZER_HF_UNICODE_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace paft::tokenizer::hf {

// The code point starting at text[*pos] (advancing *pos past it); invalid bytes decode as
// U+FFFD one byte at a time.
char32_t NextCodePoint(std::string_view text, size_t* pos);
// The code point ending just before text[end] and its start.
char32_t PreviousCodePoint(std::string_view text, size_t end, size_t* start);
void AppendUtf8(char32_t c, std::string* out);
size_t CodePointCount(std::string_view text);
bool IsValidUtf8(std::string_view text);
// Invalid sequences replaced by U+FFFD, as Rust's String::from_utf8_lossy.
std::string LossyUtf8(std::string_view bytes);

bool IsWhitespace(char32_t c);    // Unicode White_Space
bool IsAlphanumeric(char32_t c);  // Alphabetic or a numeric category (Nd, Nl, No)

enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };
absl::StatusOr<std::string> Normalize(std::string_view text, NormalForm form);

// GPT-2's bijection of the 256 byte values onto printable characters (byte-level BPE).
const std::array<std::string, 256>& ByteToChars();
// The inverse: the byte of a byte-level character, or -1.
int CharToByte(char32_t c);

}  // namespace paft::tokenizer::hf

#endif  // PAFT_TOKENIZER_HF_UNICODE_H_
