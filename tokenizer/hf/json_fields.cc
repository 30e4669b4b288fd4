#include "tokenizer/hf/json_fields.h"

#include "absl/strings/str_cat.h"
#include "tokenizer/hf/unicode.h"

namespace paft::tokenizer::hf {

using json = nlohmann::json;

absl::StatusOr<std::string> TypeOf(const json& j, const std::string& where) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": expected an object with a \"type\""));
  }
  return j["type"].get<std::string>();
}

absl::StatusOr<std::string> StringField(const json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".", key, ": expected a string"));
  }
  return it->get<std::string>();
}

absl::StatusOr<bool> BoolField(const json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_boolean()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".", key, ": expected true or false"));
  }
  return it->get<bool>();
}

absl::StatusOr<const json*> ArrayField(const json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".", key, ": expected a list"));
  }
  return &*it;
}

absl::StatusOr<MetaspaceSettings> ParseMetaspace(const json& j, const std::string& where) {
  MetaspaceSettings m;
  auto replacement = StringField(j, "replacement", where);
  if (!replacement.ok()) return replacement.status();
  m.replacement = *replacement;
  if (CodePointCount(m.replacement) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".replacement: must be one character"));
  }
  m.scheme = j.value("prepend_scheme", "");
  if (m.scheme.empty()) m.scheme = j.value("add_prefix_space", true) ? "always" : "never";
  if (m.scheme != "always" && m.scheme != "first" && m.scheme != "never") {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ".prepend_scheme: '", m.scheme, "' is not always, first or never"));
  }
  return m;
}

absl::Status Unsupported(const std::string& where, const std::string& kind,
                         const std::string& type) {
  return absl::InvalidArgumentError(
      absl::StrCat(where, ": ", kind, " type '", type, "' is not supported"));
}

}  // namespace paft::tokenizer::hf
