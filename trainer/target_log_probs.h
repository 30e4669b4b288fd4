// Log-probabilities of target tokens through the LM head, without the (tokens × vocabulary)
// logits: the head is applied to a chunk of rows at a time, each chunk's logits live only while
// that chunk is computed, and backward recomputes them chunk by chunk (or, with a frozen head,
// uses the hidden states' gradient per unit of log-prob made in forward; or, when all the rows
// fit one chunk, that chunk's gradient of the logits, kept from forward).
//
// The numbers are the full path's, log_softmax(hidden Wᵀ)[target] in fp32 (fp64 stays fp64), with
// the head's matmul in the dtype it has there: autocast's lower precision under autocast, else the
// weight's own. Gradients are those of the full path within the rounding of the matmul's dtype.
#ifndef PAFT_TRAINER_TARGET_LOG_PROBS_H_
#define PAFT_TRAINER_TARGET_LOG_PROBS_H_

#include <torch/torch.h>

#include <cstdint>

namespace paft::trainer {

// Rows per chunk for a vocabulary of `vocab` on `device`, at least 1. CPU: a chunk's fp32 logits
// stay under the heap's block limit (kCpuHeapBlockBytes), so that each chunk reuses the last
// one's memory instead of faulting in fresh pages: 63 rows at Llama-3's 128,256 entries, 253 at
// 32,000. CUDA: 256 MiB of fp32 logits (523 rows at 128,256), enough rows for the head's matmul
// to be bound by compute rather than by reading the head's weight once per chunk.
int64_t TargetLogProbChunkRows(int64_t vocab, const torch::Device& device);

// hidden: (N, H), the final hidden states of the positions that predict `targets` (N, int64);
// weight: the head (V, H). Returns (N): log p(targets[i] | hidden[i]). Differentiable in hidden
// and weight (where they require grad and grad mode is on). `chunk_rows` 0: the default above.
torch::Tensor TargetLogProbs(const torch::Tensor& hidden, const torch::Tensor& weight,
                             const torch::Tensor& targets, int64_t chunk_rows = 0);

}  // namespace paft::trainer

#endif  // PAFT_TRAINER_TARGET_LOG_PROBS_H_
