// paft-prepare: tokenizes a JSONL dataset with a model's tokenizer (tokenizer.json, in C++, or a
// sentencepiece tokenizer.model) into the binary format the trainer reads
// (common/token_dataset.h). Its own process: sentencepiece cannot share one with LibTorch or gRPC
// on Debian 12.
//
//   paft-prepare --tokenizer=MODEL_DIR --input=train.jsonl --output=train.paftds
//                [--format=auto] [--chat_template=chatml] [--max_length=1024]
//                [--truncation_mode=keep_start] [--add_bos=true] [--add_eos=true]
//   paft-prepare --tokenizer=MODEL_DIR --encode < {"text": ...} lines > {"ids": [...]} lines
//   paft-prepare --tokenizer=MODEL_DIR --decode=1,2,3
//   paft-prepare --tokenizer=MODEL_DIR --render [--add_generation_prompt] < {"messages"} lines
// Exit codes: 0 done, 2 bad input (named in the message), 1 other errors.
#include <filesystem>
#include <functional>
#include <optional>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/file_util.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/hf/tokenizer.h"
#include "tokenizer/prepare.h"
#include "tokenizer/spm.h"

ABSL_FLAG(std::string, tokenizer, "",
          "A model folder (its tokenizer.json, else its tokenizer.model), a tokenizer.json or a "
          "sentencepiece tokenizer.model");
ABSL_FLAG(std::string, input, "", "JSONL dataset");
ABSL_FLAG(std::string, output, "", "Output .paftds file");
ABSL_FLAG(std::string, format, "auto", "auto, prompt_completion, messages, text, preference");
ABSL_FLAG(std::string, chat_template, "",
          "Conversations: '' or auto (the tokenizer's own chat template, else chatml), model (the "
          "tokenizer's, required), or a built-in one: chatml, plain");
ABSL_FLAG(int64_t, max_length, 0,
          "Longest sequence (prompt + completion) in tokens (TRL's max_length; default 1024)");
ABSL_FLAG(int64_t, max_seq_len, 0,
          "Old name of --max_length (as the job spec's batch.max_seq_len), taken as it");
ABSL_FLAG(std::string, assistant_turns, "last",
          "Conversations with the model's template: train on the last assistant turn or on all");
ABSL_FLAG(std::string, truncation_mode, "keep_start",
          "keep_start (TRL's default), keep_end (SFT only) or drop");
ABSL_FLAG(bool, add_bos, true, "Prepend the tokenizer's BOS");
ABSL_FLAG(bool, add_eos, true, "Append the tokenizer's EOS to completions");
ABSL_FLAG(std::string, decode, "", "Decode comma-separated ids and print the text");
ABSL_FLAG(bool, encode, false,
          "Read {\"text\": ...} JSON lines on stdin, write {\"ids\": [...]} lines: the ids of "
          "tokenizer.encode(text, add_special_tokens=False)");
ABSL_FLAG(bool, render, false,
          "Read {\"messages\": [...], ...} JSON lines on stdin, write {\"text\": ...} lines: "
          "apply_chat_template(messages, tokenize=False) with the tokenizer's chat template; "
          "other keys of a line are passed to the template (tools, enable_thinking, ...)");
ABSL_FLAG(bool, add_generation_prompt, false, "--render: add the generation prompt");
ABSL_FLAG(int64_t, vocab_size, 0,
          "The model's vocabulary: token ids must be below it (0: only the tokenizer's bound)");

namespace {

class SpmTokenizer : public paft::tokenizer::Tokenizer {
 public:
  explicit SpmTokenizer(std::unique_ptr<paft::tokenizer::SpmModel> model)
      : model_(std::move(model)) {}
  absl::StatusOr<std::vector<uint32_t>> Encode(const std::string& text) const override {
    std::vector<uint32_t> ids;
    std::string error;
    if (!model_->Encode(text, &ids, &error)) return absl::InvalidArgumentError(error);
    return ids;
  }
  int64_t vocab_size() const override { return model_->vocab_size(); }
  int64_t bos_id() const override { return model_->bos_id(); }
  int64_t eos_id() const override { return model_->eos_id(); }
  const paft::tokenizer::SpmModel& model() const { return *model_; }

 private:
  std::unique_ptr<paft::tokenizer::SpmModel> model_;
};

// A tokenizer of either kind, and its decoder.
struct LoadedTokenizer {
  std::unique_ptr<paft::tokenizer::Tokenizer> tokenizer;
  std::function<std::string(const std::vector<uint32_t>&)> decode;
  std::string file;
};

// A folder's tokenizer.json wins over its tokenizer.model, as in transformers.
absl::StatusOr<LoadedTokenizer> LoadTokenizer(const std::string& path) {
  std::string file = path;
  if (paft::IsDirectory(path)) {
    file = paft::JoinPath(path, "tokenizer.json");
    if (!paft::IsRegularFile(file)) file = paft::JoinPath(path, "tokenizer.model");
    if (!paft::IsRegularFile(file)) {
      return absl::NotFoundError(
          absl::StrCat("--tokenizer: '", path, "' has neither tokenizer.json nor tokenizer.model"));
    }
  }
  LoadedTokenizer loaded;
  loaded.file = file;
  if (absl::EndsWith(file, ".json")) {
    const std::string config =
        paft::JoinPath(std::filesystem::path(file).parent_path().string(), "tokenizer_config.json");
    auto hf = paft::tokenizer::hf::HfTokenizer::Load(file, config);
    if (!hf.ok()) return hf.status();
    auto* raw = hf->get();
    loaded.decode = [raw](const std::vector<uint32_t>& ids) { return raw->Decode(ids); };
    loaded.tokenizer = std::move(*hf);
    return loaded;
  }
  std::string error;
  auto model = paft::tokenizer::SpmModel::Load(file, &error);
  if (model == nullptr) return absl::InvalidArgumentError(error);
  auto spm = std::make_unique<SpmTokenizer>(std::move(model));
  auto* raw = spm.get();
  loaded.decode = [raw](const std::vector<uint32_t>& ids) { return raw->model().Decode(ids); };
  loaded.tokenizer = std::move(spm);
  return loaded;
}

// JSON lines on stdin, one output line each: `handle` turns a parsed line into its output line
// or an error; a line that is not a JSON object, or that fails, stops with its number (exit 2).
int ForEachJsonLine(
    const std::function<absl::StatusOr<std::string>(nlohmann::ordered_json& line)>& handle) {
  std::string line;
  int64_t number = 0;
  while (std::getline(std::cin, line)) {
    ++number;
    if (line.empty()) continue;
    nlohmann::ordered_json j = nlohmann::ordered_json::parse(line, nullptr, false);
    absl::StatusOr<std::string> out =
        j.is_discarded() || !j.is_object() ? absl::InvalidArgumentError("not a JSON object")
                                           : handle(j);
    if (!out.ok()) {
      std::cerr << "error: stdin line " << number << ": " << out.status().message() << "\n";
      return 2;
    }
    std::cout << *out << "\n";
  }
  std::cout.flush();
  return 0;
}

// --encode: {"text"} lines in, {"ids"} lines out.
int EncodeLines(const paft::tokenizer::Tokenizer& tokenizer) {
  return ForEachJsonLine([&](nlohmann::ordered_json& j) -> absl::StatusOr<std::string> {
    if (!j.contains("text") || !j["text"].is_string()) {
      return absl::InvalidArgumentError("expected {\"text\": \"...\"}");
    }
    auto ids = tokenizer.Encode(j["text"].get<std::string>());
    if (!ids.ok()) return ids.status();
    std::string out = "{\"ids\":[";
    for (size_t i = 0; i < ids->size(); ++i) {
      if (i > 0) out += ',';
      out += std::to_string((*ids)[i]);
    }
    return out + "]}";
  });
}

// The chat template of --tokenizer (a folder or a file beside tokenizer_config.json).
absl::StatusOr<paft::tokenizer::ChatTemplate> LoadChatTemplate(const std::string& path) {
  const std::string folder =
      paft::IsDirectory(path) ? path : std::filesystem::path(path).parent_path().string();
  const std::string config = paft::JoinPath(folder, "tokenizer_config.json");
  if (!paft::IsRegularFile(config)) {
    return absl::NotFoundError(absl::StrCat("--render: no tokenizer_config.json in '", folder, "'"));
  }
  auto loaded = paft::tokenizer::ChatTemplate::Load(config);
  if (!loaded.ok()) return loaded.status();
  if (!loaded->has_value()) {
    return absl::NotFoundError(absl::StrCat("--render: ", config, " has no chat_template"));
  }
  return std::move(**loaded);
}

// --render: {"messages", ...} lines in, {"text"} lines out.
int RenderLines(const paft::tokenizer::ChatTemplate& chat, bool add_generation_prompt) {
  return ForEachJsonLine([&](nlohmann::ordered_json& j) -> absl::StatusOr<std::string> {
    if (!j.contains("messages") || !j["messages"].is_array()) {
      return absl::InvalidArgumentError("expected {\"messages\": [...]}");
    }
    nlohmann::ordered_json messages = j["messages"];
    j.erase("messages");
    auto text = chat.Render(messages, add_generation_prompt, j);
    if (!text.ok()) return text.status();
    return nlohmann::json{{"text", *text}}.dump();
  });
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::ios::sync_with_stdio(false);
  if (absl::GetFlag(FLAGS_render)) {
    if (absl::GetFlag(FLAGS_tokenizer).empty()) {
      std::cerr << "error: --render needs --tokenizer\n";
      return 2;
    }
    auto chat = LoadChatTemplate(absl::GetFlag(FLAGS_tokenizer));
    if (!chat.ok()) {
      std::cerr << "error: " << chat.status().message() << "\n";
      return 2;
    }
    return RenderLines(*chat, absl::GetFlag(FLAGS_add_generation_prompt));
  }
  LoadedTokenizer loaded;
  if (!absl::GetFlag(FLAGS_tokenizer).empty()) {
    auto tokenizer = LoadTokenizer(absl::GetFlag(FLAGS_tokenizer));
    if (!tokenizer.ok()) {
      std::cerr << "error: " << tokenizer.status().message() << "\n";
      return 2;
    }
    loaded = std::move(*tokenizer);
  }
  const paft::tokenizer::Tokenizer* tokenizer = loaded.tokenizer.get();
  if (absl::GetFlag(FLAGS_encode) || !absl::GetFlag(FLAGS_decode).empty()) {
    if (tokenizer == nullptr) {
      std::cerr << "error: --encode and --decode need --tokenizer\n";
      return 2;
    }
  }
  if (absl::GetFlag(FLAGS_encode)) return EncodeLines(*tokenizer);
  if (!absl::GetFlag(FLAGS_decode).empty()) {
    std::vector<uint32_t> ids;
    for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_decode), ',')) {
      uint32_t id;
      if (!absl::SimpleAtoi(part, &id)) {
        std::cerr << "error: --decode: '" << part << "' is not a token id\n";
        return 2;
      }
      ids.push_back(id);
    }
    std::cout << loaded.decode(ids) << "\n";
    return 0;
  }
  if (absl::GetFlag(FLAGS_input).empty() || absl::GetFlag(FLAGS_output).empty()) {
    std::cerr << "error: --input and --output are required\n";
    return 2;
  }
  auto text = paft::ReadFileToString(absl::GetFlag(FLAGS_input));
  if (!text.ok()) {
    std::cerr << "error: " << text.status() << "\n";
    return 2;
  }
  paft::tokenizer::PrepareOptions options;
  options.format = absl::GetFlag(FLAGS_format);
  const std::string chat_choice = absl::GetFlag(FLAGS_chat_template);
  options.chat_template = chat_choice.empty() || chat_choice == "auto" || chat_choice == "model"
                              ? "chatml"
                              : chat_choice;
  std::optional<paft::tokenizer::ChatTemplate> model_template;
  if ((chat_choice.empty() || chat_choice == "auto" || chat_choice == "model") &&
      !absl::GetFlag(FLAGS_tokenizer).empty()) {
    auto chat = LoadChatTemplate(absl::GetFlag(FLAGS_tokenizer));
    if (chat.ok()) {
      model_template = std::move(*chat);
    } else if (chat_choice == "model" || chat.status().code() != absl::StatusCode::kNotFound) {
      std::cerr << "error: " << chat.status().message() << "\n";
      return 2;
    }
  }
  if (model_template) {
    options.render_chat = [&model_template](const nlohmann::ordered_json& messages, bool prompt) {
      return model_template->Render(messages, prompt);
    };
  }
  // --max_seq_len is --max_length's old name: it fills an unset --max_length; two different
  // values are refused.
  const int64_t max_length = absl::GetFlag(FLAGS_max_length);
  const int64_t old_name = absl::GetFlag(FLAGS_max_seq_len);
  if (old_name != 0 && max_length != 0 && old_name != max_length) {
    std::cerr << "error: --max_seq_len is the old name of --max_length; given " << old_name
              << " beside --max_length=" << max_length << "\n";
    return 2;
  }
  options.max_length = max_length != 0 ? max_length : (old_name != 0 ? old_name : 1024);
  options.assistant_turns = absl::GetFlag(FLAGS_assistant_turns);
  options.truncation_mode = absl::GetFlag(FLAGS_truncation_mode);
  options.add_bos = absl::GetFlag(FLAGS_add_bos);
  options.add_eos = absl::GetFlag(FLAGS_add_eos);
  options.vocab_size = absl::GetFlag(FLAGS_vocab_size);
  auto result = paft::tokenizer::PrepareJsonl(*text, options, tokenizer);
  if (!result.ok()) {
    std::cerr << "error: " << absl::GetFlag(FLAGS_input) << ": " << result.status().message()
              << "\n";
    return 2;
  }
  nlohmann::json provenance = {{"source", absl::GetFlag(FLAGS_input)},
                               {"tokenizer", loaded.file},
                               {"max_length", options.max_length},
                               {"truncation_mode", options.truncation_mode},
                               {"chat_template", model_template ? "model" : options.chat_template},
                               {"assistant_turns", options.assistant_turns},
                               {"boundary_mismatches", result->boundary_mismatches},
                               {"truncated", result->truncated},
                               {"dropped", result->dropped}};
  if (tokenizer != nullptr) {
    provenance["vocab_size"] = tokenizer->vocab_size();
    provenance["eos_id"] = tokenizer->eos_id();
  } else if (options.vocab_size > 0) {
    provenance["vocab_size"] = options.vocab_size;
  }
  absl::Status status = paft::WriteTokenDataset(absl::GetFlag(FLAGS_output), result->kind,
                                                result->examples, provenance);
  if (!status.ok()) {
    std::cerr << "error: " << status << "\n";
    return 1;
  }
  std::cout << "wrote " << result->examples.size() << " examples to "
            << absl::GetFlag(FLAGS_output) << " (" << result->truncated << " truncated, "
            << result->dropped << " dropped)\n";
  if (result->boundary_mismatches > 0) {
    std::cerr << "warning: " << result->boundary_mismatches
              << " examples: the prompt's tokens are not a prefix of prompt + completion's (TRL "
                 "warns the same); the completion starts after the prompt's token count\n";
  }
  return 0;
}
