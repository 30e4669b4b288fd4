#include "trainer/model_io.h"

#include <functional>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "common/peft_adapter_config.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "trainer/torch_io.h"

namespace paft::trainer {

absl::StatusOr<LlamaForCausalLM> LoadPretrained(const std::string& folder, torch::ScalarType dtype,
                                                std::map<std::string, DType>* stored_dtypes,
                                                bool exact) {
  PAFT_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(folder));
  PAFT_ASSIGN_OR_RETURN(auto weights, SafetensorsModel::Open(folder));
  LlamaForCausalLM model(config, dtype);
  torch::NoGradGuard no_grad;
  std::set<std::string> expected;
  for (auto& [name, param] : model->HfStateDict()) {
    expected.insert(name);
    auto found = weights->Find(name);
    if (!found.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(folder, ": tensor '", name, "' is missing from the checkpoint"));
    }
    const TensorInfo& info = *found->second;
    if (info.shape != param.sizes().vec()) {
      return absl::InvalidArgumentError(absl::StrCat(
          folder, ": tensor '", name, "' has shape [", absl::StrJoin(info.shape, ","),
          "], the config implies [", absl::StrJoin(param.sizes().vec(), ","), "]"));
    }
    PAFT_ASSIGN_OR_RETURN(torch::Tensor value, ReadTensor(*found->first, info));
    if (!value.is_floating_point()) {
      return absl::InvalidArgumentError(absl::StrCat(folder, ": tensor '", name, "' has dtype ",
                                                     DTypeName(info.dtype)));
    }
    if (exact && value.scalar_type() != param.scalar_type()) {
      param.set_data(torch::empty_like(param, param.options().dtype(torch::kFloat)));
    }
    param.copy_(value);
    found->first->Release(info);  // the mapped pages leave this process's resident memory
    if (stored_dtypes != nullptr) (*stored_dtypes)[name] = info.dtype;
  }
  for (const std::string& name : weights->names()) {
    if (expected.count(name)) continue;
    // Tolerated: rotary buffers of old checkpoints, a stored lm_head of a tied model.
    if (absl::EndsWith(name, "rotary_emb.inv_freq")) continue;
    if (name == "lm_head.weight" && config.tie_word_embeddings) continue;
    return absl::InvalidArgumentError(
        absl::StrCat(folder, ": unexpected tensor '", name, "' in the checkpoint"));
  }
  return model;
}

namespace {

// Writes into a temp folder beside `folder` and renames it into place.
absl::Status WriteFolderAtomically(const std::string& folder,
                                   const std::function<absl::Status(const std::string&)>& fill) {
  if (PathExists(folder)) {
    return absl::AlreadyExistsError(absl::StrCat("'", folder, "' already exists"));
  }
  const size_t slash = folder.find_last_of('/');
  if (slash != std::string::npos && slash > 0) PAFT_RETURN_IF_ERROR(MakeDirs(folder.substr(0, slash)));
  PAFT_ASSIGN_OR_RETURN(std::string tmp, MakeTempDirBeside(folder));
  absl::Status status = fill(tmp);
  if (status.ok()) status = FsyncPath(tmp);
  if (status.ok()) status = RenameDurably(tmp, folder);
  if (!status.ok()) (void)RemoveAll(tmp);
  return status;
}

}  // namespace

absl::Status SavePretrained(const LlamaForCausalLM& model, const std::string& folder,
                            const std::map<std::string, DType>& dtypes,
                            const std::string& copy_side_files_from) {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  std::map<std::string, torch::Tensor> merged;
  for (const auto& item : model->named_modules("", false)) {
    if (auto linear = std::dynamic_pointer_cast<LinearImpl>(item.value())) {
      if (linear->has_lora()) merged[item.key() + ".weight"] = linear->MergedWeight();
    }
  }
  for (auto& [name, tensor] : model->HfStateDict()) {
    auto it = merged.find(name);
    tensors.emplace_back(name, it != merged.end() ? it->second : tensor);
  }
  return WriteFolderAtomically(folder, [&](const std::string& tmp) -> absl::Status {
    PAFT_RETURN_IF_ERROR(WriteTensors(JoinPath(tmp, "model.safetensors"), tensors, dtypes));
    PAFT_RETURN_IF_ERROR(
        WriteFileAtomic(JoinPath(tmp, "config.json"), model->config().raw.dump(2)));
    if (copy_side_files_from.empty()) return absl::OkStatus();
    return CopyModelSideFiles(copy_side_files_from, tmp);
  });
}

absl::Status SaveAdapter(const LlamaForCausalLM& model, const std::string& folder,
                         const std::string& base_model_path) {
  if (!model->lora()) return absl::FailedPreconditionError("the model has no LoRA adapter");
  const LoraOptions& lora = *model->lora();
  const nlohmann::json config = PeftAdapterConfig(
      {base_model_path, lora.r, lora.alpha, lora.dropout, lora.use_rslora,
       std::vector<std::string>(lora.target_modules.begin(), lora.target_modules.end())});
  return WriteFolderAtomically(folder, [&](const std::string& tmp) -> absl::Status {
    PAFT_RETURN_IF_ERROR(
        WriteTensors(JoinPath(tmp, "adapter_model.safetensors"), model->PeftStateDict()));
    return WriteFileAtomic(JoinPath(tmp, "adapter_config.json"), config.dump(2));
  });
}

absl::Status LoadAdapter(LlamaForCausalLM& model, const std::string& folder) {
  if (model->has_lora()) return absl::FailedPreconditionError("the model already has LoRA");
  const std::string config_path = JoinPath(folder, "adapter_config.json");
  PAFT_ASSIGN_OR_RETURN(std::string text, ReadFileToString(config_path));
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": not a JSON object"));
  }
  LoraOptions options;
  try {
    options.r = j.at("r").get<int64_t>();
    options.alpha = j.at("lora_alpha").get<double>();
    options.dropout = j.value("lora_dropout", 0.0);
    options.use_rslora = j.value("use_rslora", false);
    options.target_modules.clear();
    const auto& targets = j.at("target_modules");
    if (targets.is_string()) {
      options.target_modules.insert(targets.get<std::string>());
    } else {
      for (const auto& t : targets) options.target_modules.insert(t.get<std::string>());
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": ", e.what()));
  }
  if (options.r <= 0) return absl::InvalidArgumentError(absl::StrCat(config_path, ": r must be > 0"));
  PAFT_ASSIGN_OR_RETURN(auto file,
                        SafetensorsFile::Open(JoinPath(folder, "adapter_model.safetensors")));
  model->AddLora(options);
  torch::NoGradGuard no_grad;
  std::set<std::string> expected;
  for (auto& [name, param] : model->PeftStateDict()) {
    expected.insert(name);
    const TensorInfo* info = file->Find(name);
    if (info == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(folder, ": adapter tensor '", name, "' is missing"));
    }
    if (info->shape != param.sizes().vec()) {
      return absl::InvalidArgumentError(absl::StrCat(
          folder, ": adapter tensor '", name, "' has shape [", absl::StrJoin(info->shape, ","),
          "], expected [", absl::StrJoin(param.sizes().vec(), ","), "]"));
    }
    PAFT_ASSIGN_OR_RETURN(torch::Tensor value, ReadTensor(*file, *info));
    param.copy_(value);
  }
  for (const TensorInfo& t : file->tensors()) {
    if (!expected.count(t.name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(folder, ": unexpected adapter tensor '", t.name, "'"));
    }
  }
  return absl::OkStatus();
}

}  // namespace paft::trainer
