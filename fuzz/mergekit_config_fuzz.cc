// mergekit YAML configs given to `paft-merger merge`: any text parses into a request or an error
// naming the key.
#include <cstdint>
#include <string>

#include "merger/mergekit_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto request = paft::merger::ParseMergekitConfig(text, "/base-dir");
  if (!request.ok()) return 0;
  if (request->base_model().empty()) __builtin_trap();
  return 0;
}
