// Ranks and the restart policy: how a rank's end moves its branch (restart within the budget,
// fail, succeed), stops of the ranks left, adoption of running ranks after a coordinator
// restart, and the progress timeout.
#include <algorithm>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/exit_reason.h"
#include "common/failure.h"
#include "common/job_layout.h"
#include "common/logging.h"
#include "common/merge_search.h"
#include "common/status.h"
#include "coordinator/job_manager.h"
#include "coordinator/job_manager_internal.h"

namespace paft::coordinator {

void JobManager::QueueStopsLocked(Change& change, BranchKind kind, const std::string& reason) {
  for (const auto& [id, task] : tasks_) {
    if (task.job_id != change.job.job_id() || task.branch != kind || task.stopping) continue;
    if (std::find(change.stopping_tasks.begin(), change.stopping_tasks.end(), id) !=
            change.stopping_tasks.end() ||
        std::find(change.ended_tasks.begin(), change.ended_tasks.end(), id) !=
            change.ended_tasks.end()) {
      continue;  // queued already
    }
    if (task.succeeded) {  // exited 0 already: nothing to stop, the record goes
      change.ended_tasks.push_back(id);
      continue;
    }
    change.stopping_tasks.push_back(id);
    paft::v1::Assignment assignment;
    assignment.mutable_stop()->set_task_id(id);
    assignment.mutable_stop()->set_reason(reason);
    assignment.mutable_stop()->set_grace_period_ms(
        absl::ToInt64Milliseconds(options_.stop_grace_period));
    change.outbox.emplace_back(task.slot.worker_id, std::move(assignment));
  }
}

void JobManager::AddFailureLocked(Change& change, BranchKind kind, const PendingFailure& failure) {
  Job& job = change.job;
  bool count_against_budget = failure.count_against_budget;
  if (failure.reason == InfoOf(Failure::kPortInUse).name) {
    // Another process holds the port on rank 0's host: the next attempt gets another port. Free
    // (the class's uses_budget) a few times; a host where port after port is taken uses the
    // budget like any fault.
    BranchStatus* branch = MutableBranch(job, kind);
    branch->set_port_conflicts(branch->port_conflicts() + 1);
    count_against_budget |= branch->port_conflicts() > internal::kFreePortConflicts;
  }
  const bool can_restart =
      !failure.permanent &&
      (!count_against_budget || job.restarts_used() < job.spec().restart_budget());
  if (can_restart && !count_against_budget) {
    SetBranchState(change, kind, paft::v1::BRANCH_STATE_RESTARTING, failure.reason,
                   failure.message);
  } else if (can_restart) {
    job.set_restarts_used(job.restarts_used() + 1);
    SetBranchState(change, kind, paft::v1::BRANCH_STATE_RESTARTING, failure.reason,
                   absl::StrCat(failure.message, " (restart ", job.restarts_used(), " of ",
                                job.spec().restart_budget(), ")"));
  }
  QueueStopsLocked(change, kind, failure.reason);
  if (can_restart) return;
  const std::string why = failure.permanent
                              ? failure.message
                              : absl::StrCat(failure.message, " (restart budget of ",
                                             job.spec().restart_budget(), " used up)");
  SetBranchState(change, kind, paft::v1::BRANCH_STATE_FAILED, failure.reason, why);
  for (BranchKind other : kGangs) {
    if (other != kind && GangActive(job, other) && !BranchTerminal(Branch(job, other).state())) {
      SetBranchState(change, other, paft::v1::BRANCH_STATE_CANCELLED, "OtherBranchFailed",
                     absl::StrCat("the ", BranchName(kind), " branch failed"));
    }
  }
  SetJobState(change, paft::v1::JOB_STATE_FAILED, absl::StrCat(BranchTitle(kind), "BranchFailed"),
              why);
  for (BranchKind other : kGangs) QueueStopsLocked(change, other, "JobFailed");
}

void JobManager::FailAttemptLocked(JobRecord& record, BranchKind kind, bool permanent,
                                   const std::string& reason, const std::string& message,
                                   bool count_against_budget) {
  const std::string job_id = record.job.job_id();
  const PendingFailure failure{Branch(record.job, kind).attempt(), permanent, reason, message,
                               count_against_budget};
  Change change = BeginChange(record);
  AddFailureLocked(change, kind, failure);
  const bool restarting = Branch(change.job, kind).state() == paft::v1::BRANCH_STATE_RESTARTING;
  if (absl::Status s = CommitLocked(record, std::move(change)); !s.ok()) {
    // Memory, store and agents are as they were; the failure is tried again each tick.
    PAFT_LOG(ERROR) << "cannot persist the failure of job " << job_id << " (" << reason
                    << "), retrying: " << s;
    pending_failures_.emplace(std::make_pair(job_id, kind), failure);
    return;
  }
  pending_failures_.erase({job_id, kind});
  if (restarting && metrics_) metrics_->branch_restarts.Add({{"reason", reason}}).Increment();
  PAFT_LOG(WARNING) << "job " << job_id << ": " << BranchName(kind) << " branch attempt failed ("
                    << reason << "): " << message << (restarting ? "; restarting" : "; giving up");
}

void JobManager::RetryFailuresLocked() {
  auto pending = pending_failures_;
  for (const auto& [key, failure] : pending) {
    auto job = jobs_.find(key.first);
    const BranchStatus* branch =
        job == jobs_.end() ? nullptr : &Branch(job->second.job, key.second);
    if (branch == nullptr || IsTerminal(job->second.job.state()) ||
        BranchTerminal(branch->state()) || branch->attempt() != failure.attempt ||
        BranchWaiting(branch->state())) {
      pending_failures_.erase(key);  // moot: the branch moved on
      continue;
    }
    FailAttemptLocked(job->second, key.second, failure.permanent, failure.reason, failure.message,
                      failure.count_against_budget);
  }
}

absl::Status JobManager::ReportExit(const paft::v1::ReportExitRequest& request) {
  MutexLock lock(&mu_);
  PAFT_ASSIGN_OR_RETURN(TaskRecord * task, FindTaskLocked(request.task_id()));
  // A repeated report (the answer to the first was lost): already counted, its slot already free.
  if (task->succeeded) return absl::OkStatus();
  // The one failure table (common/failure.h): the reason's name and whether to restart.
  const Failure failure = FailureOfExitReason(request.reason());
  const bool success = request.exit_code() == 0 && request.signal() == 0 &&
                       request.reason() != paft::v1::EXIT_REASON_STOPPED;
  const bool permanent = InfoOf(failure).permanent;
  const std::string reason = InfoOf(failure).name;
  std::string message = request.message();
  if (message.empty()) {
    message = request.signal() != 0 ? absl::StrCat("rank killed by signal ", request.signal())
                                    : absl::StrCat("rank exited with code ", request.exit_code());
  }
  if (request.reason() == paft::v1::EXIT_REASON_STOPPED && !task->stopping) {
    // Stopped by its agent on its own (the agent shutting down: a drained node, a rollout), not
    // by us: the branch resumes from its checkpoint elsewhere without using the job's budget.
    HandleTaskEndLocked(
        *task, false, false, "WorkerShutdown",
        absl::StrCat("rank ", task->rank, ": its worker agent shut down (", message, ")"),
        /*count_against_budget=*/false);
    return absl::OkStatus();
  }
  HandleTaskEndLocked(*task, success, permanent, reason,
                      absl::StrCat("rank ", task->rank, ": ", message),
                      InfoOf(failure).uses_budget);
  return absl::OkStatus();
}

void JobManager::HandleTaskEndLocked(TaskRecord& task_ref, bool success, bool permanent,
                                     const std::string& reason, const std::string& message,
                                     bool count_against_budget) {
  TaskRecord task = task_ref;  // task_ref may be erased below
  registry_->Release(task.slot.worker_id, task.slot.device);
  auto job_it = jobs_.find(task.job_id);
  const bool current = job_it != jobs_.end() && !task.stopping &&
                       Branch(job_it->second.job, task.branch).attempt() == task.attempt &&
                       !BranchTerminal(Branch(job_it->second.job, task.branch).state());
  if (!success || !current) {
    tasks_.erase(task.task_id);
    if (current) {
      FailAttemptLocked(job_it->second, task.branch, permanent, reason, message,
                        count_against_budget);
    }
    ScheduleLocked();
    return;
  }
  // Success of one rank: the branch succeeds when every rank of the attempt has.
  tasks_[task.task_id].succeeded = true;
  CompleteBranchIfDoneLocked(job_it->second, task.branch);
  ScheduleLocked();
}

void JobManager::CompleteBranchIfDoneLocked(JobRecord& record, BranchKind kind) {
  const BranchStatus& branch = Branch(record.job, kind);
  if (BranchTerminal(branch.state()) || BranchWaiting(branch.state())) return;
  int total = 0, done = 0;
  std::vector<std::string> ranks;
  for (const auto& [id, t] : tasks_) {
    if (t.job_id == record.job.job_id() && t.branch == kind && t.attempt == branch.attempt()) {
      ++total;
      done += t.succeeded ? 1 : 0;
      ranks.push_back(id);
    }
  }
  if (done < total || total < Spec(record.job, kind).world_size()) return;
  if (kind == paft::v1::BRANCH_KIND_MERGE_SEARCH) {
    CompleteMergeSearchLocked(record, std::move(ranks));
    return;
  }
  if (branch.checkpoint_path().empty()) {
    // Nothing to merge: a failure of the trainer.
    FailAttemptLocked(record, kind, /*permanent=*/true, "NoFinalCheckpoint",
                      "all ranks exited 0 but no checkpoint was reported");
    return;
  }
  Change change = BeginChange(record);
  change.ended_tasks = std::move(ranks);
  SetBranchState(change, kind, paft::v1::BRANCH_STATE_SUCCEEDED, "Completed",
                 absl::StrCat("final checkpoint ", branch.checkpoint_path()));
  if (change.job.sft().state() == paft::v1::BRANCH_STATE_SUCCEEDED &&
      change.job.alignment().state() == paft::v1::BRANCH_STATE_SUCCEEDED) {
    if (change.job.spec().merge().has_search()) {
      // The merge is chosen on validation first: the search's gang queues like a branch.
      const size_t candidates = MergeCandidates(change.job.spec().merge()).size();
      SetJobState(change, paft::v1::JOB_STATE_MERGING, "BranchesSucceeded",
                  absl::StrCat("both branches succeeded; searching ", candidates,
                               " merge candidate(s) on the validation sets"));
      MutableBranch(change.job, paft::v1::BRANCH_KIND_MERGE_SEARCH)
          ->set_kind(paft::v1::BRANCH_KIND_MERGE_SEARCH);
      SetBranchState(change, paft::v1::BRANCH_KIND_MERGE_SEARCH, paft::v1::BRANCH_STATE_PENDING,
                     "BranchesSucceeded", absl::StrCat(candidates, " candidate(s) to evaluate"));
    } else {
      SetJobState(change, paft::v1::JOB_STATE_MERGING, "BranchesSucceeded",
                  "both branches succeeded; merging");
    }
  }
  if (absl::Status s = CommitLocked(record, std::move(change)); !s.ok()) {
    PAFT_LOG(ERROR) << "cannot persist the success of the " << BranchName(kind) << " branch of job "
                    << record.job.job_id() << ", retrying: " << s;
  }
}

void JobManager::CompleteMergeSearchLocked(JobRecord& record, std::vector<std::string> ranks) {
  const JobLayout layout(record.job.spec().output_dir());
  auto table = ReadMergeSearchTable(layout.MergeSearchTable(), record.job.spec().merge());
  if (!table.ok()) {
    FailAttemptLocked(record, paft::v1::BRANCH_KIND_MERGE_SEARCH, /*permanent=*/true,
                      "NoSearchTable", std::string(table.status().message()));
    return;
  }
  const paft::v1::MergeSearchRow& chosen = table->candidates(table->chosen());
  Change change = BeginChange(record);
  change.ended_tasks = std::move(ranks);
  *change.job.mutable_merge_search_result() = *table;
  const std::string message =
      absl::StrCat("chose ", chosen.label(), " (score ", chosen.score(), ") of ",
                   table->candidates_size(), " candidate(s); table ", table->table_path());
  SetBranchState(change, paft::v1::BRANCH_KIND_MERGE_SEARCH, paft::v1::BRANCH_STATE_SUCCEEDED,
                 "Completed", message);
  AddEvent(change, "Merge", paft::v1::BRANCH_KIND_MERGE_SEARCH, "MergeChosen", message);
  if (absl::Status s = CommitLocked(record, std::move(change)); !s.ok()) {
    PAFT_LOG(ERROR) << "cannot persist the merge search of job " << record.job.job_id()
                    << ", retrying: " << s;
    return;
  }
  PAFT_LOG(INFO) << "job " << record.job.job_id() << ": merge search " << message;
}

void JobManager::CompleteBranchesLocked() {
  std::set<std::pair<std::string, BranchKind>> candidates;
  for (const auto& [id, t] : tasks_) {
    if (t.succeeded) candidates.insert({t.job_id, t.branch});
  }
  for (const auto& [job_id, kind] : candidates) {
    if (auto it = jobs_.find(job_id); it != jobs_.end())
      CompleteBranchIfDoneLocked(it->second, kind);
  }
}

bool JobManager::AdoptLocked(const std::string& task_id, const std::string& worker_id,
                             const std::string& worker_name, int device) {
  const std::optional<TaskKey> key = ParseTaskId(task_id);
  if (!key) return false;
  const std::string& job_id = key->job_id;
  const BranchKind kind = key->branch;
  const int attempt = key->attempt, rank = key->rank;
  auto job = jobs_.find(job_id);
  if (job == jobs_.end() || !awaiting_adoption_.count({job_id, kind})) return false;
  const BranchStatus& branch = Branch(job->second.job, kind);
  if (branch.attempt() != attempt || rank < 0 || rank >= Spec(job->second.job, kind).world_size()) {
    return false;
  }
  // Only the agent this rank was placed on may claim it: workers(rank) is the id it had then,
  // "<name>-<counter>".
  if (!worker_name.empty()) {
    const std::string placed = rank < branch.workers_size() ? branch.workers(rank) : "";
    const size_t dash = placed.rfind('-');
    if (dash == std::string::npos || placed.substr(0, dash) != worker_name) {
      PAFT_LOG(WARNING) << "worker " << worker_name << " claims rank " << task_id
                        << ", which was placed on " << placed << ": not adopted";
      return false;
    }
  }
  TaskRecord task;
  task.task_id = task_id;
  task.job_id = job_id;
  task.branch = kind;
  task.attempt = attempt;
  task.rank = rank;
  task.slot = Slot{worker_id, worker_name, device, ""};
  task.last_progress = clock_->Now();
  if (worker_id.empty()) task.bind_deadline = clock_->Now() + options_.adoption_grace;
  tasks_[task_id] = task;
  registry_->Occupy(worker_id, device);
  int adopted = 0;
  for (const auto& [id, t] : tasks_) {
    adopted += t.job_id == job_id && t.branch == kind && t.attempt == attempt ? 1 : 0;
  }
  if (adopted == Spec(job->second.job, kind).world_size()) awaiting_adoption_.erase({job_id, kind});
  PAFT_LOG(INFO) << "adopted " << task_id << " on " << worker_id;
  return true;
}

void JobManager::CheckAdoptionLocked(absl::Time now) {
  // Ranks adopted from a report whose agent never came back: lost, like an agent's lease.
  std::vector<std::string> unbound;
  for (const auto& [id, task] : tasks_) {
    if (task.slot.worker_id.empty() && !task.succeeded && now >= task.bind_deadline) {
      unbound.push_back(id);
    }
  }
  for (const std::string& id : unbound) {
    auto it = tasks_.find(id);
    if (it == tasks_.end()) continue;  // ended with an earlier one's gang
    HandleTaskEndLocked(it->second, false, false, "WorkerLost",
                        absl::StrCat("the agent running ", id, " did not re-register within ",
                                     absl::FormatDuration(options_.adoption_grace),
                                     " of the coordinator's restart"));
  }
  for (auto it = awaiting_adoption_.begin(); it != awaiting_adoption_.end();) {
    if (now < it->second) {
      ++it;
      continue;
    }
    const auto [job_id, kind] = it->first;
    it = awaiting_adoption_.erase(it);
    auto job = jobs_.find(job_id);
    if (job == jobs_.end() || IsTerminal(job->second.job.state())) continue;
    // Stop the ranks that were adopted; the gang restarts whole, without using the budget (the
    // coordinator's restart is not the job's failure).
    FailAttemptLocked(job->second, kind, /*permanent=*/false, "CoordinatorRestarted",
                      "not every rank was found running after the coordinator restarted; "
                      "restarting from the newest checkpoint",
                      /*count_against_budget=*/false);
  }
}

void JobManager::CheckProgressLocked(absl::Time now) {
  if (options_.progress_timeout <= absl::ZeroDuration()) return;
  // The oldest progress among the ranks of each current gang: one silent rank is enough (in a
  // real gang the others soon block in its collectives; a placeholder would not).
  std::map<std::pair<std::string, BranchKind>, absl::Time> oldest;
  for (const auto& [id, task] : tasks_) {
    if (task.stopping || task.succeeded) continue;
    auto key = std::make_pair(task.job_id, task.branch);
    auto it = oldest.find(key);
    if (it == oldest.end() || task.last_progress < it->second) oldest[key] = task.last_progress;
  }
  for (const auto& [key, last] : oldest) {
    if (now - last < options_.progress_timeout) continue;
    auto job = jobs_.find(key.first);
    if (job == jobs_.end() || BranchTerminal(Branch(job->second.job, key.second).state())) continue;
    PAFT_LOG(WARNING) << "job " << key.first << ": " << BranchName(key.second)
                      << " branch made no progress for " << (now - last);
    FailAttemptLocked(job->second, key.second, /*permanent=*/false, "NoProgress",
                      absl::StrCat("no training progress for ", absl::FormatDuration(now - last)));
  }
}

}  // namespace paft::coordinator
