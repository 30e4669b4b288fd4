// A tokenizer's chat template rendered as transformers' apply_chat_template(messages,
// tokenize=False) does: tokenizer_config.json's `chat_template` (a string, or a list of named
// templates of which "default" is used, "tool_use" when tools are given), with the variables
// transformers passes: messages, add_generation_prompt, tools, documents, the special tokens
// (bos_token, eos_token, ...) as strings, and any extra keyword arguments.
#ifndef PAFT_TOKENIZER_CHAT_TEMPLATE_H_
#define PAFT_TOKENIZER_CHAT_TEMPLATE_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "tokenizer/jinja/interpreter.h"

namespace paft::tokenizer {

class ChatTemplate {
 public:
  // nullopt when the config has no chat_template. Errors name the file and template line.
  static absl::StatusOr<std::optional<ChatTemplate>> FromConfig(const std::string& config_text,
                                                                const std::string& name);
  static absl::StatusOr<std::optional<ChatTemplate>> Load(const std::string& config_path);

  // `extra` (an object, may be null) adds variables, e.g. tools, enable_thinking, date_string.
  // Objects keep their key order (a template's tojson or items() shows it, as in Python).
  absl::StatusOr<std::string> Render(const nlohmann::ordered_json& messages,
                                     bool add_generation_prompt,
                                     const nlohmann::ordered_json& extra = nullptr) const;

 private:
  jinja::Template default_;
  std::optional<jinja::Template> tool_use_;
  nlohmann::ordered_json special_tokens_ = nlohmann::ordered_json::object();
  std::string name_;
};

}  // namespace paft::tokenizer

#endif  // PAFT_TOKENIZER_CHAT_TEMPLATE_H_
