// Admission: SubmitJob's checks (idempotent repeats, per-client limits, pools, paths and
// inputs) and the new job's first commit.
#include <google/protobuf/util/message_differencer.h>

#include <mutex>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/job_spec.h"
#include "common/logging.h"
#include "common/status.h"
#include "common/time_util.h"
#include "coordinator/job_manager.h"
#include "coordinator/job_manager_internal.h"

namespace paft::coordinator {

namespace {

std::string NewJobId() {
  static std::mt19937_64 rng(std::random_device{}());
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  return absl::StrFormat("job-%012x", rng() & 0xffffffffffffULL);
}

// OK when `existing` was submitted with this request by this client and the same spec (a
// retry); ALREADY_EXISTS otherwise.
absl::Status SameSubmission(const Job& existing, const paft::v1::SubmitJobRequest& request,
                            const paft::v1::JobSpec& spec, const std::string& owner) {
  if (existing.owner() != owner) {
    return absl::AlreadyExistsError(
        absl::StrCat("request_id '", request.request_id(), "' was already used by another client"));
  }
  if (!google::protobuf::util::MessageDifferencer::Equals(existing.spec(), spec)) {
    return absl::AlreadyExistsError(absl::StrCat("request_id '", request.request_id(),
                                                 "' was already used for job ", existing.job_id(),
                                                 " with a different spec"));
  }
  return absl::OkStatus();
}

}  // namespace

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

  // An idempotent repeat is answered before any other check (its output folder is no longer
  // empty, its client may be at its limit now): from memory, or as stored for a finished job
  // that left memory.
  bool evicted;
  {
    MutexLock lock(&mu_);
    PAFT_ASSIGN_OR_RETURN(auto existing, RepeatedSubmissionLocked(request, spec, owner));
    if (existing) return *existing;
    evicted = evicted_requests_.count(request.request_id()) > 0;
  }
  if (evicted) {  // only then a store read: a new submission costs none
    PAFT_ASSIGN_OR_RETURN(const Job stored, store_->GetJobByRequestId(request.request_id()));
    PAFT_RETURN_IF_ERROR(SameSubmission(stored, request, spec, owner));
    return stored;
  }
  // The per-client limit and the pools before the file system.
  {
    MutexLock lock(&mu_);
    PAFT_RETURN_IF_ERROR(AdmitLocked(spec, owner));
  }
  // The file-system checks run outside the lock: slow or hung storage must not stall the
  // control loop and every other call.
  PAFT_RETURN_IF_ERROR(CheckPathsConfined(spec, options_.storage_roots));
  if (options_.check_inputs) PAFT_RETURN_IF_ERROR(CheckJobInputs(spec));

  MutexLock lock(&mu_);
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
  NotifyWatchers(job_id);
  ScheduleLocked();
  return Decorate(jobs_[job_id]);
}

absl::StatusOr<std::optional<Job>> JobManager::RepeatedSubmissionLocked(
    const paft::v1::SubmitJobRequest& request, const paft::v1::JobSpec& spec,
    const std::string& owner) {
  auto it = job_by_request_.find(request.request_id());
  if (it == job_by_request_.end()) return std::optional<Job>();
  const JobRecord& existing = jobs_.at(it->second);
  PAFT_RETURN_IF_ERROR(SameSubmission(existing.job, request, spec, owner));
  return std::optional<Job>(Decorate(existing));
}

absl::Status JobManager::AdmitLocked(const paft::v1::JobSpec& spec, const std::string& owner) {
  if (!owner.empty() && options_.max_active_jobs_per_client > 0) {
    int active = 0;
    for (const auto& [id, r] : jobs_) {
      active += r.job.owner() == owner && !IsTerminal(r.job.state()) ? 1 : 0;
    }
    if (active >= options_.max_active_jobs_per_client) {
      return absl::ResourceExhaustedError(absl::StrCat("client ", owner, " has ", active,
                                                       " unfinished jobs, the limit; wait for "
                                                       "one to end or cancel one"));
    }
  }
  return AdmitPoolsLocked(spec);
}

absl::Status JobManager::AdmitPoolsLocked(const paft::v1::JobSpec& spec) const {
  const bool declared = !options_.pool_capacity.empty();
  const auto& capacities = declared ? options_.pool_capacity : pool_high_water_;
  // The gangs the job will ask for: its branches, and its merge search's.
  for (BranchKind kind : kGangs) {
    if (kind == paft::v1::BRANCH_KIND_MERGE_SEARCH && !spec.merge().has_search()) continue;
    const BranchSpec branch = GangSpec(spec, kind);
    const std::string field =
        kind == paft::v1::BRANCH_KIND_MERGE_SEARCH ? "merge.search" : BranchName(kind);
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
      return absl::FailedPreconditionError(
          absl::StrCat(field, ".world_size: ", branch.world_size(), " ranks, but pool '",
                       branch.pool(), "' can offer at most ", it->second, " device slot(s)",
                       declared ? " (declared)" : " (the most its agents have offered)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace paft::coordinator
