// The coordinator's side of merge.search: once both branches succeed, the search's gang is
// scheduled like a branch (on its pool, with the branches' final checkpoints); its table becomes
// the job's and the merge asked of the merger is the chosen candidate; a missing table fails it.
#include <google/protobuf/util/json_util.h>

#include "common/job_layout.h"
#include "common/merge_search.h"
#include "tests/coordinator/job_manager_fixture.h"

namespace paft::coordinator {
namespace {

class MergeSearchFlowTest : public JobManagerTest {
 protected:
  Job SubmitWithSearch() {
    auto spec = ParseJobSpec(kSpec);
    EXPECT_TRUE(spec.ok());
    spec->set_output_dir(dir_.Join("out"));
    spec->mutable_sft()->mutable_dataset()->set_eval_path("/d/sft_val.jsonl");
    spec->mutable_alignment()->mutable_dataset()->set_eval_path("/d/pref_val.jsonl");
    auto* search = spec->mutable_merge()->mutable_search();
    search->add_methods("ties");
    search->add_methods("task_arithmetic");
    search->set_pool("align");
    search->set_world_size(2);
    paft::v1::SubmitJobRequest request;
    request.set_request_id("search");
    *request.mutable_spec() = *spec;
    auto job = manager_->SubmitJob(request);
    EXPECT_TRUE(job.ok()) << job.status();
    return *job;
  }

  // Both branches run to success; returns the search gang's start assignments.
  std::vector<paft::v1::Assignment> TrainBranches(const Job& job) {
    const std::string sft = Register("s1", "sft", 2), align = Register("a1", "align", 2);
    Complete(Take(sft));
    Complete(Take(align));
    return Take(align);
  }

  void WriteTable(const Job& job, int chosen) {
    paft::v1::MergeSearchResult result;
    for (const auto& candidate : MergeCandidates(job.spec().merge())) {
      auto* row = result.add_candidates();
      row->set_label(CandidateLabel(candidate));
      *row->mutable_merge() = candidate;
    }
    result.set_chosen(chosen);
    const JobLayout layout(job.spec().output_dir());
    result.set_table_path(layout.MergeSearchTable());
    std::string text;
    ASSERT_TRUE(google::protobuf::util::MessageToJsonString(result, &text).ok());
    ASSERT_TRUE(MakeDirs(layout.MergeSearchDir()).ok());
    ASSERT_TRUE(WriteFileAtomic(layout.MergeSearchTable(), text).ok());
  }
};

TEST_F(MergeSearchFlowTest, TheChosenCandidateIsTheJobsMerge) {
  Job job = SubmitWithSearch();
  EXPECT_EQ(job.merge_search().state(), paft::v1::BRANCH_STATE_UNSPECIFIED);  // not yet
  const auto starts = TrainBranches(job);
  job = Get(job.job_id());
  EXPECT_EQ(job.state(), paft::v1::JOB_STATE_MERGING);
  EXPECT_THAT(job.message(), HasSubstr("searching 2 merge candidate(s)"));
  EXPECT_EQ(job.merge_search().state(), paft::v1::BRANCH_STATE_SCHEDULED);
  EXPECT_TRUE(manager_->PendingMerges().empty());  // nothing is merged before the choice

  // A gang of two on the align pool, with what the search reads.
  ASSERT_EQ(starts.size(), 2u);
  const paft::v1::Task& task = starts[0].start();
  EXPECT_EQ(task.branch(), paft::v1::BRANCH_KIND_MERGE_SEARCH);
  EXPECT_EQ(task.world_size(), 2);
  EXPECT_EQ(task.task_id(), job.job_id() + ".merge-search.a1.r0");
  EXPECT_EQ(task.merge_search().sft_checkpoint(), job.sft().checkpoint_path());
  EXPECT_EQ(task.merge_search().alignment_checkpoint(), job.alignment().checkpoint_path());
  EXPECT_EQ(task.merge_search().sft().dataset().eval_path(), "/d/sft_val.jsonl");
  EXPECT_EQ(task.merge_search().merge().search().methods_size(), 2);
  EXPECT_EQ(task.checkpoint_dir(), dir_.Join("out/merge-search"));
  EXPECT_EQ(task.log_dir(), dir_.Join("out/merge-search/logs/attempt-1"));
  EXPECT_FALSE(task.has_spec());

  ASSERT_TRUE(Progress(task.task_id(), 2, 5, 0).ok());
  EXPECT_EQ(Get(job.job_id()).merge_search().step(), 2);

  WriteTable(job, 1);
  for (const auto& a : starts) ASSERT_TRUE(Exit(a.start().task_id(), 0).ok());
  job = Get(job.job_id());
  EXPECT_EQ(job.merge_search().state(), paft::v1::BRANCH_STATE_SUCCEEDED);
  EXPECT_THAT(job.merge_search().message(), HasSubstr("chose task_arithmetic weights 1/1"));
  EXPECT_EQ(job.merge_search_result().chosen(), 1);
  auto merges = manager_->PendingMerges();
  ASSERT_EQ(merges.size(), 1u);
  EXPECT_EQ(merges[0].request.spec().method(), "task_arithmetic");
  EXPECT_FALSE(merges[0].request.spec().has_search());
  EXPECT_EQ(merges[0].request.inputs(0).params().density(), 1.0);

  paft::v1::MergeOperation done;
  done.set_state(paft::v1::MERGE_STATE_SUCCEEDED);
  done.set_output_dir(dir_.Join("out/merged"));
  manager_->OnMergeFinished(job.job_id(), done);
  job = Get(job.job_id());
  EXPECT_EQ(job.state(), paft::v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(registry_->List("align")[0].busy_devices(), 0);

  // It survives a restart of the coordinator (the table is part of the stored job).
  Open();
  EXPECT_EQ(Get(job.job_id()).merge_search_result().candidates_size(), 2);
}

TEST_F(MergeSearchFlowTest, ASearchWithoutItsTableFailsTheJob) {
  Job job = SubmitWithSearch();
  const auto starts = TrainBranches(job);
  ASSERT_EQ(starts.size(), 2u);
  for (const auto& a : starts) ASSERT_TRUE(Exit(a.start().task_id(), 0).ok());
  job = Get(job.job_id());
  EXPECT_EQ(job.merge_search().state(), paft::v1::BRANCH_STATE_FAILED);
  EXPECT_EQ(job.merge_search().reason(), "NoSearchTable");
  EXPECT_EQ(job.state(), paft::v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.reason(), "MergeSearchBranchFailed");
  EXPECT_TRUE(manager_->PendingMerges().empty());
}

TEST_F(MergeSearchFlowTest, AFailedSearchRankRestartsTheSearchWithinTheBudget) {
  Job job = SubmitWithSearch();
  const auto starts = TrainBranches(job);
  ASSERT_EQ(starts.size(), 2u);
  // The search's rank logs are served like a branch's.
  auto log = [&](int attempt) {
    paft::v1::StreamLogsRequest request;
    request.set_job_id(job.job_id());
    request.set_branch(paft::v1::BRANCH_KIND_MERGE_SEARCH);
    request.set_rank(1);
    request.set_attempt(attempt);
    auto target = manager_->LogFile(request);
    EXPECT_TRUE(target.ok()) << target.status();
    return target.ok() ? *target : JobManager::LogTarget{};
  };
  EXPECT_EQ(log(0).path, dir_.Join("out/merge-search/logs/attempt-1/rank-1.log"));
  EXPECT_FALSE(log(0).attempt_ended);
  ASSERT_TRUE(Exit(starts[1].start().task_id(), 3, paft::v1::EXIT_REASON_INFRASTRUCTURE).ok());
  job = Get(job.job_id());
  EXPECT_EQ(job.merge_search().state(), paft::v1::BRANCH_STATE_RESTARTING);
  EXPECT_EQ(job.restarts_used(), 1);
  // The other rank is stopped; once it has gone, a second attempt starts.
  ASSERT_TRUE(Exit(starts[0].start().task_id(), 0, paft::v1::EXIT_REASON_STOPPED).ok());
  auto again = Take(registry_->List("align")[0].worker_id());
  std::vector<paft::v1::Assignment> restarted;
  for (const auto& a : again) {
    if (a.has_start()) restarted.push_back(a);
  }
  ASSERT_EQ(restarted.size(), 2u);
  EXPECT_EQ(restarted[0].start().attempt(), 2);
  EXPECT_EQ(restarted[0].start().log_dir(), dir_.Join("out/merge-search/logs/attempt-2"));
  EXPECT_TRUE(log(1).attempt_ended);
  EXPECT_EQ(log(0).attempt, 2);
  EXPECT_FALSE(log(0).attempt_ended);
}

TEST_F(MergeSearchFlowTest, TheSearchsPoolIsCheckedAtAdmission) {
  auto spec = ParseJobSpec(kSpec);
  spec->mutable_sft()->mutable_dataset()->set_eval_path("/d/sft_val.jsonl");
  spec->mutable_alignment()->mutable_dataset()->set_eval_path("/d/pref_val.jsonl");
  spec->mutable_merge()->mutable_search()->set_pool("gpu");
  paft::v1::SubmitJobRequest request;
  request.set_request_id("bad-pool");
  *request.mutable_spec() = *spec;
  auto job = manager_->SubmitJob(request);
  ASSERT_FALSE(job.ok());
  EXPECT_THAT(std::string(job.status().message()), HasSubstr("merge.search.pool: unknown pool 'gpu'"));
}

}  // namespace
}  // namespace paft::coordinator
