// The coordinator's control logic: job admission, the job and branch state machines, gang
// scheduling of branches onto pools, task exits and restarts, checkpoints and the merge trigger.
//
// Synchronous and free of gRPC: the services in coordinator/services.h are thin adapters. Every
// state change is computed on a copy of the job, persisted (job + events in one transaction) and
// only then made visible; side effects on workers (start/stop assignments) are queued in the
// change and sent only after its commit.
#ifndef PAFT_COORDINATOR_JOB_MANAGER_H_
#define PAFT_COORDINATOR_JOB_MANAGER_H_

#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "absl/time/time.h"
#include "common/auth.h"
#include "common/clock.h"
#include "common/job_layout.h"
#include "coordinator/job_store.h"
#include "coordinator/metrics.h"
#include "coordinator/watch_hub.h"
#include "coordinator/worker_registry.h"
#include "paft/v1/job.pb.h"
#include "paft/v1/merger.pb.h"
#include "paft/v1/worker.pb.h"

namespace paft::coordinator {

struct JobManagerOptions {
  absl::Duration heartbeat_interval = absl::Seconds(2);
  // Check that base model and datasets exist at admission (off only in unit tests).
  bool check_inputs = true;
  // Rendezvous ports handed to rank 0 of each gang: base + (counter % range).
  int rendezvous_port_base = 29500;
  int rendezvous_port_range = 1000;
  absl::Duration stop_grace_period = absl::Seconds(30);
  // How often progress (not a transition) is flushed to the store.
  absl::Duration progress_flush_interval = absl::Seconds(5);
  // A gang whose ranks report no progress for this long (from their start or their last
  // report) is stopped and restarted from its checkpoint, as if a worker were lost. Zero: off.
  absl::Duration progress_timeout = absl::Minutes(30);
  // After a coordinator restart, how long running gangs wait for their agents to re-register
  // and report their ranks (adoption) before the branch is restarted from its checkpoint.
  absl::Duration adoption_grace = absl::Seconds(30);
  // Declared device slots per pool. When set, only these pools exist for admission and a branch
  // may not ask for more ranks than its pool's figure. When empty, a pool exists once an agent
  // of it has registered, and its capacity is the most slots it has offered at once (stored).
  std::map<std::string, int> pool_capacity;
  // Realpaths of the storage roots: every path of a job spec must resolve inside one of them
  // (admission refuses the rest with PERMISSION_DENIED). Empty: no confinement (local use).
  std::vector<std::string> storage_roots;
  // Jobs not yet finished that one authenticated client may have (0: no limit).
  int max_active_jobs_per_client = 0;
  // A finished job leaves memory this long after its last change; it is then served from the
  // store (GetJob, ListJobs, events, checkpoints, logs, idempotent resubmission). Infinite: never.
  absl::Duration finished_job_retention = absl::Hours(1);
};

class JobManager {
 public:
  JobManager(JobManagerOptions options, JobStore* store, WorkerRegistry* registry, Clock* clock,
             CoordinatorMetrics* metrics);

  // Loads jobs from the store. Branches that were running when the coordinator stopped are
  // restarted from their newest checkpoint (their old ranks are stopped when agents re-register).
  absl::Status Recover();

  // --- JobService
  // `owner`: the authenticated submitter (empty without authentication).
  absl::StatusOr<paft::v1::Job> SubmitJob(const paft::v1::SubmitJobRequest& request,
                                          const std::string& owner = "");
  absl::StatusOr<paft::v1::Job> GetJob(const std::string& job_id);
  absl::StatusOr<paft::v1::ListJobsResponse> ListJobs(const paft::v1::ListJobsRequest& request);
  absl::StatusOr<paft::v1::Job> CancelJob(const paft::v1::CancelJobRequest& request);
  absl::StatusOr<paft::v1::ListCheckpointsResponse> ListCheckpoints(
      const paft::v1::ListCheckpointsRequest& request);
  absl::StatusOr<paft::v1::ListEventsResponse> ListEvents(
      const paft::v1::ListEventsRequest& request);
  // Where a rank's output is, and whether its attempt has ended (the file is then complete).
  struct LogTarget {
    std::string path;
    int attempt = 0;
    bool attempt_ended = false;
  };
  absl::StatusOr<LogTarget> LogFile(const paft::v1::StreamLogsRequest& request);
  // Events with seq > after_seq (at most `limit`); NotFound for an unknown job.
  absl::StatusOr<std::vector<paft::v1::JobEvent>> EventsAfter(const std::string& job_id,
                                                              int64_t after_seq, int limit);
  // Watchers of a job (WatchJob streams) are notified through `hub` of its every stored event
  // and progress report. Set before serving; null (the default): nobody is notified.
  void set_watch_hub(WatchHub* hub) { hub_ = hub; }
  // "Progress" events of the job's training branches if its progress changed since
  // *progress_version (which is updated); not stored, seq = the newest stored event's.
  std::vector<paft::v1::JobEvent> ProgressEvents(const std::string& job_id,
                                                 uint64_t* progress_version);
  // True when the job is terminal and `seq` is its last event.
  bool WatchComplete(const std::string& job_id, int64_t seq);

  // --- WorkerService
  absl::StatusOr<paft::v1::RegisterWorkerResponse> RegisterWorker(
      const paft::v1::RegisterWorkerRequest& request);
  absl::StatusOr<paft::v1::HeartbeatResponse> Heartbeat(const paft::v1::HeartbeatRequest& request);
  absl::Status ReportProgress(const paft::v1::ReportProgressRequest& request);
  absl::Status ReportCheckpoint(const paft::v1::ReportCheckpointRequest& request);
  absl::Status ReportExit(const paft::v1::ReportExitRequest& request);

  // --- Identities (with authentication on): a worker principal acts only as itself.
  // OK when `caller` may act as the worker `worker_id` (or the id is unknown: the call itself
  // then answers NOT_FOUND); PERMISSION_DENIED naming both otherwise.
  absl::Status AuthorizeWorker(const Principal& caller, const std::string& worker_id);
  // OK when `caller` may act as the worker running `task_id`. A rank whose agent has not
  // re-registered since a coordinator restart: UNAVAILABLE (reports are retried; registering
  // binds the rank to its agent's name). Unknown ranks: OK (the call answers NOT_FOUND).
  absl::Status AuthorizeTask(const Principal& caller, const std::string& task_id);

  // --- Control loop (called periodically): lease expiry, scheduling, progress flush, gauges.
  void Tick();

  // --- Merges: requests for jobs waiting in MERGING, and their outcome.
  struct PendingMerge {
    std::string job_id;
    paft::v1::MergeRequest request;
  };
  std::vector<PendingMerge> PendingMerges();
  void OnMergeFinished(const std::string& job_id, const paft::v1::MergeOperation& operation);

 private:
  struct TaskRecord {
    std::string task_id;
    std::string job_id;
    paft::v1::BranchKind branch = paft::v1::BRANCH_KIND_UNSPECIFIED;
    int attempt = 0;
    int rank = 0;
    Slot slot;
    bool stopping = false;     // a STOP was sent
    bool succeeded = false;    // exited 0
    absl::Time last_progress;  // start, or the last progress report
    // Adopted from a report after a coordinator restart, before its agent re-registered (no
    // worker id yet): lost if the agent has not re-registered by then.
    absl::Time bind_deadline = absl::InfiniteFuture();
  };
  // Step rate of a branch's current attempt, for the ETA: the first progress report seen.
  struct RateOrigin {
    int attempt = 0;
    int64_t step = 0;
    absl::Time time;
  };
  struct JobRecord {
    paft::v1::Job job;
    int64_t last_seq = 0;
    bool progress_dirty = false;
    absl::Time last_flush;
    uint64_t progress_version = 0;   // bumped by every progress report of rank 0
    std::map<int, RateOrigin> rate;  // by BranchKind
  };
  // Pending change: a copy of the job plus the events and checkpoint records it adds, and what
  // follows from it once it is committed (never before): tasks created, ended or stopping, and
  // the assignments sent to agents.
  struct Change {
    paft::v1::Job job;
    std::vector<paft::v1::JobEvent> events;
    std::vector<paft::v1::CheckpointInfo> checkpoints;
    int64_t base_seq = 0;
    std::vector<TaskRecord> new_tasks;
    std::vector<std::string> ended_tasks;                              // records erased
    std::vector<std::string> stopping_tasks;                           // records marked stopping
    std::vector<std::pair<std::string, paft::v1::Assignment>> outbox;  // (worker id, assignment)
  };
  // A branch failure whose commit failed: retried by Tick until it is stored.
  struct PendingFailure {
    int attempt = 0;  // of the branch that failed (a later attempt makes it moot)
    bool permanent = false;
    std::string reason, message;
    bool count_against_budget = true;
  };

  Change BeginChange(const JobRecord& record) const;
  void AddEvent(Change& change, const std::string& type, paft::v1::BranchKind branch,
                const std::string& reason, const std::string& message);
  void SetJobState(Change& change, paft::v1::JobState state, const std::string& reason,
                   const std::string& message);
  void SetBranchState(Change& change, paft::v1::BranchKind kind, paft::v1::BranchState state,
                      const std::string& reason, const std::string& message);
  void SetCondition(paft::v1::Job& job, const std::string& type, bool value,
                    const std::string& reason, const std::string& message);
  // Persists and publishes the change, then applies its task changes and sends its
  // assignments. On failure nothing changes: memory, store and agents stay as they were.
  absl::Status CommitLocked(JobRecord& record, Change change) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::StatusOr<JobRecord*> FindLocked(const std::string& job_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<TaskRecord*> FindTaskLocked(const std::string& task_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ScheduleLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool StartBranchLocked(JobRecord& record, paft::v1::BranchKind kind)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A rank of the branch's current attempt ended unsuccessfully: restart the branch or fail it
  // (and the job), stopping the ranks still running once that is committed. A failed commit is
  // retried by Tick.
  void FailAttemptLocked(JobRecord& record, paft::v1::BranchKind kind, bool permanent,
                         const std::string& reason, const std::string& message,
                         bool count_against_budget = true) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // FailAttemptLocked's change, added to `change`.
  void AddFailureLocked(Change& change, paft::v1::BranchKind kind, const PendingFailure& failure)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Queues a STOP for every running rank of the branch, sent when `change` is committed.
  void QueueStopsLocked(Change& change, paft::v1::BranchKind kind, const std::string& reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Tick's retries of commits that failed: branch failures, and branches whose ranks have all
  // succeeded but whose success is not stored yet.
  void RetryFailuresLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CompleteBranchesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Marks the branch SUCCEEDED (and the job MERGING when both are) once every rank of its
  // current attempt has exited 0.
  void CompleteBranchIfDoneLocked(JobRecord& record, paft::v1::BranchKind kind)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The merge search's gang exited 0: its table becomes the job's merge_search_result (or the
  // search fails when the table is missing or not the job's grid).
  void CompleteMergeSearchLocked(JobRecord& record, std::vector<std::string> ranks)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void HandleTaskEndLocked(TaskRecord& task, bool success, bool permanent,
                           const std::string& reason, const std::string& message,
                           bool count_against_budget = true) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The job of an earlier submission with the same request id (nullopt: none); ALREADY_EXISTS
  // when that was another client's or another spec.
  absl::StatusOr<std::optional<paft::v1::Job>> RepeatedSubmissionLocked(
      const paft::v1::SubmitJobRequest& request, const paft::v1::JobSpec& spec,
      const std::string& owner) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The per-client limit of unfinished jobs, then AdmitPoolsLocked.
  absl::Status AdmitLocked(const paft::v1::JobSpec& spec, const std::string& owner)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Rejects a spec whose pools do not exist or cannot ever offer its world sizes.
  absl::Status AdmitPoolsLocked(const paft::v1::JobSpec& spec) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // 1-based queue positions of the QUEUED jobs.
  std::map<std::string, int> QueuePositionsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Jobs with a branch waiting for devices, in scheduling order (priority, then FIFO).
  std::vector<JobRecord*> QueueOrderLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Keeps queue_ and waiting_per_pool_ in step with a change of the record's job from `before`
  // (nullptr for a job new to memory) to `after`.
  void UpdateQueueLocked(JobRecord* record, const paft::v1::Job* before, const paft::v1::Job& after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  paft::v1::Job Decorate(const JobRecord& record,
                         const std::map<std::string, int>* positions = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateGaugesLocked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);  // pool, worker, branch and queue gauges
  // Fails (and so restarts, within the budget) gangs silent for longer than progress_timeout.
  void CheckProgressLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Restarts recovered gangs that were not fully adopted within adoption_grace.
  void CheckAdoptionLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Re-creates the record of a rank an agent still runs after a coordinator restart; false when
  // the rank is not part of a current gang.
  bool AdoptLocked(const std::string& task_id, const std::string& worker_id,
                   const std::string& worker_name, int device) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<paft::v1::Job> CancelLocked(JobRecord& record,
                                             const paft::v1::CancelJobRequest& request)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops finished jobs older than finished_job_retention (and with no rank left) from memory.
  void EvictFinishedLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The job as memory has it (decorated), else as stored (a finished job evicted from memory);
  // NOT_FOUND when neither has it.
  absl::StatusOr<paft::v1::Job> LookupJob(const std::string& job_id) ABSL_LOCKS_EXCLUDED(mu_);
  // Moves one job between the paft_jobs{state} gauges (from UNSPECIFIED: a new job).
  void CountJobState(paft::v1::JobState from, paft::v1::JobState to);

  const JobManagerOptions options_;
  JobStore* const store_;
  WorkerRegistry* const registry_;
  Clock* const clock_;
  CoordinatorMetrics* const metrics_;

  // NOT_FOUND unless the job is in memory or in the store (no copy of it is made).
  absl::Status CheckJobExists(const std::string& job_id) ABSL_LOCKS_EXCLUDED(mu_);
  // Tells the job's watchers that it has a new event or progress (never blocks).
  void NotifyWatchers(const std::string& job_id);

  WatchHub* hub_ = nullptr;
  Mutex mu_;
  std::map<std::string, JobRecord> jobs_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, TaskRecord> tasks_ ABSL_GUARDED_BY(mu_);            // active tasks only
  std::map<std::string, std::string> job_by_request_ ABSL_GUARDED_BY(mu_);  // request -> job
  // Request ids of the jobs evicted from memory: a resubmission of one is answered from the
  // store, and only then is the store read (a few bytes per job instead of the job).
  std::set<std::string> evicted_requests_ ABSL_GUARDED_BY(mu_);
  // Jobs with a waiting branch, ordered by (-priority, create time, id): the scheduling order,
  // kept incrementally so that neither scheduling nor queue positions sort all jobs.
  std::map<std::tuple<int, int64_t, std::string>, JobRecord*> queue_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> waiting_per_pool_ ABSL_GUARDED_BY(mu_);  // waiting branches by pool
  std::map<std::string, int> pool_high_water_ ABSL_GUARDED_BY(mu_);   // see pool_capacity
  // Label sets of the per-branch gauges exported last tick (removed when a branch stops).
  std::set<std::pair<std::string, std::string>> branch_series_ ABSL_GUARDED_BY(mu_);
  uint64_t port_counter_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time last_eviction_scan_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // Branch failures not yet stored (the store refused the commit), by (job, branch).
  std::map<std::pair<std::string, paft::v1::BranchKind>, PendingFailure> pending_failures_
      ABSL_GUARDED_BY(mu_);
  // Gangs recovered from the store, waiting to be adopted, and until when.
  std::map<std::pair<std::string, paft::v1::BranchKind>, absl::Time> awaiting_adoption_
      ABSL_GUARDED_BY(mu_);
};

bool IsTerminal(paft::v1::JobState state);
std::string TaskId(const std::string& job_id, paft::v1::BranchKind kind, int attempt, int rank);
// What every TaskId of one gang attempt starts with (tasks_ is ordered by id: its ranks are one
// contiguous range).
std::string TaskIdPrefix(const std::string& job_id, paft::v1::BranchKind kind, int attempt);
// The parts of a TaskId(); nullopt for anything else.
struct TaskKey {
  std::string job_id;
  paft::v1::BranchKind branch = paft::v1::BRANCH_KIND_UNSPECIFIED;
  int attempt = 0;
  int rank = 0;
};
std::optional<TaskKey> ParseTaskId(const std::string& task_id);

}  // namespace paft::coordinator

#endif  // PAFT_COORDINATOR_JOB_MANAGER_H_
