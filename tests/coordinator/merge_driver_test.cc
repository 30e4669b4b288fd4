// The merge driver over a JobManager with a scripted merger: which merger answers end a job,
// which are retried, and that the request names both branches' final checkpoints.
#include "coordinator/merge_driver.h"

#include <deque>

#include "tests/coordinator/job_manager_fixture.h"

namespace paft::coordinator {
namespace {

// A merger that answers from a script and records what it was asked.
class ScriptedMerger : public MergerClient {
 public:
  absl::StatusOr<paft::v1::MergeOperation> Merge(const paft::v1::MergeRequest& request) override {
    requests.push_back(request);
    if (answers.empty()) return absl::UnavailableError("no answer scripted");
    auto answer = answers.front();
    answers.pop_front();
    return answer;
  }
  std::deque<absl::StatusOr<paft::v1::MergeOperation>> answers;
  std::vector<paft::v1::MergeRequest> requests;
};

paft::v1::MergeOperation Operation(paft::v1::MergeState state, const std::string& error = "") {
  paft::v1::MergeOperation operation;
  operation.set_merge_id("m");
  operation.set_state(state);
  operation.set_output_dir("/out/merged");
  operation.set_error(error);
  return operation;
}

class MergeDriverTest : public JobManagerTest {
 protected:
  // A job whose two branches finished: MERGING.
  std::string Merging() {
    const std::string job_id = Submit("r1").job_id();
    Complete(Take(Register("s1", "sft", 2)));
    Complete(Take(Register("a1", "align", 2)));
    EXPECT_EQ(Get(job_id).state(), paft::v1::JOB_STATE_MERGING);
    return job_id;
  }
  ScriptedMerger merger_;
};

TEST_F(MergeDriverTest, TransientAnswersAreRetriedUntilTheMergeEnds) {
  const std::string job_id = Merging();
  MergeDriver driver(manager_.get(), &merger_);
  merger_.answers = {absl::UnavailableError("merger restarting"),
                     absl::DeadlineExceededError("slow"), absl::ResourceExhaustedError("busy"),
                     Operation(paft::v1::MERGE_STATE_RUNNING),
                     Operation(paft::v1::MERGE_STATE_SUCCEEDED)};
  for (int poll = 0; poll < 4; ++poll) {
    driver.Poll();
    EXPECT_EQ(Get(job_id).state(), paft::v1::JOB_STATE_MERGING) << "poll " << poll;
  }
  driver.Poll();
  const Job job = Get(job_id);
  EXPECT_EQ(job.state(), paft::v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job.merged_model_path(), "/out/merged");
  // Every ask was the same idempotent request: both final checkpoints, one merge id.
  ASSERT_EQ(merger_.requests.size(), 5u);
  for (const auto& request : merger_.requests) {
    EXPECT_EQ(request.merge_id(), job_id + "-merge");
    ASSERT_EQ(request.inputs_size(), 2);
    EXPECT_EQ(request.inputs(0).path(), job.sft().checkpoint_path());
    EXPECT_EQ(request.inputs(1).path(), job.alignment().checkpoint_path());
    EXPECT_EQ(request.output_dir(), "/out/merged");
  }
  driver.Poll();  // nothing left to merge
  EXPECT_EQ(merger_.requests.size(), 5u);
}

TEST_F(MergeDriverTest, ARefusedOrFailedMergeFailsTheJobWithItsError) {
  const std::string job_id = Merging();
  MergeDriver driver(manager_.get(), &merger_);
  merger_.answers = {absl::InvalidArgumentError("inputs: tensor shapes differ")};
  driver.Poll();
  Job job = Get(job_id);
  EXPECT_EQ(job.state(), paft::v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.reason(), "MergeFailed");
  EXPECT_THAT(job.message(), HasSubstr("tensor shapes differ"));

  Open();  // a second job, a merge that fails on the merger's side
  const std::string second = Submit("r2").job_id();
  Complete(Take(Register("s1", "sft", 2)));
  Complete(Take(Register("a1", "align", 2)));
  MergeDriver driver2(manager_.get(), &merger_);
  merger_.answers = {Operation(paft::v1::MERGE_STATE_FAILED, "disk full at /out/merged")};
  driver2.Poll();
  job = Get(second);
  EXPECT_EQ(job.state(), paft::v1::JOB_STATE_FAILED);
  EXPECT_THAT(job.message(), HasSubstr("disk full at /out/merged"));
}

TEST_F(MergeDriverTest, ShuttingDownIsNotAFailure) {
  const std::string job_id = Merging();
  MergeDriver driver(manager_.get(), &merger_);
  merger_.answers = {absl::CancelledError("the coordinator is shutting down")};
  driver.Poll();
  EXPECT_EQ(Get(job_id).state(), paft::v1::JOB_STATE_MERGING);
}

}  // namespace
}  // namespace paft::coordinator
