// Where a prompt ends and its completions begin, as TRL 1.16 decides it (its SFTTrainer and
// DPOTrainer `_prepare_dataset`): the prompt alone and prompt + each completion are tokenized as
// whole sequences, and every completion starts where the prompt's tokens and the whole
// sequences' tokens first diverge (`common_prefix_length`) -- at the prompt's end, unless a token
// merges across the boundary or a chat template renders the prompt alone differently. Also TRL's
// `extract_prompt` for preference records whose prompt is implicit in both answers.
#ifndef PAFT_TOKENIZER_SEQUENCE_SPLIT_H_
#define PAFT_TOKENIZER_SEQUENCE_SPLIT_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "tokenizer/prepare.h"

namespace paft::tokenizer {

struct PromptSplit {
  std::vector<uint32_t> prompt;
  std::vector<std::vector<uint32_t>> completions;  // one per whole sequence, in order
  // The prompt's own tokens are not all a prefix of every whole sequence (TRL warns).
  bool mismatch = false;
};

// `prompt` and each of `wholes` (the prompt's text followed by a completion's) encoded; `bos` >= 0
// is put first in each, `eos` >= 0 last in each whole sequence unless it ends with it already.
absl::StatusOr<PromptSplit> SplitAtPrompt(const Tokenizer& tokenizer, const std::string& prompt,
                                          const std::vector<std::string>& wholes, int64_t bos,
                                          int64_t eos);

// TRL's extract_prompt: the prompt is the longest common prefix of `chosen` and `rejected` (code
// points of two strings, or messages of two conversations); a string prefix gives up a trailing
// space to the answers. Returns {prompt, chosen, rejected}; refuses a pair with no common prefix
// or where one answer is all prefix (TRL's result there is not a preference pair).
absl::StatusOr<std::array<nlohmann::ordered_json, 3>> ExtractPrompt(
    const nlohmann::ordered_json& chosen, const nlohmann::ordered_json& rejected);

}  // namespace paft::tokenizer

#endif  // PAFT_TOKENIZER_SEQUENCE_SPLIT_H_
