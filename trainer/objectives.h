// A branch's training objective applied to micro-batches: SFT (plus PAFT's L1 penalty) or a
// preference loss with its reference log-probs.
//
// Normalisation is global, as transformers does since 4.46 (num_items_in_batch): a micro-batch
// contributes its *share* of the optimizer step's loss — token sums divided by the number of
// completion targets of the whole step (every rank, every micro-batch), per-pair terms divided
// by the number of pairs of the whole step. Summing the shares' gradients over micro-batches and
// ranks gives exactly the gradient of the global batch, whatever the examples' lengths.
#ifndef PAFT_TRAINER_OBJECTIVES_H_
#define PAFT_TRAINER_OBJECTIVES_H_

#include <torch/torch.h>

#include <array>
#include <vector>

#include "absl/status/statusor.h"
#include "paft/v1/job.pb.h"
#include "trainer/batching.h"
#include "trainer/llama.h"
#include "trainer/losses.h"

namespace paft::trainer {

// What one optimizer step reports, summed over its micro-batches (and, after an all-reduce,
// over ranks). `loss` is the step's loss without the L1 penalty; the reward statistics are sums
// of per-micro-batch means (divide by micro-batches times ranks).
struct StepMetrics {
  double loss = 0;
  double chosen_reward = 0, rejected_reward = 0, accuracy = 0, margin = 0;
  int64_t tokens = 0;
};

// Reference log-probs per example: chosen sum, chosen tokens, rejected sum, rejected tokens.
using ReferenceLogProbs = std::vector<std::array<double, 4>>;

class BranchObjective {
 public:
  // InvalidArgument for a spec without a usable objective.
  static absl::StatusOr<BranchObjective> FromSpec(const paft::v1::BranchSpec& spec);

  bool is_sft() const { return sft_; }
  // DPO variants compare against a reference; ORPO and SimPO are reference-free.
  bool needs_reference() const;
  const PreferenceParams& preference() const { return preference_; }
  double l1_lambda() const { return l1_lambda_; }
  // What the L1 penalty measures with LoRA: the factors A and B, or each delta s * B * A.
  enum class L1Target { kAdapter, kDelta };
  L1Target l1_target() const { return l1_target_; }

  // The reference policy: a frozen copy of the base (full fine-tuning), or none (LoRA: the
  // model with its adapters off). Also θ_pre of the L1 penalty of full fine-tuning.
  void set_reference_model(LlamaForCausalLM reference) { reference_ = std::move(reference); }
  const LlamaForCausalLM& reference_model() const { return reference_; }
  // Precomputed reference log-probs by dataset index (DPO's precompute_ref_log_probs).
  void set_reference_cache(ReferenceLogProbs cache) { cache_ = std::move(cache); }

  // The micro-batch's share of its step's loss (see the file comment); adds the detached share
  // and reward statistics to `metrics`.
  torch::Tensor MicroBatchLoss(LlamaForCausalLM& model, const Batch& batch,
                               const StepCounts& counts, StepMetrics* metrics);

  // PAFT's L1 penalty: l1_lambda * (sum |A| + |B| over the LoRA factors, or sum |s B A| over
  // the adapted weights' deltas, or sum |θ - θ_pre| for full fine-tuning). Adds its gradient to
  // the parameters' and returns its value (0 when l1_lambda is 0). A function of the weights
  // only: every rank computes the same, so it is applied once per step after the gradients are
  // synchronised. The delta form runs backward one module at a time, so that only one module's
  // s B A is ever materialised.
  double BackwardPenalty(const LlamaForCausalLM& model) const;

  // Reference log-probs of a batch's pairs (chosen, rejected), without gradients.
  std::pair<SequenceLogProbs, SequenceLogProbs> ReferenceLogProbsOf(LlamaForCausalLM& model,
                                                                    const Batch& batch);

 private:
  BranchObjective() = default;

  bool sft_ = false;
  double l1_lambda_ = 0;
  L1Target l1_target_ = L1Target::kAdapter;
  PreferenceParams preference_;
  LlamaForCausalLM reference_{nullptr};
  ReferenceLogProbs cache_;
};

// Completion log-probs of each sequence of a batch (rows, or a packed row's sequences), fp32:
// the head is applied only at the positions that predict a completion token, a chunk of them at
// a time (TargetLogProbs), so no (tokens × vocabulary) logits are ever held. With `prompt_sums`,
// also the summed log-probs of the prompt tokens (each after the first) of the first
// `prompt_sequences` sequences (ORPO's prompt loss; zero for the others), in the same pass.
SequenceLogProbs BatchLogProbs(LlamaForCausalLM& model, const Batch& batch,
                               int64_t prompt_sequences = 0, torch::Tensor* prompt_sums = nullptr);
// log p(token t + 1 | tokens ≤ t) at every position of unpadded rows input_ids (B, T): (B, T - 1),
// fp32, chunked as above (`chunk_rows` 0: TargetLogProbs' default).
torch::Tensor NextTokenLogProbs(LlamaForCausalLM& model, const torch::Tensor& input_ids,
                                int64_t chunk_rows = 0);

// Splits log-probs of 2B rows into chosen (first B) and rejected.
std::pair<SequenceLogProbs, SequenceLogProbs> SplitPairs(const SequenceLogProbs& all, int64_t b);

}  // namespace paft::trainer

#endif  // PAFT_TRAINER_OBJECTIVES_H_
