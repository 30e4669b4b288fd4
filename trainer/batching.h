// From a tokenized dataset to the tensors of one micro-batch, and which examples each rank's
// micro-batches hold.
//
// Data order: one permutation of the dataset per epoch, seeded by (seed, epoch). The examples of
// optimizer step s are the contiguous range [s * G, (s + 1) * G) of the concatenated epoch
// orders, G = batch * accumulation * world; micro-step m of rank r takes the `batch` examples
// starting at ((s * accumulation + m) * world + r) * batch. So 1 rank with batch B * W sees the
// examples that W ranks with batch B see, in the same order.
#ifndef PAFT_TRAINER_BATCHING_H_
#define PAFT_TRAINER_BATCHING_H_

#include <torch/types.h>

#include <cstdint>
#include <map>
#include <vector>

#include "common/hf_config.h"
#include "common/token_dataset.h"

namespace paft::trainer {

// One micro-batch of sequences: SFT examples, or preference pairs as [chosen_0..chosen_{B-1},
// rejected_0..rejected_{B-1}]. Padded: one row per sequence, right-padded with `pad_id`.
// Packed (padding-free, TRL's `padding_free`): one row holding the sequences one after the
// other, no pad tokens; `lengths` says where each ends.
struct Batch {
  torch::Tensor input_ids;        // (R, T) int64; packed: (1, total tokens)
  torch::Tensor attention_mask;   // (R, T) int64, 1 for tokens; packed: undefined
  torch::Tensor completion_mask;  // (R, T) int64, 1 for completion tokens that are targets
  std::vector<int64_t> lengths;   // packed: each sequence's length, in order
  torch::Tensor sequence_ids;     // packed: (T) int64, the sequence of each token
  int64_t tokens = 0;             // real (non-pad) tokens
  int64_t pairs = 0;              // preference: B; SFT: 0
  std::vector<int64_t> indices;   // dataset examples, in row order
  bool packed() const { return !lengths.empty(); }
  int64_t sequences() const {
    return packed() ? static_cast<int64_t>(lengths.size()) : input_ids.size(0);
  }
};

Batch MakeBatch(const TokenDataset& data, const std::vector<int64_t>& indices, int64_t pad_id,
                bool packed = false);
// The id padded rows are filled with: the model's EOS (0 without one). Pads are never attended
// to nor targets, so any id would do; EOS keeps them inside the vocabulary.
int64_t PadId(const ModelConfig& config);
// The same batch with its tensors on `device`.
Batch ToDevice(Batch batch, const torch::Device& device);

// Number of completion tokens of one side of an example that are loss targets: every trained
// completion token (all, without loss runs) that has a token before it (a completion at position
// 0 predicts nothing).
int64_t TargetTokens(absl::Span<const uint32_t> prompt, absl::Span<const uint32_t> completion,
                     absl::Span<const uint32_t> loss_runs = {});

// Global counts of one optimizer step, over every rank and micro-batch: what token-level and
// sequence-level losses are normalised by (transformers' num_items_in_batch).
struct StepCounts {
  int64_t targets = 0;    // SFT: completion targets; preference: chosen targets (ORPO's NLL)
  // Preference: every token of prompt + chosen that has one before it (ORPO's NLL with its
  // prompt loss).
  int64_t chosen_sequence_targets = 0;
  int64_t sequences = 0;  // SFT rows, or preference pairs
};

// The data schedule of a branch (see the file comment).
class DataSchedule {
 public:
  DataSchedule(const TokenDataset* data, uint64_t seed, int64_t batch, int64_t accumulation,
               int world);

  // Examples of micro-step `micro` of optimizer step `step` on `rank`.
  std::vector<int64_t> MicroBatch(int64_t step, int64_t micro, int rank);
  // Counts over every rank's micro-batches of `step`; every rank computes the same numbers
  // locally (the schedule is deterministic), so no communication is needed.
  StepCounts Counts(int64_t step);
  int64_t examples_per_step() const { return batch_ * accumulation_ * world_; }

 private:
  int64_t Example(int64_t position);  // dataset index at a position of the epoch orders

  const TokenDataset* data_;
  uint64_t seed_;
  int64_t batch_, accumulation_;
  int world_;
  std::map<int64_t, std::vector<int64_t>> orders_;  // by epoch
};

// Data-order of one epoch: a permutation of [0, n) seeded by (seed, epoch).
std::vector<int64_t> EpochOrder(int64_t n, uint64_t seed, int64_t epoch);

}  // namespace paft::trainer

#endif  // PAFT_TRAINER_BATCHING_H_
