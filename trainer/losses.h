// Training objectives with TRL's conventions. Pure functions of tensors.
#ifndef PAFT_TRAINER_LOSSES_H_
#define PAFT_TRAINER_LOSSES_H_

#include <torch/torch.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace paft::trainer {

// Completion log-probs of sequences (computed by BatchLogProbs, trainer/objectives.h).
struct SequenceLogProbs {
  torch::Tensor sum;     // (B) sum over completion tokens
  torch::Tensor tokens;  // (B) number of completion tokens
  torch::Tensor mean() const { return sum / tokens.clamp_min(1); }
};

// PAFT's sparsity penalty: sum |p - reference| over `params` (reference empty: sum |p|).
torch::Tensor L1Penalty(const std::vector<torch::Tensor>& params,
                        const std::vector<torch::Tensor>& reference = {});

// log(1 - e^x) for x <= 0, stable near 0 and for very negative x (and its gradient too).
torch::Tensor Log1mExp(const torch::Tensor& x);

enum class PreferenceKind { kDpoSigmoid, kDpoIpo, kDpoHinge, kDpoRobust, kOrpo, kSimpo };

struct PreferenceParams {
  PreferenceKind kind = PreferenceKind::kDpoSigmoid;
  double beta = 0.1;
  double label_smoothing = 0.0;  // sigmoid, robust
  double gamma = 0.5;            // SimPO's margin
  bool prompt_loss = true;       // ORPO: the NLL term covers the chosen prompt's tokens too
};

// Maps a spec's loss_type ("sigmoid", "ipo", "hinge", "robust") to a kind.
absl::StatusOr<PreferenceKind> DpoKind(const std::string& loss_type);

// Log-probs of one side of the pairs.
struct SideLogProbs {
  SequenceLogProbs policy;
  SequenceLogProbs reference;  // unused by ORPO and SimPO (reference-free)
};

struct PreferenceOutput {
  torch::Tensor loss;              // scalar: mean over pairs (ORPO: plus chosen_nll)
  torch::Tensor per_pair;          // (B) each pair's preference term (ORPO: without the NLL)
  torch::Tensor chosen_rewards;    // (B), detached
  torch::Tensor rejected_rewards;  // (B), detached
  torch::Tensor accuracy() const { return (chosen_rewards > rejected_rewards).to(torch::kFloat).mean(); }
  torch::Tensor margin() const { return (chosen_rewards - rejected_rewards).mean(); }
};

// DPO family: h = (pi_c - ref_c) - (pi_r - ref_r) on summed log-probs (IPO: length-averaged)
//   sigmoid: -(1-e) log s(b h) - e log s(-b h)      hinge: relu(1 - b h)
//   ipo:     (h - 1/(2b))^2                           robust: ((1-e)(-log s(b h)) + e log s(-b h)) / (1-2e)
//   rewards: b (pi - ref)
// ORPO: nll_chosen - b log s(log_odds), log_odds from average log-probs; rewards b * avg.
// log(1 - p) is computed as Log1mExp(log p): finite loss and gradients however close to 1 p is.
//   `chosen_nll` must be the SFT loss on the chosen completions.
// SimPO: -log s(b (avg_c - avg_r) - gamma); rewards b * avg.
PreferenceOutput PreferenceLoss(const PreferenceParams& params, const SideLogProbs& chosen,
                                const SideLogProbs& rejected,
                                const torch::Tensor& chosen_nll = {});

// Learning-rate multiplier after `step` optimizer steps (transformers' schedules): linear warm-up
// from 0, then "cosine" (0.5 (1 + cos(pi p))), "linear" (1 - p) or "constant", p the fraction of
// the post-warm-up steps done.
double LearningRateFactor(int64_t step, int64_t total_steps, int64_t warmup_steps,
                          const std::string& schedule);

}  // namespace paft::trainer

#endif  // PAFT_TRAINER_LOSSES_H_
