// The full-logits path, as transformers computes a causal LM's loss: log_softmax over the whole
// (B, T, V) logits in fp32, then the targets gathered. The tests' reference for the trainer's
// chunked log-probs (trainer/target_log_probs.h), which never hold those logits.
//
// Shapes: logits (B, T, V); input_ids (B, T); completion_mask (B, T), 1 where the token at t is a
// completion token (a target). Position t's logits predict token t + 1.
#ifndef PAFT_TESTS_TESTING_FULL_LOGITS_H_
#define PAFT_TESTS_TESTING_FULL_LOGITS_H_

#include <torch/torch.h>

#include "trainer/losses.h"

namespace paft::testing {

// log p(token_{t+1} | ...) for t in [0, T-1), fp32 at least: (B, T-1).
inline torch::Tensor TokenLogProbs(const torch::Tensor& logits, const torch::Tensor& input_ids) {
  const int64_t t = logits.size(1);
  const auto dtype = at::promote_types(logits.scalar_type(), torch::kFloat);
  torch::Tensor log_probs = torch::log_softmax(logits.narrow(1, 0, t - 1).to(dtype), -1);
  return log_probs.gather(-1, input_ids.narrow(1, 1, t - 1).unsqueeze(-1)).squeeze(-1);
}

// Per row: the sum of the completion tokens' log-probs, and their number.
inline trainer::SequenceLogProbs CompletionLogProbs(const torch::Tensor& logits,
                                                    const torch::Tensor& input_ids,
                                                    const torch::Tensor& completion_mask) {
  const torch::Tensor token = TokenLogProbs(logits, input_ids);
  const torch::Tensor mask =
      completion_mask.narrow(1, 1, logits.size(1) - 1).to(token.scalar_type());
  return {(token * mask).sum(-1), mask.sum(-1)};
}

// Token-mean negative log-likelihood over the completion tokens of the whole batch.
inline torch::Tensor SftLoss(const torch::Tensor& logits, const torch::Tensor& input_ids,
                             const torch::Tensor& completion_mask) {
  const trainer::SequenceLogProbs seq = CompletionLogProbs(logits, input_ids, completion_mask);
  return -seq.sum.sum() / seq.tokens.sum().clamp_min(1);
}

}  // namespace paft::testing

#endif  // PAFT_TESTS_TESTING_FULL_LOGITS_H_
