#include "tokenizer/hf/decoder.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "tokenizer/hf/json_fields.h"
#include "tokenizer/hf/pattern.h"
#include "tokenizer/hf/unicode.h"

namespace paft::tokenizer::hf {
namespace {

using json = nlohmann::json;

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps) : steps_(std::move(steps)) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (const auto& step : steps_) step->DecodeChain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

// Byte-level characters back to bytes, the whole sequence at once (a character may be split
// across tokens); invalid UTF-8 becomes U+FFFD.
class ByteLevelDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::string bytes;
    for (const std::string& token : *tokens) {
      // As the library: a token whose characters are not all byte-level (an added token) goes
      // through as its own UTF-8 bytes.
      std::string mapped;
      bool all_mapped = true;
      for (size_t pos = 0; pos < token.size() && all_mapped;) {
        const int b = CharToByte(NextCodePoint(token, &pos));
        if (b < 0) {
          all_mapped = false;
        } else {
          mapped.push_back(static_cast<char>(b));
        }
      }
      bytes += all_mapped ? mapped : token;
    }
    *tokens = {LossyUtf8(bytes)};
  }
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (std::string& token : *tokens) {
      auto replaced = pattern_.ReplaceAll(token, content_);
      if (replaced.ok()) token = std::move(*replaced);  // a failed match leaves the token as is
    }
  }

 private:
  Pattern pattern_;
  std::string content_;
};

// Runs of <0xXX> tokens become their bytes when those are valid UTF-8, else one U+FFFD per byte.
class ByteFallbackDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    size_t count = 0;
    auto flush = [&] {
      if (count == 0) return;
      if (IsValidUtf8(bytes)) {
        out.push_back(bytes);
      } else {
        for (size_t i = 0; i < count; ++i) out.push_back("\xEF\xBF\xBD");
      }
      bytes.clear();
      count = 0;
    };
    for (const std::string& token : *tokens) {
      int value = -1;
      if (token.size() == 6 && token.compare(0, 3, "<0x") == 0 && token[5] == '>') {
        value = static_cast<int>(std::strtol(token.substr(3, 2).c_str(), nullptr, 16));
        if (!std::isxdigit(static_cast<unsigned char>(token[3])) ||
            !std::isxdigit(static_cast<unsigned char>(token[4]))) {
          value = -1;
        }
      }
      if (value >= 0) {
        bytes.push_back(static_cast<char>(value));
        ++count;
      } else {
        flush();
        out.push_back(token);
      }
    }
    flush();
    *tokens = std::move(out);
  }
};

class FuseDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::string all;
    for (const std::string& t : *tokens) all += t;
    *tokens = {all};
  }
};

// Removes up to `start` leading and `stop` trailing `content` characters of every token.
class StripDecoder : public Decoder {
 public:
  StripDecoder(std::string content, int start, int stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (std::string& token : *tokens) {
      size_t begin = 0, end = token.size();
      for (int i = 0; i < start_ && token.compare(begin, content_.size(), content_) == 0 &&
                      begin < end;
           ++i) {
        begin += content_.size();
      }
      for (int i = 0; i < stop_ && end >= begin + content_.size() &&
                      token.compare(end - content_.size(), content_.size(), content_) == 0;
           ++i) {
        end -= content_.size();
      }
      token = token.substr(begin, end - begin);
    }
  }

 private:
  std::string content_;
  int start_, stop_;
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool prepended)
      : replacement_(std::move(replacement)), prepended_(prepended) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      std::string out;
      const std::string& token = (*tokens)[i];
      for (size_t at = 0; at < token.size();) {
        if (token.compare(at, replacement_.size(), replacement_) == 0) {
          out += ' ';
          at += replacement_.size();
        } else {
          out += token[at++];
        }
      }
      if (i == 0 && prepended_ && !out.empty() && out[0] == ' ') out.erase(0, 1);
      (*tokens)[i] = std::move(out);
    }
  }

 private:
  std::string replacement_;
  bool prepended_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Decoder>> MakeDecoder(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  PAFT_ASSIGN_OR_RETURN(std::string type, TypeOf(j, where));
  if (type == "Sequence") {
    PAFT_ASSIGN_OR_RETURN(auto steps, MakeSequence<Decoder>(j, "decoders", where, MakeDecoder));
    return std::unique_ptr<Decoder>(new SequenceDecoder(std::move(steps)));
  }
  if (type == "ByteLevel") return std::unique_ptr<Decoder>(new ByteLevelDecoder());
  if (type == "ByteFallback") return std::unique_ptr<Decoder>(new ByteFallbackDecoder());
  if (type == "Fuse") return std::unique_ptr<Decoder>(new FuseDecoder());
  if (type == "Replace") {
    PAFT_ASSIGN_OR_RETURN(Pattern pattern, Pattern::FromJson(j.value("pattern", json()),
                                                             where + ".pattern"));
    PAFT_ASSIGN_OR_RETURN(std::string content, StringField(j, "content", where));
    return std::unique_ptr<Decoder>(new ReplaceDecoder(std::move(pattern), std::move(content)));
  }
  if (type == "Strip") {
    PAFT_ASSIGN_OR_RETURN(std::string content, StringField(j, "content", where));
    return std::unique_ptr<Decoder>(
        new StripDecoder(content, j.value("start", 0), j.value("stop", 0)));
  }
  if (type == "Metaspace") {
    PAFT_ASSIGN_OR_RETURN(MetaspaceSettings m, ParseMetaspace(j, where));
    return std::unique_ptr<Decoder>(new MetaspaceDecoder(m.replacement, m.scheme != "never"));
  }
  return Unsupported(where, "decoder", type);
}

}  // namespace paft::tokenizer::hf
