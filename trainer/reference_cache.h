// DPO's `precompute_ref_log_probs`: one no-grad pass of the reference policy over the dataset
// before training, cached in a file beside the dataset, so the reference forward pass leaves the
// training loop and a full fine-tuning run can drop its copy of the base.
#ifndef PAFT_TRAINER_REFERENCE_CACHE_H_
#define PAFT_TRAINER_REFERENCE_CACHE_H_

#include <string>

#include "absl/status/statusor.h"
#include "common/token_dataset.h"
#include "trainer/objectives.h"
#include "trainer/precision.h"

namespace paft::trainer {

// The reference log-probs of every example of `data` (read from the cache file when one with
// the same key exists: the dataset's fingerprint, the base model's config and weights size,
// its path and the precision). `objective` has no cache set yet.
absl::StatusOr<ReferenceLogProbs> PrecomputeReferenceLogProbs(
    BranchObjective& objective, LlamaForCausalLM& model, const TokenDataset& data,
    const std::string& dataset_path, const std::string& base_model, const torch::Device& device,
    Precision precision);

}  // namespace paft::trainer

#endif  // PAFT_TRAINER_REFERENCE_CACHE_H_
