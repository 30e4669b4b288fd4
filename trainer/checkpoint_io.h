// Checkpoints of a branch on disk: a folder checkpoint-<step> holding the weights (PEFT adapter
// or full HF folder), optimizer.pt, rng.pt, trainer_state.json and, written last, the manifest
// paft_checkpoint.json (every file's size and sha256). A folder without a manifest, or whose
// files do not match it, is not a checkpoint.
#ifndef PAFT_TRAINER_CHECKPOINT_IO_H_
#define PAFT_TRAINER_CHECKPOINT_IO_H_

#include <torch/torch.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "trainer/llama.h"

namespace paft::trainer {

// DataLoss naming the file when `dir` has no manifest or a file differs from it.
absl::Status VerifyCheckpoint(const std::string& dir);

// The checkpoint to resume from: `resume_from` when given (it must verify), else the newest
// checkpoint-<step> under `checkpoint_dir` that verifies (torn ones are skipped with a note on
// stderr); "" when there is none.
absl::StatusOr<std::string> FindResumePoint(const std::string& checkpoint_dir,
                                            const std::string& resume_from);

// Writes optimizer.pt and rng.pt (the CPU generator: LoRA dropout) into `folder`.
absl::Status SaveTrainingState(torch::optim::Optimizer& optimizer, const std::string& folder);
// Restores what SaveTrainingState wrote, those files that exist.
absl::Status LoadTrainingState(torch::optim::Optimizer& optimizer, const std::string& folder);

// Copies a checkpoint's weights into `model`: its adapter when the model has LoRA, else the
// full weights. FailedPrecondition naming the tensor when they do not match the model.
absl::Status RestoreWeights(LlamaForCausalLM& model, const std::string& checkpoint);

struct CommittedCheckpoint {
  int64_t size_bytes = 0;
  std::string digest;  // sha256 of the manifest
};
// Fsyncs every file of `staging`, writes the manifest last and renames the folder to `dir`
// durably.
absl::StatusOr<CommittedCheckpoint> CommitCheckpoint(const std::string& staging,
                                                     const std::string& dir, int64_t step);

}  // namespace paft::trainer

#endif  // PAFT_TRAINER_CHECKPOINT_IO_H_
