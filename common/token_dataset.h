// Tokenized datasets: the compact binary file that `paft-prepare` writes from JSONL and the
// trainer reads through mmap.
//
//   "PAFTDS01" | u64 header length | JSON header | index | tokens
//   header: {"kind": "sft"|"preference", "examples": N, "fingerprint": hex, ...provenance}
//   index:  N entries of {u64 first_token, u32 len[3]} (24 bytes, little-endian): the segment
//           lengths -- sft: prompt, completion, loss runs; preference: prompt, chosen, rejected
//   An sft example's loss runs (usually none) are u32 lengths alternating trained, untrained,
//   trained, ... that cover its completion (training on every assistant turn of a conversation
//   leaves the user turns between them untrained); none: every completion token is trained.
//   tokens: u32 token ids, each example's segments back to back
// The fingerprint is a 64-bit FNV-1a over the index and tokens, so a checkpoint can refuse to
// resume on changed data.
#ifndef PAFT_COMMON_TOKEN_DATASET_H_
#define PAFT_COMMON_TOKEN_DATASET_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "nlohmann/json.hpp"

namespace paft {

enum class DatasetKind { kSft, kPreference };

struct TokenExample {
  std::vector<uint32_t> prompt;
  std::vector<uint32_t> completion;  // sft: the completion; preference: chosen
  std::vector<uint32_t> rejected;    // preference only
  std::vector<uint32_t> loss_runs;   // sft only: trained/untrained runs over the completion
};

// Whether completion token `k` is trained under `runs` (empty: all are).
bool TrainedToken(absl::Span<const uint32_t> runs, int64_t k);
// `runs` cut to cover only the first `length` completion tokens.
void TruncateRuns(std::vector<uint32_t>* runs, int64_t length);
// `runs` with the first `count` completion tokens removed (they start with a trained run, so a
// cut that lands in an untrained run leaves a zero-length trained run first).
void DropRunsFront(std::vector<uint32_t>* runs, int64_t count);

// Writes a dataset atomically. `provenance` is merged into the header (source file, tokenizer,
// truncation counts, ...).
absl::Status WriteTokenDataset(const std::string& path, DatasetKind kind,
                               const std::vector<TokenExample>& examples,
                               const nlohmann::json& provenance = nlohmann::json::object());

class TokenDataset {
 public:
  // Maps and validates a dataset file (magic, header, every index entry within the tokens).
  static absl::StatusOr<std::unique_ptr<TokenDataset>> Open(const std::string& path);
  ~TokenDataset();

  DatasetKind kind() const { return kind_; }
  int64_t size() const { return static_cast<int64_t>(count_); }
  const std::string& fingerprint() const { return fingerprint_; }
  const nlohmann::json& header() const { return header_; }
  // Segments of example i: prompt, completion (or chosen), rejected (empty for sft).
  absl::Span<const uint32_t> prompt(int64_t i) const { return Segment(i, 0); }
  absl::Span<const uint32_t> completion(int64_t i) const { return Segment(i, 1); }
  absl::Span<const uint32_t> rejected(int64_t i) const {
    return kind_ == DatasetKind::kPreference ? Segment(i, 2) : absl::Span<const uint32_t>();
  }
  // An sft example's loss runs (empty: the whole completion is trained).
  absl::Span<const uint32_t> loss_runs(int64_t i) const {
    return kind_ == DatasetKind::kSft ? Segment(i, 2) : absl::Span<const uint32_t>();
  }

 private:
  TokenDataset() = default;
  absl::Span<const uint32_t> Segment(int64_t i, int which) const;

  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  DatasetKind kind_ = DatasetKind::kSft;
  uint64_t count_ = 0;
  const uint8_t* index_ = nullptr;
  const uint32_t* tokens_ = nullptr;
  uint64_t token_count_ = 0;
  std::string fingerprint_;
  nlohmann::json header_;
};

// InvalidArgument naming the dataset, the example and the id when a token id is not below
// `vocab_size` (a model's vocabulary): such an id would index past the embedding table.
absl::Status CheckTokenIds(const TokenDataset& data, int64_t vocab_size, const std::string& name);

// FNV-1a 64 as 16 hex digits.
std::string Fingerprint(absl::Span<const uint8_t> data);

}  // namespace paft

#endif  // PAFT_COMMON_TOKEN_DATASET_H_
