// Hugging Face model folders and PEFT adapter folders <-> the LibTorch Llama model.
#ifndef PAFT_TRAINER_MODEL_IO_H_
#define PAFT_TRAINER_MODEL_IO_H_

#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "trainer/llama.h"

namespace paft::trainer {

// Builds the model of `folder`'s config.json and loads its safetensors weights (single or
// sharded; f32/bf16/f16), converting to `dtype`. Errors name missing, unexpected or misshapen
// tensors. `stored_dtypes` receives each tensor's dtype on disk (to save it back the same way).
// With `exact`, a tensor whose stored dtype is not `dtype` is held in fp32 instead (every
// stored value kept exactly: bf16 for a bf16 checkpoint, fp32 for the others).
absl::StatusOr<LlamaForCausalLM> LoadPretrained(
    const std::string& folder, torch::ScalarType dtype,
    std::map<std::string, DType>* stored_dtypes = nullptr, bool exact = false);

// Writes a Hugging Face folder (config.json + model.safetensors; tokenizer files copied from
// `copy_side_files_from` if given), atomically. LoRA is merged in when present. Tensors take
// `dtypes[name]` when given, else their in-memory dtype.
absl::Status SavePretrained(const LlamaForCausalLM& model, const std::string& folder,
                            const std::map<std::string, DType>& dtypes = {},
                            const std::string& copy_side_files_from = "");

// PEFT adapter folder: adapter_config.json + adapter_model.safetensors, atomically.
absl::Status SaveAdapter(const LlamaForCausalLM& model, const std::string& folder,
                         const std::string& base_model_path);
// Adds LoRA from a PEFT adapter folder to `model` (which must have none yet) and loads it.
absl::Status LoadAdapter(LlamaForCausalLM& model, const std::string& folder);

}  // namespace paft::trainer

#endif  // PAFT_TRAINER_MODEL_IO_H_
