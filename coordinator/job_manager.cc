#include "coordinator/job_manager.h"

#include <google/protobuf/util/message_differencer.h>

#include <algorithm>
#include <array>
#include <set>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/exit_reason.h"
#include "common/failure.h"
#include "common/file_util.h"
#include "common/job_spec.h"
#include "common/logging.h"
#include "common/status.h"
#include "common/time_util.h"

namespace paft::coordinator {

using paft::v1::BranchKind;
using paft::v1::BranchSpec;
using paft::v1::BranchState;
using paft::v1::BranchStatus;
using paft::v1::Job;
using paft::v1::JobEvent;
using paft::v1::JobState;

namespace {

constexpr int kDefaultPageSize = 50;
constexpr int kMaxPageSize = 500;
constexpr BranchKind kBranches[] = {paft::v1::BRANCH_KIND_SFT, paft::v1::BRANCH_KIND_ALIGNMENT};

BranchStatus* MutableBranch(Job& job, BranchKind kind) {
  return kind == paft::v1::BRANCH_KIND_SFT ? job.mutable_sft() : job.mutable_alignment();
}
const BranchStatus& Branch(const Job& job, BranchKind kind) {
  return kind == paft::v1::BRANCH_KIND_SFT ? job.sft() : job.alignment();
}
const BranchSpec& Spec(const Job& job, BranchKind kind) {
  return kind == paft::v1::BRANCH_KIND_SFT ? job.spec().sft() : job.spec().alignment();
}

bool BranchTerminal(BranchState s) {
  return s == paft::v1::BRANCH_STATE_SUCCEEDED || s == paft::v1::BRANCH_STATE_FAILED ||
         s == paft::v1::BRANCH_STATE_CANCELLED;
}
bool BranchWaiting(BranchState s) {
  return s == paft::v1::BRANCH_STATE_PENDING || s == paft::v1::BRANCH_STATE_RESTARTING;
}

std::string NewJobId() {
  static std::mt19937_64 rng(std::random_device{}());
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  return absl::StrFormat("job-%012x", rng() & 0xffffffffffffULL);
}

std::string BranchTitle(BranchKind kind) {
  return kind == paft::v1::BRANCH_KIND_SFT ? "Sft" : "Alignment";
}

}  // namespace

bool IsTerminal(JobState state) {
  return state == paft::v1::JOB_STATE_SUCCEEDED || state == paft::v1::JOB_STATE_FAILED ||
         state == paft::v1::JOB_STATE_CANCELLED;
}

const char* BranchName(BranchKind kind) {
  return kind == paft::v1::BRANCH_KIND_SFT ? "sft" : "alignment";
}

std::string TaskId(const std::string& job_id, BranchKind kind, int attempt, int rank) {
  return absl::StrCat(job_id, ".", BranchName(kind), ".a", attempt, ".r", rank);
}

std::optional<TaskKey> ParseTaskId(const std::string& task_id) {
  std::vector<std::string> parts = absl::StrSplit(task_id, '.');
  if (parts.size() < 4) return std::nullopt;
  const std::string& rank_part = parts.back();
  const std::string& attempt_part = parts[parts.size() - 2];
  const std::string& branch_part = parts[parts.size() - 3];
  TaskKey key;
  key.job_id = absl::StrJoin(parts.begin(), parts.end() - 3, ".");
  key.branch = branch_part == "sft"         ? paft::v1::BRANCH_KIND_SFT
               : branch_part == "alignment" ? paft::v1::BRANCH_KIND_ALIGNMENT
                                            : paft::v1::BRANCH_KIND_UNSPECIFIED;
  if (key.branch == paft::v1::BRANCH_KIND_UNSPECIFIED || attempt_part.size() < 2 ||
      rank_part.size() < 2 || attempt_part[0] != 'a' || rank_part[0] != 'r' ||
      !absl::SimpleAtoi(attempt_part.substr(1), &key.attempt) ||
      !absl::SimpleAtoi(rank_part.substr(1), &key.rank)) {
    return std::nullopt;
  }
  return key;
}

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
  for (const char* reason : {"WorkerLost", "WorkerShutdown", "NoProgress", "WorkerRestarted",
                             "CoordinatorRestarted"}) {
    metrics_->branch_restarts.Add({{"reason", reason}});
  }
  for (const FailureInfo& info : AllFailures()) {
    if (!info.permanent && info.failure != Failure::kNone) {
      metrics_->branch_restarts.Add({{"reason", info.name}});
    }
  }
  for (BranchKind kind : kBranches) metrics_->checkpoints.Add({{"branch", BranchName(kind)}});
}

// ---------------------------------------------------------------------------------------------
// Changes: copy, mutate, persist, publish.

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
  SetCondition(change.job, BranchTitle(kind) + "Trained", state == paft::v1::BRANCH_STATE_SUCCEEDED,
               reason, message);
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
  if (!change.events.empty()) events_cv_.notify_all();
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

// ---------------------------------------------------------------------------------------------
// Recovery

absl::Status JobManager::Recover() {
  std::lock_guard<std::mutex> lock(mu_);
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
    for (BranchKind kind : kBranches) {
      BranchState s = Branch(record.job, kind).state();
      if (s == paft::v1::BRANCH_STATE_SCHEDULED || s == paft::v1::BRANCH_STATE_RUNNING) {
        awaiting_adoption_[{record.job.job_id(), kind}] = clock_->Now() + options_.adoption_grace;
      }
    }
  }
  PAFT_LOG(INFO) << "recovered " << jobs_.size() << " jobs from the state database";
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// JobService

absl::StatusOr<Job> JobManager::SubmitJob(const paft::v1::SubmitJobRequest& request,
                                          const std::string& owner) {
  if (request.request_id().empty()) {
    return absl::InvalidArgumentError("request_id: is required (a client-chosen idempotency key)");
  }
  if (request.request_id().size() > 128) {
    return absl::InvalidArgumentError("request_id: longer than 128 characters");
  }
  paft::v1::JobSpec spec = request.spec();
  ApplyJobSpecDefaults(&spec);
  PAFT_RETURN_IF_ERROR(ValidateJobSpec(spec));

  // An idempotent repeat is answered from memory, before any file-system check (its output
  // folder is no longer empty); the per-client limit and the pools are checked first too.
  {
    std::lock_guard<std::mutex> lock(mu_);
    PAFT_ASSIGN_OR_RETURN(auto existing, RepeatedSubmissionLocked(request, spec, owner));
    if (existing) return *existing;
    PAFT_RETURN_IF_ERROR(AdmitLocked(spec, owner));
  }
  // The file-system checks run outside the lock: slow or hung storage must not stall the
  // control loop and every other call.
  PAFT_RETURN_IF_ERROR(CheckPathsConfined(spec, options_.storage_roots));
  if (options_.check_inputs) PAFT_RETURN_IF_ERROR(CheckJobInputs(spec));

  std::lock_guard<std::mutex> lock(mu_);
  // Meanwhile a concurrent call may have admitted the same request, or another of this client.
  PAFT_ASSIGN_OR_RETURN(auto existing, RepeatedSubmissionLocked(request, spec, owner));
  if (existing) return *existing;
  PAFT_RETURN_IF_ERROR(AdmitLocked(spec, owner));

  JobRecord record;
  Job& job = record.job;
  job.set_job_id(NewJobId());
  job.set_request_id(request.request_id());
  job.set_owner(owner);
  *job.mutable_spec() = spec;
  const auto now = ToProtoTime(clock_->Now());
  *job.mutable_create_time() = now;
  *job.mutable_update_time() = now;
  for (BranchKind kind : kBranches) {
    BranchStatus* b = MutableBranch(job, kind);
    b->set_kind(kind);
    b->set_state(paft::v1::BRANCH_STATE_PENDING);
    b->set_reason("WaitingForDevices");
  }
  Change change = BeginChange(record);
  SetCondition(change.job, "Admitted", true, "Validated", "the job spec passed admission checks");
  SetJobState(change, paft::v1::JOB_STATE_QUEUED, "Submitted", "waiting for devices");
  record.job = change.job;
  record.last_seq = static_cast<int64_t>(change.events.size());
  record.last_flush = clock_->Now();
  PAFT_RETURN_IF_ERROR(store_->InsertJob(record.job, change.events));
  const std::string job_id = job.job_id();
  CountJobState(paft::v1::JOB_STATE_UNSPECIFIED, record.job.state());
  JobRecord& stored = jobs_[job_id] = std::move(record);
  UpdateQueueLocked(&stored, nullptr, stored.job);
  job_by_request_[request.request_id()] = job_id;
  if (metrics_) metrics_->jobs_submitted.Increment();
  PAFT_LOG(INFO) << "job " << job_id << " submitted (request " << request.request_id() << ")";
  events_cv_.notify_all();
  ScheduleLocked();
  return Decorate(jobs_[job_id]);
}

absl::StatusOr<std::optional<Job>> JobManager::RepeatedSubmissionLocked(
    const paft::v1::SubmitJobRequest& request, const paft::v1::JobSpec& spec,
    const std::string& owner) {
  auto it = job_by_request_.find(request.request_id());
  if (it == job_by_request_.end()) return std::optional<Job>();
  const JobRecord& existing = jobs_.at(it->second);
  if (existing.job.owner() != owner) {
    return absl::AlreadyExistsError(absl::StrCat("request_id '", request.request_id(),
                                                 "' was already used by another client"));
  }
  if (!google::protobuf::util::MessageDifferencer::Equals(existing.job.spec(), spec)) {
    return absl::AlreadyExistsError(absl::StrCat("request_id '", request.request_id(),
                                                 "' was already used for job ", it->second,
                                                 " with a different spec"));
  }
  return std::optional<Job>(Decorate(existing));
}

absl::Status JobManager::AdmitLocked(const paft::v1::JobSpec& spec, const std::string& owner) {
  if (!owner.empty() && options_.max_active_jobs_per_client > 0) {
    int active = 0;
    for (const auto& [id, r] : jobs_) {
      active += r.job.owner() == owner && !IsTerminal(r.job.state()) ? 1 : 0;
    }
    if (active >= options_.max_active_jobs_per_client) {
      return absl::ResourceExhaustedError(
          absl::StrCat("client ", owner, " has ", active, " unfinished jobs, the limit; wait for "
                       "one to end or cancel one"));
    }
  }
  return AdmitPoolsLocked(spec);
}

absl::Status JobManager::AdmitPoolsLocked(const paft::v1::JobSpec& spec) const {
  const bool declared = !options_.pool_capacity.empty();
  const auto& capacities = declared ? options_.pool_capacity : pool_high_water_;
  for (BranchKind kind : kBranches) {
    const BranchSpec& branch = kind == paft::v1::BRANCH_KIND_SFT ? spec.sft() : spec.alignment();
    const std::string field = kind == paft::v1::BRANCH_KIND_SFT ? "sft" : "alignment";
    auto it = capacities.find(branch.pool());
    if (it == capacities.end()) {
      std::vector<std::string> known;
      for (const auto& [pool, slots] : capacities) known.push_back(pool);
      const std::string list = known.empty() ? "none" : absl::StrJoin(known, ", ");
      return absl::FailedPreconditionError(
          declared ? absl::StrCat(field, ".pool: unknown pool '", branch.pool(),
                                  "' (the coordinator declares: ", list, ")")
                   : absl::StrCat(field, ".pool: no worker agent of pool '", branch.pool(),
                                  "' has registered (pools seen: ", list,
                                  "); start agents with --pool=", branch.pool(),
                                  " or declare it with the coordinator's --pool_capacity"));
    }
    if (branch.world_size() > it->second) {
      return absl::FailedPreconditionError(absl::StrCat(
          field, ".world_size: ", branch.world_size(), " ranks, but pool '", branch.pool(),
          "' can offer at most ", it->second, " device slot(s)",
          declared ? " (declared)" : " (the most its agents have offered)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<JobManager::JobRecord*> JobManager::FindLocked(const std::string& job_id) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("job '", job_id, "' not found"));
  return &it->second;
}

absl::StatusOr<Job> JobManager::GetJob(const std::string& job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  PAFT_ASSIGN_OR_RETURN(JobRecord * record, FindLocked(job_id));
  return Decorate(*record);
}

absl::StatusOr<paft::v1::ListJobsResponse> JobManager::ListJobs(
    const paft::v1::ListJobsRequest& request) {
  int page_size = request.page_size() <= 0 ? kDefaultPageSize : request.page_size();
  if (page_size > kMaxPageSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size: at most ", kMaxPageSize, ", got ", request.page_size()));
  }
  int64_t offset = 0;
  if (!request.page_token().empty() &&
      (!absl::SimpleAtoi(request.page_token(), &offset) || offset < 0)) {
    return absl::InvalidArgumentError("page_token: not a token returned by ListJobs");
  }
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<const JobRecord*> matching;
  for (const auto& [id, record] : jobs_) {
    bool match = request.states().empty();
    for (int s : request.states()) match = match || record.job.state() == s;
    match = match && (request.owner().empty() || record.job.owner() == request.owner());
    for (const auto& [key, value] : request.labels()) {
      auto label = record.job.spec().labels().find(key);
      match = match && label != record.job.spec().labels().end() && label->second == value;
    }
    if (match) matching.push_back(&record);
  }
  // Newest first; ties by id for a stable order across pages.
  std::sort(matching.begin(), matching.end(), [](const JobRecord* a, const JobRecord* b) {
    const auto& ta = a->job.create_time();
    const auto& tb = b->job.create_time();
    if (ta.seconds() != tb.seconds()) return ta.seconds() > tb.seconds();
    if (ta.nanos() != tb.nanos()) return ta.nanos() > tb.nanos();
    return a->job.job_id() > b->job.job_id();
  });
  paft::v1::ListJobsResponse response;
  const auto positions = QueuePositionsLocked();
  for (int64_t i = offset; i < static_cast<int64_t>(matching.size()) && i < offset + page_size;
       ++i) {
    *response.add_jobs() = Decorate(*matching[i], &positions);
  }
  if (offset + page_size < static_cast<int64_t>(matching.size())) {
    response.set_next_page_token(absl::StrCat(offset + page_size));
  }
  return response;
}

absl::StatusOr<Job> JobManager::CancelJob(const paft::v1::CancelJobRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  PAFT_ASSIGN_OR_RETURN(JobRecord * record, FindLocked(request.job_id()));
  if (IsTerminal(record->job.state())) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", request.job_id(), " is already ",
                     JobState_Name(record->job.state())));
  }
  const std::string message =
      request.reason().empty() ? "cancelled by the client" : request.reason();
  Change change = BeginChange(*record);
  for (BranchKind kind : kBranches) {
    if (!BranchTerminal(Branch(change.job, kind).state())) {
      SetBranchState(change, kind, paft::v1::BRANCH_STATE_CANCELLED, "JobCancelled", message);
    }
  }
  SetJobState(change, paft::v1::JOB_STATE_CANCELLED, "Cancelled", message);
  for (BranchKind kind : kBranches) QueueStopsLocked(change, kind, "JobCancelled");
  PAFT_RETURN_IF_ERROR(CommitLocked(*record, std::move(change)));
  PAFT_LOG(INFO) << "job " << request.job_id() << " cancelled: " << message;
  ScheduleLocked();
  return Decorate(*record);
}

absl::StatusOr<paft::v1::ListCheckpointsResponse> JobManager::ListCheckpoints(
    const paft::v1::ListCheckpointsRequest& request) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    PAFT_RETURN_IF_ERROR(FindLocked(request.job_id()).status());
  }
  PAFT_ASSIGN_OR_RETURN(auto checkpoints, store_->ListCheckpoints(request.job_id()));
  paft::v1::ListCheckpointsResponse response;
  for (auto& c : checkpoints) {
    if (!c.retired() || request.include_retired()) *response.add_checkpoints() = std::move(c);
  }
  return response;
}

absl::StatusOr<paft::v1::ListEventsResponse> JobManager::ListEvents(
    const paft::v1::ListEventsRequest& request) {
  const int page_size = request.page_size() <= 0 ? 100 : request.page_size();
  if (page_size > 1000) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size: at most 1000, got ", request.page_size()));
  }
  if (request.after_seq() < 0) return absl::InvalidArgumentError("after_seq: must be >= 0");
  PAFT_ASSIGN_OR_RETURN(auto events, EventsAfter(request.job_id(), request.after_seq(),
                                                 page_size + 1));
  paft::v1::ListEventsResponse response;
  response.set_more(static_cast<int>(events.size()) > page_size);
  for (size_t i = 0; i < events.size() && static_cast<int>(i) < page_size; ++i) {
    *response.add_events() = std::move(events[i]);
  }
  return response;
}

absl::StatusOr<JobManager::LogTarget> JobManager::LogFile(
    const paft::v1::StreamLogsRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  PAFT_ASSIGN_OR_RETURN(JobRecord * record, FindLocked(request.job_id()));
  const BranchKind kind = request.branch();
  if (kind != paft::v1::BRANCH_KIND_SFT && kind != paft::v1::BRANCH_KIND_ALIGNMENT) {
    return absl::InvalidArgumentError("branch: must be BRANCH_KIND_SFT or BRANCH_KIND_ALIGNMENT");
  }
  const BranchStatus& branch = Branch(record->job, kind);
  const int world_size = Spec(record->job, kind).world_size();
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
  target.path = JoinPath(record->job.spec().output_dir(),
                         absl::StrCat(BranchName(kind), "/logs/attempt-", target.attempt,
                                      "/rank-", request.rank(), ".log"));
  // The attempt has ended when a later one exists, or the branch is over and none of its
  // ranks still runs.
  bool running = false;
  for (const auto& [id, task] : tasks_) {
    running = running || (task.job_id == request.job_id() && task.branch == kind &&
                          task.attempt == target.attempt);
  }
  target.attempt_ended = target.attempt < branch.attempt() ||
                         (!running && (BranchTerminal(branch.state()) ||
                                       BranchWaiting(branch.state())));
  return target;
}

absl::StatusOr<std::vector<JobEvent>> JobManager::EventsAfter(const std::string& job_id,
                                                              int64_t after_seq, int limit) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    PAFT_RETURN_IF_ERROR(FindLocked(job_id).status());
  }
  return store_->EventsAfter(job_id, after_seq, limit);
}

void JobManager::WaitForEvent(const std::string& job_id, int64_t after_seq,
                              uint64_t progress_version, absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  events_cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [&] {
    auto it = jobs_.find(job_id);
    return it == jobs_.end() || it->second.last_seq > after_seq ||
           it->second.progress_version > progress_version;
  });
}

std::vector<JobEvent> JobManager::ProgressEvents(const std::string& job_id,
                                                 uint64_t* progress_version) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<JobEvent> events;
  auto it = jobs_.find(job_id);
  if (it == jobs_.end() || it->second.progress_version <= *progress_version) return events;
  const JobRecord& record = it->second;
  *progress_version = record.progress_version;
  for (BranchKind kind : kBranches) {
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
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ||
         (IsTerminal(it->second.job.state()) && it->second.last_seq <= seq);
}

// ---------------------------------------------------------------------------------------------
// Queue and scheduling

namespace {

bool Queued(const Job& job) {
  return !IsTerminal(job.state()) &&
         (BranchWaiting(job.sft().state()) || BranchWaiting(job.alignment().state()));
}

std::tuple<int, int64_t, std::string> QueueKey(const Job& job) {
  return {-job.spec().priority(),
          job.create_time().seconds() * 1000000000 + job.create_time().nanos(), job.job_id()};
}

}  // namespace

void JobManager::UpdateQueueLocked(JobRecord* record, const Job* before, const Job& after) {
  auto count_waiting = [&](const Job& job, int delta) {
    if (IsTerminal(job.state())) return;
    for (BranchKind kind : kBranches) {
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

void JobManager::ScheduleLocked() {
  // Strict FIFO (within priority) per pool: once a branch cannot get its gang, later branches of
  // the same pool wait behind it, so large gangs are not starved by small ones.
  std::set<std::string> blocked_pools;
  for (JobRecord* record : QueueOrderLocked()) {
    // Every pool with a waiting branch is blocked: nothing further down can start.
    if (blocked_pools.size() >= waiting_per_pool_.size()) break;
    for (BranchKind kind : kBranches) {
      if (!BranchWaiting(Branch(record->job, kind).state())) continue;
      const std::string& pool = Spec(record->job, kind).pool();
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
    for (BranchKind k : kBranches) {
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
  SetBranchState(change, kind, paft::v1::BRANCH_STATE_SCHEDULED, "GangScheduled",
                 absl::StrCat(spec.world_size(), " ranks on pool '", spec.pool(), "', attempt ",
                              attempt));
  if (job.state() == paft::v1::JOB_STATE_QUEUED) {
    SetJobState(change, paft::v1::JOB_STATE_RUNNING, "BranchScheduled",
                absl::StrCat("the ", BranchName(kind), " branch was scheduled"));
  }
  const std::string resume_from = branch->checkpoint_path();
  const std::string job_id = record.job.job_id();
  const std::string branch_dir = JoinPath(record.job.spec().output_dir(), BranchName(kind));
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
    *t->mutable_spec() = spec;
    t->set_checkpoint_dir(JoinPath(branch_dir, "checkpoints"));
    t->set_log_dir(JoinPath(branch_dir, absl::StrCat("logs/attempt-", attempt)));
    t->set_resume_from(resume_from);
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
  const bool can_restart = !failure.permanent && (!failure.count_against_budget ||
                                                  job.restarts_used() < job.spec().restart_budget());
  if (can_restart && !failure.count_against_budget) {
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
  const std::string why =
      failure.permanent ? failure.message
                        : absl::StrCat(failure.message, " (restart budget of ",
                                       job.spec().restart_budget(), " used up)");
  SetBranchState(change, kind, paft::v1::BRANCH_STATE_FAILED, failure.reason, why);
  for (BranchKind other : kBranches) {
    if (other != kind && !BranchTerminal(Branch(job, other).state())) {
      SetBranchState(change, other, paft::v1::BRANCH_STATE_CANCELLED, "OtherBranchFailed",
                     absl::StrCat("the ", BranchName(kind), " branch failed"));
    }
  }
  SetJobState(change, paft::v1::JOB_STATE_FAILED, absl::StrCat(BranchTitle(kind), "BranchFailed"),
              why);
  for (BranchKind other : kBranches) QueueStopsLocked(change, other, "JobFailed");
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
    const BranchStatus* branch = job == jobs_.end() ? nullptr : &Branch(job->second.job, key.second);
    if (branch == nullptr || IsTerminal(job->second.job.state()) ||
        BranchTerminal(branch->state()) || branch->attempt() != failure.attempt ||
        BranchWaiting(branch->state())) {
      pending_failures_.erase(key);  // moot: the branch moved on
      continue;
    }
    FailAttemptLocked(job->second, key.second, failure.permanent, failure.reason,
                      failure.message, failure.count_against_budget);
  }
}

// ---------------------------------------------------------------------------------------------
// WorkerService

absl::StatusOr<paft::v1::RegisterWorkerResponse> JobManager::RegisterWorker(
    const paft::v1::RegisterWorkerRequest& request) {
  if (request.name().empty()) return absl::InvalidArgumentError("name: is required");
  if (request.pool().empty()) return absl::InvalidArgumentError("pool: is required");
  if (request.devices() < 1 || request.devices() > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("devices: must be between 1 and 1024, got ", request.devices()));
  }
  if (request.address().empty()) return absl::InvalidArgumentError("address: is required");
  std::lock_guard<std::mutex> lock(mu_);
  // Tasks of the agent's previous registration that it does not report any more are lost.
  std::vector<std::string> vanished;
  for (auto& [id, task] : tasks_) {
    const bool same_agent = task.slot.worker_name == request.name();
    const bool reported = std::find(request.running_task_ids().begin(),
                                    request.running_task_ids().end(),
                                    id) != request.running_task_ids().end();
    if (same_agent && !reported) vanished.push_back(id);
  }
  const std::string worker_id = registry_->Register(request, clock_->Now());
  const int capacity = registry_->PoolCapacity(request.pool());
  if (capacity > pool_high_water_[request.pool()]) {
    if (absl::Status s = store_->RaisePoolCapacity(request.pool(), capacity); !s.ok()) {
      PAFT_LOG(ERROR) << "cannot store the capacity of pool " << request.pool() << ": " << s;
    } else {
      pool_high_water_[request.pool()] = capacity;
    }
  }
  paft::v1::RegisterWorkerResponse response;
  response.set_worker_id(worker_id);
  response.set_lease_ttl_ms(absl::ToInt64Milliseconds(registry_->lease_ttl()));
  response.set_heartbeat_interval_ms(absl::ToInt64Milliseconds(options_.heartbeat_interval));
  std::map<std::string, int> devices;
  for (const auto& running : request.running_tasks()) devices[running.task_id()] = running.device();
  for (const std::string& id : request.running_task_ids()) {
    auto it = tasks_.find(id);
    if (it == tasks_.end()) {
      // Unknown: a rank of a gang recovered from the store (adopt it), or of nothing (stop it).
      auto device = devices.find(id);
      if (device == devices.end() ||
          !AdoptLocked(id, worker_id, request.name(), device->second)) {
        response.add_stop_task_ids(id);
      }
      continue;
    }
    if (!it->second.slot.worker_name.empty() && it->second.slot.worker_name != request.name()) {
      PAFT_LOG(WARNING) << "worker " << request.name() << " claims rank " << id << " of worker "
                        << it->second.slot.worker_name << ": ignored";
      continue;
    }
    if (it->second.stopping) {
      response.add_stop_task_ids(id);
      continue;
    }
    it->second.slot.worker_id = worker_id;  // the running rank, under the agent's new id
    it->second.slot.worker_name = request.name();
    auto device = devices.find(id);
    if (it->second.slot.device < 0 && device != devices.end()) {
      it->second.slot.device = device->second;  // adopted from a report, before its agent
    }
    registry_->Occupy(worker_id, it->second.slot.device);
  }
  for (const std::string& id : vanished) {
    auto it = tasks_.find(id);
    if (it != tasks_.end()) {
      HandleTaskEndLocked(it->second, false, false, "WorkerRestarted",
                          "the worker agent restarted without this rank");
    }
  }
  PAFT_LOG(INFO) << "worker " << worker_id << " registered: pool " << request.pool() << ", "
                 << request.devices() << " device(s), address " << request.address();
  ScheduleLocked();
  return response;
}

absl::StatusOr<paft::v1::HeartbeatResponse> JobManager::Heartbeat(
    const paft::v1::HeartbeatRequest& request) {
  PAFT_RETURN_IF_ERROR(registry_->Heartbeat(request.worker_id(), clock_->Now()));
  paft::v1::HeartbeatResponse response;
  response.set_lease_ttl_ms(absl::ToInt64Milliseconds(registry_->lease_ttl()));
  return response;
}

absl::Status JobManager::AuthorizeWorker(const Principal& caller, const std::string& worker_id) {
  const std::optional<std::string> name = registry_->NameOf(worker_id);
  if (!name || caller.MayActAs(*name)) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat("identity '", caller.identity,
                                                  "' may not act as worker '", *name, "'"));
}

absl::Status JobManager::AuthorizeTask(const Principal& caller, const std::string& task_id) {
  if (caller.role == Role::kAdmin) return absl::OkStatus();
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tasks_.find(task_id);
  std::string name;
  if (it != tasks_.end()) {
    name = it->second.slot.worker_name;
  } else {
    // Not adopted yet: only its agent's registration may adopt it for an authenticated worker.
    const std::optional<TaskKey> key = ParseTaskId(task_id);
    if (!key || !awaiting_adoption_.count({key->job_id, key->branch})) return absl::OkStatus();
  }
  if (name.empty()) {
    return absl::UnavailableError(absl::StrCat(
        "rank '", task_id, "' is not bound to a worker yet: its agent must re-register first"));
  }
  if (caller.MayActAs(name)) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat("identity '", caller.identity,
                                                  "' may not report for rank '", task_id,
                                                  "' of worker '", name, "'"));
}

absl::StatusOr<JobManager::TaskRecord*> JobManager::FindTaskLocked(const std::string& task_id) {
  auto it = tasks_.find(task_id);
  // A report from a rank of a recovered gang (after a coordinator restart) adopts it: its exit
  // or checkpoint may arrive before its agent re-registers, or after the rank ended.
  if (it == tasks_.end() && AdoptLocked(task_id, "", "", -1)) it = tasks_.find(task_id);
  if (it == tasks_.end()) {
    return absl::NotFoundError(absl::StrCat("task '", task_id, "' is not active"));
  }
  return &it->second;
}

absl::Status JobManager::ReportProgress(const paft::v1::ReportProgressRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  PAFT_ASSIGN_OR_RETURN(TaskRecord * task, FindTaskLocked(request.task_id()));
  PAFT_ASSIGN_OR_RETURN(JobRecord * record, FindLocked(task->job_id));
  if (task->stopping || Branch(record->job, task->branch).attempt() != task->attempt) {
    return absl::OkStatus();  // a rank on its way out
  }
  task->last_progress = clock_->Now();
  if (Branch(record->job, task->branch).state() == paft::v1::BRANCH_STATE_SCHEDULED) {
    Change change = BeginChange(*record);
    SetBranchState(change, task->branch, paft::v1::BRANCH_STATE_RUNNING, "Training",
                   "ranks started training");
    PAFT_RETURN_IF_ERROR(CommitLocked(*record, std::move(change)));
  }
  if (task->rank != 0) return absl::OkStatus();  // rank 0 speaks for the gang
  // Progress is not a transition: it changes the record in place and is flushed periodically.
  BranchStatus* b = MutableBranch(record->job, task->branch);
  b->set_step(request.step());
  b->set_total_steps(request.total_steps());
  b->set_loss(request.loss());
  b->set_tokens_per_second(request.tokens_per_second());
  b->mutable_metrics()->clear();
  b->mutable_metrics()->insert(request.metrics().begin(), request.metrics().end());
  // ETA from the step rate since the attempt's first report (which excludes start-up time).
  const absl::Time now = clock_->Now();
  RateOrigin& origin = record->rate[task->branch];
  if (origin.attempt != task->attempt || request.step() < origin.step) {
    origin = RateOrigin{task->attempt, request.step(), now};
  }
  const int64_t done = request.step() - origin.step;
  const int64_t left = std::max<int64_t>(0, request.total_steps() - request.step());
  b->set_eta_seconds(done > 0 ? absl::ToDoubleSeconds(now - origin.time) / done * left : 0.0);
  record->progress_dirty = true;
  ++record->progress_version;
  events_cv_.notify_all();
  return absl::OkStatus();
}

absl::Status JobManager::ReportCheckpoint(const paft::v1::ReportCheckpointRequest& request) {
  if (request.path().empty() || request.step() < 0) {
    return absl::InvalidArgumentError("path and a non-negative step are required");
  }
  // The job's checkpoint registry is read before taking the lock (a gang's rank 0 reports its
  // checkpoints one at a time, so nothing of its branch changes meanwhile).
  const std::optional<TaskKey> key = ParseTaskId(request.task_id());
  if (!key) return absl::NotFoundError(absl::StrCat("task '", request.task_id(), "' is not active"));
  PAFT_ASSIGN_OR_RETURN(auto stored, store_->ListCheckpoints(key->job_id));
  std::lock_guard<std::mutex> lock(mu_);
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

absl::Status JobManager::ReportExit(const paft::v1::ReportExitRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  PAFT_ASSIGN_OR_RETURN(TaskRecord * task, FindTaskLocked(request.task_id()));
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
    HandleTaskEndLocked(*task, false, false, "WorkerShutdown",
                        absl::StrCat("rank ", task->rank, ": its worker agent shut down (", message,
                                     ")"),
                        /*count_against_budget=*/false);
    return absl::OkStatus();
  }
  HandleTaskEndLocked(*task, success, permanent, reason,
                      absl::StrCat("rank ", task->rank, ": ", message));
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
    SetJobState(change, paft::v1::JOB_STATE_MERGING, "BranchesSucceeded",
                "both branches succeeded; merging");
  }
  if (absl::Status s = CommitLocked(record, std::move(change)); !s.ok()) {
    PAFT_LOG(ERROR) << "cannot persist the success of the " << BranchName(kind)
                    << " branch of job " << record.job.job_id() << ", retrying: " << s;
  }
}

void JobManager::CompleteBranchesLocked() {
  std::set<std::pair<std::string, BranchKind>> candidates;
  for (const auto& [id, t] : tasks_) {
    if (t.succeeded) candidates.insert({t.job_id, t.branch});
  }
  for (const auto& [job_id, kind] : candidates) {
    if (auto it = jobs_.find(job_id); it != jobs_.end()) CompleteBranchIfDoneLocked(it->second, kind);
  }
}

// ---------------------------------------------------------------------------------------------
// Control loop and merges

void JobManager::Tick() {
  std::lock_guard<std::mutex> lock(mu_);
  const absl::Time now = clock_->Now();
  for (const std::string& worker_id : registry_->ExpireLeases(now)) {
    PAFT_LOG(WARNING) << "worker " << worker_id << " lost: no heartbeat within the lease";
    std::vector<std::string> lost;
    for (const auto& [id, task] : tasks_) {
      if (task.slot.worker_id == worker_id) lost.push_back(id);
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
  UpdateGaugesLocked();
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
  // Only an agent the gang was placed on may claim one of its ranks (ids are "<name>-<n>").
  if (!worker_name.empty() &&
      std::none_of(branch.workers().begin(), branch.workers().end(), [&](const std::string& id) {
        int n;
        return absl::StartsWith(id, worker_name + "-") &&
               absl::SimpleAtoi(id.substr(worker_name.size() + 1), &n);
      })) {
    PAFT_LOG(WARNING) << "worker " << worker_name << " claims rank " << task_id
                      << ", which was not placed on it: not adopted";
    return false;
  }
  TaskRecord task;
  task.task_id = task_id;
  task.job_id = job_id;
  task.branch = kind;
  task.attempt = attempt;
  task.rank = rank;
  task.slot = Slot{worker_id, worker_name, device, ""};
  task.last_progress = clock_->Now();
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
                      absl::StrCat("no training progress for ",
                                   absl::FormatDuration(now - last)));
  }
}

void JobManager::UpdateGaugesLocked() {
  if (metrics_ == nullptr) return;
  const absl::Time now = clock_->Now();
  struct PoolGauges {
    int idle = 0, busy_workers = 0, free = 0, busy = 0, queued = 0;
    double heartbeat_age = 0;
  };
  std::map<std::string, PoolGauges> pools;
  for (const auto& [pool, slots] : pool_high_water_) pools[pool];  // zeros for emptied pools
  for (const auto& [pool, slots] : options_.pool_capacity) pools[pool];
  for (const auto& w : registry_->List("")) {
    auto& p = pools[w.pool()];
    (w.busy_devices() > 0 ? p.busy_workers : p.idle) += 1;
    p.free += w.devices() - w.busy_devices();
    p.busy += w.busy_devices();
    p.heartbeat_age =
        std::max(p.heartbeat_age, absl::ToDoubleSeconds(now - FromProtoTime(w.last_heartbeat())));
  }
  std::map<std::pair<int, int>, int> branch_counts;  // (kind, state) -> count
  std::set<std::pair<std::string, std::string>> series;
  for (const auto& [id, record] : jobs_) {
    for (BranchKind kind : kBranches) {
      const BranchStatus& b = Branch(record.job, kind);
      branch_counts[{kind, b.state()}] += 1;
      if (BranchWaiting(b.state()) && !IsTerminal(record.job.state())) {
        pools[Spec(record.job, kind).pool()].queued += 1;
      }
      if (b.state() != paft::v1::BRANCH_STATE_RUNNING) continue;
      const prometheus::Labels labels = {{"job_id", id}, {"branch", BranchName(kind)}};
      series.insert({id, BranchName(kind)});
      metrics_->branch_step.Add(labels).Set(static_cast<double>(b.step()));
      metrics_->branch_total_steps.Add(labels).Set(static_cast<double>(b.total_steps()));
      metrics_->branch_loss.Add(labels).Set(b.loss());
      metrics_->branch_tokens_per_second.Add(labels).Set(b.tokens_per_second());
      metrics_->branch_eta.Add(labels).Set(b.eta_seconds());
      const auto& since = b.has_checkpoint_time() ? b.checkpoint_time() : b.start_time();
      metrics_->branch_checkpoint_age.Add(labels).Set(
          absl::ToDoubleSeconds(now - FromProtoTime(since)));
    }
  }
  // Series of branches that stopped running since the last tick go away.
  for (const auto& [job_id, branch] : branch_series_) {
    if (series.count({job_id, branch})) continue;
    const prometheus::Labels labels = {{"job_id", job_id}, {"branch", branch}};
    for (auto* family : {&metrics_->branch_step, &metrics_->branch_total_steps,
                         &metrics_->branch_loss, &metrics_->branch_tokens_per_second,
                         &metrics_->branch_eta, &metrics_->branch_checkpoint_age}) {
      family->Remove(&family->Add(labels));
    }
  }
  branch_series_ = std::move(series);
  for (BranchKind kind : kBranches) {
    for (int s = paft::v1::BRANCH_STATE_PENDING; s <= paft::v1::BRANCH_STATE_CANCELLED; ++s) {
      metrics_->branches
          .Add({{"branch", BranchName(kind)},
                {"state", paft::v1::BranchState_Name(static_cast<BranchState>(s))}})
          .Set(branch_counts[{kind, s}]);
    }
  }
  for (const auto& [pool, p] : pools) {
    metrics_->workers.Add({{"pool", pool}, {"state", "idle"}}).Set(p.idle);
    metrics_->workers.Add({{"pool", pool}, {"state", "busy"}}).Set(p.busy_workers);
    metrics_->pool_slots.Add({{"pool", pool}, {"state", "free"}}).Set(p.free);
    metrics_->pool_slots.Add({{"pool", pool}, {"state", "busy"}}).Set(p.busy);
    metrics_->queue_depth.Add({{"pool", pool}}).Set(p.queued);
    metrics_->heartbeat_age.Add({{"pool", pool}}).Set(p.heartbeat_age);
  }
}

std::vector<JobManager::PendingMerge> JobManager::PendingMerges() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<PendingMerge> out;
  for (const auto& [id, record] : jobs_) {
    const Job& job = record.job;
    if (job.state() != paft::v1::JOB_STATE_MERGING) continue;
    paft::v1::MergeRequest request;
    request.set_merge_id(absl::StrCat(id, "-merge"));
    request.set_base_model(job.spec().base_model());
    auto* sft = request.add_inputs();
    sft->set_path(job.sft().checkpoint_path());
    *sft->mutable_params() = job.spec().merge().sft();
    auto* align = request.add_inputs();
    align->set_path(job.alignment().checkpoint_path());
    *align->mutable_params() = job.spec().merge().alignment();
    *request.mutable_spec() = job.spec().merge();
    const std::string& output = job.spec().merge().output();
    if (output != "adapter") request.set_output_dir(JoinPath(job.spec().output_dir(), "merged"));
    if (output == "adapter" || output == "both") {
      request.set_adapter_output_dir(JoinPath(job.spec().output_dir(), "merged-adapter"));
    }
    out.push_back(PendingMerge{id, std::move(request)});
  }
  return out;
}

void JobManager::OnMergeFinished(const std::string& job_id,
                                 const paft::v1::MergeOperation& operation) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end() || it->second.job.state() != paft::v1::JOB_STATE_MERGING) return;
  JobRecord& record = it->second;
  Change change = BeginChange(record);
  if (operation.state() == paft::v1::MERGE_STATE_SUCCEEDED) {
    change.job.set_merged_model_path(operation.output_dir());
    change.job.set_merged_adapter_path(operation.adapter_output_dir());
    std::vector<std::string> where;
    if (!operation.output_dir().empty()) where.push_back("merged model at " + operation.output_dir());
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
