// What the merger reads: a base model and inputs that are either full Hugging Face model folders
// or PEFT LoRA adapter folders. Each input yields, per base tensor, its task vector
// delta = input - base in float.
#ifndef PAFT_MERGER_INPUTS_H_
#define PAFT_MERGER_INPUTS_H_

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
  // Writes the task vector of tensor `name` over elements [begin, begin + count) into `delta`;
  // `base` holds the base values of that range. Thread-safe.
  virtual absl::Status Delta(const std::string& name, const TensorInfo& base_info, int64_t begin,
                             int64_t count, const float* base, float* delta) const = 0;
  // Bytes this input stores for tensor `name` (0 when an adapter does not touch it).
  virtual int64_t TensorBytes(const std::string& name) const = 0;
  // Drops the mapped pages of tensor `name` once it is merged (resident memory stays at about
  // one tensor per input; per-chunk release would cost a TLB shootdown per chunk).
  virtual void Release(const std::string& name) const {}
};

// The PEFT scale of a LoRA delta: lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora.
struct LoraConfig {
  int64_t r = 0;
  double alpha = 0;
  bool use_rslora = false;
  double scale() const;
};
absl::StatusOr<LoraConfig> ParseAdapterConfig(const std::string& json_text);

// A PEFT LoRA adapter folder, mapped: its config and, per adapted base tensor
// ("model.layers.0.self_attn.q_proj.weight"), its A [r, in] and B [out, r] matrices.
struct AdapterFile {
  struct Module {
    const TensorInfo* a = nullptr;
    const TensorInfo* b = nullptr;
    std::string a_key, b_key;  // the safetensors names
  };
  std::string path;
  LoraConfig config;
  std::unique_ptr<SafetensorsFile> file;
  std::map<std::string, Module> modules;
};
// Errors name the folder and the tensor: a key that is not a LoRA matrix, a lone A or B, shapes
// that do not multiply, a rank other than r.
absl::StatusOr<AdapterFile> OpenAdapterFile(const std::string& path);

// Opens `path` as a PEFT adapter (adapter_config.json present) or a full model folder.
absl::StatusOr<std::unique_ptr<InputModel>> OpenInput(const std::string& path);

// Reads elements [begin, begin + count) of a float tensor (F32, F16, BF16, F64) into `out`.
void ReadRangeAsFloat(const SafetensorsFile& file, const TensorInfo& info, int64_t begin,
                      int64_t count, float* out);
// A merge spec's output dtype ("float32", "bfloat16", "float16"; "" keeps `base`).
// InvalidArgument for any other.
absl::StatusOr<DType> OutputDType(const std::string& dtype, DType base);
// Converts floats to a float dtype's little-endian bytes (F32, F16, BF16, F64).
void StoreFloats(DType dtype, const float* in, int64_t count, uint8_t* out);

}  // namespace paft::merger

#endif  // PAFT_MERGER_INPUTS_H_
