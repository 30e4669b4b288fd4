#include "tokenizer/hf/normalizer.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "tokenizer/hf/json_fields.h"
#include "tokenizer/hf/pattern.h"
#include "tokenizer/hf/unicode.h"

namespace paft::tokenizer::hf {
namespace {

using json = nlohmann::json;

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps)
      : steps_(std::move(steps)) {}
  absl::Status Normalize(std::string* text) const override {
    for (const auto& step : steps_) PAFT_RETURN_IF_ERROR(step->Normalize(text));
    return absl::OkStatus();
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

class FormNormalizer : public Normalizer {
 public:
  explicit FormNormalizer(NormalForm form) : form_(form) {}
  absl::Status Normalize(std::string* text) const override {
    // ASCII is invariant under every normal form.
    bool ascii = true;
    for (char c : *text) ascii = ascii && static_cast<uint8_t>(c) < 0x80;
    if (ascii) return absl::OkStatus();
    PAFT_ASSIGN_OR_RETURN(*text, hf::Normalize(*text, form_));
    return absl::OkStatus();
  }

 private:
  NormalForm form_;
};

// Prepends a string to non-empty text.
class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  absl::Status Normalize(std::string* text) const override {
    if (!text->empty()) text->insert(0, prefix_);
    return absl::OkStatus();
  }

 private:
  std::string prefix_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  absl::Status Normalize(std::string* text) const override {
    auto replaced = pattern_.ReplaceAll(*text, content_);
    if (!replaced.ok()) return replaced.status();
    *text = std::move(*replaced);
    return absl::OkStatus();
  }

 private:
  Pattern pattern_;
  std::string content_;
};

// Removes leading and/or trailing Unicode whitespace.
class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  absl::Status Normalize(std::string* text) const override {
    size_t begin = 0, end = text->size();
    while (left_ && begin < end) {
      size_t next = begin;
      if (!IsWhitespace(NextCodePoint(*text, &next))) break;
      begin = next;
    }
    while (right_ && end > begin) {
      size_t start = 0;
      if (!IsWhitespace(PreviousCodePoint(*text, end, &start))) break;
      end = start;
    }
    *text = text->substr(begin, end - begin);
    return absl::OkStatus();
  }

 private:
  bool left_, right_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> MakeNormalizer(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  PAFT_ASSIGN_OR_RETURN(std::string type, TypeOf(j, where));
  if (type == "Sequence") {
    PAFT_ASSIGN_OR_RETURN(auto steps, MakeSequence<Normalizer>(j, "normalizers", where, MakeNormalizer));
    return std::unique_ptr<Normalizer>(new SequenceNormalizer(std::move(steps)));
  }
  if (type == "NFC") return std::unique_ptr<Normalizer>(new FormNormalizer(NormalForm::kNfc));
  if (type == "NFD") return std::unique_ptr<Normalizer>(new FormNormalizer(NormalForm::kNfd));
  if (type == "NFKC") return std::unique_ptr<Normalizer>(new FormNormalizer(NormalForm::kNfkc));
  if (type == "NFKD") return std::unique_ptr<Normalizer>(new FormNormalizer(NormalForm::kNfkd));
  if (type == "Prepend") {
    PAFT_ASSIGN_OR_RETURN(std::string prefix, StringField(j, "prepend", where));
    return std::unique_ptr<Normalizer>(new PrependNormalizer(std::move(prefix)));
  }
  if (type == "Replace") {
    PAFT_ASSIGN_OR_RETURN(Pattern pattern, Pattern::FromJson(j.value("pattern", json()),
                                                             where + ".pattern"));
    PAFT_ASSIGN_OR_RETURN(std::string content, StringField(j, "content", where));
    return std::unique_ptr<Normalizer>(new ReplaceNormalizer(std::move(pattern), std::move(content)));
  }
  if (type == "Strip") {
    PAFT_ASSIGN_OR_RETURN(bool left, BoolField(j, "strip_left", where));
    PAFT_ASSIGN_OR_RETURN(bool right, BoolField(j, "strip_right", where));
    return std::unique_ptr<Normalizer>(new StripNormalizer(left, right));
  }
  return Unsupported(where, "normalizer", type);
}

}  // namespace paft::tokenizer::hf
