// The checkpoint registry: checkpoints reported by rank 0, stored with their metrics, and
// retention as the trainer applies it to the folders.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status.h"
#include "common/time_util.h"
#include "coordinator/job_manager.h"
#include "coordinator/job_manager_internal.h"

namespace paft::coordinator {

absl::Status JobManager::ReportCheckpoint(const paft::v1::ReportCheckpointRequest& request) {
  if (request.path().empty() || request.step() < 0) {
    return absl::InvalidArgumentError("path and a non-negative step are required");
  }
  // The job's checkpoint registry is read before taking the lock (a gang's rank 0 reports its
  // checkpoints one at a time, so nothing of its branch changes meanwhile).
  const std::optional<TaskKey> key = ParseTaskId(request.task_id());
  if (!key)
    return absl::NotFoundError(absl::StrCat("task '", request.task_id(), "' is not active"));
  PAFT_ASSIGN_OR_RETURN(auto stored, store_->ListCheckpoints(key->job_id));
  MutexLock lock(&mu_);
  PAFT_ASSIGN_OR_RETURN(TaskRecord * task, FindTaskLocked(request.task_id()));
  if (task->rank != 0) {
    return absl::InvalidArgumentError("only rank 0 reports checkpoints");
  }
  PAFT_ASSIGN_OR_RETURN(JobRecord * record, FindLocked(task->job_id));
  const BranchStatus& current = Branch(record->job, task->branch);
  paft::v1::CheckpointInfo info;
  info.set_job_id(task->job_id);
  info.set_branch(task->branch);
  info.set_step(request.step());
  info.set_path(request.path());
  info.set_size_bytes(request.size_bytes());
  info.set_digest(request.digest());
  info.set_final(request.final());
  info.set_pinned(request.final());  // the merge's input
  info.set_attempt(task->attempt);
  *info.mutable_time() = ToProtoTime(clock_->Now());
  if (current.step() <= request.step() && current.total_steps() > 0) {
    (*info.mutable_metrics())["loss"] = current.loss();
    (*info.mutable_metrics())["tokens_per_second"] = current.tokens_per_second();
    info.mutable_metrics()->insert(current.metrics().begin(), current.metrics().end());
  }
  Change change = BeginChange(*record);
  change.checkpoints.push_back(info);
  // Retention, as the trainer applies it to the folders: the newest keep_last committed
  // checkpoints stay (the one just committed and pinned ones always); older ones are retired.
  std::vector<paft::v1::CheckpointInfo> live = {info};
  for (const auto& c : stored) {
    if (c.branch() == task->branch && !c.retired() && c.step() != info.step()) live.push_back(c);
  }
  std::sort(live.begin(), live.end(),
            [](const auto& a, const auto& b) { return a.step() > b.step(); });
  const size_t keep =
      static_cast<size_t>(std::max(1, Spec(record->job, task->branch).checkpoint().keep_last()));
  for (size_t i = keep; i < live.size(); ++i) {
    if (live[i].pinned() || live[i].step() == info.step()) continue;
    live[i].set_retired(true);
    change.checkpoints.push_back(live[i]);
  }
  BranchStatus* b = MutableBranch(change.job, task->branch);
  b->set_checkpoint_path(request.path());
  b->set_checkpoint_step(request.step());
  *b->mutable_checkpoint_time() = info.time();
  AddEvent(change, "Checkpoint", task->branch, request.final() ? "FinalCheckpoint" : "Checkpoint",
           absl::StrCat("step ", request.step(), ": ", request.path()));
  *change.events.back().mutable_checkpoint() = info;
  PAFT_RETURN_IF_ERROR(CommitLocked(*record, std::move(change)));
  if (metrics_) {
    metrics_->checkpoints.Add({{"branch", BranchName(task->branch)}}).Increment();
  }
  return absl::OkStatus();
}

absl::StatusOr<paft::v1::ListCheckpointsResponse> JobManager::ListCheckpoints(
    const paft::v1::ListCheckpointsRequest& request) {
  PAFT_RETURN_IF_ERROR(CheckJobExists(request.job_id()));
  PAFT_ASSIGN_OR_RETURN(auto checkpoints, store_->ListCheckpoints(request.job_id()));
  paft::v1::ListCheckpointsResponse response;
  for (auto& c : checkpoints) {
    if (!c.retired() || request.include_retired()) *response.add_checkpoints() = std::move(c);
  }
  return response;
}

}  // namespace paft::coordinator
