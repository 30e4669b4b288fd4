// Parses Jinja template source into a syntax tree. The statements chat templates use are
// supported: if/elif/else, for (with tuple targets, an `if` filter and else), set (names, tuple
// targets, namespace attributes, set blocks), macro, break/continue (loopcontrols),
// generation (transformers' assistant tracking); anything else is an error naming the construct
// and the line.
#ifndef PAFT_TOKENIZER_JINJA_PARSER_H_
#define PAFT_TOKENIZER_JINJA_PARSER_H_

#include <string>

#include "absl/status/statusor.h"
#include "tokenizer/jinja/ast.h"

namespace paft::tokenizer::jinja {

absl::StatusOr<Body> Parse(const std::string& source);

}  // namespace paft::tokenizer::jinja

#endif  // PAFT_TOKENIZER_JINJA_PARSER_H_
