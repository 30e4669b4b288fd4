// A thin wrapper over sentencepiece with std types only: sentencepiece's header declares its own
// `absl` names, so it must not meet the system abseil headers in one translation unit.
#ifndef PAFT_TOKENIZER_SPM_H_
#define PAFT_TOKENIZER_SPM_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace paft::tokenizer {

class SpmModel {
 public:
  // nullptr and *error set on failure.
  static std::unique_ptr<SpmModel> Load(const std::string& path, std::string* error);
  ~SpmModel();

  bool Encode(const std::string& text, std::vector<uint32_t>* ids, std::string* error) const;
  std::string Decode(const std::vector<uint32_t>& ids) const;
  int64_t vocab_size() const;
  int64_t bos_id() const;
  int64_t eos_id() const;

 private:
  struct Impl;
  explicit SpmModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace paft::tokenizer

#endif  // PAFT_TOKENIZER_SPM_H_
