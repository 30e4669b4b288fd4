#include "common/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace paft {
namespace {

using json = nlohmann::json;

absl::Status Invalid(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("invalid safetensors: ", what));
}

uint64_t ReadU64Le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// numel * itemsize without overflow; nullopt on overflow.
bool CheckedByteSize(const std::vector<int64_t>& shape, size_t itemsize, uint64_t* out) {
  unsigned __int128 total = itemsize;
  for (int64_t d : shape) {
    total *= static_cast<uint64_t>(d);
    if (total > static_cast<unsigned __int128>(UINT64_MAX)) return false;
  }
  *out = static_cast<uint64_t>(total);
  return true;
}

absl::StatusOr<TensorInfo> ParseTensorEntry(const std::string& name, const json& entry) {
  auto bad = [&](absl::string_view what) {
    return Invalid(absl::StrCat("tensor '", name, "': ", what));
  };
  if (!entry.is_object()) return bad("entry is not a JSON object");
  TensorInfo info;
  info.name = name;
  auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end() || !dtype_it->is_string()) return bad("missing string 'dtype'");
  std::optional<DType> dtype = DTypeFromName(dtype_it->get<std::string>());
  if (!dtype) return bad(absl::StrCat("unknown dtype '", dtype_it->get<std::string>(), "'"));
  info.dtype = *dtype;

  auto shape_it = entry.find("shape");
  if (shape_it == entry.end() || !shape_it->is_array()) return bad("missing array 'shape'");
  for (const json& d : *shape_it) {
    if (!d.is_number_unsigned() || d.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      return bad("shape entries must be non-negative integers");
    }
    info.shape.push_back(static_cast<int64_t>(d.get<uint64_t>()));
  }

  auto offsets_it = entry.find("data_offsets");
  if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
      !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned()) {
    return bad("'data_offsets' must be [begin, end] with non-negative integers");
  }
  info.begin = (*offsets_it)[0].get<uint64_t>();
  info.end = (*offsets_it)[1].get<uint64_t>();
  if (info.end < info.begin) {
    return bad(absl::StrCat("data_offsets end ", info.end, " < begin ", info.begin));
  }
  for (const auto& item : entry.items()) {
    if (item.key() != "dtype" && item.key() != "shape" && item.key() != "data_offsets") {
      return bad(absl::StrCat("unexpected field '", item.key(), "'"));
    }
  }
  uint64_t expected = 0;
  if (!CheckedByteSize(info.shape, DTypeSize(info.dtype), &expected)) {
    return bad("shape overflows");
  }
  if (info.nbytes() != expected) {
    return bad(absl::StrCat("holds ", info.nbytes(), " bytes but shape [",
                            absl::StrJoin(info.shape, ","), "] of ", DTypeName(info.dtype),
                            " needs ", expected));
  }
  return info;
}

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<SafetensorsHeader> ParseSafetensors(absl::string_view file_bytes) {
  if (file_bytes.size() < 8) {
    return absl::DataLossError(absl::StrCat("invalid safetensors: file of ", file_bytes.size(),
                                            " bytes is shorter than the 8-byte header length"));
  }
  const uint64_t header_len = ReadU64Le(reinterpret_cast<const uint8_t*>(file_bytes.data()));
  if (header_len > kMaxSafetensorsHeaderBytes) {
    return Invalid(absl::StrCat("header length ", header_len, " exceeds the limit of ",
                                kMaxSafetensorsHeaderBytes));
  }
  if (header_len > file_bytes.size() - 8) {
    return absl::DataLossError(absl::StrCat("invalid safetensors: header length ", header_len,
                                            " runs past the end of the file (",
                                            file_bytes.size(), " bytes)"));
  }
  absl::string_view header_text = file_bytes.substr(8, header_len);
  if (header_text.empty() || header_text.front() != '{') {
    return Invalid("header does not start with '{'");
  }

  // Parse, rejecting duplicate top-level names (json would silently keep the last).
  std::set<std::string> seen;
  std::string duplicate;
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1) {
      std::string key = parsed.get<std::string>();
      if (!seen.insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  json header = json::parse(header_text.begin(), header_text.end(), callback,
                            /*allow_exceptions=*/false);
  if (header.is_discarded()) return Invalid("header is not valid JSON");
  if (!duplicate.empty()) return Invalid(absl::StrCat("tensor '", duplicate, "' appears twice"));
  if (!header.is_object()) return Invalid("header is not a JSON object");

  SafetensorsHeader out;
  out.data_start = 8 + header_len;
  for (const auto& item : header.items()) {
    if (item.key() == "__metadata__") {
      if (!item.value().is_object()) return Invalid("__metadata__ is not an object");
      for (const auto& m : item.value().items()) {
        if (!m.value().is_string()) {
          return Invalid(absl::StrCat("__metadata__ value of '", m.key(), "' is not a string"));
        }
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    PAFT_ASSIGN_OR_RETURN(TensorInfo info, ParseTensorEntry(item.key(), item.value()));
    out.tensors.push_back(std::move(info));
  }

  // The tensors must tile the data section exactly.
  std::sort(out.tensors.begin(), out.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  const uint64_t data_size = file_bytes.size() - out.data_start;
  uint64_t cursor = 0;
  for (const TensorInfo& t : out.tensors) {
    if (t.begin < cursor) {
      return Invalid(absl::StrCat("tensor '", t.name, "' overlaps the previous tensor (begins at ",
                                  t.begin, ", previous ends at ", cursor, ")"));
    }
    if (t.begin > cursor) {
      return Invalid(absl::StrCat("hole in the data section before tensor '", t.name,
                                  "' (bytes ", cursor, "..", t.begin, " unused)"));
    }
    if (t.end > data_size) {
      return absl::DataLossError(absl::StrCat(
          "invalid safetensors: tensor '", t.name, "' ends at byte ", t.end,
          " past the end of the data section (", data_size, " bytes): file truncated?"));
    }
    cursor = t.end;
  }
  if (cursor != data_size) {
    return Invalid(absl::StrCat(data_size - cursor,
                                " trailing bytes after the last tensor in the data section"));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

SafetensorsFile::SafetensorsFile(std::string path, const uint8_t* base, uint64_t size,
                                 SafetensorsHeader header)
    : path_(std::move(path)), base_(base), size_(size), header_(std::move(header)) {
  for (size_t i = 0; i < header_.tensors.size(); ++i) index_[header_.tensors[i].name] = i;
}

SafetensorsFile::~SafetensorsFile() {
  if (base_ != nullptr && size_ > 0) ::munmap(const_cast<uint8_t*>(base_), size_);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, absl::StrCat("opening ", path));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int saved = errno;
    ::close(fd);
    return ErrnoToStatus(saved, absl::StrCat("stat of ", path));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  const uint8_t* base = nullptr;
  if (size > 0) {
    void* mapped = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (mapped == MAP_FAILED) {
      int saved = errno;
      ::close(fd);
      return ErrnoToStatus(saved, absl::StrCat("mmap of ", path));
    }
    base = static_cast<const uint8_t*>(mapped);
  }
  ::close(fd);
  auto header = ParseSafetensors(
      absl::string_view(reinterpret_cast<const char*>(base), static_cast<size_t>(size)));
  if (!header.ok()) {
    if (base != nullptr) ::munmap(const_cast<uint8_t*>(base), size);
    return Annotate(header.status(), path);
  }
  return std::unique_ptr<SafetensorsFile>(
      new SafetensorsFile(path, base, size, std::move(header).value()));
}

const TensorInfo* SafetensorsFile::Find(absl::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

absl::Span<const uint8_t> SafetensorsFile::Data(const TensorInfo& info) const {
  return absl::Span<const uint8_t>(base_ + header_.data_start + info.begin, info.nbytes());
}

void SafetensorsFile::Release(const TensorInfo& info) const {
  static const uintptr_t kPage = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(base_ + header_.data_start + info.begin);
  const uintptr_t end = begin + info.nbytes();
  const uintptr_t first = (begin + kPage - 1) & ~(kPage - 1);  // whole pages inside the tensor
  const uintptr_t last = end & ~(kPage - 1);
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

// ---------------------------------------------------------------------------------------------
// SafetensorsWriter

SafetensorsWriter::SafetensorsWriter(std::string path, std::string tmp_path, int fd,
                                     std::vector<TensorSpec> specs)
    : path_(std::move(path)), tmp_path_(std::move(tmp_path)), fd_(fd), specs_(std::move(specs)) {}

SafetensorsWriter::~SafetensorsWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_path_.c_str());
}

namespace {

absl::Status WriteFully(int fd, const uint8_t* data, size_t size, const std::string& path) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoToStatus(errno, absl::StrCat("writing ", path));
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::Create(
    const std::string& path, std::vector<TensorSpec> specs,
    const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const TensorSpec& spec : specs) {
    if (spec.name.empty() || spec.name == "__metadata__") {
      return absl::InvalidArgumentError(absl::StrCat("invalid tensor name '", spec.name, "'"));
    }
    if (!names.insert(spec.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", spec.name, "' given twice"));
    }
    uint64_t bytes = 0;
    for (int64_t d : spec.shape) {
      if (d < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor '", spec.name, "' has a negative dimension"));
      }
    }
    if (!CheckedByteSize(spec.shape, DTypeSize(spec.dtype), &bytes)) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", spec.name, "' is too large"));
    }
    header[spec.name] = {{"dtype", DTypeName(spec.dtype)},
                         {"shape", spec.shape},
                         {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  // Pad with spaces so the data section starts 8-byte aligned (as the reference writer does).
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');

  std::string tmp = absl::StrCat(path, ".tmp-XXXXXX");
  int fd = ::mkstemp(tmp.data());
  if (fd < 0) return ErrnoToStatus(errno, absl::StrCat("creating a temp file for ", path));
  std::unique_ptr<SafetensorsWriter> writer(
      new SafetensorsWriter(path, tmp, fd, std::move(specs)));
  uint8_t len[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
  PAFT_RETURN_IF_ERROR(WriteFully(fd, len, 8, tmp));
  PAFT_RETURN_IF_ERROR(
      WriteFully(fd, reinterpret_cast<const uint8_t*>(text.data()), text.size(), tmp));
  writer->bytes_written_ = 8 + text.size();
  return writer;
}

uint64_t SafetensorsWriter::SizeOf(size_t index) const {
  uint64_t bytes = 0;
  CheckedByteSize(specs_[index].shape, DTypeSize(specs_[index].dtype), &bytes);
  return bytes;
}

absl::Status SafetensorsWriter::Append(absl::Span<const uint8_t> data) {
  if (next_ >= specs_.size()) {
    return absl::FailedPreconditionError(absl::StrCat("all tensors of ", path_, " already written"));
  }
  const uint64_t expected = SizeOf(next_);
  if (written_of_next_ != 0 || data.size() != expected) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", specs_[next_].name, "': got ",
                                                   data.size(), " bytes, shape needs ", expected));
  }
  PAFT_RETURN_IF_ERROR(WriteFully(fd_, data.data(), data.size(), tmp_path_));
  bytes_written_ += data.size();
  ++next_;
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::AppendPartial(absl::Span<const uint8_t> data) {
  while (!data.empty()) {
    while (next_ < specs_.size() && written_of_next_ == 0 && SizeOf(next_) == 0) ++next_;
    if (next_ >= specs_.size()) {
      return absl::FailedPreconditionError(
          absl::StrCat("data past the last tensor of ", path_));
    }
    const uint64_t expected = SizeOf(next_);
    const uint64_t take = std::min<uint64_t>(expected - written_of_next_, data.size());
    PAFT_RETURN_IF_ERROR(WriteFully(fd_, data.data(), take, tmp_path_));
    bytes_written_ += take;
    written_of_next_ += take;
    data.remove_prefix(take);
    if (written_of_next_ == expected) {
      ++next_;
      written_of_next_ = 0;
    }
  }
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Commit() {
  while (next_ < specs_.size() && written_of_next_ == 0 && SizeOf(next_) == 0) ++next_;
  if (next_ != specs_.size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "committing ", path_, " with ", specs_.size() - next_, " tensors not yet written"));
  }
  if (::fchmod(fd_, 0644) != 0) return ErrnoToStatus(errno, "chmod " + tmp_path_);
  if (::fsync(fd_) != 0) return ErrnoToStatus(errno, "fsync of " + tmp_path_);
  int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) return ErrnoToStatus(errno, "closing " + tmp_path_);
  PAFT_RETURN_IF_ERROR(RenameDurably(tmp_path_, path_));
  committed_ = true;
  return absl::OkStatus();
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorData>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  std::vector<TensorSpec> specs;
  specs.reserve(tensors.size());
  for (const TensorData& t : tensors) specs.push_back(t.spec);
  PAFT_ASSIGN_OR_RETURN(auto writer, SafetensorsWriter::Create(path, std::move(specs), metadata));
  for (const TensorData& t : tensors) PAFT_RETURN_IF_ERROR(writer->Append(t.bytes));
  return writer->Commit();
}

// ---------------------------------------------------------------------------------------------
// SafetensorsModel

absl::StatusOr<std::unique_ptr<SafetensorsModel>> SafetensorsModel::Open(
    const std::string& folder) {
  auto model = std::make_unique<SafetensorsModel>();
  model->folder_ = folder;
  const std::string index_path = JoinPath(folder, "model.safetensors.index.json");
  std::map<std::string, std::string> weight_map;  // tensor -> file
  if (PathExists(index_path)) {
    PAFT_ASSIGN_OR_RETURN(std::string text, ReadFileToString(index_path));
    json index = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (index.is_discarded() || !index.is_object() || !index.contains("weight_map") ||
        !index["weight_map"].is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": not a JSON object with a 'weight_map' object"));
    }
    for (const auto& item : index["weight_map"].items()) {
      if (!item.value().is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(index_path, ": weight_map entry '", item.key(), "' is not a string"));
      }
      std::string file = item.value().get<std::string>();
      if (file.empty() || file.find('/') != std::string::npos || file == "..") {
        return absl::InvalidArgumentError(absl::StrCat(
            index_path, ": weight_map entry '", item.key(), "' names file '", file,
            "' outside the folder"));
      }
      weight_map[item.key()] = file;
    }
  } else {
    const std::string single = JoinPath(folder, "model.safetensors");
    if (!PathExists(single)) {
      return absl::NotFoundError(absl::StrCat(
          "no model.safetensors or model.safetensors.index.json in ", folder));
    }
  }

  std::map<std::string, size_t> file_index;
  auto open_file = [&](const std::string& name) -> absl::StatusOr<size_t> {
    auto it = file_index.find(name);
    if (it != file_index.end()) return it->second;
    PAFT_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(JoinPath(folder, name)));
    model->files_.push_back(std::move(file));
    file_index[name] = model->files_.size() - 1;
    return model->files_.size() - 1;
  };

  if (weight_map.empty()) {
    PAFT_ASSIGN_OR_RETURN(size_t f, open_file("model.safetensors"));
    for (const TensorInfo& t : model->files_[f]->tensors()) model->by_name_[t.name] = {f, &t};
  } else {
    for (const auto& [tensor, file] : weight_map) {
      PAFT_ASSIGN_OR_RETURN(size_t f, open_file(file));
      const TensorInfo* info = model->files_[f]->Find(tensor);
      if (info == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor '", tensor, "' is listed in ", index_path, " under ", file,
            " but that file does not contain it"));
      }
      model->by_name_[tensor] = {f, info};
    }
  }
  for (const auto& entry : model->by_name_) model->names_.push_back(entry.first);
  return model;
}

absl::StatusOr<std::pair<const SafetensorsFile*, const TensorInfo*>> SafetensorsModel::Find(
    absl::string_view name) const {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) {
    return absl::NotFoundError(absl::StrCat("tensor '", name, "' not found in ", folder_));
  }
  return std::make_pair(files_[it->second.first].get(), it->second.second);
}

uint64_t SafetensorsModel::total_bytes() const {
  uint64_t total = 0;
  for (const auto& entry : by_name_) total += entry.second.second->nbytes();
  return total;
}

}  // namespace paft
