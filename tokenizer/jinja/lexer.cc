#include "tokenizer/jinja/lexer.h"

#include <algorithm>
#include <cctype>

#include "absl/strings/str_cat.h"
#include "tokenizer/hf/unicode.h"

namespace paft::tokenizer::jinja {
namespace {

absl::Status Error(int line, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("template line ", line, ": ", what));
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// Operators, longest first.
constexpr const char* kOperators[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/",
                                      "%", "~", "<", ">", "(", ")", "[", "]", "{", "}",
                                      ",", ".", ":", "|", "=", ";"};

}  // namespace

absl::StatusOr<std::vector<Token>> Lex(const std::string& source) {
  // As Jinja: newline sequences of the source become "\n", and one trailing newline is dropped
  // (keep_trailing_newline is off).
  std::string src;
  src.reserve(source.size());
  for (size_t k = 0; k < source.size(); ++k) {
    if (source[k] == '\r') {
      src += '\n';
      if (k + 1 < source.size() && source[k + 1] == '\n') ++k;
    } else {
      src += source[k];
    }
  }
  if (!src.empty() && src.back() == '\n') src.pop_back();
  std::vector<Token> tokens;
  size_t i = 0;
  int line = 1;
  bool strip_next_text = false;     // the previous tag ended with '-'
  bool trim_next_newline = false;   // the previous tag was a block or comment (trim_blocks)
  auto count_lines = [&](size_t from, size_t to) {
    for (size_t k = from; k < to; ++k) line += src[k] == '\n';
  };
  while (i < src.size()) {
    // Text up to the next tag.
    size_t open = i;
    while (true) {
      open = src.find('{', open);
      if (open == std::string::npos || open + 1 >= src.size()) {
        open = std::string::npos;
        break;
      }
      const char next = src[open + 1];
      if (next == '{' || next == '%' || next == '#') break;
      ++open;
    }
    const size_t text_end = open == std::string::npos ? src.size() : open;
    std::string text = src.substr(i, text_end - i);
    const int text_line = line;
    count_lines(i, text_end);
    // Whether the text begins a line: at the template's start, after a newline, or after the
    // newline trim_blocks removed.
    bool at_line_start = i == 0 || src[i - 1] == '\n';
    if (trim_next_newline && !text.empty() && text[0] == '\n') {
      text.erase(0, 1);
      at_line_start = true;
    }
    if (strip_next_text) {
      size_t k = 0;
      while (k < text.size() && IsSpace(text[k])) ++k;
      text.erase(0, k);
    }
    strip_next_text = false;
    trim_next_newline = false;
    if (open != std::string::npos) {
      const char kind = src[open + 1];
      const char modifier = open + 2 < src.size() ? src[open + 2] : '\0';
      if (modifier == '-') {
        while (!text.empty() && IsSpace(text.back())) text.pop_back();
      } else if ((kind == '%' || kind == '#') && modifier != '+') {
        // lstrip_blocks: spaces and tabs alone between the line's start and the tag go.
        size_t k = text.size();
        while (k > 0 && (text[k - 1] == ' ' || text[k - 1] == '\t')) --k;
        if (k > 0 ? text[k - 1] == '\n' : at_line_start) text.erase(k);
      }
    }
    if (!text.empty()) tokens.push_back({Token::Kind::kText, std::move(text), text_line});
    if (open == std::string::npos) break;

    // A tag.
    const char kind = src[open + 1];
    size_t p = open + 2;
    if (p < src.size() && (src[p] == '-' || src[p] == '+')) ++p;
    if (kind == '#') {
      const size_t close = src.find("#}", p);
      if (close == std::string::npos) return Error(line, "unclosed comment");
      count_lines(open, close + 2);
      strip_next_text = close > 0 && src[close - 1] == '-';
      trim_next_newline = true;
      i = close + 2;
      continue;
    }
    const std::string closer = kind == '{' ? "}}" : "%}";
    tokens.push_back({kind == '{' ? Token::Kind::kExprOpen : Token::Kind::kBlockOpen, "", line});
    int depth = 0;  // open brackets: a closer inside them is not the tag's end
    while (true) {
      while (p < src.size() && IsSpace(src[p])) {
        line += src[p] == '\n';
        ++p;
      }
      if (p >= src.size()) return Error(line, absl::StrCat("unclosed '", kind == '{' ? "{{" : "{%", "'"));
      // The closer, possibly with '-'.
      if (depth == 0 && src[p] == '-' && src.compare(p + 1, 2, closer) == 0) {
        strip_next_text = true;
        p += 3;
        break;
      }
      if (depth == 0 && src.compare(p, 2, closer) == 0) {
        p += 2;
        break;
      }
      const char c = src[p];
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t q = p;
        while (q < src.size() && (std::isalnum(static_cast<unsigned char>(src[q])) || src[q] == '_')) ++q;
        tokens.push_back({Token::Kind::kName, src.substr(p, q - p), line});
        p = q;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        size_t q = p;
        while (q < src.size() && (std::isdigit(static_cast<unsigned char>(src[q])) || src[q] == '_')) ++q;
        bool is_float = false;
        if (q + 1 < src.size() && src[q] == '.' && std::isdigit(static_cast<unsigned char>(src[q + 1]))) {
          is_float = true;
          ++q;
          while (q < src.size() && std::isdigit(static_cast<unsigned char>(src[q]))) ++q;
        }
        if (q < src.size() && (src[q] == 'e' || src[q] == 'E')) {
          size_t r = q + 1;
          if (r < src.size() && (src[r] == '+' || src[r] == '-')) ++r;
          if (r < src.size() && std::isdigit(static_cast<unsigned char>(src[r]))) {
            is_float = true;
            q = r;
            while (q < src.size() && std::isdigit(static_cast<unsigned char>(src[q]))) ++q;
          }
        }
        std::string number = src.substr(p, q - p);
        number.erase(std::remove(number.begin(), number.end(), '_'), number.end());
        tokens.push_back({is_float ? Token::Kind::kFloat : Token::Kind::kInt, number, line});
        p = q;
      } else if (c == '\'' || c == '"') {
        std::string value;
        size_t q = p + 1;
        for (; q < src.size() && src[q] != c; ++q) {
          if (src[q] == '\\' && q + 1 < src.size()) {
            const char e = src[++q];
            // Jinja decodes string literals with Python's unicode-escape.
            auto hex = [&](int digits) -> int64_t {
              if (q + digits >= src.size()) return -1;
              int64_t v = 0;
              for (int k = 1; k <= digits; ++k) {
                const char h = src[q + k];
                if (!std::isxdigit(static_cast<unsigned char>(h))) return -1;
                v = v * 16 + (std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (h | 0x20) - 'a' + 10);
              }
              return v;
            };
            switch (e) {
              case 'n': value += '\n'; break;
              case 't': value += '\t'; break;
              case 'r': value += '\r'; break;
              case 'a': value += '\a'; break;
              case 'b': value += '\b'; break;
              case 'f': value += '\f'; break;
              case 'v': value += '\v'; break;
              case '\\': value += '\\'; break;
              case '\'': value += '\''; break;
              case '"': value += '"'; break;
              case '\n': break;
              case 'x': case 'u': case 'U': {
                const int digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
                const int64_t code = hex(digits);
                if (code < 0 || code > 0x10FFFF) return Error(line, absl::StrCat("bad \\", std::string(1, e), " escape in a string"));
                hf::AppendUtf8(static_cast<char32_t>(code), &value);
                q += digits;
                break;
              }
              case 'N': return Error(line, "\\N{...} escapes are not supported");
              default:
                if (e >= '0' && e <= '7') {  // up to three octal digits
                  int code = e - '0';
                  for (int k = 0; k < 2 && q + 1 < src.size() && src[q + 1] >= '0' && src[q + 1] <= '7'; ++k) {
                    code = code * 8 + (src[++q] - '0');
                  }
                  hf::AppendUtf8(static_cast<char32_t>(code), &value);
                } else {
                  value += '\\';
                  value += e;
                }
            }
          } else {
            line += src[q] == '\n';
            value += src[q];
          }
        }
        if (q >= src.size()) return Error(line, "unterminated string");
        tokens.push_back({Token::Kind::kString, std::move(value), line});
        p = q + 1;
      } else {
        bool matched = false;
        for (const char* op : kOperators) {
          const size_t n = std::char_traits<char>::length(op);
          if (src.compare(p, n, op) == 0) {
            tokens.push_back({Token::Kind::kOperator, op, line});
            if (n == 1 && (*op == '(' || *op == '[' || *op == '{')) ++depth;
            if (n == 1 && (*op == ')' || *op == ']' || *op == '}')) depth = std::max(0, depth - 1);
            p += n;
            matched = true;
            break;
          }
        }
        if (!matched) return Error(line, absl::StrCat("unexpected character '", std::string(1, c), "'"));
      }
    }
    tokens.push_back({kind == '{' ? Token::Kind::kExprClose : Token::Kind::kBlockClose, "", line});
    trim_next_newline = kind == '%';
    i = p;
  }
  tokens.push_back({Token::Kind::kEnd, "", line});
  return tokens;
}

}  // namespace paft::tokenizer::jinja
