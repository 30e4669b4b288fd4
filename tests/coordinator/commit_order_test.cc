// Commit, then act: a change the store refuses leaves memory, the store and the agents as they
// were; nothing is sent for it. The store is made to fail for real: another connection holds
// the database's write lock (as a backup tool or a stuck second coordinator would), so every
// write of the coordinator times out with UNAVAILABLE until it lets go.
#include <sqlite3.h>

#include "tests/coordinator/job_manager_fixture.h"

namespace paft::coordinator {
namespace {

class CommitOrderTest : public JobManagerTest {
 protected:
  void SetUp() override {
    store_busy_timeout_ = absl::Milliseconds(20);
    JobManagerTest::SetUp();
  }
  void TearDown() override { Unlock(); }

  // Takes the database's write lock from a second connection.
  void Lock() {
    ASSERT_EQ(sqlite3_open(dir_.Join("state.db").c_str(), &locker_), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(locker_, "BEGIN IMMEDIATE;", nullptr, nullptr, nullptr), SQLITE_OK);
  }
  void Unlock() {
    if (locker_ == nullptr) return;
    sqlite3_exec(locker_, "ROLLBACK;", nullptr, nullptr, nullptr);
    sqlite3_close(locker_);
    locker_ = nullptr;
  }

  // The stored copy of a job (what a restarted coordinator would see).
  Job Stored(const std::string& job_id) { return *store_->GetJob(job_id); }

  // A job with both branches running on 2 + 2 slots; the SFT branch's start assignments.
  std::vector<paft::v1::Assignment> RunningJob(std::string* job_id) {
    *job_id = Submit("r1").job_id();
    sft_worker_ = Register("s1", "sft", 2);
    align_worker_ = Register("a1", "align", 2);
    auto starts = Take(sft_worker_);
    EXPECT_EQ(starts.size(), 2u);
    EXPECT_EQ(Take(align_worker_).size(), 2u);
    for (const auto& a : starts) EXPECT_TRUE(Progress(a.start().task_id(), 1, 10, 2.0).ok());
    EXPECT_EQ(Get(*job_id).sft().state(), paft::v1::BRANCH_STATE_RUNNING);
    return starts;
  }

  sqlite3* locker_ = nullptr;
  std::string sft_worker_, align_worker_;
};

TEST_F(CommitOrderTest, AFailureNotStoredStopsNothingAndIsRetried) {
  std::string job_id;
  const auto starts = RunningJob(&job_id);
  const int64_t events_before = *store_->LastEventSeq(job_id);

  Lock();
  // Rank 0 fails. The attempt's failure cannot be stored: the branch stays RUNNING in memory
  // and in the store, its peer is not stopped, and no restart is counted.
  EXPECT_TRUE(Exit(starts[0].start().task_id(), 3, paft::v1::EXIT_REASON_INFRASTRUCTURE).ok());
  EXPECT_EQ(Get(job_id).sft().state(), paft::v1::BRANCH_STATE_RUNNING);
  EXPECT_EQ(Stored(job_id).sft().state(), paft::v1::BRANCH_STATE_RUNNING);
  EXPECT_EQ(Get(job_id).restarts_used(), 0);
  EXPECT_TRUE(Take(sft_worker_).empty()) << "a stop was sent for an uncommitted failure";
  // Ticks while the store still refuses change nothing either.
  clock_.Advance(absl::Seconds(1));
  manager_->Tick();
  EXPECT_TRUE(Take(sft_worker_).empty());
  EXPECT_EQ(*store_->LastEventSeq(job_id), events_before);

  // The store recovers: the next tick stores the failure, then stops the peer.
  Unlock();
  clock_.Advance(absl::Seconds(1));
  manager_->Tick();
  const Job job = Get(job_id);
  EXPECT_EQ(job.sft().state(), paft::v1::BRANCH_STATE_RESTARTING);
  EXPECT_EQ(job.sft().reason(), "Infrastructure");
  EXPECT_EQ(job.restarts_used(), 1);
  EXPECT_EQ(Stored(job_id).sft().state(), paft::v1::BRANCH_STATE_RESTARTING);
  const auto stops = Take(sft_worker_);
  ASSERT_EQ(stops.size(), 1u);
  EXPECT_EQ(stops[0].stop().task_id(), starts[1].start().task_id());
  // Stored once, not once per try.
  auto events = *store_->EventsAfter(job_id, events_before, 100);
  int restarts = 0;
  for (const auto& e : events) restarts += e.branch_state() == paft::v1::BRANCH_STATE_RESTARTING;
  EXPECT_EQ(restarts, 1);
  // The restart itself waits for the stopped rank's slot, then goes out after its commit.
  EXPECT_TRUE(Exit(starts[1].start().task_id(), 143, paft::v1::EXIT_REASON_STOPPED).ok());
  const auto restarted = Take(sft_worker_);
  ASSERT_EQ(restarted.size(), 2u);
  EXPECT_EQ(restarted[0].start().attempt(), 2);
}

TEST_F(CommitOrderTest, ACancelNotStoredIsRefusedAndStopsNothing) {
  std::string job_id;
  RunningJob(&job_id);
  Lock();
  paft::v1::CancelJobRequest cancel;
  cancel.set_job_id(job_id);
  auto cancelled = manager_->CancelJob(cancel);
  EXPECT_EQ(cancelled.status().code(), absl::StatusCode::kUnavailable) << cancelled.status();
  EXPECT_EQ(Get(job_id).state(), paft::v1::JOB_STATE_RUNNING);
  EXPECT_TRUE(Take(sft_worker_).empty());
  EXPECT_TRUE(Take(align_worker_).empty());
  Unlock();
  ASSERT_TRUE(manager_->CancelJob(cancel).ok());
  EXPECT_EQ(Take(sft_worker_).size(), 2u);
  EXPECT_EQ(Take(align_worker_).size(), 2u);
}

TEST_F(CommitOrderTest, ASchedulingNotStoredStartsNothing) {
  const std::string job_id = Submit("r1").job_id();
  Lock();
  // The pools appear while the store refuses: the gangs are not started, their slots stay free.
  const std::string sft = Register("s1", "sft", 2);
  EXPECT_TRUE(Take(sft).empty());
  EXPECT_EQ(Get(job_id).sft().state(), paft::v1::BRANCH_STATE_PENDING);
  EXPECT_EQ(registry_->List("sft")[0].busy_devices(), 0);
  Unlock();
  manager_->Tick();
  EXPECT_EQ(Take(sft).size(), 2u);
  EXPECT_EQ(Get(job_id).sft().state(), paft::v1::BRANCH_STATE_SCHEDULED);
}

TEST_F(CommitOrderTest, ASuccessNotStoredIsStoredLater) {
  std::string job_id;
  const auto starts = RunningJob(&job_id);
  ASSERT_TRUE(Checkpoint(starts[0].start().task_id(), 10, true).ok());
  Lock();
  for (const auto& a : starts) EXPECT_TRUE(Exit(a.start().task_id(), 0).ok());
  EXPECT_EQ(Get(job_id).sft().state(), paft::v1::BRANCH_STATE_RUNNING);
  Unlock();
  manager_->Tick();
  EXPECT_EQ(Get(job_id).sft().state(), paft::v1::BRANCH_STATE_SUCCEEDED);
  EXPECT_EQ(Stored(job_id).sft().state(), paft::v1::BRANCH_STATE_SUCCEEDED);
}

TEST_F(CommitOrderTest, ASubmissionNotStoredLeavesNoJob) {
  Lock();
  paft::v1::SubmitJobRequest request;
  request.set_request_id("r1");
  *request.mutable_spec() = *ParseJobSpec(kSpec);
  EXPECT_EQ(manager_->SubmitJob(request).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(manager_->ListJobs({})->jobs_size(), 0);
  Unlock();
  // The same request id is free for the retry.
  EXPECT_TRUE(manager_->SubmitJob(request).ok());
}

}  // namespace
}  // namespace paft::coordinator
