// Typed access to tokenizer.json fields with errors that name the JSON location.
#ifndef PAFT_TOKENIZER_HF_JSON_FIELDS_H_
#define PAFT_TOKENIZER_HF_JSON_FIELDS_H_

#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace paft::tokenizer::hf {

// j["type"] of a component object.
absl::StatusOr<std::string> TypeOf(const nlohmann::json& j, const std::string& where);
absl::StatusOr<std::string> StringField(const nlohmann::json& j, const char* key,
                                        const std::string& where);
absl::StatusOr<bool> BoolField(const nlohmann::json& j, const char* key, const std::string& where);
absl::StatusOr<const nlohmann::json*> ArrayField(const nlohmann::json& j, const char* key,
                                                 const std::string& where);
// "<where>: <kind> type '<type>' is not supported".
absl::Status Unsupported(const std::string& where, const std::string& kind,
                         const std::string& type);

}  // namespace paft::tokenizer::hf

#endif  // PAFT_TOKENIZER_HF_JSON_FIELDS_H_
