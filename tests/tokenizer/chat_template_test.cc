// Chat templates against Jinja2 itself: tests/tokenizer/golden/chat.golden.json was written by
// make_chat_goldens.py with Debian's python3-jinja2 set up as transformers' apply_chat_template
// sets it up, for the hand-written templates of chat_cases.json (always run) and the real chat
// templates of Llama-3, Qwen3 and Gemma-3 (run when fetch_tokenizers.sh has cached them).
#include "tokenizer/chat_template.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/file_util.h"
#include "tests/testing/tokenizer_cache.h"

namespace paft::tokenizer {
namespace {

using json = nlohmann::ordered_json;
using ::testing::HasSubstr;

json ReadJson(const std::string& path) {
  auto text = ReadFileToString(path);
  EXPECT_TRUE(text.ok()) << text.status();
  return json::parse(text.ok() ? *text : "null");
}

TEST(ChatTemplateTest, RendersAsJinja2) {
  const json cases = ReadJson(JoinPath(PAFT_GOLDEN_DIR, "chat_cases.json"));
  const json goldens = ReadJson(JoinPath(PAFT_GOLDEN_DIR, "chat.golden.json"));
  std::map<std::string, ChatTemplate> templates;
  for (const auto& [name, source] : cases["templates"].items()) {
    auto t = ChatTemplate::FromConfig(
        json{{"chat_template", source}, {"bos_token", "<s>"}, {"eos_token", "</s>"}}.dump(), name);
    ASSERT_TRUE(t.ok()) << t.status();
    templates.emplace(name, std::move(**t));
  }
  std::vector<std::string> skipped;
  for (const char* name : {"llama3", "qwen3", "gemma3"}) {
    const std::string config = JoinPath(testing::TokenizerCacheDir(), std::string(name) + "/tokenizer_config.json");
    if (!IsRegularFile(config)) {
      skipped.push_back(name);
      continue;
    }
    auto t = ChatTemplate::Load(config);
    ASSERT_TRUE(t.ok()) << t.status();
    templates.emplace(name, std::move(**t));
  }
  int checked = 0;
  for (const json& g : goldens) {
    auto it = templates.find(g["template"].get<std::string>());
    if (it == templates.end()) continue;
    json conversation = cases["conversations"][g["conversation"].get<size_t>()];
    const json messages = conversation["messages"];
    conversation.erase("messages");
    auto text = it->second.Render(messages, g["add_generation_prompt"].get<bool>(), conversation);
    const std::string where = g.dump();
    if (g.contains("error")) {
      ASSERT_FALSE(text.ok()) << where;
      const std::string error = g["error"];
      if (error.rfind("TemplateError: ", 0) == 0) {  // raise_exception: its message surfaces
        EXPECT_THAT(std::string(text.status().message()), HasSubstr(error.substr(15))) << where;
      }
    } else {
      ASSERT_TRUE(text.ok()) << where << " " << text.status();
      EXPECT_EQ(*text, g["text"].get<std::string>()) << where;
    }
    ++checked;
  }
  EXPECT_GE(checked, 54);
  if (!skipped.empty()) {
    std::cout << "real chat templates not fetched (run tests/tokenizer/golden/fetch_tokenizers.sh): "
              << skipped.size() << " skipped\n";
  }
}

absl::Status RenderError(const std::string& source) {
  auto t = ChatTemplate::FromConfig(json{{"chat_template", source}}.dump(), "tokenizer_config.json");
  if (!t.ok()) return t.status();
  return (*t)->Render(json::array({{{"role", "user"}, {"content", "hi"}}}), false).status();
}

TEST(ChatTemplateTest, UnsupportedConstructsAndBadTemplatesAreNamed) {
  EXPECT_THAT(std::string(RenderError("ok\n{% include 'other.j2' %}").message()),
              HasSubstr("tokenizer_config.json: chat_template: template line 2: statement 'include' is not supported"));
  EXPECT_THAT(std::string(RenderError("{{ messages|dictsort }}").message()),
              HasSubstr("template line 1: filter 'dictsort' is not supported"));
  EXPECT_THAT(std::string(RenderError("{{ 'a'.zfill(3) }}").message()),
              HasSubstr("method 'zfill' is not supported"));
  EXPECT_THAT(std::string(RenderError("{{ messages[0].role ").message()), HasSubstr("unclosed '{{'"));
  EXPECT_THAT(std::string(RenderError("{% if true %}x").message()), HasSubstr("missing {% endif %}"));
  EXPECT_THAT(std::string(RenderError("{{ raise_exception('Only user and assistant roles') }}").message()),
              HasSubstr("raise_exception: Only user and assistant roles"));
  EXPECT_THAT(std::string(RenderError("{% set x = [] %}{{ x.append(1) }}").message()),
              HasSubstr("list.append is not allowed"));
  EXPECT_THAT(std::string(RenderError("{{ undefined_thing.attr }}").message()),
              HasSubstr("cannot read 'attr' of an undefined value"));
  auto named = ChatTemplate::FromConfig(R"({"chat_template": [{"name": "tool_use", "template": "t"}]})", "c.json");
  EXPECT_THAT(std::string(named.status().message()), HasSubstr("no 'default' entry"));
  auto none = ChatTemplate::FromConfig(R"({"bos_token": "<s>"})", "c.json");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

}  // namespace
}  // namespace paft::tokenizer
