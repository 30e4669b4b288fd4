#include "common/peft_adapter_config.h"

namespace paft {

nlohmann::json PeftAdapterConfig(const PeftLoraSettings& s) {
  return {
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"base_model_name_or_path", s.base_model},
      {"r", s.r},
      {"lora_alpha", s.alpha},
      {"lora_dropout", s.dropout},
      {"use_rslora", s.use_rslora},
      {"target_modules", s.target_modules},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
  };
}

}  // namespace paft
