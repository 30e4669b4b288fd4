// Typed access to tokenizer.json fields with errors that name the JSON location.
#ifndef PAFT_TOKENIZER_HF_JSON_FIELDS_H_
#define PAFT_TOKENIZER_HF_JSON_FIELDS_H_

#include <memory>
#include <string>
#include <vector>

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
// The components of a "Sequence" (j[key], a list), each made by `make(item, where)`; null ones
// (no-ops) are left out.
template <typename T, typename MakeFn>
absl::StatusOr<std::vector<std::unique_ptr<T>>> MakeSequence(const nlohmann::json& j,
                                                             const char* key,
                                                             const std::string& where,
                                                             MakeFn make) {
  auto list = ArrayField(j, key, where);
  if (!list.ok()) return list.status();
  std::vector<std::unique_ptr<T>> steps;
  for (size_t i = 0; i < (*list)->size(); ++i) {
    auto step = make((**list)[i], where + "." + key + "[" + std::to_string(i) + "]");
    if (!step.ok()) return step.status();
    if (*step != nullptr) steps.push_back(std::move(*step));
  }
  return steps;
}

// A Metaspace pre-tokenizer's or decoder's settings: one replacement character and the prepend
// scheme (always, first, never; from the older add_prefix_space when absent).
struct MetaspaceSettings {
  std::string replacement;
  std::string scheme;
};
absl::StatusOr<MetaspaceSettings> ParseMetaspace(const nlohmann::json& j, const std::string& where);

// "<where>: <kind> type '<type>' is not supported".
absl::Status Unsupported(const std::string& where, const std::string& kind,
                         const std::string& type);

}  // namespace paft::tokenizer::hf

#endif  // PAFT_TOKENIZER_HF_JSON_FIELDS_H_
