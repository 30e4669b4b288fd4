// What the coordinator does with each class of rank exit (common/failure.h): the reason in the
// branch, the job and its events, and whether the branch restarts.
#include <algorithm>
#include <set>

#include "coordinator/job_manager_internal.h"
#include "tests/coordinator/job_manager_fixture.h"

namespace paft::coordinator {
namespace {

class ExitPolicyTest : public JobManagerTest {
 protected:
  // Both branches running; rank 0 of SFT then ends with `reason`. The job afterwards.
  Job EndRank0(paft::v1::ExitReason reason, int code, const std::string& message) {
    const std::string job_id = Submit("r1", /*restart_budget=*/2).job_id();
    sft_worker_ = Register("s1", "sft", 2);
    Register("a1", "align", 2);
    starts_ = Take(sft_worker_);
    EXPECT_EQ(starts_.size(), 2u);
    paft::v1::ReportExitRequest exit;
    exit.set_task_id(starts_[0].start().task_id());
    exit.set_exit_code(code);
    exit.set_reason(reason);
    exit.set_message(message);
    EXPECT_TRUE(manager_->ReportExit(exit).ok());
    return Get(job_id);
  }
  std::string sft_worker_;
  std::vector<paft::v1::Assignment> starts_;
};

TEST_F(ExitPolicyTest, AFullDiskFailsTheJobWithTheFolderAndBytes) {
  const std::string message =
      "not enough free space for a checkpoint in /out/sft/checkpoints: 1024 bytes free, "
      "52428800 needed";
  const Job job = EndRank0(paft::v1::EXIT_REASON_DISK_FULL, 5, message);
  EXPECT_EQ(job.state(), paft::v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.sft().state(), paft::v1::BRANCH_STATE_FAILED);
  EXPECT_EQ(job.sft().reason(), "DiskFull");
  EXPECT_THAT(job.message(), HasSubstr("/out/sft/checkpoints: 1024 bytes free, 52428800 needed"));
  EXPECT_EQ(job.restarts_used(), 0);  // not retried: the same save would not fit either
  EXPECT_EQ(job.alignment().state(), paft::v1::BRANCH_STATE_CANCELLED);
}

TEST_F(ExitPolicyTest, OutOfMemoryIsNotRetried) {
  const Job job = EndRank0(paft::v1::EXIT_REASON_OOM, -1,
                           "killed by the kernel's OOM killer (oom_kill went 0 -> 1)");
  EXPECT_EQ(job.sft().state(), paft::v1::BRANCH_STATE_FAILED);
  EXPECT_EQ(job.sft().reason(), "OutOfMemory");
}

TEST_F(ExitPolicyTest, ALostPeerRestartsTheBranch) {
  const Job job = EndRank0(paft::v1::EXIT_REASON_PEER_LOST, 6, "collective failed");
  EXPECT_EQ(job.sft().state(), paft::v1::BRANCH_STATE_RESTARTING);
  EXPECT_EQ(job.sft().reason(), "PeerLost");
  EXPECT_EQ(job.restarts_used(), 1);
  EXPECT_EQ(Metric("paft_branch_restarts_total", {{"reason", "PeerLost"}}), 1.0);
  // Its peer is stopped.
  const auto stops = Take(sft_worker_);
  ASSERT_EQ(stops.size(), 1u);
  EXPECT_EQ(stops[0].stop().task_id(), starts_[1].start().task_id());
}

TEST_F(ExitPolicyTest, AnUnknownExitCodeRestartsUnderItsOwnName) {
  const Job job = EndRank0(paft::v1::EXIT_REASON_UNKNOWN, 1, "Traceback ...");
  EXPECT_EQ(job.sft().state(), paft::v1::BRANCH_STATE_RESTARTING);
  EXPECT_EQ(job.sft().reason(), "Unknown");
}

TEST_F(ExitPolicyTest, ATakenRendezvousPortRestartsOnAnotherPortWithoutUsingTheBudget) {
  const std::string message =
      "rank 0 cannot listen on rendezvous port 29500 of 10.0.0.1: another process on this host "
      "holds it";
  Job job = EndRank0(paft::v1::EXIT_REASON_PORT_IN_USE, 7, message);
  EXPECT_EQ(job.sft().state(), paft::v1::BRANCH_STATE_RESTARTING);
  EXPECT_EQ(job.sft().reason(), "PortInUse");
  EXPECT_EQ(job.sft().port_conflicts(), 1);
  EXPECT_EQ(job.restarts_used(), 0);
  EXPECT_EQ(Metric("paft_branch_restarts_total", {{"reason", "PortInUse"}}), 1.0);
  // The next attempts get other ports; after kFreePortConflicts free ones they use the budget.
  std::set<int> ports = {starts_[0].start().master_port()};
  for (int conflict = 2; conflict <= internal::kFreePortConflicts + 3; ++conflict) {
    const auto stops = Take(sft_worker_);
    ASSERT_EQ(stops.size(), 1u);  // rank 1 of the attempt that ended
    ASSERT_TRUE(Exit(stops[0].stop().task_id(), 143, paft::v1::EXIT_REASON_STOPPED).ok());
    const auto starts = Take(sft_worker_);
    ASSERT_EQ(starts.size(), 2u) << "conflict " << conflict;
    EXPECT_EQ(starts[0].start().master_port(), starts[1].start().master_port());
    EXPECT_TRUE(ports.insert(starts[0].start().master_port()).second) << "a port handed out again";
    ASSERT_TRUE(Exit(starts[0].start().task_id(), 7, paft::v1::EXIT_REASON_PORT_IN_USE).ok());
    job = Get(job.job_id());
    EXPECT_EQ(job.sft().port_conflicts(), conflict);
    const int counted = std::max(0, conflict - internal::kFreePortConflicts);
    if (counted <= 2) {  // the job's budget is 2
      EXPECT_EQ(job.sft().state(), paft::v1::BRANCH_STATE_RESTARTING) << "conflict " << conflict;
      EXPECT_EQ(job.restarts_used(), counted) << "conflict " << conflict;
    } else {
      EXPECT_EQ(job.sft().state(), paft::v1::BRANCH_STATE_FAILED);
      EXPECT_EQ(job.sft().reason(), "PortInUse");
      EXPECT_THAT(job.message(), HasSubstr("restart budget of 2 used up"));
    }
  }
}

}  // namespace
}  // namespace paft::coordinator
