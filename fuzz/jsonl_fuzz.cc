// JSONL datasets in TRL's formats: any bytes must give a dataset or an error naming the line,
// with every format and truncation policy. A byte-level tokenizer stands in for sentencepiece.
#include <cstdint>
#include <string>

#include "tokenizer/prepare.h"

namespace {

class ByteTokenizer : public paft::tokenizer::Tokenizer {
 public:
  absl::StatusOr<std::vector<uint32_t>> Encode(const std::string& text) const override {
    return std::vector<uint32_t>(text.begin(), text.end());
  }
  int64_t vocab_size() const override { return 259; }
  int64_t bos_id() const override { return 256; }
  int64_t eos_id() const override { return 257; }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // The first byte picks the options, the rest is the file.
  static const char* kFormats[] = {"auto", "prompt_completion", "messages", "text", "preference"};
  static const char* kTruncation[] = {"keep_end", "keep_start", "drop"};
  paft::tokenizer::PrepareOptions options;
  options.format = kFormats[data[0] % 5];
  options.truncation_mode = kTruncation[(data[0] / 5) % 3];
  options.chat_template = (data[0] & 0x80) ? "plain" : "chatml";
  options.max_length = 1 + (data[0] % 64);
  const std::string jsonl(reinterpret_cast<const char*>(data) + 1, size - 1);
  ByteTokenizer tokenizer;
  auto result = paft::tokenizer::PrepareJsonl(jsonl, options, &tokenizer);
  if (!result.ok()) return 0;
  for (const auto& e : result->examples) {
    if (static_cast<int64_t>(e.prompt.size() + e.completion.size()) > options.max_length ||
        static_cast<int64_t>(e.prompt.size() + e.rejected.size()) > options.max_length) {
      __builtin_trap();  // truncation must bound every sequence
    }
  }
  return 0;
}
