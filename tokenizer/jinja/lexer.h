// Lexing of Jinja template source into text and tag tokens, with Jinja's whitespace control as
// transformers configures it for chat templates: `{%-`/`-%}` (and the same on `{{ }}`, `{# #}`)
// strip whitespace on that side; trim_blocks drops the first newline after a block or comment
// tag; lstrip_blocks drops spaces and tabs before a block or comment tag at the start of a line
// (`{%+` keeps them).
#ifndef PAFT_TOKENIZER_JINJA_LEXER_H_
#define PAFT_TOKENIZER_JINJA_LEXER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace paft::tokenizer::jinja {

struct Token {
  enum class Kind {
    kText,        // template text
    kExprOpen,    // {{
    kExprClose,   // }}
    kBlockOpen,   // {%
    kBlockClose,  // %}
    kName, kString, kInt, kFloat, kOperator,
    kEnd,
  };
  Kind kind;
  std::string text;  // text, name, string value, number or operator
  int line = 1;
};

absl::StatusOr<std::vector<Token>> Lex(const std::string& source);

}  // namespace paft::tokenizer::jinja

#endif  // PAFT_TOKENIZER_JINJA_LEXER_H_
