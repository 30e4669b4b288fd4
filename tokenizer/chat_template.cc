#include "tokenizer/chat_template.h"

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/status.h"

namespace paft::tokenizer {

using json = nlohmann::json;

absl::StatusOr<std::optional<ChatTemplate>> ChatTemplate::FromConfig(const std::string& text,
                                                                     const std::string& name) {
  const json config = json::parse(text, nullptr, false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": not a JSON object"));
  }
  if (!config.contains("chat_template") || config["chat_template"].is_null()) return std::nullopt;
  std::string main_source;
  std::optional<std::string> tool_source;
  const json& t = config["chat_template"];
  if (t.is_string()) {
    main_source = t.get<std::string>();
  } else if (t.is_array()) {
    for (const json& entry : t) {
      if (!entry.is_object() || !entry.value("name", json()).is_string() ||
          !entry.value("template", json()).is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, ": chat_template: each entry needs a name and a template"));
      }
      if (entry["name"] == "default") main_source = entry["template"].get<std::string>();
      if (entry["name"] == "tool_use") tool_source = entry["template"].get<std::string>();
    }
    if (main_source.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": chat_template has no 'default' entry"));
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat(name, ": chat_template must be a string or a list"));
  }
  ChatTemplate c;
  c.name_ = name;
  auto parsed = jinja::Template::Parse(main_source);
  if (!parsed.ok()) return Annotate(parsed.status(), absl::StrCat(name, ": chat_template"));
  c.default_ = std::move(*parsed);
  if (tool_source) {
    auto tools = jinja::Template::Parse(*tool_source);
    if (!tools.ok()) return Annotate(tools.status(), absl::StrCat(name, ": chat_template tool_use"));
    c.tool_use_ = std::move(*tools);
  }
  // The special tokens as strings, as transformers' special_tokens_map passes them.
  for (const char* key : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token",
                          "cls_token", "mask_token"}) {
    if (!config.contains(key)) continue;
    const json& v = config[key];
    if (v.is_string()) c.special_tokens_[key] = v.get<std::string>();
    if (v.is_object() && v.value("content", json()).is_string()) c.special_tokens_[key] = v["content"].get<std::string>();
  }
  if (config.contains("additional_special_tokens") && config["additional_special_tokens"].is_array()) {
    nlohmann::ordered_json extra = nlohmann::ordered_json::array();
    for (const json& v : config["additional_special_tokens"]) {
      if (v.is_string()) extra.push_back(v.get<std::string>());
      if (v.is_object() && v.value("content", json()).is_string()) extra.push_back(v["content"].get<std::string>());
    }
    c.special_tokens_["additional_special_tokens"] = std::move(extra);
  }
  return std::optional<ChatTemplate>(std::move(c));
}

absl::StatusOr<std::optional<ChatTemplate>> ChatTemplate::Load(const std::string& config_path) {
  PAFT_ASSIGN_OR_RETURN(std::string text, ReadFileToString(config_path));
  return FromConfig(text, config_path);
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::ordered_json& messages,
                                                 bool add_generation_prompt,
                                                 const nlohmann::ordered_json& extra) const {
  nlohmann::ordered_json context = special_tokens_;
  context["messages"] = messages;
  context["add_generation_prompt"] = add_generation_prompt;
  context["tools"] = nullptr;
  context["documents"] = nullptr;
  if (extra.is_object()) {
    for (const auto& [k, v] : extra.items()) context[k] = v;
  }
  const bool with_tools = !context["tools"].is_null();
  const jinja::Template& t = with_tools && tool_use_ ? *tool_use_ : default_;
  auto text = t.Render(context);
  if (!text.ok()) return Annotate(text.status(), absl::StrCat(name_, ": chat_template"));
  return text;
}

}  // namespace paft::tokenizer
