// tokenizer.json's "decoder": token strings back to text. Supported types: Sequence, ByteLevel,
// Replace, ByteFallback, Fuse, Strip, Metaspace; anything else is refused by name.
#ifndef PAFT_TOKENIZER_HF_DECODER_H_
#define PAFT_TOKENIZER_HF_DECODER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace paft::tokenizer::hf {

class Decoder {
 public:
  virtual ~Decoder() = default;
  // Rewrites the token strings (the library's decode_chain); the text is their concatenation.
  virtual void DecodeChain(std::vector<std::string>* tokens) const = 0;
};

// null gives nullptr (tokens are concatenated as they are).
absl::StatusOr<std::unique_ptr<Decoder>> MakeDecoder(const nlohmann::json& j,
                                                     const std::string& where);

}  // namespace paft::tokenizer::hf

#endif  // PAFT_TOKENIZER_HF_DECODER_H_
