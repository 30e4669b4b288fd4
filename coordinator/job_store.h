// Durable coordinator state in SQLite (WAL mode): jobs (the Job proto as a blob plus indexed
// columns), their events, and the checkpoint registry. Every mutation is one transaction.
#ifndef PAFT_COORDINATOR_JOB_STORE_H_
#define PAFT_COORDINATOR_JOB_STORE_H_

#include <sqlite3.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "paft/v1/job.pb.h"

namespace paft::coordinator {

class JobStore {
 public:
  // Opens (creating if needed) the database at `path`. A write waits up to `busy_timeout` for
  // another connection's lock, then fails with UNAVAILABLE.
  static absl::StatusOr<std::unique_ptr<JobStore>> Open(
      const std::string& path, absl::Duration busy_timeout = absl::Seconds(5));
  ~JobStore();

  // Inserts a new job and its first events. AlreadyExists if the job id or request id is taken.
  absl::Status InsertJob(const paft::v1::Job& job, const std::vector<paft::v1::JobEvent>& events);
  // Replaces a job's stored state, appends events and upserts checkpoint records (keyed by job,
  // branch and step), atomically.
  absl::Status UpdateJob(const paft::v1::Job& job, const std::vector<paft::v1::JobEvent>& events,
                         const std::vector<paft::v1::CheckpointInfo>& checkpoints = {});

  absl::StatusOr<paft::v1::Job> GetJob(const std::string& job_id);
  // NotFound when no job has this request id.
  absl::StatusOr<paft::v1::Job> GetJobByRequestId(const std::string& request_id);
  // All jobs, oldest first (used to rebuild memory at start-up).
  absl::StatusOr<std::vector<paft::v1::Job>> LoadAllJobs();
  // Where a listing resumes: after the job with this create time (ns) and id.
  struct ScanCursor {
    int64_t create_ns = 0;
    std::string job_id;
  };
  static ScanCursor CursorOf(const paft::v1::Job& job);
  // Jobs newest first (by create time, then id, descending), those in `states` (all when
  // empty) and of `owner` (all when empty), strictly after `after` when given, handed to
  // `visit` one at a time until it returns false. Both filters and the cursor are resolved by
  // SQLite's indexes: a page costs the rows on it, not the rows before it.
  absl::Status ScanJobs(const std::vector<paft::v1::JobState>& states, const std::string& owner,
                        const std::optional<ScanCursor>& after,
                        const std::function<bool(paft::v1::Job)>& visit);
  // Highest event seq of a job, 0 if none.
  absl::StatusOr<int64_t> LastEventSeq(const std::string& job_id);
  // Events of a job with seq > after_seq, ascending, at most `limit`.
  absl::StatusOr<std::vector<paft::v1::JobEvent>> EventsAfter(const std::string& job_id,
                                                               int64_t after_seq, int limit);

  // A job's checkpoint records, by branch then step.
  absl::StatusOr<std::vector<paft::v1::CheckpointInfo>> ListCheckpoints(const std::string& job_id);

  // Pools: the most device slots each pool has offered at once (admission's notion of what a
  // pool can offer when no capacity is declared). Only ever raised.
  absl::Status RaisePoolCapacity(const std::string& pool, int slots);
  absl::StatusOr<std::map<std::string, int>> LoadPoolCapacities();

 private:
  explicit JobStore(sqlite3* db) : db_(db) {}
  absl::Status Exec(const char* sql);
  // Runs `body` in one write transaction: committed when it returns OK, rolled back otherwise.
  absl::Status InTransactionLocked(const std::function<absl::Status()>& body);
  // Databases written before jobs had an owner column: adds it and fills it from the jobs.
  absl::Status MigrateOwnerColumn();
  absl::Status WriteJobLocked(const paft::v1::Job& job, bool insert,
                              const std::vector<paft::v1::JobEvent>& events,
                              const std::vector<paft::v1::CheckpointInfo>& checkpoints);

  std::mutex mu_;
  sqlite3* db_;  // GUARDED_BY(mu_)
};

}  // namespace paft::coordinator

#endif  // PAFT_COORDINATOR_JOB_STORE_H_
