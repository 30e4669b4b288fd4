#include "trainer/checkpoint_retention.h"

#include <sys/statvfs.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/failure.h"
#include "common/file_util.h"
#include "common/status.h"

namespace paft::trainer {
namespace {

// Committed checkpoints under `checkpoint_dir`, newest first.
absl::StatusOr<std::vector<std::pair<int64_t, std::string>>> Committed(
    const std::string& checkpoint_dir) {
  PAFT_ASSIGN_OR_RETURN(auto names, ListDir(checkpoint_dir));
  std::vector<std::pair<int64_t, std::string>> committed;
  for (const auto& name : names) {
    int64_t step;
    const std::string dir = JoinPath(checkpoint_dir, name);
    if (CheckpointStep(name, &step) && IsRegularFile(JoinPath(dir, kCheckpointManifest))) {
      committed.emplace_back(step, dir);
    }
  }
  std::sort(committed.rbegin(), committed.rend());
  return committed;
}

}  // namespace

bool CheckpointStep(const std::string& name, int64_t* step) {
  return name.rfind("checkpoint-", 0) == 0 && absl::SimpleAtoi(name.substr(11), step);
}

absl::Status ApplyRetention(const std::string& checkpoint_dir, int keep,
                            const std::string& newest) {
  PAFT_ASSIGN_OR_RETURN(auto committed, Committed(checkpoint_dir));
  for (size_t i = static_cast<size_t>(std::max(1, keep)); i < committed.size(); ++i) {
    if (committed[i].second == newest) continue;
    PAFT_RETURN_IF_ERROR(RemoveAll(committed[i].second));
  }
  return absl::OkStatus();
}

std::optional<int64_t> FreeBytes(const std::string& path) {
  struct statvfs fs;
  if (::statvfs(path.c_str(), &fs) != 0) return std::nullopt;
  return static_cast<int64_t>(fs.f_bavail) * static_cast<int64_t>(fs.f_frsize);
}

absl::Status EnsureCheckpointSpace(
    const std::string& checkpoint_dir, int64_t needed_bytes, int keep_last,
    const std::function<std::optional<int64_t>(const std::string&)>& free_bytes) {
  std::optional<int64_t> available = free_bytes(checkpoint_dir);
  if (!available || *available >= needed_bytes) return absl::OkStatus();
  // What retention removes after the save, removed before it: the save then fits where the
  // checkpoints it retires stood. The newest committed one stays (the resume point until the
  // new one is committed). Staging folders are left alone: one may be another attempt's rank 0
  // still saving its stop checkpoint.
  int removed = 0;
  PAFT_ASSIGN_OR_RETURN(auto committed, Committed(checkpoint_dir));
  for (size_t i = static_cast<size_t>(std::max(1, keep_last - 1)); i < committed.size(); ++i) {
    PAFT_RETURN_IF_ERROR(RemoveAll(committed[i].second));
    ++removed;
  }
  available = free_bytes(checkpoint_dir);
  if (!available || *available >= needed_bytes) return absl::OkStatus();
  return MarkFailure(absl::ResourceExhaustedError(absl::StrCat(
                         "not enough free space for a checkpoint in ", checkpoint_dir, ": ",
                         *available, " bytes free, ", needed_bytes, " needed",
                         removed > 0 ? absl::StrCat(" (after removing ", removed,
                                                    " older or interrupted checkpoint folder(s))")
                                     : "")),
                     Failure::kDiskFull);
}

}  // namespace paft::trainer
