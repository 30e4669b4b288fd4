// A Jinja template, parsed once and rendered with a context: the subset of Jinja2 that chat
// templates use, with Jinja2's semantics (Python's for values), as transformers renders them:
// trim_blocks and lstrip_blocks on, loop controls, `{% generation %}`, the globals
// raise_exception, strftime_now, range, namespace, and transformers' tojson filter. A construct
// outside the subset is an error naming it and its line; raise_exception's message is the error.
#ifndef PAFT_TOKENIZER_JINJA_INTERPRETER_H_
#define PAFT_TOKENIZER_JINJA_INTERPRETER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "tokenizer/jinja/ast.h"

namespace paft::tokenizer::jinja {

class Template {
 public:
  static absl::StatusOr<Template> Parse(const std::string& source);
  // `context` is a JSON object: its keys are the template's variables (in their order).
  absl::StatusOr<std::string> Render(const nlohmann::ordered_json& context) const;

 private:
  std::shared_ptr<const Body> body_;
};

}  // namespace paft::tokenizer::jinja

#endif  // PAFT_TOKENIZER_JINJA_INTERPRETER_H_
