// safetensors: the header (8-byte length, JSON of dtypes, shapes and offsets) of an untrusted
// file must be validated, never trusted: offsets in bounds, sizes consistent, no overflow.
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "common/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto header = paft::ParseSafetensors(bytes);
  if (!header.ok()) return 0;
  // A header that parses describes tensors that lie inside the buffer: touch every byte range.
  uint64_t sum = 0;
  for (const auto& tensor : header->tensors) {
    const uint64_t begin = header->data_start + tensor.begin;
    const uint64_t end = header->data_start + tensor.end;
    if (begin > end || end > size) __builtin_trap();
    if (end > begin) sum += data[begin] + data[end - 1];
  }
  return static_cast<int>(sum & 0);
}
