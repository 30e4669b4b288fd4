#include "tokenizer/hf/pre_tokenizer.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "tokenizer/hf/json_fields.h"
#include "tokenizer/hf/pattern.h"
#include "tokenizer/hf/unicode.h"

namespace paft::tokenizer::hf {
namespace {

using json = nlohmann::json;

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// The HF tokenizers library's split of one piece by pattern matches: the text as a cover of
// (range, is_match) parts, reshaped by the behavior, empty parts dropped.
absl::Status SplitPiece(const Piece& piece, const Pattern& pattern, Behavior behavior,
                        bool invert, std::vector<Piece>* out) {
  struct Part {
    size_t begin, end;
    bool flag;  // is a match (kRemoved: to remove)
  };
  std::vector<std::pair<size_t, size_t>> matches;
  PAFT_RETURN_IF_ERROR(pattern.FindMatches(piece.text, &matches));
  std::vector<Part> parts;
  size_t prev = 0;
  for (const auto& [b, e] : matches) {
    if (b != prev) parts.push_back({prev, b, false});
    parts.push_back({b, e, true});
    prev = e;
  }
  if (prev != piece.text.size() || piece.text.empty()) parts.push_back({prev, piece.text.size(), false});
  if (invert) {
    for (Part& p : parts) p.flag = !p.flag;
  }
  std::vector<Part> shaped;
  bool previous_match = false;
  switch (behavior) {
    case Behavior::kIsolated:
      for (Part p : parts) shaped.push_back({p.begin, p.end, false});
      break;
    case Behavior::kRemoved:
      for (Part p : parts) if (!p.flag) shaped.push_back(p);
      break;
    case Behavior::kContiguous:
      for (Part p : parts) {
        if (p.flag == previous_match && !shaped.empty()) {
          shaped.back().end = p.end;
        } else {
          shaped.push_back({p.begin, p.end, false});
        }
        previous_match = p.flag;
      }
      break;
    case Behavior::kMergedWithPrevious:
      for (Part p : parts) {
        if (p.flag && !previous_match && !shaped.empty()) {
          shaped.back().end = p.end;
        } else {
          shaped.push_back({p.begin, p.end, false});
        }
        previous_match = p.flag;
      }
      break;
    case Behavior::kMergedWithNext:
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->flag && !previous_match && !shaped.empty()) {
          shaped.back().begin = it->begin;
        } else {
          shaped.push_back({it->begin, it->end, false});
        }
        previous_match = it->flag;
      }
      std::reverse(shaped.begin(), shaped.end());
      break;
  }
  for (const Part& p : shaped) {
    if (p.end == p.begin) continue;
    out->push_back({piece.text.substr(p.begin, p.end - p.begin), piece.at_start && p.begin == 0});
  }
  return absl::OkStatus();
}

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  absl::Status PreTokenize(std::vector<Piece>* pieces) const override {
    for (const auto& step : steps_) PAFT_RETURN_IF_ERROR(step->PreTokenize(pieces));
    return absl::OkStatus();
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(Pattern pattern, Behavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  absl::Status PreTokenize(std::vector<Piece>* pieces) const override {
    std::vector<Piece> out;
    for (const Piece& piece : *pieces) {
      PAFT_RETURN_IF_ERROR(SplitPiece(piece, pattern_, behavior_, invert_, &out));
    }
    *pieces = std::move(out);
    return absl::OkStatus();
  }

 private:
  Pattern pattern_;
  Behavior behavior_;
  bool invert_;
};

// GPT-2's split (use_regex) and byte-to-character mapping.
constexpr char kGpt2Regex[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<Pattern> split)
      : add_prefix_space_(add_prefix_space), split_(std::move(split)) {}
  absl::Status PreTokenize(std::vector<Piece>* pieces) const override {
    std::vector<Piece> split;
    for (Piece piece : *pieces) {
      if (add_prefix_space_ && (piece.text.empty() || piece.text[0] != ' ')) {
        piece.text.insert(0, " ");
      }
      if (split_) {
        PAFT_RETURN_IF_ERROR(SplitPiece(piece, *split_, Behavior::kIsolated, false, &split));
      } else if (!piece.text.empty()) {
        split.push_back(std::move(piece));
      }
    }
    const auto& table = ByteToChars();
    for (Piece& piece : split) {
      std::string mapped;
      mapped.reserve(piece.text.size() * 2);
      for (unsigned char b : piece.text) mapped += table[b];
      piece.text = std::move(mapped);
    }
    *pieces = std::move(split);
    return absl::OkStatus();
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Pattern> split_;
};

// Spaces become the replacement character (prepended as the scheme says); with `split`, each
// replacement starts a new piece.
class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, std::string scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(std::move(scheme)), split_(split) {}
  absl::Status PreTokenize(std::vector<Piece>* pieces) const override {
    std::vector<Piece> out;
    const Pattern marker = Pattern::Literal(replacement_);
    for (Piece piece : *pieces) {
      std::string text;
      for (char c : piece.text) {
        if (c == ' ') {
          text += replacement_;
        } else {
          text += c;
        }
      }
      const bool starts = text.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts && (scheme_ == "always" || (scheme_ == "first" && piece.at_start))) {
        text.insert(0, replacement_);
      }
      piece.text = std::move(text);
      if (split_) {
        PAFT_RETURN_IF_ERROR(SplitPiece(piece, marker, Behavior::kMergedWithNext, false, &out));
      } else if (!piece.text.empty()) {
        out.push_back(std::move(piece));
      }
    }
    *pieces = std::move(out);
    return absl::OkStatus();
  }

 private:
  std::string replacement_, scheme_;
  bool split_;
};

absl::StatusOr<Behavior> ParseBehavior(const json& j, const std::string& where) {
  PAFT_ASSIGN_OR_RETURN(std::string name, StringField(j, "behavior", where));
  if (name == "Removed") return Behavior::kRemoved;
  if (name == "Isolated") return Behavior::kIsolated;
  if (name == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return Behavior::kMergedWithNext;
  if (name == "Contiguous") return Behavior::kContiguous;
  return absl::InvalidArgumentError(
      absl::StrCat(where, ".behavior: '", name, "' is not a split behavior"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePreTokenizer(const json& j,
                                                               const std::string& where) {
  if (j.is_null()) return nullptr;
  PAFT_ASSIGN_OR_RETURN(std::string type, TypeOf(j, where));
  if (type == "Sequence") {
    PAFT_ASSIGN_OR_RETURN(auto steps, MakeSequence<PreTokenizer>(j, "pretokenizers", where, MakePreTokenizer));
    return std::unique_ptr<PreTokenizer>(new SequencePreTokenizer(std::move(steps)));
  }
  if (type == "Split") {
    PAFT_ASSIGN_OR_RETURN(Pattern pattern, Pattern::FromJson(j.value("pattern", json()),
                                                             where + ".pattern"));
    PAFT_ASSIGN_OR_RETURN(Behavior behavior, ParseBehavior(j, where));
    PAFT_ASSIGN_OR_RETURN(bool invert, BoolField(j, "invert", where));
    return std::unique_ptr<PreTokenizer>(
        new SplitPreTokenizer(std::move(pattern), behavior, invert));
  }
  if (type == "ByteLevel") {
    PAFT_ASSIGN_OR_RETURN(bool prefix, BoolField(j, "add_prefix_space", where));
    const bool use_regex = j.value("use_regex", true);
    std::unique_ptr<Pattern> split;
    if (use_regex) {
      PAFT_ASSIGN_OR_RETURN(Pattern gpt2, Pattern::Regex(kGpt2Regex, where));
      split = std::make_unique<Pattern>(std::move(gpt2));
    }
    return std::unique_ptr<PreTokenizer>(new ByteLevelPreTokenizer(prefix, std::move(split)));
  }
  if (type == "Metaspace") {
    PAFT_ASSIGN_OR_RETURN(MetaspaceSettings m, ParseMetaspace(j, where));
    return std::unique_ptr<PreTokenizer>(
        new MetaspacePreTokenizer(m.replacement, m.scheme, j.value("split", true)));
  }
  return Unsupported(where, "pre_tokenizer", type);
}

}  // namespace paft::tokenizer::hf
