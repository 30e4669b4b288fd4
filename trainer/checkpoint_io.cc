#include "trainer/checkpoint_io.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <iostream>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/safetensors.h"
#include "common/sha256.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "trainer/checkpoint_retention.h"
#include "trainer/model_io.h"
#include "trainer/torch_io.h"

namespace paft::trainer {
namespace {

using json = nlohmann::json;

constexpr const char* kManifest = kCheckpointManifest;

}  // namespace

absl::Status VerifyCheckpoint(const std::string& dir) {
  auto text = ReadFileToString(JoinPath(dir, kManifest));
  if (!text.ok()) {
    return absl::DataLossError(
        absl::StrCat("checkpoint ", dir, " has no manifest (an interrupted save)"));
  }
  json manifest = json::parse(*text, nullptr, false);
  if (manifest.is_discarded() || !manifest.contains("files") || !manifest["files"].is_object()) {
    return absl::DataLossError(absl::StrCat("checkpoint ", dir, ": unreadable manifest"));
  }
  for (const auto& item : manifest["files"].items()) {
    const std::string path = JoinPath(dir, item.key());
    int64_t size = -1;
    auto digest = Sha256File(path, &size);  // streamed: checkpoint files can be tens of GB
    if (!digest.ok() || size != item.value().value("size", int64_t{-1})) {
      return absl::DataLossError(
          absl::StrCat("checkpoint ", dir, ": file ", item.key(), " is missing or truncated"));
    }
    if (*digest != item.value().value("sha256", "")) {
      return absl::DataLossError(
          absl::StrCat("checkpoint ", dir, ": file ", item.key(), " does not match its sha256"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> FindResumePoint(const std::string& checkpoint_dir,
                                            const std::string& resume_from) {
  if (!resume_from.empty()) {
    PAFT_RETURN_IF_ERROR(VerifyCheckpoint(resume_from));
    return resume_from;
  }
  std::vector<std::pair<int64_t, std::string>> found;
  if (auto names = ListDir(checkpoint_dir); names.ok()) {
    for (const auto& name : *names) {
      int64_t step;
      if (CheckpointStep(name, &step)) found.emplace_back(step, JoinPath(checkpoint_dir, name));
    }
  }
  std::sort(found.rbegin(), found.rend());
  for (const auto& [step, dir] : found) {
    absl::Status verified = VerifyCheckpoint(dir);
    if (verified.ok()) return dir;
    std::cerr << "skipping checkpoint " << dir << ": " << verified.message() << std::endl;
  }
  return std::string();
}

absl::Status SaveTrainingState(torch::optim::Optimizer& optimizer, const std::string& folder) {
  torch::serialize::OutputArchive archive;
  optimizer.save(archive);
  archive.save_to(JoinPath(folder, "optimizer.pt"));
  auto generator = at::detail::getDefaultCPUGenerator();
  torch::Tensor rng_state;
  {
    std::lock_guard<std::mutex> lock(generator.mutex());
    rng_state = generator.get_state();
  }
  torch::save(rng_state, JoinPath(folder, "rng.pt"));
  return absl::OkStatus();
}

absl::Status LoadTrainingState(torch::optim::Optimizer& optimizer, const std::string& folder) {
  const std::string optimizer_path = JoinPath(folder, "optimizer.pt");
  if (IsRegularFile(optimizer_path)) {
    torch::serialize::InputArchive archive;
    archive.load_from(optimizer_path);
    optimizer.load(archive);
  }
  const std::string rng_path = JoinPath(folder, "rng.pt");
  if (IsRegularFile(rng_path)) {
    torch::Tensor rng_state;
    torch::load(rng_state, rng_path);
    auto generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(rng_state);
  }
  return absl::OkStatus();
}

absl::Status RestoreWeights(LlamaForCausalLM& model, const std::string& from) {
  torch::NoGradGuard no_grad;
  if (model->has_lora()) {
    PAFT_ASSIGN_OR_RETURN(auto file,
                          SafetensorsFile::Open(JoinPath(from, "adapter_model.safetensors")));
    for (auto& [name, param] : model->PeftStateDict()) {
      const TensorInfo* info = file->Find(name);
      if (info == nullptr || info->shape != param.sizes().vec()) {
        return absl::FailedPreconditionError(
            absl::StrCat("checkpoint ", from, " does not match the model: '", name, "'"));
      }
      PAFT_ASSIGN_OR_RETURN(torch::Tensor value, ReadTensor(*file, *info));
      param.copy_(value);
    }
    return absl::OkStatus();
  }
  PAFT_ASSIGN_OR_RETURN(auto loaded, LoadPretrained(from, torch::kFloat));
  auto src = loaded->HfStateDict();
  auto dst = model->HfStateDict();
  for (size_t i = 0; i < dst.size(); ++i) dst[i].second.copy_(src[i].second);
  return absl::OkStatus();
}

absl::StatusOr<CommittedCheckpoint> CommitCheckpoint(const std::string& staging,
                                                     const std::string& dir, int64_t step) {
  // Every file is fsynced; the manifest with sizes and sha256 is written last.
  json manifest = {{"step", step}, {"files", json::object()}};
  CommittedCheckpoint out;
  PAFT_ASSIGN_OR_RETURN(auto names, ListDir(staging));
  for (const auto& name : names) {
    const std::string path = JoinPath(staging, name);
    PAFT_RETURN_IF_ERROR(FsyncPath(path));
    int64_t size = 0;
    PAFT_ASSIGN_OR_RETURN(std::string sha256, Sha256File(path, &size));  // streamed
    manifest["files"][name] = {{"size", size}, {"sha256", sha256}};
    out.size_bytes += size;
  }
  const std::string manifest_text = manifest.dump(2);
  PAFT_RETURN_IF_ERROR(WriteFileAtomic(JoinPath(staging, kManifest), manifest_text));
  PAFT_RETURN_IF_ERROR(FsyncPath(staging));
  PAFT_RETURN_IF_ERROR(RenameDurably(staging, dir));
  Sha256 digest;
  digest.Update(manifest_text);
  out.digest = digest.HexDigest();
  return out;
}

}  // namespace paft::trainer
