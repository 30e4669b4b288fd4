#include "tokenizer/hf/tokenizer.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "common/status.h"
#include "tokenizer/hf/json_fields.h"
#include "tokenizer/hf/unicode.h"

namespace paft::tokenizer::hf {
namespace {

using json = nlohmann::json;

// The special tokens a post-processor puts before a single sequence; refuses processors that
// are not implemented.
absl::Status PrefixSpecialTokens(const json& j, const std::string& where,
                                 std::vector<std::string>* prefix) {
  if (j.is_null()) return absl::OkStatus();
  PAFT_ASSIGN_OR_RETURN(std::string type, TypeOf(j, where));
  if (type == "ByteLevel") return absl::OkStatus();  // offsets only
  if (type == "Sequence") {
    PAFT_ASSIGN_OR_RETURN(const json* list, ArrayField(j, "processors", where));
    for (size_t i = 0; i < list->size(); ++i) {
      PAFT_RETURN_IF_ERROR(
          PrefixSpecialTokens((*list)[i], absl::StrCat(where, ".processors[", i, "]"), prefix));
    }
    return absl::OkStatus();
  }
  if (type == "TemplateProcessing") {
    PAFT_ASSIGN_OR_RETURN(const json* single, ArrayField(j, "single", where));
    for (const json& item : *single) {
      if (item.contains("Sequence")) break;
      if (!item.contains("SpecialToken") || !item["SpecialToken"].contains("id")) {
        return absl::InvalidArgumentError(absl::StrCat(where, ".single: unexpected item ", item.dump()));
      }
      prefix->push_back(item["SpecialToken"]["id"].get<std::string>());
    }
    return absl::OkStatus();
  }
  return Unsupported(where, "post_processor", type);
}

// tokenizer_config.json's token entry: a string or {"content": ...}.
std::string TokenContent(const json& config, const char* key) {
  if (!config.contains(key)) return "";
  const json& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    return v["content"].get<std::string>();
  }
  return "";
}

}  // namespace

absl::StatusOr<std::unique_ptr<HfTokenizer>> HfTokenizer::Load(const std::string& json_path,
                                                               const std::string& config_path) {
  PAFT_ASSIGN_OR_RETURN(std::string text, ReadFileToString(json_path));
  std::string config;
  if (!config_path.empty() && IsRegularFile(config_path)) {
    PAFT_ASSIGN_OR_RETURN(config, ReadFileToString(config_path));
  }
  return FromJson(text, config, json_path);
}

absl::StatusOr<std::unique_ptr<HfTokenizer>> HfTokenizer::FromJson(const std::string& json_text,
                                                                   const std::string& config_text,
                                                                   const std::string& name) {
  const json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": not a JSON object"));
  }
  std::unique_ptr<HfTokenizer> t(new HfTokenizer());
  auto annotate = [&](const absl::Status& s) { return Annotate(s, name); };
  auto normalizer = MakeNormalizer(j.value("normalizer", json()), "normalizer");
  if (!normalizer.ok()) return annotate(normalizer.status());
  t->normalizer_ = std::move(*normalizer);
  auto pre = MakePreTokenizer(j.value("pre_tokenizer", json()), "pre_tokenizer");
  if (!pre.ok()) return annotate(pre.status());
  t->pre_tokenizer_ = std::move(*pre);
  auto decoder = MakeDecoder(j.value("decoder", json()), "decoder");
  if (!decoder.ok()) return annotate(decoder.status());
  t->decoder_ = std::move(*decoder);

  const json model = j.value("model", json());
  auto type = TypeOf(model, "model");
  if (!type.ok()) return annotate(type.status());
  if (*type != "BPE") return annotate(Unsupported("model", "model", *type));
  auto bpe = Bpe::FromJson(model, "model");
  if (!bpe.ok()) return annotate(bpe.status());
  t->model_ = std::make_unique<Bpe>(std::move(*bpe));

  auto added = AddedVocabulary::FromJson(j.value("added_tokens", json()), t->normalizer_.get(),
                                         "added_tokens");
  if (!added.ok()) return annotate(added.status());
  t->added_ = std::move(*added);

  t->id_to_token_ = t->model_->id_to_token();
  for (const AddedToken& token : t->added_.tokens()) {
    if (t->id_to_token_.size() <= token.id) t->id_to_token_.resize(token.id + 1);
    t->id_to_token_[token.id] = token.content;
  }
  t->vocab_size_ = static_cast<int64_t>(t->id_to_token_.size());

  std::vector<std::string> prefix;
  auto processor = PrefixSpecialTokens(j.value("post_processor", json()), "post_processor", &prefix);
  if (!processor.ok()) return annotate(processor);
  auto id_of = [&](const std::string& content) -> int64_t {
    if (content.empty()) return -1;
    if (auto id = t->added_.TokenToId(content)) return *id;
    if (auto id = t->model_->TokenToId(content)) return *id;
    return -1;
  };
  if (!prefix.empty()) t->bos_id_ = id_of(prefix.front());
  if (!config_text.empty()) {
    const json config = json::parse(config_text, nullptr, false);
    if (config.is_discarded() || !config.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": tokenizer_config.json is not a JSON object"));
    }
    t->eos_id_ = id_of(TokenContent(config, "eos_token"));
    const std::string cls = config.value("tokenizer_class", "");
    const bool llama_like = cls.rfind("Llama", 0) == 0 || cls.rfind("CodeLlama", 0) == 0 ||
                            cls.rfind("Gemma", 0) == 0;
    if (llama_like) {
      // transformers rebuilds these from tokenizer.model instead of reading tokenizer.json.
      if (config.contains("add_prefix_space") && !config["add_prefix_space"].is_null()) {
        return absl::InvalidArgumentError(absl::StrCat(
            name, ": tokenizer_config.json: add_prefix_space with ", cls,
            " makes transformers rebuild the tokenizer from tokenizer.model (from_slow); not "
            "supported"));
      }
      // ... and their post-processor from add_bos_token (default true) and add_eos_token.
      const json add_bos = config.value("add_bos_token", json(true));
      const json add_eos = config.value("add_eos_token", json(false));
      if (add_eos.is_boolean() && add_eos.get<bool>()) {
        return absl::InvalidArgumentError(absl::StrCat(
            name, ": tokenizer_config.json: add_eos_token true is not supported"));
      }
      t->bos_id_ = add_bos.is_boolean() && add_bos.get<bool>()
                       ? id_of(TokenContent(config, "bos_token"))
                       : -1;
    }
  }
  return t;
}

absl::StatusOr<std::vector<uint32_t>> HfTokenizer::Encode(const std::string& text) const {
  if (!IsValidUtf8(text)) return absl::InvalidArgumentError("the text is not valid UTF-8");
  std::vector<uint32_t> ids;
  std::vector<Segment> normalized;
  for (Segment& segment : added_.SplitRaw(text)) {
    if (segment.id) {
      normalized.push_back(std::move(segment));
      continue;
    }
    if (normalizer_ != nullptr) PAFT_RETURN_IF_ERROR(normalizer_->Normalize(&segment.text));
    added_.SplitNormalized(segment, &normalized);
  }
  std::vector<Piece> pieces;
  for (const Segment& segment : normalized) {
    if (segment.id) {
      ids.push_back(*segment.id);
      continue;
    }
    if (segment.text.empty()) continue;
    pieces.assign(1, Piece{segment.text, segment.at_start});
    if (pre_tokenizer_ != nullptr) PAFT_RETURN_IF_ERROR(pre_tokenizer_->PreTokenize(&pieces));
    for (const Piece& piece : pieces) model_->Encode(piece.text, &ids);
  }
  return ids;
}

std::string HfTokenizer::Decode(const std::vector<uint32_t>& ids) const {
  std::vector<std::string> tokens;
  for (uint32_t id : ids) {
    if (id < id_to_token_.size() && !id_to_token_[id].empty()) tokens.push_back(id_to_token_[id]);
  }
  if (decoder_ == nullptr) return absl::StrJoin(tokens, " ");  // the library without a decoder
  decoder_->DecodeChain(&tokens);
  std::string text;
  for (const std::string& t : tokens) text += t;
  return text;
}

}  // namespace paft::tokenizer::hf
