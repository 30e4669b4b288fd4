#include "tokenizer/hf/unicode.h"

#include <unicode/uchar.h>
#include <utf8proc.h>

#include <cstdlib>
#include <vector>

#include "absl/strings/str_cat.h"

namespace paft::tokenizer::hf {

char32_t NextCodePoint(std::string_view text, size_t* pos) {
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size(), i = *pos;
  const uint8_t b = s[i];
  int len = 0;
  char32_t c = 0;
  if (b < 0x80) {
    *pos = i + 1;
    return b;
  } else if ((b & 0xE0) == 0xC0) {
    len = 2, c = b & 0x1F;
  } else if ((b & 0xF0) == 0xE0) {
    len = 3, c = b & 0x0F;
  } else if ((b & 0xF8) == 0xF0) {
    len = 4, c = b & 0x07;
  } else {
    *pos = i + 1;
    return 0xFFFD;
  }
  if (i + len > n) {
    *pos = i + 1;
    return 0xFFFD;
  }
  for (int k = 1; k < len; ++k) {
    if ((s[i + k] & 0xC0) != 0x80) {
      *pos = i + 1;
      return 0xFFFD;
    }
    c = (c << 6) | (s[i + k] & 0x3F);
  }
  // Overlong forms, surrogates and values past U+10FFFF are invalid.
  static constexpr char32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (c < kMin[len] || (c >= 0xD800 && c <= 0xDFFF) || c > 0x10FFFF) {
    *pos = i + 1;
    return 0xFFFD;
  }
  *pos = i + len;
  return c;
}

char32_t PreviousCodePoint(std::string_view text, size_t end, size_t* start) {
  size_t begin = end - 1;
  while (begin > 0 && (static_cast<uint8_t>(text[begin]) & 0xC0) == 0x80 && end - begin < 4) --begin;
  size_t pos = begin;
  const char32_t c = NextCodePoint(text, &pos);
  if (pos != end) {  // not one well-formed sequence: the last byte alone
    *start = end - 1;
    return 0xFFFD;
  }
  *start = begin;
  return c;
}

void AppendUtf8(char32_t c, std::string* out) {
  if (c < 0x80) {
    out->push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (c >> 6)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (c >> 12)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (c >> 18)));
    out->push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

size_t CodePointCount(std::string_view text) {
  size_t n = 0;
  for (size_t pos = 0; pos < text.size(); ++n) NextCodePoint(text, &pos);
  return n;
}

bool IsValidUtf8(std::string_view text) {
  for (size_t pos = 0; pos < text.size();) {
    const size_t before = pos;
    const char32_t c = NextCodePoint(text, &pos);
    if (c == 0xFFFD && !(pos - before == 3 && text.substr(before, 3) == "\xEF\xBF\xBD")) {
      return false;
    }
  }
  return true;
}

std::string LossyUtf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t pos = 0; pos < bytes.size();) {
    const size_t before = pos;
    const char32_t c = NextCodePoint(bytes, &pos);
    if (c == 0xFFFD && !(pos - before == 3 && bytes.substr(before, 3) == "\xEF\xBF\xBD")) {
      out += "\xEF\xBF\xBD";
    } else {
      out.append(bytes.substr(before, pos - before));
    }
  }
  return out;
}

bool IsWhitespace(char32_t c) {
  if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D);
  return u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_WHITE_SPACE);
}

bool IsAlphanumeric(char32_t c) {
  if (c < 0x80) return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
  const UChar32 u = static_cast<UChar32>(c);
  if (u_hasBinaryProperty(u, UCHAR_ALPHABETIC)) return true;
  const int8_t type = u_charType(u);
  return type == U_DECIMAL_DIGIT_NUMBER || type == U_LETTER_NUMBER || type == U_OTHER_NUMBER;
}

absl::StatusOr<std::string> Normalize(std::string_view text, NormalForm form) {
  int options = UTF8PROC_STABLE;
  switch (form) {
    case NormalForm::kNfc: options |= UTF8PROC_COMPOSE; break;
    case NormalForm::kNfd: options |= UTF8PROC_DECOMPOSE; break;
    case NormalForm::kNfkc: options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
    case NormalForm::kNfkd: options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
  }
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                   static_cast<utf8proc_ssize_t>(text.size()), &out,
                   static_cast<utf8proc_option_t>(options));
  if (n < 0) {
    return absl::InvalidArgumentError(absl::StrCat("Unicode normalization: ", utf8proc_errmsg(n)));
  }
  std::string result(reinterpret_cast<char*>(out), static_cast<size_t>(n));
  std::free(out);
  return result;
}

namespace {

struct ByteTables {
  std::array<std::string, 256> to_chars;
  std::vector<int> from_char;  // indexed by code point < 324
  ByteTables() : from_char(324, -1) {
    // Printable bytes map to themselves; the others to 256, 257, ... in byte order.
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const char32_t c = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(next++);
      AppendUtf8(c, &to_chars[b]);
      from_char[c] = b;
    }
  }
};

const ByteTables& Tables() {
  static const ByteTables kTables;
  return kTables;
}

}  // namespace

const std::array<std::string, 256>& ByteToChars() { return Tables().to_chars; }

int CharToByte(char32_t c) {
  return c < Tables().from_char.size() ? Tables().from_char[c] : -1;
}

}  // namespace paft::tokenizer::hf
