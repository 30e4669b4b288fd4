// A Hugging Face fast tokenizer (tokenizer.json of the `tokenizers` library) in C++: added
// tokens, normalizer, pre-tokenizer, BPE model, post-processor and decoder, applied as the library
// applies them. Supported: the BPE tokenizers of the families in use, byte-level (Llama-3,
// Qwen2/2.5/3, Mistral-Nemo, GPT-2) and SentencePiece-style with byte fallback (Llama-2,
// Mistral-7B, TinyLlama, Gemma). Any component or option outside what is implemented is refused
// at load time with an error naming the file and the JSON location.
#ifndef PAFT_TOKENIZER_HF_TOKENIZER_H_
#define PAFT_TOKENIZER_HF_TOKENIZER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tokenizer/hf/added_vocabulary.h"
#include "tokenizer/hf/bpe.h"
#include "tokenizer/hf/decoder.h"
#include "tokenizer/hf/normalizer.h"
#include "tokenizer/hf/pre_tokenizer.h"
#include "tokenizer/prepare.h"

namespace paft::tokenizer::hf {

class HfTokenizer : public Tokenizer {
 public:
  // `config_path` (tokenizer_config.json) may be empty or absent: it names the eos token.
  static absl::StatusOr<std::unique_ptr<HfTokenizer>> Load(const std::string& json_path,
                                                           const std::string& config_path);
  static absl::StatusOr<std::unique_ptr<HfTokenizer>> FromJson(const std::string& json_text,
                                                               const std::string& config_text,
                                                               const std::string& name);

  // tokenizer.encode(text, add_special_tokens=False): added tokens in the text are matched.
  absl::StatusOr<std::vector<uint32_t>> Encode(const std::string& text) const override;
  // tokenizer.decode(ids) with special tokens kept and no clean-up of spaces.
  std::string Decode(const std::vector<uint32_t>& ids) const;

  int64_t vocab_size() const override { return vocab_size_; }
  // The special token the post-processor puts before a single sequence (-1: none).
  int64_t bos_id() const override { return bos_id_; }
  // tokenizer_config.json's eos_token (-1: none).
  int64_t eos_id() const override { return eos_id_; }

 private:
  HfTokenizer() = default;

  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<Decoder> decoder_;
  std::unique_ptr<Bpe> model_;
  AddedVocabulary added_;
  std::vector<std::string> id_to_token_;  // model and added tokens
  int64_t vocab_size_ = 0;
  int64_t bos_id_ = -1;
  int64_t eos_id_ = -1;
};

}  // namespace paft::tokenizer::hf

#endif  // PAFT_TOKENIZER_HF_TOKENIZER_H_
