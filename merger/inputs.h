// What the merger reads: a base model and inputs that are either full Hugging Face model folders
// or PEFT LoRA adapter folders. Each input yields, per base tensor, its task vector
// delta = input - base in float.
#ifndef PAFT_MERGER_INPUTS_H_
#define PAFT_MERGER_INPUTS_H_

#include <atomic>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/safetensors.h"

namespace paft::merger {

class InputModel {
 public:
  virtual ~InputModel() = default;
  // Checks this input against the base (names, shapes, dtypes); errors name the tensor.
  virtual absl::Status Validate(const SafetensorsModel& base) const = 0;
  // Writes the task vector of tensor `name` (n = base_info.numel() floats) into `delta`.
  // `base` holds the base tensor's values. Thread-safe.
  virtual absl::Status Delta(const std::string& name, const TensorInfo& base_info,
                             const float* base, float* delta) const = 0;
  int64_t bytes_read() const { return bytes_read_.load(); }

 protected:
  mutable std::atomic<int64_t> bytes_read_{0};
};

// Opens `path` as a PEFT adapter (adapter_config.json present) or a full model folder.
absl::StatusOr<std::unique_ptr<InputModel>> OpenInput(const std::string& path);

// Reads a float tensor (F32, F16, BF16, F64) into `out` and releases its pages.
void ReadAsFloat(const SafetensorsFile& file, const TensorInfo& info, float* out);

// The PEFT scale of a LoRA delta: lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora.
struct LoraConfig {
  int64_t r = 0;
  double alpha = 0;
  bool use_rslora = false;
  double scale() const;
};
absl::StatusOr<LoraConfig> ParseAdapterConfig(const std::string& json_text);

}  // namespace paft::merger

#endif  // PAFT_MERGER_INPUTS_H_
