// The SQLite store on its own: atomic writes of a job with its events and checkpoints, ordering
// and limits of reads, refusals, and what survives reopening.
#include "coordinator/job_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include "tests/testing/temp_dir.h"

namespace paft::coordinator {
namespace {

paft::v1::Job MakeJob(const std::string& id, const std::string& request, int64_t create_s,
                      paft::v1::JobState state = paft::v1::JOB_STATE_QUEUED) {
  paft::v1::Job job;
  job.set_job_id(id);
  job.set_request_id(request);
  job.set_state(state);
  job.mutable_create_time()->set_seconds(create_s);
  return job;
}

paft::v1::JobEvent Event(const std::string& job_id, int64_t seq) {
  paft::v1::JobEvent event;
  event.set_job_id(job_id);
  event.set_seq(seq);
  event.set_type("T" + std::to_string(seq));
  return event;
}

class JobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }
  void Reopen() {
    store_.reset();
    auto store = JobStore::Open(dir_.Join("state.db"));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }
  std::vector<std::string> Scan(std::vector<paft::v1::JobState> states, int stop_after = 100,
                                const std::string& owner = "",
                                std::optional<JobStore::ScanCursor> after = std::nullopt) {
    std::vector<std::string> ids;
    EXPECT_TRUE(store_
                    ->ScanJobs(states, owner, after,
                               [&](paft::v1::Job job) {
                                 ids.push_back(job.job_id());
                                 return static_cast<int>(ids.size()) < stop_after;
                               })
                    .ok());
    return ids;
  }
  testing::TempDir dir_;
  std::unique_ptr<JobStore> store_;
};

TEST_F(JobStoreTest, AJobItsEventsAndCheckpointsAreWrittenTogether) {
  ASSERT_TRUE(store_->InsertJob(MakeJob("j1", "r1", 10), {Event("j1", 1), Event("j1", 2)}).ok());
  paft::v1::CheckpointInfo checkpoint;
  checkpoint.set_job_id("j1");
  checkpoint.set_branch(paft::v1::BRANCH_KIND_SFT);
  checkpoint.set_step(5);
  checkpoint.set_path("/c/5");
  auto running = MakeJob("j1", "r1", 10, paft::v1::JOB_STATE_RUNNING);
  ASSERT_TRUE(store_->UpdateJob(running, {Event("j1", 3)}, {checkpoint}).ok());
  // The same step again replaces its record (retirement is an update).
  checkpoint.set_retired(true);
  ASSERT_TRUE(store_->UpdateJob(running, {}, {checkpoint}).ok());
  EXPECT_EQ(store_->GetJob("j1")->state(), paft::v1::JOB_STATE_RUNNING);
  EXPECT_EQ(*store_->LastEventSeq("j1"), 3);
  auto checkpoints = store_->ListCheckpoints("j1");
  ASSERT_EQ(checkpoints->size(), 1u);
  EXPECT_TRUE((*checkpoints)[0].retired());
  // A write that fails half-way (an event seq already taken) leaves nothing of itself.
  auto failed = MakeJob("j1", "r1", 10, paft::v1::JOB_STATE_FAILED);
  EXPECT_FALSE(store_->UpdateJob(failed, {Event("j1", 4), Event("j1", 3)}).ok());
  EXPECT_EQ(store_->GetJob("j1")->state(), paft::v1::JOB_STATE_RUNNING);
  EXPECT_EQ(*store_->LastEventSeq("j1"), 3);
  // Everything is there after reopening.
  Reopen();
  EXPECT_EQ(store_->GetJob("j1")->state(), paft::v1::JOB_STATE_RUNNING);
  EXPECT_EQ(store_->GetJobByRequestId("r1")->job_id(), "j1");
  EXPECT_EQ(store_->EventsAfter("j1", 0, 10)->size(), 3u);
}

TEST_F(JobStoreTest, RefusalsNameWhatIsWrong) {
  ASSERT_TRUE(store_->InsertJob(MakeJob("j1", "r1", 10), {}).ok());
  EXPECT_EQ(store_->InsertJob(MakeJob("j2", "r1", 11), {}).code(),
            absl::StatusCode::kAlreadyExists);  // request id taken
  EXPECT_EQ(store_->InsertJob(MakeJob("j1", "r9", 11), {}).code(),
            absl::StatusCode::kAlreadyExists);  // job id taken
  EXPECT_EQ(store_->UpdateJob(MakeJob("nope", "r2", 1), {}).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->GetJob("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->GetJobByRequestId("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*store_->LastEventSeq("nope"), 0);
  // A damaged row is DATA_LOSS, not a crash.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(dir_.Join("state.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE jobs SET job = x'ffff' WHERE job_id = 'j1';", nullptr, nullptr,
                         nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  EXPECT_EQ(store_->GetJob("j1").status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(JobStoreTest, OwnersAreAnIndexedColumnFilledInForOlderDatabases) {
  store_.reset();
  // A database as written before the owner column existed: jobs carry their owner in the blob.
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(dir_.Join("state.db").c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db,
                           "DROP TABLE jobs; CREATE TABLE jobs (job_id TEXT PRIMARY KEY, "
                           "request_id TEXT NOT NULL UNIQUE, state INTEGER NOT NULL, "
                           "create_ns INTEGER NOT NULL, job BLOB NOT NULL);",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    for (int i = 1; i <= 3; ++i) {
      paft::v1::Job job = MakeJob("j" + std::to_string(i), "r" + std::to_string(i), i);
      job.set_owner(i == 2 ? "bob" : "alice");
      sqlite3_stmt* stmt = nullptr;
      ASSERT_EQ(sqlite3_prepare_v2(db, "INSERT INTO jobs VALUES (?1, ?2, 1, ?3, ?4);", -1, &stmt,
                                   nullptr),
                SQLITE_OK);
      const std::string blob = job.SerializeAsString();
      sqlite3_bind_text(stmt, 1, job.job_id().c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(stmt, 2, job.request_id().c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_int64(stmt, 3, int64_t{i} * 1000000000);
      sqlite3_bind_blob(stmt, 4, blob.data(), static_cast<int>(blob.size()), SQLITE_TRANSIENT);
      ASSERT_EQ(sqlite3_step(stmt), SQLITE_DONE);
      sqlite3_finalize(stmt);
    }
    sqlite3_close(db);
  }
  Reopen();
  EXPECT_EQ(Scan({}, 100, "alice"), (std::vector<std::string>{"j3", "j1"}));
  EXPECT_EQ(Scan({}, 100, "bob"), (std::vector<std::string>{"j2"}));
  paft::v1::Job carol = MakeJob("j4", "r4", 4);
  carol.set_owner("carol");
  ASSERT_TRUE(store_->InsertJob(carol, {}).ok());
  Reopen();  // a second open migrates nothing and loses nothing
  EXPECT_EQ(Scan({}, 100, "carol"), (std::vector<std::string>{"j4"}));
  EXPECT_EQ(Scan({}).size(), 4u);
}

TEST_F(JobStoreTest, ReadsAreOrderedAndBounded) {
  for (int i = 1; i <= 5; ++i) {
    const std::string id = "j" + std::to_string(i);
    ASSERT_TRUE(
        store_
            ->InsertJob(MakeJob(id, "r" + std::to_string(i), 100 - i % 3,
                                i % 2 ? paft::v1::JOB_STATE_SUCCEEDED : paft::v1::JOB_STATE_QUEUED),
                        {Event(id, 1)})
            .ok());
  }
  // Newest first (create time 100 - i % 3: j3 newest, then j1 and j4, then j2 and j5), ties
  // by id descending.
  EXPECT_EQ(Scan({}), (std::vector<std::string>{"j3", "j4", "j1", "j5", "j2"}));
  EXPECT_EQ(Scan({paft::v1::JOB_STATE_QUEUED}), (std::vector<std::string>{"j4", "j2"}));
  EXPECT_EQ(Scan({}, 2), (std::vector<std::string>{"j3", "j4"}));  // the visitor stops it
  // Resumed after j4 (create time 99): strictly older, or as old with a smaller id.
  EXPECT_EQ(Scan({}, 100, "", JobStore::CursorOf(*store_->GetJob("j4"))),
            (std::vector<std::string>{"j1", "j5", "j2"}));
  EXPECT_EQ(Scan({paft::v1::JOB_STATE_QUEUED}, 100, "", JobStore::CursorOf(*store_->GetJob("j4"))),
            (std::vector<std::string>{"j2"}));
  EXPECT_EQ(store_->LoadAllJobs()->front().job_id(), "j2");        // oldest first
  std::vector<paft::v1::JobEvent> many;
  for (int seq = 2; seq <= 10; ++seq) many.push_back(Event("j1", seq));
  ASSERT_TRUE(store_->UpdateJob(MakeJob("j1", "r1", 99), many).ok());
  auto events = store_->EventsAfter("j1", 3, 4);
  ASSERT_EQ(events->size(), 4u);
  EXPECT_EQ((*events)[0].seq(), 4);
  EXPECT_EQ((*events)[3].seq(), 7);
}

TEST_F(JobStoreTest, PoolCapacitiesOnlyRise) {
  ASSERT_TRUE(store_->RaisePoolCapacity("sft", 8).ok());
  ASSERT_TRUE(store_->RaisePoolCapacity("sft", 4).ok());
  ASSERT_TRUE(store_->RaisePoolCapacity("align", 2).ok());
  Reopen();
  auto pools = store_->LoadPoolCapacities();
  EXPECT_EQ((*pools)["sft"], 8);
  EXPECT_EQ((*pools)["align"], 2);
}

}  // namespace
}  // namespace paft::coordinator
