// Names of jobs, branches and ranks (declared in coordinator/job_manager.h).
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/logging.h"
#include "common/status.h"
#include "coordinator/job_manager.h"
#include "coordinator/job_manager_internal.h"

namespace paft::coordinator {

bool IsTerminal(JobState state) {
  return state == paft::v1::JOB_STATE_SUCCEEDED || state == paft::v1::JOB_STATE_FAILED ||
         state == paft::v1::JOB_STATE_CANCELLED;
}

std::string TaskIdPrefix(const std::string& job_id, BranchKind kind, int attempt) {
  return absl::StrCat(job_id, ".", BranchName(kind), ".a", attempt, ".r");
}

std::string TaskId(const std::string& job_id, BranchKind kind, int attempt, int rank) {
  return absl::StrCat(TaskIdPrefix(job_id, kind, attempt), rank);
}

std::optional<TaskKey> ParseTaskId(const std::string& task_id) {
  std::vector<std::string> parts = absl::StrSplit(task_id, '.');
  if (parts.size() < 4) return std::nullopt;
  const std::string& rank_part = parts.back();
  const std::string& attempt_part = parts[parts.size() - 2];
  const std::string& branch_part = parts[parts.size() - 3];
  TaskKey key;
  key.job_id = absl::StrJoin(parts.begin(), parts.end() - 3, ".");
  key.branch = BranchKindNamed(branch_part).value_or(paft::v1::BRANCH_KIND_UNSPECIFIED);
  if (key.branch == paft::v1::BRANCH_KIND_UNSPECIFIED || attempt_part.size() < 2 ||
      rank_part.size() < 2 || attempt_part[0] != 'a' || rank_part[0] != 'r' ||
      !absl::SimpleAtoi(attempt_part.substr(1), &key.attempt) ||
      !absl::SimpleAtoi(rank_part.substr(1), &key.rank)) {
    return std::nullopt;
  }
  // Only the canonical spelling ("r+0", "a01" would name the same rank twice).
  if (TaskId(key.job_id, key.branch, key.attempt, key.rank) != task_id) return std::nullopt;
  return key;
}

}  // namespace paft::coordinator
