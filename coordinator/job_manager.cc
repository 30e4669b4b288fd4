// The front of the coordinator's control logic: construction and recovery, the JobService's
// reads and cancellation, the control loop's tick, and merges. The other parts of JobManager:
// admission.cc, scheduler.cc, task_tracking.cc, worker_calls.cc, checkpoint_registry.cc,
// job_changes.cc, gauges.cc, task_id.cc.
#include "coordinator/job_manager.h"

#include <algorithm>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/failure.h"
#include "common/file_util.h"
#include "common/logging.h"
#include "common/merge_request.h"
#include "common/status.h"
#include "common/time_util.h"
#include "coordinator/job_manager_internal.h"

namespace paft::coordinator {

namespace {

constexpr int kDefaultPageSize = 50;
constexpr int kMaxPageSize = 500;

}  // namespace

JobManager::JobManager(JobManagerOptions options, JobStore* store, WorkerRegistry* registry,
                       Clock* clock, CoordinatorMetrics* metrics)
    : options_(std::move(options)),
      store_(store),
      registry_(registry),
      clock_(clock),
      metrics_(metrics) {
  if (metrics_ == nullptr) return;
  // Series exist from the start, at zero, so that rates and alerts see the first increment.
  for (int s = paft::v1::JOB_STATE_QUEUED; s <= paft::v1::JOB_STATE_CANCELLED; ++s) {
    metrics_->jobs.Add({{"state", JobState_Name(static_cast<JobState>(s))}});
    metrics_->job_transitions.Add({{"state", JobState_Name(static_cast<JobState>(s))}});
  }
  // The coordinator's own restart reasons, then the restartable classes of rank exits.
  for (const char* reason :
       {"WorkerLost", "WorkerShutdown", "NoProgress", "WorkerRestarted", "CoordinatorRestarted"}) {
    metrics_->branch_restarts.Add({{"reason", reason}});
  }
  for (const FailureInfo& info : AllFailures()) {
    if (!info.permanent && info.failure != Failure::kNone) {
      metrics_->branch_restarts.Add({{"reason", info.name}});
    }
  }
  for (BranchKind kind : kBranches) metrics_->checkpoints.Add({{"branch", BranchName(kind)}});
}

absl::Status JobManager::Recover() {
  MutexLock lock(&mu_);
  PAFT_ASSIGN_OR_RETURN(pool_high_water_, store_->LoadPoolCapacities());
  PAFT_ASSIGN_OR_RETURN(auto jobs, store_->LoadAllJobs());
  for (auto& job : jobs) {
    job_by_request_[job.request_id()] = job.job_id();
    JobRecord& record = jobs_[job.job_id()];
    PAFT_ASSIGN_OR_RETURN(record.last_seq, store_->LastEventSeq(job.job_id()));
    record.job = std::move(job);
    record.last_flush = clock_->Now();
    CountJobState(paft::v1::JOB_STATE_UNSPECIFIED, record.job.state());
    UpdateQueueLocked(&record, nullptr, record.job);
    if (IsTerminal(record.job.state())) continue;
    // Running gangs keep running: their agents re-register and report their ranks, which are
    // adopted; a gang not fully adopted within the grace period restarts from its checkpoint.
    for (BranchKind kind : kGangs) {
      BranchState s = Branch(record.job, kind).state();
      if (s == paft::v1::BRANCH_STATE_SCHEDULED || s == paft::v1::BRANCH_STATE_RUNNING) {
        awaiting_adoption_[{record.job.job_id(), kind}] = clock_->Now() + options_.adoption_grace;
      }
    }
  }
  PAFT_LOG(INFO) << "recovered " << jobs_.size() << " jobs from the state database";
  return absl::OkStatus();
}

absl::StatusOr<JobManager::JobRecord*> JobManager::FindLocked(const std::string& job_id) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("job '", job_id, "' not found"));
  return &it->second;
}

absl::StatusOr<Job> JobManager::GetJob(const std::string& job_id) { return LookupJob(job_id); }

absl::StatusOr<Job> JobManager::LookupJob(const std::string& job_id) {
  {
    MutexLock lock(&mu_);
    if (auto it = jobs_.find(job_id); it != jobs_.end()) return Decorate(it->second);
  }
  return store_->GetJob(job_id);  // evicted from memory (finished): as stored
}

namespace {

// "<create_ns>.<job_id>" of the last job listed.
std::string PageToken(const JobStore::ScanCursor& cursor) {
  return absl::StrCat(cursor.create_ns, ".", cursor.job_id);
}

std::optional<JobStore::ScanCursor> ParsePageToken(const std::string& token) {
  const size_t dot = token.find('.');
  JobStore::ScanCursor cursor;
  if (dot == std::string::npos || dot + 1 == token.size() ||
      !absl::SimpleAtoi(token.substr(0, dot), &cursor.create_ns)) {
    return std::nullopt;
  }
  cursor.job_id = token.substr(dot + 1);
  return cursor;
}

}  // namespace

absl::Status JobManager::CheckJobExists(const std::string& job_id) {
  {
    MutexLock lock(&mu_);
    if (jobs_.count(job_id) > 0) return absl::OkStatus();
  }
  return store_->GetJob(job_id).status();  // evicted from memory (finished)
}

absl::StatusOr<paft::v1::ListJobsResponse> JobManager::ListJobs(
    const paft::v1::ListJobsRequest& request) {
  int page_size = request.page_size() <= 0 ? kDefaultPageSize : request.page_size();
  if (page_size > kMaxPageSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size: at most ", kMaxPageSize, ", got ", request.page_size()));
  }
  // The token is where the last page ended (keyset): jobs submitted meanwhile neither shift
  // nor repeat what the next page shows.
  std::optional<JobStore::ScanCursor> after;
  if (!request.page_token().empty()) {
    auto cursor = ParsePageToken(request.page_token());
    if (!cursor) return absl::InvalidArgumentError("page_token: not a token returned by ListJobs");
    after = std::move(cursor);
  }
  // Paged from the store, which holds every job (finished ones evicted from memory too), newest
  // first; only the rows of the page are read (labels, when asked for, are matched here).
  // Jobs still in memory are shown as memory has them (live progress, queue positions).
  std::vector<JobState> states;
  for (int s : request.states()) states.push_back(static_cast<JobState>(s));
  std::vector<Job> page;
  bool more = false;
  PAFT_RETURN_IF_ERROR(store_->ScanJobs(states, request.owner(), after, [&](Job job) {
    for (const auto& [key, value] : request.labels()) {
      auto label = job.spec().labels().find(key);
      if (label == job.spec().labels().end() || label->second != value) return true;
    }
    if (static_cast<int>(page.size()) == page_size) {
      more = true;
      return false;
    }
    page.push_back(std::move(job));
    return true;
  }));
  paft::v1::ListJobsResponse response;
  if (more) response.set_next_page_token(PageToken(JobStore::CursorOf(page.back())));
  MutexLock lock(&mu_);
  const auto positions = QueuePositionsLocked();
  for (Job& job : page) {
    auto it = jobs_.find(job.job_id());
    *response.add_jobs() = it != jobs_.end() ? Decorate(it->second, &positions) : std::move(job);
  }

  return response;
}

absl::StatusOr<Job> JobManager::CancelJob(const paft::v1::CancelJobRequest& request) {
  {
    MutexLock lock(&mu_);
    if (auto it = jobs_.find(request.job_id()); it != jobs_.end()) {
      return CancelLocked(it->second, request);
    }
  }
  // Not in memory: unknown, or finished and evicted.
  PAFT_ASSIGN_OR_RETURN(const Job stored, store_->GetJob(request.job_id()));
  return absl::FailedPreconditionError(
      absl::StrCat("job ", request.job_id(), " is already ", JobState_Name(stored.state())));
}

absl::StatusOr<Job> JobManager::CancelLocked(JobRecord& record_ref,
                                             const paft::v1::CancelJobRequest& request) {
  JobRecord* record = &record_ref;
  if (IsTerminal(record->job.state())) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", request.job_id(), " is already ", JobState_Name(record->job.state())));
  }
  const std::string message =
      request.reason().empty() ? "cancelled by the client" : request.reason();
  Change change = BeginChange(*record);
  for (BranchKind kind : kGangs) {
    if (GangActive(change.job, kind) && !BranchTerminal(Branch(change.job, kind).state())) {
      SetBranchState(change, kind, paft::v1::BRANCH_STATE_CANCELLED, "JobCancelled", message);
    }
  }
  SetJobState(change, paft::v1::JOB_STATE_CANCELLED, "Cancelled", message);
  for (BranchKind kind : kGangs) QueueStopsLocked(change, kind, "JobCancelled");
  PAFT_RETURN_IF_ERROR(CommitLocked(*record, std::move(change)));
  PAFT_LOG(INFO) << "job " << request.job_id() << " cancelled: " << message;
  ScheduleLocked();
  return Decorate(*record);
}

absl::StatusOr<paft::v1::ListEventsResponse> JobManager::ListEvents(
    const paft::v1::ListEventsRequest& request) {
  const int page_size = request.page_size() <= 0 ? 100 : request.page_size();
  if (page_size > 1000) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size: at most 1000, got ", request.page_size()));
  }
  if (request.after_seq() < 0) return absl::InvalidArgumentError("after_seq: must be >= 0");
  PAFT_ASSIGN_OR_RETURN(auto events,
                        EventsAfter(request.job_id(), request.after_seq(), page_size + 1));
  paft::v1::ListEventsResponse response;
  response.set_more(static_cast<int>(events.size()) > page_size);
  for (size_t i = 0; i < events.size() && static_cast<int>(i) < page_size; ++i) {
    *response.add_events() = std::move(events[i]);
  }
  return response;
}

absl::StatusOr<JobManager::LogTarget> JobManager::LogFile(
    const paft::v1::StreamLogsRequest& request) {
  PAFT_ASSIGN_OR_RETURN(const Job job, LookupJob(request.job_id()));
  const BranchKind kind = request.branch();
  if (kind != paft::v1::BRANCH_KIND_SFT && kind != paft::v1::BRANCH_KIND_ALIGNMENT &&
      kind != paft::v1::BRANCH_KIND_MERGE_SEARCH) {
    return absl::InvalidArgumentError(
        "branch: must be BRANCH_KIND_SFT, BRANCH_KIND_ALIGNMENT or BRANCH_KIND_MERGE_SEARCH");
  }
  if (kind == paft::v1::BRANCH_KIND_MERGE_SEARCH && !job.spec().merge().has_search()) {
    return absl::FailedPreconditionError("the job has no merge search (merge.search)");
  }
  const BranchStatus& branch = Branch(job, kind);
  const int world_size = Spec(job, kind).world_size();
  if (request.rank() < 0 || request.rank() >= world_size) {
    return absl::InvalidArgumentError(absl::StrCat("rank: the ", BranchName(kind),
                                                   " branch has ranks 0..", world_size - 1,
                                                   ", got ", request.rank()));
  }
  if (branch.attempt() == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("the ", BranchName(kind), " branch has not started yet"));
  }
  if (request.attempt() < 0 || request.attempt() > branch.attempt()) {
    return absl::InvalidArgumentError(absl::StrCat("attempt: the ", BranchName(kind),
                                                   " branch has attempts 1..", branch.attempt(),
                                                   ", got ", request.attempt()));
  }
  if (request.offset() < 0) return absl::InvalidArgumentError("offset: must be >= 0");
  LogTarget target;
  target.attempt = request.attempt() == 0 ? branch.attempt() : request.attempt();
  target.path = JoinPath(JobLayout(job.spec().output_dir()).LogDir(kind, target.attempt),
                         absl::StrCat("rank-", request.rank(), ".log"));
  // The attempt has ended when a later one exists, or the branch is over and none of its
  // ranks still runs (a look at that attempt's range of tasks_, not at every rank).
  const std::string prefix = TaskIdPrefix(request.job_id(), kind, target.attempt);
  MutexLock lock(&mu_);
  const auto first = tasks_.lower_bound(prefix);
  const bool running = first != tasks_.end() && absl::StartsWith(first->first, prefix);
  target.attempt_ended =
      target.attempt < branch.attempt() ||
      (!running && (BranchTerminal(branch.state()) || BranchWaiting(branch.state())));
  return target;
}

absl::StatusOr<std::vector<JobEvent>> JobManager::EventsAfter(const std::string& job_id,
                                                              int64_t after_seq, int limit) {
  PAFT_RETURN_IF_ERROR(CheckJobExists(job_id));
  return store_->EventsAfter(job_id, after_seq, limit);
}

void JobManager::NotifyWatchers(const std::string& job_id) {
  if (hub_ != nullptr) hub_->Notify(job_id);
}

std::vector<JobEvent> JobManager::ProgressEvents(const std::string& job_id,
                                                 uint64_t* progress_version) {
  MutexLock lock(&mu_);
  std::vector<JobEvent> events;
  auto it = jobs_.find(job_id);
  if (it == jobs_.end() || it->second.progress_version <= *progress_version) return events;
  const JobRecord& record = it->second;
  *progress_version = record.progress_version;
  for (BranchKind kind : kGangs) {
    const BranchStatus& b = Branch(record.job, kind);
    if (b.state() != paft::v1::BRANCH_STATE_RUNNING || b.total_steps() == 0) continue;
    JobEvent event;
    event.set_seq(record.last_seq);
    event.set_job_id(job_id);
    *event.mutable_time() = ToProtoTime(clock_->Now());
    event.set_type("Progress");
    event.set_branch(kind);
    event.set_job_state(record.job.state());
    event.set_branch_state(b.state());
    *event.mutable_progress() = b;
    events.push_back(std::move(event));
  }
  return events;
}

bool JobManager::WatchComplete(const std::string& job_id, int64_t seq) {
  MutexLock lock(&mu_);
  auto it = jobs_.find(job_id);
  return it == jobs_.end() || (IsTerminal(it->second.job.state()) && it->second.last_seq <= seq);
}

Job JobManager::Decorate(const JobRecord& record, const std::map<std::string, int>* positions) {
  Job job = record.job;
  if (job.state() != paft::v1::JOB_STATE_QUEUED) return job;
  if (positions == nullptr) {
    int position = 0;
    for (const auto& [key, queued] : queue_) {
      if (queued->job.state() == paft::v1::JOB_STATE_QUEUED) ++position;
      if (queued == &record) break;
    }
    job.set_queue_position(position);
  } else {
    auto it = positions->find(job.job_id());
    job.set_queue_position(it == positions->end() ? 0 : it->second);
  }
  return job;
}

void JobManager::Tick() {
  MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  for (const std::string& worker_id : registry_->ExpireLeases(now)) {
    PAFT_LOG(WARNING) << "worker " << worker_id << " lost: no heartbeat within the lease";
    std::vector<std::string> lost;
    for (const auto& [id, task] : tasks_) {
      // A rank that already exited 0 is done, whatever becomes of its agent.
      if (task.slot.worker_id == worker_id && !task.succeeded) lost.push_back(id);
    }
    for (const std::string& id : lost) {
      auto it = tasks_.find(id);
      if (it == tasks_.end()) continue;
      HandleTaskEndLocked(it->second, false, false, "WorkerLost",
                          absl::StrCat("worker ", worker_id, " missed its heartbeats"));
    }
  }
  RetryFailuresLocked();
  CompleteBranchesLocked();
  CheckAdoptionLocked(now);
  CheckProgressLocked(now);
  ScheduleLocked();
  for (auto& [id, record] : jobs_) {
    if (record.progress_dirty && now - record.last_flush >= options_.progress_flush_interval) {
      Change change = BeginChange(record);
      if (absl::Status s = CommitLocked(record, std::move(change)); !s.ok()) {
        PAFT_LOG(ERROR) << "cannot persist progress of job " << id << ": " << s;
      }
    }
  }
  EvictFinishedLocked(now);
  UpdateGaugesLocked();
}

void JobManager::EvictFinishedLocked(absl::Time now) {
  if (options_.finished_job_retention == absl::InfiniteDuration()) return;
  // A walk over every job: not every tick (a job leaves memory up to this much later).
  const absl::Duration every =
      std::min(absl::Seconds(10), options_.finished_job_retention / 10);
  if (now - last_eviction_scan_ < every) return;
  last_eviction_scan_ = now;
  std::set<std::string> with_ranks;  // a stopped rank may still report its exit
  for (const auto& [id, task] : tasks_) with_ranks.insert(task.job_id);
  int evicted = 0;
  for (auto it = jobs_.begin(); it != jobs_.end();) {
    const Job& job = it->second.job;
    if (!IsTerminal(job.state()) || with_ranks.count(it->first) ||
        now - FromProtoTime(job.update_time()) < options_.finished_job_retention) {
      ++it;
      continue;
    }
    job_by_request_.erase(job.request_id());
    evicted_requests_.insert(job.request_id());
    for (BranchKind kind : kGangs) {
      pending_failures_.erase({it->first, kind});
      awaiting_adoption_.erase({it->first, kind});
    }
    it = jobs_.erase(it);
    ++evicted;
  }
  if (evicted > 0 && metrics_ != nullptr) metrics_->jobs_evicted.Increment(evicted);
}

std::vector<JobManager::PendingMerge> JobManager::PendingMerges() {
  MutexLock lock(&mu_);
  std::vector<PendingMerge> out;
  for (const auto& [id, record] : jobs_) {
    const Job& job = record.job;
    if (job.state() != paft::v1::JOB_STATE_MERGING) continue;
    // With a search, the merge is the candidate it chose, once it has: the stored table's row,
    // checked against the job's grid when the table was read.
    paft::v1::MergeSpec merge = job.spec().merge();
    if (merge.has_search()) {
      const paft::v1::MergeSearchResult& result = job.merge_search_result();
      if (job.merge_search().state() != paft::v1::BRANCH_STATE_SUCCEEDED ||
          result.chosen() < 0 || result.chosen() >= result.candidates_size()) {
        continue;
      }
      merge = result.candidates(result.chosen()).merge();
    }
    paft::v1::MergeRequest request =
        BranchMergeRequest(job.spec().base_model(), job.sft().checkpoint_path(),
                           job.alignment().checkpoint_path(), merge);
    request.set_merge_id(absl::StrCat(id, "-merge"));
    const std::string& output = merge.output();
    const JobLayout layout(job.spec().output_dir());
    if (output != "adapter") request.set_output_dir(layout.MergedModelDir());
    if (output == "adapter" || output == "both") {
      request.set_adapter_output_dir(layout.MergedAdapterDir());
    }
    out.push_back(PendingMerge{id, std::move(request)});
  }
  return out;
}

void JobManager::OnMergeFinished(const std::string& job_id,
                                 const paft::v1::MergeOperation& operation) {
  MutexLock lock(&mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end() || it->second.job.state() != paft::v1::JOB_STATE_MERGING) return;
  JobRecord& record = it->second;
  Change change = BeginChange(record);
  if (operation.state() == paft::v1::MERGE_STATE_SUCCEEDED) {
    change.job.set_merged_model_path(operation.output_dir());
    change.job.set_merged_adapter_path(operation.adapter_output_dir());
    std::vector<std::string> where;
    if (!operation.output_dir().empty())
      where.push_back("merged model at " + operation.output_dir());
    if (!operation.adapter_output_dir().empty()) {
      where.push_back("merged adapter at " + operation.adapter_output_dir());
    }
    const std::string message = absl::StrJoin(where, ", ");
    SetCondition(change.job, "Merged", true, "MergeSucceeded", message);
    AddEvent(change, "Merge", paft::v1::BRANCH_KIND_UNSPECIFIED, "MergeSucceeded", message);
    SetJobState(change, paft::v1::JOB_STATE_SUCCEEDED, "Merged", message);
  } else {
    SetCondition(change.job, "Merged", false, "MergeFailed", operation.error());
    SetJobState(change, paft::v1::JOB_STATE_FAILED, "MergeFailed", operation.error());
  }
  if (absl::Status s = CommitLocked(record, std::move(change)); !s.ok()) {
    PAFT_LOG(ERROR) << "cannot persist the merge result of job " << job_id << ": " << s;
    return;
  }
  PAFT_LOG(INFO) << "job " << job_id << " " << JobState_Name(record.job.state()) << ": "
                 << record.job.message();
}

}  // namespace paft::coordinator
