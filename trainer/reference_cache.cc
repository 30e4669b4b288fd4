#include "trainer/reference_cache.h"

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/safetensors.h"
#include "common/sha256.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace paft::trainer {

absl::StatusOr<ReferenceLogProbs> PrecomputeReferenceLogProbs(
    BranchObjective& objective, LlamaForCausalLM& model, const TokenDataset& data,
    const std::string& dataset_path, const std::string& base_model, const torch::Device& device,
    Precision precision) {
  using json = nlohmann::json;
  PAFT_ASSIGN_OR_RETURN(std::string config_text,
                        ReadFileToString(JoinPath(base_model, "config.json")));
  PAFT_ASSIGN_OR_RETURN(auto weights, SafetensorsModel::Open(base_model));
  // Keyed by what the log-probs are a function of: the examples, the config, the weights' bytes
  // (hashed: a base retrained in place keeps its size and path) and the precision.
  std::string key_text = absl::StrCat(data.fingerprint(), "|", config_text, "|",
                                      PrecisionName(precision));
  for (const auto& file : weights->files()) {
    PAFT_ASSIGN_OR_RETURN(std::string digest, Sha256File(file->path()));
    absl::StrAppend(&key_text, "|", digest);
  }
  const std::string key = Fingerprint(absl::Span<const uint8_t>(
      reinterpret_cast<const uint8_t*>(key_text.data()), key_text.size()));
  const std::string path = absl::StrCat(dataset_path, ".ref-", key, ".json");
  ReferenceLogProbs out;
  if (auto cached = ReadFileToString(path); cached.ok()) {
    json j = json::parse(*cached, nullptr, false);
    if (!j.is_discarded() && j.is_array() && static_cast<int64_t>(j.size()) == data.size()) {
      for (const auto& e : j) {
        out.push_back(
            {e[0].get<double>(), e[1].get<double>(), e[2].get<double>(), e[3].get<double>()});
      }
      return out;
    }
  }
  const int64_t pad_id = PadId(model->config());
  json stored = json::array();
  AutocastScope autocast(precision, device);
  for (int64_t i = 0; i < data.size(); ++i) {
    Batch b = ToDevice(MakeBatch(data, {i}, pad_id), device);
    auto [c, r] = objective.ReferenceLogProbsOf(model, b);
    out.push_back({c.sum.item<double>(), c.tokens.item<double>(), r.sum.item<double>(),
                   r.tokens.item<double>()});
    stored.push_back(out.back());
  }
  PAFT_RETURN_IF_ERROR(WriteFileAtomic(path, stored.dump()));
  return out;
}

}  // namespace paft::trainer
