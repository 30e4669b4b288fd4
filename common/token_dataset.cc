#include "common/token_dataset.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/file_util.h"
#include "common/status.h"

namespace paft {
namespace {

constexpr char kMagic[] = "PAFTDS01";
constexpr size_t kEntryBytes = 24;

void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}
void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}
uint64_t GetU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint32_t GetU32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

absl::Status Corrupt(const std::string& path, absl::string_view what) {
  return absl::DataLossError(absl::StrCat("dataset ", path, ": ", what));
}

}  // namespace

std::string Fingerprint(absl::Span<const uint8_t> data) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (uint8_t c : data) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return absl::StrFormat("%016x", h);
}

bool TrainedToken(absl::Span<const uint32_t> runs, int64_t k) {
  if (runs.empty()) return true;
  int64_t start = 0;
  for (size_t r = 0; r < runs.size(); ++r) {
    start += runs[r];
    if (k < start) return r % 2 == 0;
  }
  return false;
}

void TruncateRuns(std::vector<uint32_t>* runs, int64_t length) {
  if (runs->empty()) return;
  int64_t covered = 0;
  for (size_t r = 0; r < runs->size(); ++r) {
    if (covered + (*runs)[r] >= length) {
      (*runs)[r] = static_cast<uint32_t>(length - covered);
      runs->resize(r + 1);
      return;
    }
    covered += (*runs)[r];
  }
}

void DropRunsFront(std::vector<uint32_t>* runs, int64_t count) {
  if (runs->empty() || count <= 0) return;
  size_t r = 0;
  while (r < runs->size() && count >= (*runs)[r]) {
    count -= (*runs)[r];
    ++r;
  }
  std::vector<uint32_t> rest;
  if (r % 2 == 1) rest.push_back(0);  // the cut starts inside (or at) an untrained run
  for (size_t i = r; i < runs->size(); ++i) {
    rest.push_back(i == r ? static_cast<uint32_t>((*runs)[i] - count) : (*runs)[i]);
  }
  *runs = std::move(rest);
}

absl::Status WriteTokenDataset(const std::string& path, DatasetKind kind,
                               const std::vector<TokenExample>& examples,
                               const nlohmann::json& provenance) {
  std::string body;  // index then tokens
  uint64_t first = 0;
  auto third = [&](const TokenExample& e) -> const std::vector<uint32_t>& {
    return kind == DatasetKind::kPreference ? e.rejected : e.loss_runs;
  };
  for (size_t i = 0; i < examples.size(); ++i) {
    const auto& e = examples[i];
    if (kind == DatasetKind::kSft && !e.loss_runs.empty()) {
      uint64_t covered = 0;
      for (uint32_t run : e.loss_runs) covered += run;
      if (covered != e.completion.size()) {
        return absl::InvalidArgumentError(absl::StrCat("example ", i, ": loss runs cover ", covered,
                                                       " tokens, its completion has ",
                                                       e.completion.size()));
      }
    }
    PutU64(&body, first);
    PutU32(&body, static_cast<uint32_t>(e.prompt.size()));
    PutU32(&body, static_cast<uint32_t>(e.completion.size()));
    PutU32(&body, static_cast<uint32_t>(third(e).size()));
    PutU32(&body, 0);  // padding to 24 bytes
    first += e.prompt.size() + e.completion.size() + third(e).size();
  }
  for (const auto& e : examples) {
    for (uint32_t t : e.prompt) PutU32(&body, t);
    for (uint32_t t : e.completion) PutU32(&body, t);
    for (uint32_t t : third(e)) PutU32(&body, t);
  }
  nlohmann::json header = provenance;
  header["kind"] = kind == DatasetKind::kSft ? "sft" : "preference";
  header["examples"] = examples.size();
  header["tokens"] = first;
  header["fingerprint"] =
      Fingerprint(absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(body.data()), body.size()));
  std::string text = header.dump();
  while ((8 + 8 + text.size()) % 8 != 0) text.push_back(' ');  // tokens 4-byte aligned
  std::string out(kMagic, 8);
  PutU64(&out, text.size());
  out += text;
  out += body;
  return WriteFileAtomic(path, out);
}

absl::StatusOr<std::unique_ptr<TokenDataset>> TokenDataset::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, absl::StrCat("opening dataset ", path));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return ErrnoToStatus(errno, absl::StrCat("stat of ", path));
  }
  std::unique_ptr<TokenDataset> ds(new TokenDataset());
  ds->size_ = static_cast<uint64_t>(st.st_size);
  if (ds->size_ < 16) {
    ::close(fd);
    return Corrupt(path, "shorter than its 16-byte preamble");
  }
  void* mapped = ::mmap(nullptr, ds->size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (mapped == MAP_FAILED) return ErrnoToStatus(errno, absl::StrCat("mmap of ", path));
  ds->base_ = static_cast<const uint8_t*>(mapped);
  if (std::memcmp(ds->base_, kMagic, 8) != 0) {
    return Corrupt(path, "not a paft token dataset (bad magic); run paft-prepare on the JSONL");
  }
  const uint64_t header_len = GetU64(ds->base_ + 8);
  if (header_len > ds->size_ - 16) return Corrupt(path, "header runs past the end of the file");
  ds->header_ = nlohmann::json::parse(ds->base_ + 16, ds->base_ + 16 + header_len, nullptr, false);
  if (ds->header_.is_discarded() || !ds->header_.is_object()) {
    return Corrupt(path, "header is not a JSON object");
  }
  const nlohmann::json& h = ds->header_;
  if (!h.contains("kind") || !h["kind"].is_string() ||
      (h["kind"] != "sft" && h["kind"] != "preference")) {
    return Corrupt(path, "header 'kind' is missing");
  }
  for (const char* key : {"examples", "tokens"}) {
    if (!h.contains(key) || !h[key].is_number_unsigned()) {
      return Corrupt(path, absl::StrCat("header '", key, "' is not a count"));
    }
  }
  if (!h.contains("fingerprint") || !h["fingerprint"].is_string()) {
    return Corrupt(path, "header 'fingerprint' is missing");
  }
  ds->kind_ = h["kind"] == "sft" ? DatasetKind::kSft : DatasetKind::kPreference;
  ds->count_ = h["examples"].get<uint64_t>();
  ds->token_count_ = h["tokens"].get<uint64_t>();
  ds->fingerprint_ = h["fingerprint"].get<std::string>();
  if (ds->count_ == 0) return Corrupt(path, "has no examples");
  const uint64_t body = 16 + header_len;
  if (body % 4 != 0) return Corrupt(path, "header length leaves the tokens unaligned");
  const unsigned __int128 need = static_cast<unsigned __int128>(ds->count_) * kEntryBytes +
                                 static_cast<unsigned __int128>(ds->token_count_) * 4;
  if (need != ds->size_ - body) {
    return Corrupt(path, absl::StrCat("expected ", static_cast<uint64_t>(need),
                                      " bytes of index and tokens, found ", ds->size_ - body));
  }
  ds->index_ = ds->base_ + body;
  ds->tokens_ = reinterpret_cast<const uint32_t*>(ds->index_ + ds->count_ * kEntryBytes);
  uint64_t expected_first = 0;
  for (uint64_t i = 0; i < ds->count_; ++i) {
    const uint8_t* e = ds->index_ + i * kEntryBytes;
    const uint64_t len = uint64_t{GetU32(e + 8)} + GetU32(e + 12) + GetU32(e + 16);
    if (GetU64(e) != expected_first || expected_first + len > ds->token_count_) {
      return Corrupt(path, absl::StrCat("index entry ", i, " is inconsistent"));
    }
    expected_first += len;
  }
  if (ds->kind_ == DatasetKind::kSft) {
    for (uint64_t i = 0; i < ds->count_; ++i) {
      const auto runs = ds->loss_runs(static_cast<int64_t>(i));
      uint64_t covered = 0;
      for (uint32_t run : runs) covered += run;
      if (!runs.empty() && covered != ds->completion(static_cast<int64_t>(i)).size()) {
        return Corrupt(path, absl::StrCat("example ", i, ": loss runs do not cover its completion"));
      }
    }
  }
  const std::string actual = Fingerprint(absl::Span<const uint8_t>(ds->index_, ds->size_ - body));
  if (actual != ds->fingerprint_) {
    return Corrupt(path, absl::StrCat("fingerprint mismatch (header ", ds->fingerprint_,
                                      ", content ", actual, "): the file is corrupt"));
  }
  return ds;
}

TokenDataset::~TokenDataset() {
  if (base_ != nullptr) ::munmap(const_cast<uint8_t*>(base_), size_);
}

absl::Span<const uint32_t> TokenDataset::Segment(int64_t i, int which) const {
  const uint8_t* e = index_ + static_cast<uint64_t>(i) * kEntryBytes;
  uint64_t first = GetU64(e);
  for (int s = 0; s < which; ++s) first += GetU32(e + 8 + 4 * s);
  return absl::Span<const uint32_t>(tokens_ + first, GetU32(e + 8 + 4 * which));
}

absl::Status CheckTokenIds(const TokenDataset& data, int64_t vocab_size, const std::string& name) {
  const int sides = data.kind() == DatasetKind::kPreference ? 3 : 2;
  for (int64_t i = 0; i < data.size(); ++i) {
    for (int side = 0; side < sides; ++side) {
      const auto ids = side == 0 ? data.prompt(i) : side == 1 ? data.completion(i) : data.rejected(i);
      for (uint32_t id : ids) {
        if (static_cast<int64_t>(id) >= vocab_size) {
          return absl::InvalidArgumentError(
              absl::StrCat("dataset ", name, ": example ", i, " holds token id ", id,
                           ", outside the model's vocabulary of ", vocab_size));
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace paft
