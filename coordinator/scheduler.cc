// The queue and the gang scheduler: jobs with a waiting branch in (priority, submission)
// order, strict FIFO per pool, a whole gang of slots or nothing, a free rendezvous port.
#include <set>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/logging.h"
#include "common/status.h"
#include "coordinator/job_manager.h"
#include "coordinator/job_manager_internal.h"

namespace paft::coordinator {

namespace {

bool Queued(const Job& job) {
  if (IsTerminal(job.state())) return false;
  for (BranchKind kind : kGangs) {
    if (BranchWaiting(Branch(job, kind).state())) return true;
  }
  return false;
}

std::tuple<int, int64_t, std::string> QueueKey(const Job& job) {
  return {-job.spec().priority(),
          job.create_time().seconds() * 1000000000 + job.create_time().nanos(), job.job_id()};
}

}  // namespace

void JobManager::UpdateQueueLocked(JobRecord* record, const Job* before, const Job& after) {
  auto count_waiting = [&](const Job& job, int delta) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (IsTerminal(job.state())) return;
    for (BranchKind kind : kGangs) {
      if (!BranchWaiting(Branch(job, kind).state())) continue;
      auto it = waiting_per_pool_.emplace(Spec(job, kind).pool(), 0).first;
      if ((it->second += delta) == 0) waiting_per_pool_.erase(it);
    }
  };
  if (before != nullptr) {
    count_waiting(*before, -1);
    if (Queued(*before)) queue_.erase(QueueKey(*before));
  }
  count_waiting(after, +1);
  if (Queued(after)) queue_[QueueKey(after)] = record;
}

std::vector<JobManager::JobRecord*> JobManager::QueueOrderLocked() {
  std::vector<JobRecord*> order;
  order.reserve(queue_.size());
  for (const auto& [key, record] : queue_) order.push_back(record);
  return order;
}

std::map<std::string, int> JobManager::QueuePositionsLocked() {
  std::map<std::string, int> positions;
  int position = 0;
  for (const JobRecord* r : QueueOrderLocked()) {
    if (r->job.state() == paft::v1::JOB_STATE_QUEUED) positions[r->job.job_id()] = ++position;
  }
  return positions;
}

void JobManager::ScheduleLocked() {
  // Strict FIFO (within priority) per pool: once a branch cannot get its gang, later branches of
  // the same pool wait behind it, so large gangs are not starved by small ones.
  std::set<std::string> blocked_pools;
  for (JobRecord* record : QueueOrderLocked()) {
    // Every pool with a waiting branch is blocked: nothing further down can start.
    if (blocked_pools.size() >= waiting_per_pool_.size()) break;
    for (BranchKind kind : kGangs) {
      if (!BranchWaiting(Branch(record->job, kind).state())) continue;
      const std::string pool = Spec(record->job, kind).pool();
      if (blocked_pools.count(pool)) continue;
      if (!StartBranchLocked(*record, kind)) blocked_pools.insert(pool);
    }
  }
}

bool JobManager::StartBranchLocked(JobRecord& record, BranchKind kind) {
  const BranchSpec spec = Spec(record.job, kind);  // a copy: the commit replaces record.job
  auto slots = registry_->Allocate(spec.pool(), spec.world_size());
  if (!slots) return false;

  Change change = BeginChange(record);
  Job& job = change.job;
  BranchStatus* branch = MutableBranch(job, kind);
  const int attempt = branch->attempt() + 1;
  branch->set_attempt(attempt);
  branch->clear_workers();
  for (const Slot& s : *slots) branch->add_workers(s.worker_id);
  // A port no running gang uses (after a coordinator restart, adopted gangs keep theirs).
  std::set<int> in_use;
  for (const auto& [id, r] : jobs_) {
    if (IsTerminal(r.job.state())) continue;
    for (BranchKind k : kGangs) {
      const BranchStatus& b = Branch(r.job, k);
      if (b.state() == paft::v1::BRANCH_STATE_SCHEDULED ||
          b.state() == paft::v1::BRANCH_STATE_RUNNING) {
        in_use.insert(b.rendezvous_port());
      }
    }
  }
  int port = 0;
  for (int tries = 0; tries < options_.rendezvous_port_range; ++tries) {
    port = options_.rendezvous_port_base +
           static_cast<int>(port_counter_++ % options_.rendezvous_port_range);
    if (!in_use.count(port)) break;
  }
  branch->set_rendezvous_port(port);
  SetBranchState(
      change, kind, paft::v1::BRANCH_STATE_SCHEDULED, "GangScheduled",
      absl::StrCat(spec.world_size(), " ranks on pool '", spec.pool(), "', attempt ", attempt));
  if (job.state() == paft::v1::JOB_STATE_QUEUED) {
    SetJobState(change, paft::v1::JOB_STATE_RUNNING, "BranchScheduled",
                absl::StrCat("the ", BranchName(kind), " branch was scheduled"));
  }
  const std::string resume_from = branch->checkpoint_path();
  const std::string job_id = record.job.job_id();
  const JobLayout layout(record.job.spec().output_dir());
  for (int rank = 0; rank < static_cast<int>(slots->size()); ++rank) {
    const Slot& slot = (*slots)[rank];
    TaskRecord task;
    task.task_id = TaskId(job_id, kind, attempt, rank);
    task.job_id = job_id;
    task.branch = kind;
    task.attempt = attempt;
    task.rank = rank;
    task.slot = slot;
    task.last_progress = clock_->Now();
    paft::v1::Assignment assignment;
    paft::v1::Task* t = assignment.mutable_start();
    t->set_task_id(task.task_id);
    t->set_job_id(job_id);
    t->set_branch(kind);
    t->set_attempt(attempt);
    t->set_rank(rank);
    t->set_world_size(static_cast<int>(slots->size()));
    t->set_local_rank(slot.device);
    t->set_master_addr((*slots)[0].address);
    t->set_master_port(port);
    t->set_base_model(record.job.spec().base_model());
    if (kind == paft::v1::BRANCH_KIND_MERGE_SEARCH) {
      // The search reads the branches' final checkpoints and validation sets; it has no
      // checkpoints of its own (checkpoint_dir is its work folder).
      paft::v1::MergeSearchTask* search = t->mutable_merge_search();
      *search->mutable_merge() = record.job.spec().merge();
      search->set_sft_checkpoint(record.job.sft().checkpoint_path());
      search->set_alignment_checkpoint(record.job.alignment().checkpoint_path());
      *search->mutable_sft() = record.job.spec().sft();
      *search->mutable_alignment() = record.job.spec().alignment();
      t->set_checkpoint_dir(layout.MergeSearchDir());
    } else {
      *t->mutable_spec() = spec;
      t->set_checkpoint_dir(layout.CheckpointDir(kind));
      t->set_resume_from(resume_from);
    }
    t->set_log_dir(layout.LogDir(kind, attempt));
    change.new_tasks.push_back(std::move(task));
    change.outbox.emplace_back(slot.worker_id, std::move(assignment));
  }
  if (absl::Status s = CommitLocked(record, std::move(change)); !s.ok()) {
    PAFT_LOG(ERROR) << "cannot persist scheduling of job " << job_id << ": " << s;
    for (const Slot& slot : *slots) registry_->Release(slot.worker_id, slot.device);
    return false;
  }
  PAFT_LOG(INFO) << "job " << job_id << ": " << BranchName(kind) << " branch attempt " << attempt
                 << " scheduled on " << slots->size() << " slot(s) of pool " << spec.pool();
  return true;
}

}  // namespace paft::coordinator
