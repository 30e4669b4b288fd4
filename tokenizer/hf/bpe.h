// tokenizer.json's BPE model as the HF tokenizers library applies it to one pre-tokenized piece:
// the piece itself when `ignore_merges` and it is in the vocabulary; otherwise its characters
// (unknown ones as <0xXX> byte tokens with `byte_fallback`, else `unk_token`, fused when
// `fuse_unk`), then merges applied lowest rank first, leftmost first among equals. Dropout,
// continuing_subword_prefix and end_of_word_suffix are refused.
#ifndef PAFT_TOKENIZER_HF_BPE_H_
#define PAFT_TOKENIZER_HF_BPE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace paft::tokenizer::hf {

class Bpe {
 public:
  static absl::StatusOr<Bpe> FromJson(const nlohmann::json& model, const std::string& where);

  // Appends the ids of one piece. Thread-compatible (a cache of recent pieces).
  void Encode(std::string_view piece, std::vector<uint32_t>* ids) const;

  std::optional<uint32_t> TokenToId(std::string_view token) const;
  const std::vector<std::string>& id_to_token() const { return id_to_token_; }

 private:
  void EncodeUncached(std::string_view piece, std::vector<uint32_t>* ids) const;

  absl::flat_hash_map<std::string, uint32_t> vocab_;
  std::vector<std::string> id_to_token_;  // "" for ids not in the vocabulary
  // (left id << 32 | right id) -> (rank, merged id)
  absl::flat_hash_map<uint64_t, std::pair<uint32_t, uint32_t>> merges_;
  std::optional<uint32_t> unk_id_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  std::vector<std::optional<uint32_t>> byte_ids_;  // <0xXX> tokens, with byte_fallback
  mutable absl::flat_hash_map<std::string, std::vector<uint32_t>> cache_;
};

}  // namespace paft::tokenizer::hf

#endif  // PAFT_TOKENIZER_HF_BPE_H_
