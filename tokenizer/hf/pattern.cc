#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/hf/pattern.h"

#include <pcre2.h>

#include "absl/strings/str_cat.h"

namespace paft::tokenizer::hf {
namespace {

// Rust's \s: the White_Space property, as the body of a character class.
constexpr char kWhiteSpaceClass[] =
    "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";

absl::StatusOr<std::string> TranslateRustRegex(const std::string& rust, const std::string& where) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < rust.size(); ++i) {
    const char c = rust[i];
    if (c == '\\' && i + 1 < rust.size()) {
      const char next = rust[i + 1];
      ++i;
      if (next == 's') {
        out += in_class ? std::string(kWhiteSpaceClass) : absl::StrCat("[", kWhiteSpaceClass, "]");
      } else if (next == 'S') {
        if (in_class) {
          return absl::InvalidArgumentError(
              absl::StrCat(where, ": regex '", rust, "': \\S inside a character class is not supported"));
        }
        out += absl::StrCat("[^", kWhiteSpaceClass, "]");
      } else {
        out += c;
        out += next;
      }
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      if (i + 1 < rust.size() && rust[i + 1] == '^') out += rust[++i];
      if (i + 1 < rust.size() && rust[i + 1] == ']') out += rust[++i];  // a literal ']' first
      continue;
    }
    if (c == '[' && in_class && i + 1 < rust.size() && rust[i + 1] == ':') {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": regex '", rust, "': nested character classes are not supported"));
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

}  // namespace

struct Pattern::Regex {
  pcre2_code* code = nullptr;
  pcre2_match_data* match = nullptr;
  pcre2_jit_stack* stack = nullptr;  // room for long whitespace runs and words
  pcre2_match_context* context = nullptr;
  ~Regex() {
    if (context != nullptr) pcre2_match_context_free(context);
    if (stack != nullptr) pcre2_jit_stack_free(stack);
    if (match != nullptr) pcre2_match_data_free(match);
    if (code != nullptr) pcre2_code_free(code);
  }
};

absl::StatusOr<Pattern> Pattern::FromJson(const nlohmann::json& j, const std::string& where) {
  if (j.is_object() && j.size() == 1 && j.contains("String") && j["String"].is_string()) {
    return Literal(j["String"].get<std::string>());
  }
  if (j.is_object() && j.size() == 1 && j.contains("Regex") && j["Regex"].is_string()) {
    return Regex(j["Regex"].get<std::string>(), where);
  }
  return absl::InvalidArgumentError(
      absl::StrCat(where, ": a pattern must be {\"String\": ...} or {\"Regex\": ...}"));
}

Pattern Pattern::Literal(std::string literal) {
  Pattern p;
  p.literal_ = std::move(literal);
  return p;
}

absl::StatusOr<Pattern> Pattern::Regex(const std::string& rust_regex, const std::string& where) {
  auto translated = TranslateRustRegex(rust_regex, where);
  if (!translated.ok()) return translated.status();
  int error = 0;
  PCRE2_SIZE offset = 0;
  auto regex = std::make_shared<struct Regex>();
  regex->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated->data()), translated->size(),
                              PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
  if (regex->code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return absl::InvalidArgumentError(absl::StrCat(where, ": regex '", rust_regex, "' at offset ",
                                                   offset, ": ",
                                                   reinterpret_cast<const char*>(message)));
  }
  pcre2_jit_compile(regex->code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if absent
  regex->match = pcre2_match_data_create_from_pattern(regex->code, nullptr);
  regex->stack = pcre2_jit_stack_create(64 << 10, 64 << 20, nullptr);
  regex->context = pcre2_match_context_create(nullptr);
  if (regex->stack != nullptr && regex->context != nullptr) {
    pcre2_jit_stack_assign(regex->context, nullptr, regex->stack);
  }
  Pattern p;
  p.regex_ = std::move(regex);
  return p;
}

absl::StatusOr<std::string> Pattern::ReplaceAll(std::string_view text,
                                                const std::string& content) const {
  std::vector<std::pair<size_t, size_t>> matches;
  absl::Status status = FindMatches(text, &matches);
  if (!status.ok()) return status;
  std::string out;
  size_t at = 0;
  for (const auto& [begin, end] : matches) {
    out.append(text.substr(at, begin - at));
    out += content;
    at = end;
  }
  out.append(text.substr(at));
  return out;
}

absl::Status Pattern::FindMatches(std::string_view text,
                                  std::vector<std::pair<size_t, size_t>>* out) const {
  out->clear();
  if (!regex_) {
    if (literal_.empty()) return absl::OkStatus();
    for (size_t at = text.find(literal_); at != std::string_view::npos;
         at = text.find(literal_, at + literal_.size())) {
      out->emplace_back(at, at + literal_.size());
    }
    return absl::OkStatus();
  }
  size_t start = 0;
  while (start <= text.size()) {
    const int rc = pcre2_match(regex_->code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(),
                               start, PCRE2_NO_UTF_CHECK, regex_->match, regex_->context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof(message));
      return absl::ResourceExhaustedError(absl::StrCat(
          "regex match failed at byte ", start, " of a ", text.size(), "-byte piece: ",
          reinterpret_cast<const char*>(message)));
    }
    const PCRE2_SIZE* v = pcre2_get_ovector_pointer(regex_->match);
    const size_t begin = v[0], end = v[1];
    out->emplace_back(begin, end);
    if (end > begin) {
      start = end;
    } else {  // an empty match: step over one character
      if (end >= text.size()) break;
      start = end + 1;
      while (start < text.size() && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) ++start;
    }
  }
  return absl::OkStatus();
}

}  // namespace paft::tokenizer::hf
