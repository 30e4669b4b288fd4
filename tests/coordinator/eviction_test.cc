// Finished jobs leave memory after the retention period and are still served, from the store:
// get, list (filters and pages across memory and store), events, checkpoints, logs, cancel and
// an idempotent resubmission.
#include "tests/coordinator/job_manager_fixture.h"

namespace paft::coordinator {
namespace {

class EvictionTest : public JobManagerTest {
 protected:
  // A job run to SUCCEEDED (merge included); its id.
  std::string Finished(const std::string& request_id) {
    const std::string job_id = Submit(request_id).job_id();
    Complete(Take(sft_worker_));
    Complete(Take(align_worker_));
    EXPECT_EQ(Get(job_id).state(), paft::v1::JOB_STATE_MERGING);
    paft::v1::MergeOperation merged;
    merged.set_state(paft::v1::MERGE_STATE_SUCCEEDED);
    merged.set_output_dir("/out/merged");
    manager_->OnMergeFinished(job_id, merged);
    EXPECT_EQ(Get(job_id).state(), paft::v1::JOB_STATE_SUCCEEDED);
    return job_id;
  }
  double Evicted() { return Metric("paft_jobs_evicted_total", {}); }
  std::vector<std::string> Listed(paft::v1::ListJobsRequest request) {
    std::vector<std::string> ids;
    while (true) {
      auto page = manager_->ListJobs(request);
      EXPECT_TRUE(page.ok()) << page.status();
      for (const auto& job : page->jobs()) ids.push_back(job.job_id());
      if (page->next_page_token().empty()) return ids;
      request.set_page_token(page->next_page_token());
    }
  }
  void SetUp() override {
    JobManagerTest::SetUp();
    sft_worker_ = Register("s1", "sft", 2);
    align_worker_ = Register("a1", "align", 2);
  }
  std::string sft_worker_, align_worker_;
};

TEST_F(EvictionTest, AFinishedJobIsServedFromTheStoreAfterTheRetention) {
  const std::string old_id = Finished("old");
  const int64_t events = manager_->EventsAfter(old_id, 0, 1000)->size();
  ASSERT_GT(events, 5);
  // Retention is an hour (the default): nothing leaves before.
  clock_.Advance(absl::Minutes(59));
  manager_->Tick();
  EXPECT_EQ(Evicted(), 0.0);
  clock_.Advance(absl::Minutes(2));
  manager_->Tick();
  EXPECT_EQ(Evicted(), 1.0);
  // Everything a client can ask of it still answers, as stored.
  const Job job = Get(old_id);
  EXPECT_EQ(job.state(), paft::v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job.merged_model_path(), "/out/merged");
  EXPECT_EQ(static_cast<int64_t>(manager_->EventsAfter(old_id, 0, 1000)->size()), events);
  paft::v1::ListCheckpointsRequest checkpoints;
  checkpoints.set_job_id(old_id);
  EXPECT_EQ(manager_->ListCheckpoints(checkpoints)->checkpoints_size(), 2);  // both finals
  paft::v1::StreamLogsRequest logs;
  logs.set_job_id(old_id);
  logs.set_branch(paft::v1::BRANCH_KIND_SFT);
  logs.set_rank(1);
  auto log = manager_->LogFile(logs);
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ(log->path, "/out/sft/logs/attempt-1/rank-1.log");
  EXPECT_TRUE(log->attempt_ended);
  EXPECT_TRUE(manager_->WatchComplete(old_id, events));
  paft::v1::CancelJobRequest cancel;
  cancel.set_job_id(old_id);
  EXPECT_EQ(manager_->CancelJob(cancel).status().code(), absl::StatusCode::kFailedPrecondition);
  cancel.set_job_id("job-nope");
  EXPECT_EQ(manager_->CancelJob(cancel).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(manager_->GetJob("job-nope").status().code(), absl::StatusCode::kNotFound);
  // A retry of its submission is the same job, not a new one; the request id stays taken.
  paft::v1::SubmitJobRequest again;
  again.set_request_id("old");
  *again.mutable_spec() = *ParseJobSpec(kSpec);
  again.mutable_spec()->set_restart_budget(1);
  auto resubmitted = manager_->SubmitJob(again);
  ASSERT_TRUE(resubmitted.ok()) << resubmitted.status();
  EXPECT_EQ(resubmitted->job_id(), old_id);
  again.mutable_spec()->set_priority(5);
  EXPECT_EQ(manager_->SubmitJob(again).status().code(), absl::StatusCode::kAlreadyExists);
}

TEST_F(EvictionTest, ListingSpansMemoryAndStoreInOneOrder) {
  // Three finished jobs (two evicted), one running, one queued behind it; newest first.
  std::vector<std::string> ids;
  for (const char* request : {"a", "b"}) {
    ids.push_back(Finished(request));
    clock_.Advance(absl::Seconds(1));
  }
  clock_.Advance(absl::Hours(2));
  manager_->Tick();
  ASSERT_EQ(Evicted(), 2.0);
  sft_worker_ = Register("s1", "sft", 2);  // their leases ran out in those two hours
  align_worker_ = Register("a1", "align", 2);
  ids.push_back(Finished("c"));
  clock_.Advance(absl::Seconds(1));
  ids.push_back(Submit("d").job_id());  // runs
  clock_.Advance(absl::Seconds(1));
  ids.push_back(Submit("e").job_id());  // waits for "d"'s devices
  const std::vector<std::string> newest_first(ids.rbegin(), ids.rend());
  paft::v1::ListJobsRequest all;
  all.set_page_size(2);
  EXPECT_EQ(Listed(all), newest_first);
  paft::v1::ListJobsRequest finished;
  finished.add_states(paft::v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(Listed(finished), (std::vector<std::string>{ids[2], ids[1], ids[0]}));
  // Jobs in memory come with their live fields.
  paft::v1::ListJobsRequest queued;
  queued.add_states(paft::v1::JOB_STATE_QUEUED);
  auto page = manager_->ListJobs(queued);
  ASSERT_EQ(page->jobs_size(), 1);
  EXPECT_EQ(page->jobs(0).job_id(), ids[4]);
  EXPECT_EQ(page->jobs(0).queue_position(), 1);
}

TEST_F(EvictionTest, NeverWhenTheRetentionIsInfinite) {
  JobManagerOptions options;
  options.check_inputs = false;
  options.pool_capacity = {{"sft", 4}, {"align", 4}};
  options.finished_job_retention = absl::InfiniteDuration();
  manager_ =
      std::make_unique<JobManager>(options, store_.get(), registry_.get(), &clock_, metrics_.get());
  ASSERT_TRUE(manager_->Recover().ok());
  sft_worker_ = Register("s1", "sft", 2);
  align_worker_ = Register("a1", "align", 2);
  Finished("kept");
  clock_.Advance(absl::Hours(1000));
  manager_->Tick();
  EXPECT_EQ(Evicted(), 0.0);
}

}  // namespace
}  // namespace paft::coordinator
