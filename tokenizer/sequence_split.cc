#include "tokenizer/sequence_split.h"

#include <algorithm>

#include "common/status.h"

namespace paft::tokenizer {
namespace {

using json = nlohmann::ordered_json;

size_t CommonPrefix(const std::vector<uint32_t>& a, const std::vector<uint32_t>& b) {
  return static_cast<size_t>(std::mismatch(a.begin(), a.begin() + std::min(a.size(), b.size()), b.begin()).first -
                             a.begin());
}

// The byte offset where two UTF-8 strings' code points first differ (the start of that code
// point), or npos if one is a prefix of the other.
size_t FirstDifferentCodePoint(const std::string& a, const std::string& b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  if (i == n) return std::string::npos;
  while (i > 0 && (static_cast<unsigned char>(a[i]) & 0xC0) == 0x80) --i;  // a continuation byte
  return i;
}

}  // namespace

absl::StatusOr<PromptSplit> SplitAtPrompt(const Tokenizer& tokenizer, const std::string& prompt,
                                          const std::vector<std::string>& wholes, int64_t bos,
                                          int64_t eos) {
  PAFT_ASSIGN_OR_RETURN(std::vector<uint32_t> prompt_ids, tokenizer.Encode(prompt));
  if (bos >= 0) prompt_ids.insert(prompt_ids.begin(), static_cast<uint32_t>(bos));
  std::vector<std::vector<uint32_t>> all;
  size_t boundary = prompt_ids.size();
  for (const std::string& whole : wholes) {
    PAFT_ASSIGN_OR_RETURN(std::vector<uint32_t> ids, tokenizer.Encode(whole));
    if (bos >= 0) ids.insert(ids.begin(), static_cast<uint32_t>(bos));
    if (eos >= 0 && (ids.empty() || ids.back() != static_cast<uint32_t>(eos))) {
      ids.push_back(static_cast<uint32_t>(eos));
    }
    boundary = std::min(boundary, CommonPrefix(prompt_ids, ids));
    all.push_back(std::move(ids));
  }
  PromptSplit split;
  split.mismatch = boundary < prompt_ids.size();
  if (all.empty()) return split;
  split.prompt.assign(all[0].begin(), all[0].begin() + static_cast<std::ptrdiff_t>(boundary));
  for (const auto& ids : all) {
    split.completions.emplace_back(ids.begin() + static_cast<std::ptrdiff_t>(boundary), ids.end());
  }
  return split;
}

absl::StatusOr<std::array<json, 3>> ExtractPrompt(const json& chosen, const json& rejected) {
  if (chosen.is_string() && rejected.is_string()) {
    const std::string c = chosen.get<std::string>(), r = rejected.get<std::string>();
    size_t at = FirstDifferentCodePoint(c, r);
    if (at == std::string::npos) {
      return absl::InvalidArgumentError(
          "'chosen' and 'rejected' have no 'prompt', and one is a prefix of the other: give the "
          "prompt explicitly");
    }
    if (at > 0 && c[at - 1] == ' ') --at;  // TRL leaves the space before the answers to them
    if (at == 0) {
      return absl::InvalidArgumentError(
          "'chosen' and 'rejected' have no 'prompt' and no common beginning to take it from");
    }
    return std::array<json, 3>{c.substr(0, at), c.substr(at), r.substr(at)};
  }
  if (chosen.is_array() && rejected.is_array()) {
    const size_t n = std::min(chosen.size(), rejected.size());
    size_t at = 0;
    while (at < n && chosen[at] == rejected[at]) ++at;
    if (at == n) {
      return absl::InvalidArgumentError(
          "'chosen' and 'rejected' have no 'prompt', and one conversation is a prefix of the "
          "other: give the prompt explicitly");
    }
    if (at == 0) {
      return absl::InvalidArgumentError(
          "'chosen' and 'rejected' have no 'prompt' and no common first messages to take it from");
    }
    const auto split = [at](const json& messages, bool head) {
      return head ? json(messages.begin(), messages.begin() + static_cast<std::ptrdiff_t>(at))
                  : json(messages.begin() + static_cast<std::ptrdiff_t>(at), messages.end());
    };
    return std::array<json, 3>{split(chosen, true), split(chosen, false), split(rejected, false)};
  }
  return absl::InvalidArgumentError(
      "'chosen' and 'rejected' must both be strings or both be lists of messages");
}

}  // namespace paft::tokenizer
