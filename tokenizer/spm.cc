// The only translation unit that includes sentencepiece (see spm.h).
#include "tokenizer/spm.h"

#include <sentencepiece_processor.h>

namespace paft::tokenizer {

struct SpmModel::Impl {
  sentencepiece::SentencePieceProcessor processor;
};

SpmModel::SpmModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SpmModel::~SpmModel() = default;

std::unique_ptr<SpmModel> SpmModel::Load(const std::string& path, std::string* error) {
  auto impl = std::make_unique<Impl>();
  const auto status = impl->processor.Load(path);
  if (!status.ok()) {
    *error = "loading sentencepiece model " + path + ": " + status.ToString();
    return nullptr;
  }
  return std::unique_ptr<SpmModel>(new SpmModel(std::move(impl)));
}

bool SpmModel::Encode(const std::string& text, std::vector<uint32_t>* ids,
                      std::string* error) const {
  std::vector<int> pieces;
  const auto status = impl_->processor.Encode(text, &pieces);
  if (!status.ok()) {
    *error = status.ToString();
    return false;
  }
  ids->assign(pieces.begin(), pieces.end());
  return true;
}

std::string SpmModel::Decode(const std::vector<uint32_t>& ids) const {
  std::vector<int> pieces(ids.begin(), ids.end());
  std::string text;
  (void)impl_->processor.Decode(pieces, &text);
  return text;
}

int64_t SpmModel::vocab_size() const { return impl_->processor.GetPieceSize(); }
int64_t SpmModel::bos_id() const { return impl_->processor.bos_id(); }
int64_t SpmModel::eos_id() const { return impl_->processor.eos_id(); }

}  // namespace paft::tokenizer
