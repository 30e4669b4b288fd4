#include "coordinator/job_store.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace paft::coordinator {
namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS jobs (
  job_id      TEXT PRIMARY KEY,
  request_id  TEXT NOT NULL UNIQUE,
  state       INTEGER NOT NULL,
  create_ns   INTEGER NOT NULL,
  job         BLOB NOT NULL,
  owner       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS jobs_by_create ON jobs (create_ns DESC, job_id DESC);
CREATE TABLE IF NOT EXISTS events (
  job_id  TEXT NOT NULL,
  seq     INTEGER NOT NULL,
  event   BLOB NOT NULL,
  PRIMARY KEY (job_id, seq)
);
CREATE TABLE IF NOT EXISTS checkpoints (
  job_id  TEXT NOT NULL,
  branch  INTEGER NOT NULL,
  step    INTEGER NOT NULL,
  info    BLOB NOT NULL,
  PRIMARY KEY (job_id, branch, step)
);
CREATE TABLE IF NOT EXISTS pools (
  name       TEXT PRIMARY KEY,
  max_slots  INTEGER NOT NULL
);
)sql";

// After MigrateOwnerColumn: an older database has no owner column until then.
constexpr const char* kOwnerIndex =
    "CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, create_ns DESC, job_id DESC);";

// RAII prepared statement.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  absl::Status status() const {
    if (rc_ == SQLITE_OK) return absl::OkStatus();
    return absl::InternalError(absl::StrCat("sqlite prepare: ", sqlite3_errmsg(db_)));
  }
  void Bind(int i, const std::string& text) {
    sqlite3_bind_text(stmt_, i, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
  }
  void BindBlob(int i, const std::string& blob) {
    sqlite3_bind_blob(stmt_, i, blob.data(), static_cast<int>(blob.size()), SQLITE_TRANSIENT);
  }
  void Bind(int i, int64_t v) { sqlite3_bind_int64(stmt_, i, v); }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int Step() { return sqlite3_step(stmt_); }
  std::string ColumnBlob(int i) {
    const void* p = sqlite3_column_blob(stmt_, i);
    int n = sqlite3_column_bytes(stmt_, i);
    return p == nullptr ? std::string() : std::string(static_cast<const char*>(p), n);
  }
  int64_t ColumnInt(int i) { return sqlite3_column_int64(stmt_, i); }
  sqlite3_stmt* raw() { return stmt_; }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

absl::Status StepError(sqlite3* db, int rc, absl::string_view what) {
  std::string message = absl::StrCat("sqlite ", what, ": ", sqlite3_errmsg(db));
  if (rc == SQLITE_CONSTRAINT) return absl::AlreadyExistsError(message);
  if (rc == SQLITE_FULL) return absl::ResourceExhaustedError(message);
  if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) return absl::UnavailableError(message);
  return absl::InternalError(message);
}

template <typename Proto>
absl::StatusOr<Proto> ParseBlob(const std::string& blob, absl::string_view what) {
  Proto proto;
  if (!proto.ParseFromString(blob)) {
    return absl::DataLossError(absl::StrCat("stored ", what, " does not parse"));
  }
  return proto;
}

}  // namespace

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Open(const std::string& path,
                                                         absl::Duration busy_timeout) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    std::string message = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("opening state database ", path, ": ", message));
  }
  sqlite3_busy_timeout(db, static_cast<int>(absl::ToInt64Milliseconds(busy_timeout)));
  std::unique_ptr<JobStore> store(new JobStore(db));
  // WAL: readers never block the writer; synchronous=FULL makes each commit durable.
  PAFT_RETURN_IF_ERROR(store->Exec("PRAGMA journal_mode=WAL;"));
  PAFT_RETURN_IF_ERROR(store->Exec("PRAGMA synchronous=FULL;"));
  PAFT_RETURN_IF_ERROR(store->Exec("PRAGMA foreign_keys=ON;"));
  PAFT_RETURN_IF_ERROR(store->Exec(kSchema));
  PAFT_RETURN_IF_ERROR(store->MigrateOwnerColumn());
  PAFT_RETURN_IF_ERROR(store->Exec(kOwnerIndex));
  return store;
}

JobStore::~JobStore() { sqlite3_close(db_); }

absl::Status JobStore::Exec(const char* sql) {
  char* error = nullptr;
  int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &error);
  if (rc != SQLITE_OK) {
    std::string message = error ? error : "unknown error";
    sqlite3_free(error);
    return StepError(db_, rc, message);
  }
  return absl::OkStatus();
}

absl::Status JobStore::InTransactionLocked(const std::function<absl::Status()>& body) {
  PAFT_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE;"));
  absl::Status status = body();
  if (!status.ok()) {
    (void)Exec("ROLLBACK;");
    return status;
  }
  return Exec("COMMIT;");
}

absl::Status JobStore::WriteJobLocked(const paft::v1::Job& job, bool insert,
                                      const std::vector<paft::v1::JobEvent>& events,
                                      const std::vector<paft::v1::CheckpointInfo>& checkpoints) {
  auto body = [&]() -> absl::Status {
    if (insert) {
      Statement s(db_,
                  "INSERT INTO jobs (job_id, request_id, state, create_ns, job, owner) "
                  "VALUES (?1, ?2, ?3, ?4, ?5, ?6);");
      PAFT_RETURN_IF_ERROR(s.status());
      s.Bind(1, job.job_id());
      s.Bind(2, job.request_id());
      s.Bind(3, static_cast<int64_t>(job.state()));
      s.Bind(4, CursorOf(job).create_ns);
      s.BindBlob(5, job.SerializeAsString());
      s.Bind(6, job.owner());
      int rc = s.Step();
      if (rc != SQLITE_DONE) return StepError(db_, rc, "inserting job");
    } else {
      Statement s(db_, "UPDATE jobs SET state = ?2, job = ?3 WHERE job_id = ?1;");
      PAFT_RETURN_IF_ERROR(s.status());
      s.Bind(1, job.job_id());
      s.Bind(2, static_cast<int64_t>(job.state()));
      s.BindBlob(3, job.SerializeAsString());
      int rc = s.Step();
      if (rc != SQLITE_DONE) return StepError(db_, rc, "updating job");
      if (sqlite3_changes(db_) != 1) {
        return absl::NotFoundError(absl::StrCat("job ", job.job_id(), " is not stored"));
      }
    }
    for (const auto& event : events) {
      Statement s(db_, "INSERT INTO events (job_id, seq, event) VALUES (?1, ?2, ?3);");
      PAFT_RETURN_IF_ERROR(s.status());
      s.Bind(1, event.job_id());
      s.Bind(2, event.seq());
      s.BindBlob(3, event.SerializeAsString());
      int rc = s.Step();
      if (rc != SQLITE_DONE) return StepError(db_, rc, "inserting event");
    }
    for (const auto& checkpoint : checkpoints) {
      Statement s(db_,
                  "INSERT OR REPLACE INTO checkpoints (job_id, branch, step, info) "
                  "VALUES (?1, ?2, ?3, ?4);");
      PAFT_RETURN_IF_ERROR(s.status());
      s.Bind(1, checkpoint.job_id());
      s.Bind(2, static_cast<int64_t>(checkpoint.branch()));
      s.Bind(3, checkpoint.step());
      s.BindBlob(4, checkpoint.SerializeAsString());
      int rc = s.Step();
      if (rc != SQLITE_DONE) return StepError(db_, rc, "storing checkpoint");
    }
    return absl::OkStatus();
  };
  return InTransactionLocked(body);
}

absl::Status JobStore::InsertJob(const paft::v1::Job& job,
                                 const std::vector<paft::v1::JobEvent>& events) {
  std::lock_guard<std::mutex> lock(mu_);
  return WriteJobLocked(job, /*insert=*/true, events, {});
}

absl::Status JobStore::UpdateJob(const paft::v1::Job& job,
                                 const std::vector<paft::v1::JobEvent>& events,
                                 const std::vector<paft::v1::CheckpointInfo>& checkpoints) {
  std::lock_guard<std::mutex> lock(mu_);
  return WriteJobLocked(job, /*insert=*/false, events, checkpoints);
}

absl::StatusOr<paft::v1::Job> JobStore::GetJob(const std::string& job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement s(db_, "SELECT job FROM jobs WHERE job_id = ?1;");
  PAFT_RETURN_IF_ERROR(s.status());
  s.Bind(1, job_id);
  int rc = s.Step();
  if (rc == SQLITE_DONE) return absl::NotFoundError(absl::StrCat("job '", job_id, "' not found"));
  if (rc != SQLITE_ROW) return StepError(db_, rc, "reading job");
  return ParseBlob<paft::v1::Job>(s.ColumnBlob(0), "job");
}

absl::StatusOr<paft::v1::Job> JobStore::GetJobByRequestId(const std::string& request_id) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement s(db_, "SELECT job FROM jobs WHERE request_id = ?1;");
  PAFT_RETURN_IF_ERROR(s.status());
  s.Bind(1, request_id);
  int rc = s.Step();
  if (rc == SQLITE_DONE) return absl::NotFoundError("no job with this request id");
  if (rc != SQLITE_ROW) return StepError(db_, rc, "reading job");
  return ParseBlob<paft::v1::Job>(s.ColumnBlob(0), "job");
}

absl::StatusOr<std::vector<paft::v1::Job>> JobStore::LoadAllJobs() {
  std::lock_guard<std::mutex> lock(mu_);
  Statement s(db_, "SELECT job FROM jobs ORDER BY create_ns, job_id;");
  PAFT_RETURN_IF_ERROR(s.status());
  std::vector<paft::v1::Job> jobs;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) {
    PAFT_ASSIGN_OR_RETURN(auto job, ParseBlob<paft::v1::Job>(s.ColumnBlob(0), "job"));
    jobs.push_back(std::move(job));
  }
  if (rc != SQLITE_DONE) return StepError(db_, rc, "listing jobs");
  return jobs;
}

JobStore::ScanCursor JobStore::CursorOf(const paft::v1::Job& job) {
  return {job.create_time().seconds() * 1000000000 + job.create_time().nanos(), job.job_id()};
}

absl::Status JobStore::ScanJobs(const std::vector<paft::v1::JobState>& states,
                                const std::string& owner, const std::optional<ScanCursor>& after,
                                const std::function<bool(paft::v1::Job)>& visit) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string sql = "SELECT job FROM jobs WHERE 1";
  if (!states.empty()) {
    sql += " AND state IN (";
    for (size_t i = 0; i < states.size(); ++i) {
      absl::StrAppend(&sql, i == 0 ? "" : ",", static_cast<int>(states[i]));
    }
    sql += ")";
  }
  if (!owner.empty()) sql += " AND owner = ?1";
  if (after) sql += " AND (create_ns, job_id) < (?2, ?3)";
  sql += " ORDER BY create_ns DESC, job_id DESC;";
  Statement s(db_, sql.c_str());
  PAFT_RETURN_IF_ERROR(s.status());
  if (!owner.empty()) s.Bind(1, owner);
  if (after) {
    s.Bind(2, after->create_ns);
    s.Bind(3, after->job_id);
  }
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) {
    PAFT_ASSIGN_OR_RETURN(auto job, ParseBlob<paft::v1::Job>(s.ColumnBlob(0), "job"));
    if (!visit(std::move(job))) return absl::OkStatus();
  }
  if (rc != SQLITE_DONE) return StepError(db_, rc, "listing jobs");
  return absl::OkStatus();
}

absl::Status JobStore::MigrateOwnerColumn() {
  std::lock_guard<std::mutex> lock(mu_);
  {
    Statement columns(db_, "SELECT 1 FROM pragma_table_info('jobs') WHERE name = 'owner';");
    PAFT_RETURN_IF_ERROR(columns.status());
    if (columns.Step() == SQLITE_ROW) return absl::OkStatus();
  }
  auto body = [&]() -> absl::Status {
    PAFT_RETURN_IF_ERROR(Exec("ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT '';"));
    std::vector<std::pair<std::string, std::string>> owners;
    {
      Statement s(db_, "SELECT job FROM jobs;");
      PAFT_RETURN_IF_ERROR(s.status());
      int rc;
      while ((rc = s.Step()) == SQLITE_ROW) {
        PAFT_ASSIGN_OR_RETURN(auto job, ParseBlob<paft::v1::Job>(s.ColumnBlob(0), "job"));
        if (!job.owner().empty()) owners.emplace_back(job.job_id(), job.owner());
      }
      if (rc != SQLITE_DONE) return StepError(db_, rc, "reading jobs for the owner column");
    }
    for (const auto& [job_id, owner] : owners) {
      Statement s(db_, "UPDATE jobs SET owner = ?2 WHERE job_id = ?1;");
      PAFT_RETURN_IF_ERROR(s.status());
      s.Bind(1, job_id);
      s.Bind(2, owner);
      if (int rc = s.Step(); rc != SQLITE_DONE) return StepError(db_, rc, "filling owners");
    }
    return absl::OkStatus();
  };
  return InTransactionLocked(body);
}

absl::StatusOr<int64_t> JobStore::LastEventSeq(const std::string& job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement s(db_, "SELECT COALESCE(MAX(seq), 0) FROM events WHERE job_id = ?1;");
  PAFT_RETURN_IF_ERROR(s.status());
  s.Bind(1, job_id);
  int rc = s.Step();
  if (rc != SQLITE_ROW) return StepError(db_, rc, "reading events");
  return s.ColumnInt(0);
}

absl::StatusOr<std::vector<paft::v1::JobEvent>> JobStore::EventsAfter(const std::string& job_id,
                                                                       int64_t after_seq,
                                                                       int limit) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement s(db_,
              "SELECT event FROM events WHERE job_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3;");
  PAFT_RETURN_IF_ERROR(s.status());
  s.Bind(1, job_id);
  s.Bind(2, after_seq);
  s.Bind(3, static_cast<int64_t>(limit));
  std::vector<paft::v1::JobEvent> events;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) {
    PAFT_ASSIGN_OR_RETURN(auto e, ParseBlob<paft::v1::JobEvent>(s.ColumnBlob(0), "event"));
    events.push_back(std::move(e));
  }
  if (rc != SQLITE_DONE) return StepError(db_, rc, "reading events");
  return events;
}

absl::StatusOr<std::vector<paft::v1::CheckpointInfo>> JobStore::ListCheckpoints(
    const std::string& job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement s(db_, "SELECT info FROM checkpoints WHERE job_id = ?1 ORDER BY branch, step;");
  PAFT_RETURN_IF_ERROR(s.status());
  s.Bind(1, job_id);
  std::vector<paft::v1::CheckpointInfo> out;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) {
    PAFT_ASSIGN_OR_RETURN(auto c,
                          ParseBlob<paft::v1::CheckpointInfo>(s.ColumnBlob(0), "checkpoint"));
    out.push_back(std::move(c));
  }
  if (rc != SQLITE_DONE) return StepError(db_, rc, "reading checkpoints");
  return out;
}

absl::Status JobStore::RaisePoolCapacity(const std::string& pool, int slots) {
  std::lock_guard<std::mutex> lock(mu_);
  Statement s(db_,
              "INSERT INTO pools (name, max_slots) VALUES (?1, ?2) "
              "ON CONFLICT(name) DO UPDATE SET max_slots = MAX(max_slots, excluded.max_slots);");
  PAFT_RETURN_IF_ERROR(s.status());
  s.Bind(1, pool);
  s.Bind(2, static_cast<int64_t>(slots));
  int rc = s.Step();
  if (rc != SQLITE_DONE) return StepError(db_, rc, "storing pool capacity");
  return absl::OkStatus();
}

absl::StatusOr<std::map<std::string, int>> JobStore::LoadPoolCapacities() {
  std::lock_guard<std::mutex> lock(mu_);
  Statement s(db_, "SELECT name, max_slots FROM pools;");
  PAFT_RETURN_IF_ERROR(s.status());
  std::map<std::string, int> out;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) {
    const unsigned char* name = sqlite3_column_text(s.raw(), 0);
    out[name == nullptr ? "" : reinterpret_cast<const char*>(name)] =
        static_cast<int>(s.ColumnInt(1));
  }
  if (rc != SQLITE_DONE) return StepError(db_, rc, "reading pools");
  return out;
}

}  // namespace paft::coordinator
