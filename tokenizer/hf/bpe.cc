#include "tokenizer/hf/bpe.h"

#include <cstdio>
#include <queue>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "tokenizer/hf/unicode.h"

namespace paft::tokenizer::hf {
namespace {

using json = nlohmann::json;

constexpr size_t kCacheEntries = 1 << 17;  // pieces remembered before the cache is reset
constexpr size_t kCachedPieceBytes = 256;  // longer pieces are not cached

// Debian's abseil has its own string_view: lookups go through it.
absl::string_view Key(std::string_view s) { return absl::string_view(s.data(), s.size()); }

uint64_t PairKey(uint32_t a, uint32_t b) { return (static_cast<uint64_t>(a) << 32) | b; }

}  // namespace

absl::StatusOr<Bpe> Bpe::FromJson(const json& m, const std::string& where) {
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
  };
  if (!m.value("dropout", json()).is_null() && m["dropout"] != 0.0) {
    return bad("BPE dropout is not supported");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (m.contains(key) && !m[key].is_null() && m[key] != "") {
      return bad(absl::StrCat("BPE ", key, " is not supported"));
    }
  }
  if (!m.contains("vocab") || !m["vocab"].is_object()) return bad("BPE vocab must be an object");
  if (!m.contains("merges") || !m["merges"].is_array()) return bad("BPE merges must be a list");
  Bpe bpe;
  bpe.vocab_.reserve(m["vocab"].size());
  for (const auto& [token, id] : m["vocab"].items()) {
    if (!id.is_number_unsigned()) return bad(absl::StrCat("vocab '", token, "': id must be a number"));
    const uint32_t value = id.get<uint32_t>();
    bpe.vocab_[token] = value;
    if (bpe.id_to_token_.size() <= value) bpe.id_to_token_.resize(value + 1);
    bpe.id_to_token_[value] = token;
  }
  const json& merges = m["merges"];
  bpe.merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const json& merge = merges[rank];
    std::string left, right;
    if (merge.is_string()) {  // "a b"
      const std::string& s = merge.get_ref<const std::string&>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        return bad(absl::StrCat("merges[", rank, "]: '", s, "' is not two tokens"));
      }
      left = s.substr(0, space), right = s.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
               merge[1].is_string()) {  // ["a", "b"]
      left = merge[0].get<std::string>(), right = merge[1].get<std::string>();
    } else {
      return bad(absl::StrCat("merges[", rank, "] is not a pair of tokens"));
    }
    auto a = bpe.vocab_.find(left), b = bpe.vocab_.find(right),
         ab = bpe.vocab_.find(left + right);
    if (a == bpe.vocab_.end() || b == bpe.vocab_.end() || ab == bpe.vocab_.end()) {
      return bad(absl::StrCat("merges[", rank, "]: '", left, "' + '", right,
                              "' is not in the vocabulary"));
    }
    bpe.merges_.emplace(PairKey(a->second, b->second),
                        std::make_pair(static_cast<uint32_t>(rank), ab->second));
  }
  if (m.contains("unk_token") && m["unk_token"].is_string()) {
    auto unk = bpe.vocab_.find(m["unk_token"].get<std::string>());
    if (unk == bpe.vocab_.end()) return bad("unk_token is not in the vocabulary");
    bpe.unk_id_ = unk->second;
  }
  bpe.fuse_unk_ = m.value("fuse_unk", false);
  bpe.byte_fallback_ = m.value("byte_fallback", false);
  bpe.ignore_merges_ = m.value("ignore_merges", false);
  if (bpe.byte_fallback_) {
    bpe.byte_ids_.resize(256);
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      auto it = bpe.vocab_.find(name);
      if (it != bpe.vocab_.end()) bpe.byte_ids_[b] = it->second;
    }
  }
  return bpe;
}

std::optional<uint32_t> Bpe::TokenToId(std::string_view token) const {
  auto it = vocab_.find(Key(token));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

void Bpe::Encode(std::string_view piece, std::vector<uint32_t>* ids) const {
  if (piece.size() > kCachedPieceBytes) return EncodeUncached(piece, ids);
  auto it = cache_.find(Key(piece));
  if (it != cache_.end()) {
    ids->insert(ids->end(), it->second.begin(), it->second.end());
    return;
  }
  std::vector<uint32_t> out;
  EncodeUncached(piece, &out);
  ids->insert(ids->end(), out.begin(), out.end());
  if (cache_.size() >= kCacheEntries) cache_.clear();
  cache_.emplace(std::string(piece), std::move(out));
}

void Bpe::EncodeUncached(std::string_view piece, std::vector<uint32_t>* ids) const {
  if (ignore_merges_) {
    auto it = vocab_.find(Key(piece));
    if (it != vocab_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  // Initial symbols: one per character.
  struct Symbol {
    uint32_t id;
    int prev, next;
    bool alive;
  };
  std::vector<Symbol> symbols;
  bool last_unk = false;
  for (size_t pos = 0; pos < piece.size();) {
    const size_t begin = pos;
    NextCodePoint(piece, &pos);
    const std::string_view ch = piece.substr(begin, pos - begin);
    auto it = vocab_.find(Key(ch));
    if (it != vocab_.end()) {
      symbols.push_back({it->second, 0, 0, true});
      last_unk = false;
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (unsigned char b : ch) all = all && byte_ids_[b].has_value();
      if (all) {
        for (unsigned char b : ch) symbols.push_back({*byte_ids_[b], 0, 0, true});
        last_unk = false;
        continue;
      }
    }
    if (unk_id_) {
      if (!(fuse_unk_ && last_unk)) symbols.push_back({*unk_id_, 0, 0, true});
      last_unk = true;
    }
  }
  const int n = static_cast<int>(symbols.size());
  for (int i = 0; i < n; ++i) symbols[i].prev = i - 1, symbols[i].next = i + 1 < n ? i + 1 : -1;

  // Merges by (rank, position), as the library's priority queue.
  struct Candidate {
    uint32_t rank;
    int pos;
    uint32_t left, right, merged;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto consider = [&](int pos) {
    if (pos < 0 || symbols[pos].next < 0) return;
    const uint32_t a = symbols[pos].id, b = symbols[symbols[pos].next].id;
    auto it = merges_.find(PairKey(a, b));
    if (it != merges_.end()) queue.push({it->second.first, pos, a, b, it->second.second});
  };
  for (int i = 0; i + 1 < n; ++i) consider(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& s = symbols[top.pos];
    // Stale: the symbol or its right neighbour changed since this pair was queued.
    if (!s.alive || s.next < 0 || s.id != top.left || symbols[s.next].id != top.right) continue;
    Symbol& right = symbols[s.next];
    s.id = top.merged;
    right.alive = false;
    s.next = right.next;
    if (s.next >= 0) symbols[s.next].prev = top.pos;
    consider(s.prev);
    consider(top.pos);
  }
  for (int i = 0; i >= 0 && i < n; i = symbols[i].next) ids->push_back(symbols[i].id);
}

}  // namespace paft::tokenizer::hf
