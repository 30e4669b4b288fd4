// safetensors files: an 8-byte little-endian header length N, a JSON header of N bytes
// ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}),
// then the tensor data, offsets relative to the end of the header.
//
// The reader maps the file and validates everything before handing out a byte: header length,
// JSON, dtypes, shapes, that each tensor's byte size equals numel * dtype size, and that the
// tensors tile the data section exactly (no overlap, no hole, nothing past the end).
// The writer writes a temp file, fsyncs it and renames it into place.
#ifndef PAFT_COMMON_SAFETENSORS_H_
#define PAFT_COMMON_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/dtype.h"

namespace paft {

// Headers larger than this are refused (the reference implementation uses the same bound).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100u << 20;

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data section
  uint64_t end = 0;

  int64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // in data order (ascending offsets)
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // 8 + header length
};

// Validates a whole safetensors image held in memory (the file's bytes). Errors are
// InvalidArgument (or DataLoss for a truncated file) and name the offending tensor.
absl::StatusOr<SafetensorsHeader> ParseSafetensors(absl::string_view file_bytes);

// A validated, memory-mapped safetensors file. Thread-compatible; reads are thread-safe.
class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  // nullptr when absent.
  const TensorInfo* Find(absl::string_view name) const;
  // The tensor's bytes (little-endian), valid while this object lives.
  absl::Span<const uint8_t> Data(const TensorInfo& info) const;
  uint64_t file_size() const { return size_; }
  // Drops the tensor's pages from this process's mapping (they stay in the page cache), so a
  // streaming reader's resident memory does not grow with the model. Data() stays valid.
  void Release(const TensorInfo& info) const;

 private:
  SafetensorsFile(std::string path, const uint8_t* base, uint64_t size, SafetensorsHeader header);

  std::string path_;
  const uint8_t* base_;
  uint64_t size_;
  SafetensorsHeader header_;
  std::map<std::string, size_t, std::less<>> index_;  // name -> position in tensors()
};

// A tensor to write: `data` must hold numel(shape) * DTypeSize(dtype) bytes.
struct TensorSpec {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
};

// Writes a safetensors file tensor by tensor, so a large model never needs to be in memory at
// once. The header is fixed up front from `specs`; Append() must be called once per spec, in
// order; Commit() fsyncs and renames the temp file onto `path`. Destroying an uncommitted writer
// removes the temp file.
class SafetensorsWriter {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsWriter>> Create(
      const std::string& path, std::vector<TensorSpec> specs,
      const std::map<std::string, std::string>& metadata = {});
  ~SafetensorsWriter();

  // Writes the next tensor's bytes, whole.
  absl::Status Append(absl::Span<const uint8_t> data);
  // Writes part of the next tensor's bytes; a tensor may be written in any number of parts
  // (streaming). The parts must not run past the tensor's size.
  absl::Status AppendPartial(absl::Span<const uint8_t> data);
  absl::Status Commit();
  uint64_t bytes_written() const { return bytes_written_; }

 private:
  SafetensorsWriter(std::string path, std::string tmp_path, int fd, std::vector<TensorSpec> specs);
  uint64_t SizeOf(size_t index) const;

  std::string path_;
  std::string tmp_path_;
  int fd_;
  std::vector<TensorSpec> specs_;
  size_t next_ = 0;
  uint64_t written_of_next_ = 0;  // bytes of specs_[next_] already written
  uint64_t bytes_written_ = 0;
  bool committed_ = false;
};

// Convenience: writes whole tensors held in memory.
struct TensorData {
  TensorSpec spec;
  std::vector<uint8_t> bytes;
};
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorData>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

// A Hugging Face model folder's weights: `model.safetensors`, or shards listed in
// `model.safetensors.index.json` ("weight_map": {tensor: file}).
class SafetensorsModel {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsModel>> Open(const std::string& folder);

  // Tensor names, sorted.
  const std::vector<std::string>& names() const { return names_; }
  // Looks a tensor up; NotFound naming the tensor and the folder when absent.
  absl::StatusOr<std::pair<const SafetensorsFile*, const TensorInfo*>> Find(
      absl::string_view name) const;
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }
  uint64_t total_bytes() const;

 private:
  std::string folder_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::pair<size_t, const TensorInfo*>, std::less<>> by_name_;
  std::vector<std::string> names_;
};

}  // namespace paft

#endif  // PAFT_COMMON_SAFETENSORS_H_
