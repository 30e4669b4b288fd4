// JSONL datasets in TRL's formats -> tokenized examples (common/token_dataset.h).
//
// SFT records:   {"prompt", "completion"} (strings, or lists of messages) | {"messages": [...]}
//                | {"text"} | {"prompt_ids", "completion_ids"}
// Preference:    {"prompt", "chosen", "rejected"} (strings, or lists of messages) | the same
//                without "prompt" (TRL's implicit prompt: what both answers begin with)
//                | {"prompt_ids", "chosen_ids", "rejected_ids"}
// Tokenization follows TRL 1.16 (tokenizer/sequence_split.h): the prompt alone and prompt + each
// answer are tokenized as whole sequences -- text with BOS (the tokenizer's post-processor) and
// EOS, conversations rendered with the model's chat template (the prompt with the generation
// prompt), which places its own special tokens -- and the answers start where the prompt's
// tokens and the whole sequences' diverge. A "messages" conversation is TRL's conversational
// prompt-completion: the last assistant message is the completion (or, with assistant_turns
// "all", every assistant turn is trained). Without the model's template, SFT conversations use a
// built-in one (`chat_template`), prompt and completion encoded on their own.
// This code knows no tokenizer library: the tokenizer is an interface (sentencepiece lives in
// the paft-prepare binary only, since it cannot share a process with torch or gRPC).
#ifndef PAFT_TOKENIZER_PREPARE_H_
#define PAFT_TOKENIZER_PREPARE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/token_dataset.h"
#include "nlohmann/json.hpp"

namespace paft::tokenizer {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual absl::StatusOr<std::vector<uint32_t>> Encode(const std::string& text) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int64_t bos_id() const = 0;  // -1 if none
  virtual int64_t eos_id() const = 0;  // -1 if none
};

// apply_chat_template(messages, add_generation_prompt, tokenize=False) of the model's tokenizer.
using RenderChatFn =
    std::function<absl::StatusOr<std::string>(const nlohmann::ordered_json& messages,
                                              bool add_generation_prompt)>;

struct PrepareOptions {
  std::string format = "auto";  // auto, prompt_completion, messages, text, preference
  // The model's chat template; when absent, `chat_template` names a built-in one.
  RenderChatFn render_chat;
  std::string chat_template = "chatml";  // chatml, plain (without render_chat)
  // Conversations ("messages" with the model's template): train on the "last" assistant turn
  // (TRL's prompt-completion) or on "all" of them (the turns between stay untrained).
  std::string assistant_turns = "last";
  // TRL's max_length and truncation_mode: a sequence (prompt + completion) longer than
  // max_length keeps its first max_length tokens ("keep_start", TRL's default) or its last
  // ("keep_end": the prompt's start goes first, then the completion's; SFT only, since TRL cuts
  // a pair's two sequences separately); "drop" (paft's own) skips it. Examples left without a
  // completion (or loss) token are dropped, as TRL does.
  int64_t max_length = 1024;
  std::string truncation_mode = "keep_start";
  bool add_bos = true;
  bool add_eos = true;
  // > 0: every token id must be below it (the model's vocabulary); pre-tokenized ids above it
  // are an error naming the line.
  int64_t vocab_size = 0;
};

struct PrepareResult {
  DatasetKind kind = DatasetKind::kSft;
  std::vector<TokenExample> examples;
  int64_t truncated = 0;
  int64_t dropped = 0;
  // Examples whose prompt tokens are not all a prefix of the whole sequences' tokens (TRL warns;
  // the answers start where they diverge, as here).
  int64_t boundary_mismatches = 0;
};

// Parses and tokenizes `jsonl`. Errors name the line and the key ("line 3: 'completion' must be a
// string"). `tokenizer` may be null when every record is pre-tokenized.
absl::StatusOr<PrepareResult> PrepareJsonl(const std::string& jsonl, const PrepareOptions& options,
                                           const Tokenizer* tokenizer);

// Renders a conversation with a template: returns (prompt text, completion text).
absl::StatusOr<std::pair<std::string, std::string>> RenderChat(const nlohmann::ordered_json& messages,
                                                                const std::string& chat_template);

}  // namespace paft::tokenizer

#endif  // PAFT_TOKENIZER_PREPARE_H_
