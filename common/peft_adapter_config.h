// The adapter_config.json that paft writes beside a PEFT LoRA adapter (trained checkpoints and
// merged adapters alike): the keys PEFT's LoraConfig and vLLM's LoRA loader read.
#ifndef PAFT_COMMON_PEFT_ADAPTER_CONFIG_H_
#define PAFT_COMMON_PEFT_ADAPTER_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace paft {

struct PeftLoraSettings {
  std::string base_model;  // base_model_name_or_path
  int64_t r = 8;
  double alpha = 16;
  double dropout = 0;
  bool use_rslora = false;
  std::vector<std::string> target_modules;  // leaf names: q_proj, v_proj, ...
};

nlohmann::json PeftAdapterConfig(const PeftLoraSettings& settings);

}  // namespace paft

#endif  // PAFT_COMMON_PEFT_ADAPTER_CONFIG_H_
