#include "tokenizer/hf/added_vocabulary.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "tokenizer/hf/unicode.h"

namespace paft::tokenizer::hf {

using json = nlohmann::json;

void AddedVocabulary::Trie::Add(std::string_view pattern, int token) {
  if (pattern.empty()) return;
  int node = 0;
  for (unsigned char c : pattern) {
    auto it = nodes[node].next.find(c);
    if (it == nodes[node].next.end()) {
      nodes.push_back(Node{});
      it = nodes[node].next.emplace(c, static_cast<int>(nodes.size()) - 1).first;
    }
    node = it->second;
  }
  if (nodes[node].token < 0) nodes[node].token = token;  // the first token with a content wins
  first_byte[static_cast<unsigned char>(pattern[0])] = true;
}

absl::StatusOr<AddedVocabulary> AddedVocabulary::FromJson(const json& list,
                                                          const Normalizer* normalizer,
                                                          const std::string& where) {
  AddedVocabulary v;
  if (list.is_null()) return v;
  if (!list.is_array()) return absl::InvalidArgumentError(absl::StrCat(where, ": expected a list"));
  for (size_t i = 0; i < list.size(); ++i) {
    const json& t = list[i];
    const std::string at = absl::StrCat(where, "[", i, "]");
    if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() || t["id"] < 0 ||
        !t.contains("content") || !t["content"].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(at, ": needs a numeric id and a content"));
    }
    AddedToken token;
    token.id = t["id"].get<uint32_t>();
    token.content = t["content"].get<std::string>();
    token.special = t.value("special", false);
    token.lstrip = t.value("lstrip", false);
    token.rstrip = t.value("rstrip", false);
    token.single_word = t.value("single_word", false);
    token.normalized = t.value("normalized", !token.special);
    v.tokens_.push_back(token);
  }
  for (size_t i = 0; i < v.tokens_.size(); ++i) {
    const AddedToken& token = v.tokens_[i];
    if (!token.normalized) {
      v.raw_.Add(token.content, static_cast<int>(i));
      continue;
    }
    std::string content = token.content;
    if (normalizer != nullptr) {
      auto status = normalizer->Normalize(&content);
      if (!status.ok()) return Annotate(status, absl::StrCat(where, "[", i, "]"));
    }
    v.normalized_.Add(content, static_cast<int>(i));
  }
  return v;
}

std::optional<uint32_t> AddedVocabulary::TokenToId(std::string_view content) const {
  for (const AddedToken& t : tokens_) {
    if (t.content == content) return t.id;
  }
  return std::nullopt;
}

std::vector<Segment> AddedVocabulary::SplitRaw(std::string_view text) const {
  std::vector<Segment> out;
  Split(text, /*at_start=*/true, raw_, &out);
  return out;
}

void AddedVocabulary::SplitNormalized(const Segment& segment, std::vector<Segment>* out) const {
  if (segment.id || normalized_.nodes.size() == 1) {
    out->push_back(segment);
    return;
  }
  Split(segment.text, segment.at_start, normalized_, out);
}

void AddedVocabulary::Split(std::string_view text, bool at_start, const Trie& trie,
                            std::vector<Segment>* out) const {
  // Leftmost-longest, non-overlapping matches of the whole text first; then each is checked
  // (single_word) and widened (lstrip, rstrip), as the library does.
  struct Match {
    size_t begin, end;
    int token;
  };
  std::vector<Match> matches;
  if (trie.nodes.size() > 1) {
    for (size_t i = 0; i < text.size();) {
      if (!trie.first_byte[static_cast<unsigned char>(text[i])]) {
        ++i;
        continue;
      }
      int node = 0, best = -1;
      size_t best_end = 0;
      for (size_t j = i; j < text.size(); ++j) {
        auto it = trie.nodes[node].next.find(static_cast<unsigned char>(text[j]));
        if (it == trie.nodes[node].next.end()) break;
        node = it->second;
        if (trie.nodes[node].token >= 0) best = trie.nodes[node].token, best_end = j + 1;
      }
      if (best < 0) {
        ++i;
        continue;
      }
      matches.push_back({i, best_end, best});
      i = best_end;
    }
  }
  size_t consumed = 0;  // end of the previous accepted match
  std::vector<Match> accepted;
  for (Match m : matches) {
    const AddedToken& token = tokens_[m.token];
    if (m.begin < consumed) continue;  // inside whitespace an rstrip token took
    if (token.single_word) {
      size_t before = 0;
      const bool start_ok = m.begin == 0 || !IsAlphanumeric(PreviousCodePoint(text, m.begin, &before));
      size_t after = m.end;
      const bool stop_ok = m.end == text.size() || !IsAlphanumeric(NextCodePoint(text, &after));
      if (!start_ok || !stop_ok) continue;
    }
    if (token.lstrip) {
      size_t begin = m.begin;
      while (begin > consumed) {
        size_t start = 0;
        if (!IsWhitespace(PreviousCodePoint(text, begin, &start))) break;
        begin = start;
      }
      m.begin = std::max(begin, consumed);
    }
    if (token.rstrip) {
      size_t end = m.end;
      while (end < text.size()) {
        size_t next = end;
        if (!IsWhitespace(NextCodePoint(text, &next))) break;
        end = next;
      }
      m.end = end;
    }
    consumed = m.end;
    accepted.push_back(m);
  }
  size_t at = 0;
  for (const Match& m : accepted) {
    if (m.begin > at) out->push_back({std::string(text.substr(at, m.begin - at)), {}, at_start && at == 0});
    out->push_back({std::string(text.substr(m.begin, m.end - m.begin)), tokens_[m.token].id,
                    at_start && m.begin == 0});
    at = m.end;
  }
  if (at < text.size()) out->push_back({std::string(text.substr(at)), {}, at_start && at == 0});
}

}  // namespace paft::tokenizer::hf
