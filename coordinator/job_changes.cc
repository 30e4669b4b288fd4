// Changes: copy the job, mutate the copy, persist it with its events, then publish it and act
// on it (task records, assignments). Nothing is visible or sent before the commit.
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status.h"
#include "common/time_util.h"
#include "coordinator/job_manager.h"
#include "coordinator/job_manager_internal.h"

namespace paft::coordinator {

JobManager::Change JobManager::BeginChange(const JobRecord& record) const {
  Change change;
  change.job = record.job;
  change.base_seq = record.last_seq;
  return change;
}

void JobManager::AddEvent(Change& change, const std::string& type, BranchKind branch,
                          const std::string& reason, const std::string& message) {
  JobEvent event;
  event.set_seq(change.base_seq + static_cast<int64_t>(change.events.size()) + 1);
  event.set_job_id(change.job.job_id());
  *event.mutable_time() = ToProtoTime(clock_->Now());
  event.set_type(type);
  event.set_branch(branch);
  event.set_job_state(change.job.state());
  if (branch != paft::v1::BRANCH_KIND_UNSPECIFIED) {
    event.set_branch_state(Branch(change.job, branch).state());
  }
  event.set_reason(reason);
  event.set_message(message);
  change.events.push_back(std::move(event));
}

void JobManager::SetCondition(Job& job, const std::string& type, bool value,
                              const std::string& reason, const std::string& message) {
  const std::string status = value ? "True" : "False";
  for (auto& c : *job.mutable_conditions()) {
    if (c.type() != type) continue;
    if (c.status() != status) *c.mutable_last_transition_time() = ToProtoTime(clock_->Now());
    c.set_status(status);
    c.set_reason(reason);
    c.set_message(message);
    return;
  }
  auto* c = job.add_conditions();
  c->set_type(type);
  c->set_status(status);
  c->set_reason(reason);
  c->set_message(message);
  *c->mutable_last_transition_time() = ToProtoTime(clock_->Now());
}

void JobManager::SetJobState(Change& change, JobState state, const std::string& reason,
                             const std::string& message) {
  Job& job = change.job;
  if (job.state() == state) return;
  job.set_state(state);
  job.set_reason(reason);
  job.set_message(message);
  if (IsTerminal(state)) {
    *job.mutable_end_time() = ToProtoTime(clock_->Now());
    SetCondition(job, "Complete", state == paft::v1::JOB_STATE_SUCCEEDED, reason, message);
    SetCondition(job, "Failed", state == paft::v1::JOB_STATE_FAILED, reason, message);
  }
  if (metrics_) metrics_->job_transitions.Add({{"state", JobState_Name(state)}}).Increment();
  AddEvent(change, "JobState", paft::v1::BRANCH_KIND_UNSPECIFIED, reason, message);
}

void JobManager::SetBranchState(Change& change, BranchKind kind, BranchState state,
                                const std::string& reason, const std::string& message) {
  BranchStatus* b = MutableBranch(change.job, kind);
  if (b->state() == state && b->reason() == reason) return;
  b->set_state(state);
  b->set_reason(reason);
  b->set_message(message);
  const auto now = ToProtoTime(clock_->Now());
  if (state == paft::v1::BRANCH_STATE_RUNNING && !b->has_start_time()) {
    *b->mutable_start_time() = now;
  }
  if (BranchTerminal(state)) *b->mutable_end_time() = now;
  // SftTrained, AlignmentTrained; MergeSearched for the merge search.
  const std::string condition = kind == paft::v1::BRANCH_KIND_MERGE_SEARCH
                                    ? "MergeSearched"
                                    : BranchTitle(kind) + "Trained";
  SetCondition(change.job, condition, state == paft::v1::BRANCH_STATE_SUCCEEDED, reason, message);
  AddEvent(change, "BranchState", kind, reason, message);
}

absl::Status JobManager::CommitLocked(JobRecord& record, Change change) {
  *change.job.mutable_update_time() = ToProtoTime(clock_->Now());
  PAFT_RETURN_IF_ERROR(store_->UpdateJob(change.job, change.events, change.checkpoints));
  CountJobState(record.job.state(), change.job.state());
  UpdateQueueLocked(&record, &record.job, change.job);
  record.job = std::move(change.job);
  record.last_seq += static_cast<int64_t>(change.events.size());
  record.progress_dirty = false;
  record.last_flush = clock_->Now();
  if (!change.events.empty()) NotifyWatchers(record.job.job_id());
  for (TaskRecord& task : change.new_tasks) tasks_[task.task_id] = std::move(task);
  for (const std::string& id : change.ended_tasks) tasks_.erase(id);
  for (const std::string& id : change.stopping_tasks) {
    if (auto it = tasks_.find(id); it != tasks_.end()) it->second.stopping = true;
  }
  for (auto& [worker_id, assignment] : change.outbox) {
    registry_->Send(worker_id, std::move(assignment));
  }
  return absl::OkStatus();
}

void JobManager::CountJobState(JobState from, JobState to) {
  if (metrics_ == nullptr || from == to) return;
  if (from != paft::v1::JOB_STATE_UNSPECIFIED) {
    metrics_->jobs.Add({{"state", JobState_Name(from)}}).Decrement();
  }
  metrics_->jobs.Add({{"state", JobState_Name(to)}}).Increment();
}

}  // namespace paft::coordinator
