// The trainer of one rank of a branch. With world_size > 1 the ranks form a c10d process group
// (Gloo on CPU, NCCL on GPUs) from the task's master address and port, each reads a disjoint
// shard of every global batch, computes its share of the global batch's loss (normalised over the
// whole global batch) and the shares' gradients are summed across ranks. Torch-free interface:
// the worker binary includes it without paying for torch headers.
//
// A run loads the base model (HF folder), adds LoRA (or trains everything), reads the prepared
// dataset, optimises the branch's objective with AdamW, warm-up + decay, gradient accumulation
// and clipping, in the branch's precision (fp32, or bf16 autocast), on padded or padding-free
// batches, reports progress through `emit`, and writes checkpoints: a PEFT adapter folder
// (LoRA) or a full HF folder, plus trainer_state.json, committed atomically with a manifest.
#ifndef PAFT_TRAINER_TRAINER_H_
#define PAFT_TRAINER_TRAINER_H_

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "paft/v1/worker.pb.h"

namespace paft::trainer {

struct TrainOptions {
  paft::v1::Task task;          // spec, base model, checkpoint dir, resume point, rank/world
  std::string dataset;          // prepared .paftds file (see PrepareDataset)
  int threads = 0;              // intra-op threads; 0: all cores
  // Bound on the rendezvous and on every collective: when a peer dies, the surviving ranks fail
  // with an error this soon instead of hanging.
  int collective_timeout_seconds = 120;
  // Progress and checkpoint events (worker/trainer_protocol.h's JSON objects).
  std::function<void(const nlohmann::json&)> emit;
  // Checked after every step (e.g. "SIGTERM arrived"); when it returns true on any rank, all
  // ranks stop after that step, rank 0 writing a checkpoint of it first, and Train returns
  // Aborted.
  std::function<bool()> stop_requested;
};

// Runs the branch to its last step. Errors: InvalidArgument/FailedPrecondition/NotFound for bad
// input (the agent reports them as user errors), others for infrastructure trouble.
absl::Status Train(const TrainOptions& options);

// Returns a prepared dataset for `jsonl_or_paftds`: the file itself when it is one, else the
// output of `prepare_binary` (paft-prepare, a separate process: sentencepiece cannot live with
// torch) with the base model's tokenizer.model, cached under `cache_dir` by content. `spec` is
// resolved (ApplyBranchDefaults): its dataset and batch fields are passed on as set.
absl::StatusOr<std::string> PrepareDataset(const std::string& jsonl_or_paftds,
                                           const std::string& base_model,
                                           const paft::v1::BranchSpec& spec,
                                           const std::string& cache_dir,
                                           const std::string& prepare_binary);

// Evaluation of a model (base folder, optionally + PEFT adapter) on a prepared dataset:
// SFT data: mean completion loss, perplexity, greedy exact-match accuracy, and per example the
// completion's log-prob (sum over its tokens), its token count and whether greedy decoding
// reproduced it (no generation, and no exact match, with max_new_tokens 0). Decoding stops at generation_config.json's eos tokens (else config.json's) and
// applies its repetition_penalty; its sampling settings are reported, not applied; a setting that
// would change a greedy decode and is not implemented is refused by name.
// Preference data: per-example policy and reference (adapter off) log-probs, reward accuracy
// and mean margin for the given beta.
// The reference of the rewards is `reference_model` when given, else the model itself with its
// adapter off (the base).
absl::StatusOr<nlohmann::json> Evaluate(const std::string& base_model, const std::string& adapter,
                                        const std::string& dataset, double beta,
                                        int64_t max_new_tokens,
                                        const std::string& reference_model = "");

}  // namespace paft::trainer

#endif  // PAFT_TRAINER_TRAINER_H_
