// paft-prepare: tokenizes a JSONL dataset with a sentencepiece model into the binary format the
// trainer reads (common/token_dataset.h). Its own process: sentencepiece cannot share one with
// LibTorch or gRPC on Debian 12.
//
//   paft-prepare --tokenizer=tokenizer.model --input=train.jsonl --output=train.paftds
//                [--format=auto] [--chat_template=chatml] [--max_seq_len=512]
//                [--truncation=keep_end] [--add_bos=true] [--add_eos=true]
//   paft-prepare --tokenizer=tokenizer.model --decode=1,2,3
// Exit codes: 0 done, 2 bad input (named in the message), 1 other errors.
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/file_util.h"
#include "tokenizer/prepare.h"
#include "tokenizer/spm.h"

ABSL_FLAG(std::string, tokenizer, "", "sentencepiece model (tokenizer.model)");
ABSL_FLAG(std::string, input, "", "JSONL dataset");
ABSL_FLAG(std::string, output, "", "Output .paftds file");
ABSL_FLAG(std::string, format, "auto", "auto, prompt_completion, messages, text, preference");
ABSL_FLAG(std::string, chat_template, "chatml", "chatml or plain (for messages)");
ABSL_FLAG(int64_t, max_seq_len, 512, "Longest example in tokens");
ABSL_FLAG(std::string, truncation, "keep_end", "keep_end, keep_start or drop");
ABSL_FLAG(bool, add_bos, true, "Prepend the tokenizer's BOS");
ABSL_FLAG(bool, add_eos, true, "Append the tokenizer's EOS to completions");
ABSL_FLAG(std::string, decode, "", "Decode comma-separated ids and print the text");
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

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::unique_ptr<SpmTokenizer> tokenizer;
  if (!absl::GetFlag(FLAGS_tokenizer).empty()) {
    std::string error;
    auto model = paft::tokenizer::SpmModel::Load(absl::GetFlag(FLAGS_tokenizer), &error);
    if (model == nullptr) {
      std::cerr << "error: " << error << "\n";
      return 2;
    }
    tokenizer = std::make_unique<SpmTokenizer>(std::move(model));
  }
  if (!absl::GetFlag(FLAGS_decode).empty()) {
    if (tokenizer == nullptr) {
      std::cerr << "error: --decode needs --tokenizer\n";
      return 2;
    }
    std::vector<uint32_t> ids;
    for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_decode), ',')) {
      uint32_t id;
      if (!absl::SimpleAtoi(part, &id)) {
        std::cerr << "error: --decode: '" << part << "' is not a token id\n";
        return 2;
      }
      ids.push_back(id);
    }
    std::cout << tokenizer->model().Decode(ids) << "\n";
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
  options.chat_template = absl::GetFlag(FLAGS_chat_template);
  options.max_seq_len = absl::GetFlag(FLAGS_max_seq_len);
  options.truncation = absl::GetFlag(FLAGS_truncation);
  options.add_bos = absl::GetFlag(FLAGS_add_bos);
  options.add_eos = absl::GetFlag(FLAGS_add_eos);
  options.vocab_size = absl::GetFlag(FLAGS_vocab_size);
  auto result = paft::tokenizer::PrepareJsonl(*text, options, tokenizer.get());
  if (!result.ok()) {
    std::cerr << "error: " << absl::GetFlag(FLAGS_input) << ": " << result.status().message()
              << "\n";
    return 2;
  }
  nlohmann::json provenance = {{"source", absl::GetFlag(FLAGS_input)},
                               {"tokenizer", absl::GetFlag(FLAGS_tokenizer)},
                               {"max_seq_len", options.max_seq_len},
                               {"truncation", options.truncation},
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
  return 0;
}
