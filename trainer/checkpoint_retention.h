// The checkpoint folders of a branch as a set on disk: their names, retention, and room for the
// next one. Free of LibTorch.
#ifndef PAFT_TRAINER_CHECKPOINT_RETENTION_H_
#define PAFT_TRAINER_CHECKPOINT_RETENTION_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "absl/status/status.h"

namespace paft::trainer {

// Written last into a committed checkpoint folder.
inline constexpr char kCheckpointManifest[] = "paft_checkpoint.json";

// The step of a folder named checkpoint-<step>.
bool CheckpointStep(const std::string& name, int64_t* step);

// Keeps the newest `keep` committed checkpoints under `checkpoint_dir` (`newest` always kept).
absl::Status ApplyRetention(const std::string& checkpoint_dir, int keep, const std::string& newest);

// Bytes free to this user on the file system of `path`; nullopt when it cannot tell.
std::optional<int64_t> FreeBytes(const std::string& path);

// Makes room for a checkpoint of `needed_bytes` under `checkpoint_dir`. When the file system has
// less free, first removes what retention would remove after the save anyway (committed
// checkpoints older than the newest keep_last - 1, never the last one), then looks again. Still too little: RESOURCE_EXHAUSTED marked as a full
// disk (common/failure.h), naming the folder, the bytes free and needed. Passes when the free
// space cannot be read. `free_bytes` reads it (FreeBytes; tests give their own).
absl::Status EnsureCheckpointSpace(
    const std::string& checkpoint_dir, int64_t needed_bytes, int keep_last,
    const std::function<std::optional<int64_t>(const std::string&)>& free_bytes = FreeBytes);

}  // namespace paft::trainer

#endif  // PAFT_TRAINER_CHECKPOINT_RETENTION_H_
