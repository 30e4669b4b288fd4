// SHA-256 (FIPS 180-4), for checkpoint manifests.
#ifndef PAFT_COMMON_SHA256_H_
#define PAFT_COMMON_SHA256_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace paft {

class Sha256 {
 public:
  Sha256();
  void Update(const void* data, size_t size);
  void Update(absl::string_view data) { Update(data.data(), data.size()); }
  // Finishes and returns the digest as 64 lowercase hex digits.
  std::string HexDigest();

 private:
  void Block(const uint8_t* block);
  std::array<uint32_t, 8> h_;
  uint8_t buffer_[64];
  size_t buffered_ = 0;
  uint64_t length_ = 0;  // bytes
};

// Hashes a file by streaming it (64 KiB at a time: a 56 GB optimizer state is never in memory);
// `size`, when given, receives the bytes hashed.
absl::StatusOr<std::string> Sha256File(const std::string& path, int64_t* size = nullptr);

}  // namespace paft

#endif  // PAFT_COMMON_SHA256_H_
