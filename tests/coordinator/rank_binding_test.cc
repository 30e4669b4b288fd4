// A rank belongs to the agent it was placed on: only that agent adopts it after a coordinator
// restart, a rank that exited 0 stays done whatever becomes of its agent, a repeated exit report
// changes nothing, and a worker identity gets NOT_FOUND (not a later rank) for unknown ids.
#include "tests/coordinator/job_manager_fixture.h"

namespace paft::coordinator {
namespace {

class RankBindingTest : public JobManagerTest {
 protected:
  paft::v1::RegisterWorkerRequest Registration(const std::string& name, int devices) {
    paft::v1::RegisterWorkerRequest request;
    request.set_name(name);
    request.set_pool("sft");
    request.set_devices(devices);
    request.set_address(name + ".local");
    return request;
  }
  // Claims these ranks as running (on device 0) when registering.
  paft::v1::RegisterWorkerResponse RegisterClaiming(const std::string& name,
                                                    const std::vector<std::string>& ranks) {
    auto request = Registration(name, 1);
    for (const auto& id : ranks) {
      request.add_running_task_ids(id);
      auto* running = request.add_running_tasks();
      running->set_task_id(id);
      running->set_device(0);
    }
    auto response = manager_->RegisterWorker(request);
    EXPECT_TRUE(response.ok()) << response.status();
    return *response;
  }
  int Busy() {
    int busy = 0;
    for (const auto& w : registry_->List("sft")) busy += w.busy_devices();
    return busy;
  }
  void Beat(const std::string& worker_id) {
    paft::v1::HeartbeatRequest beat;
    beat.set_worker_id(worker_id);
    ASSERT_TRUE(manager_->Heartbeat(beat).ok());
  }
};

TEST_F(RankBindingTest, ARepeatedExitReportOfAFinishedRankChangesNothing) {
  Submit("r1");
  const std::string s1 = Register("s1", "sft", 2);
  const auto starts = Take(s1);
  ASSERT_EQ(starts.size(), 2u);
  ASSERT_TRUE(Exit(starts[1].start().task_id(), 0).ok());  // rank 1 done: its slot is free
  // Another gang takes that slot and one of a new agent.
  Submit("r2");
  const std::string s2 = Register("s2", "sft", 1);
  EXPECT_EQ(Take(s2).size(), 1u);
  EXPECT_EQ(Busy(), 3);
  // The first report's answer was lost; the agent sends it again.
  ASSERT_TRUE(Exit(starts[1].start().task_id(), 0).ok());
  EXPECT_EQ(Busy(), 3) << "the slot now held by the second gang was released";
}

TEST_F(RankBindingTest, ARankThatExitedZeroIsDoneWhateverBecomesOfItsAgent) {
  const std::string job_id = Submit("r1").job_id();
  const std::string s1 = Register("s1", "sft", 1);
  const std::string s2 = Register("s2", "sft", 1);
  const auto on_s1 = Take(s1), on_s2 = Take(s2);  // one slot each: rank 0 on s1, rank 1 on s2
  ASSERT_EQ(on_s1.size(), 1u);
  ASSERT_EQ(on_s2.size(), 1u);
  ASSERT_EQ(on_s2[0].start().rank(), 1);
  ASSERT_TRUE(Exit(on_s2[0].start().task_id(), 0).ok());
  // s2 stops heartbeating (drained, or its node went away) after its rank finished.
  clock_.Advance(absl::Seconds(6));
  Beat(s1);
  clock_.Advance(absl::Seconds(6));
  Beat(s1);
  manager_->Tick();
  EXPECT_FALSE(registry_->Exists(s2));
  EXPECT_EQ(Get(job_id).sft().state(), paft::v1::BRANCH_STATE_SCHEDULED);  // not restarted
  EXPECT_EQ(Get(job_id).restarts_used(), 0);
  // Rank 0 finishes the branch.
  ASSERT_TRUE(Checkpoint(on_s1[0].start().task_id(), 10, true).ok());
  ASSERT_TRUE(Exit(on_s1[0].start().task_id(), 0).ok());
  EXPECT_EQ(Get(job_id).sft().state(), paft::v1::BRANCH_STATE_SUCCEEDED);
}

TEST_F(RankBindingTest, AfterARestartOnlyTheAgentARankWasPlacedOnAdoptsIt) {
  const std::string job_id = Submit("r1").job_id();
  Register("s1", "sft", 1);
  Register("s2", "sft", 1);
  const std::string r0 = job_id + ".sft.a1.r0", r1 = job_id + ".sft.a1.r1";
  const Job before = Get(job_id);
  ASSERT_EQ(before.sft().workers_size(), 2);
  const std::string owner0 = before.sft().workers(0).substr(0, 2);  // "s1" or "s2"
  const std::string owner1 = owner0 == "s1" ? "s2" : "s1";
  Open();  // the coordinator restarts; the gang awaits adoption
  // The agent of rank 1 claims rank 0 too: refused (and told to stop it); its own is adopted.
  const auto response = RegisterClaiming(owner1, {r0, r1});
  ASSERT_EQ(response.stop_task_ids_size(), 1);
  EXPECT_EQ(response.stop_task_ids(0), r0);
  // The rightful agent adopts rank 0.
  EXPECT_EQ(RegisterClaiming(owner0, {r0}).stop_task_ids_size(), 0);
  // Spellings other than the canonical one name nothing.
  EXPECT_EQ(ParseTaskId(job_id + ".sft.a01.r0"), std::nullopt);
  EXPECT_EQ(ParseTaskId(job_id + ".sft.a1.r+0"), std::nullopt);
  EXPECT_TRUE(ParseTaskId(r0).has_value());
}

TEST_F(RankBindingTest, UnknownIdsAreNotFoundForAWorkerIdentity) {
  const std::string job_id = Submit("r1").job_id();
  const Principal worker{"s1", Role::kWorker, {}};
  // A rank that will exist once scheduled: no answer now can later apply to it.
  EXPECT_EQ(manager_->AuthorizeTask(worker, job_id + ".sft.a1.r0").code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(manager_->AuthorizeWorker(worker, "s1-1").code(), absl::StatusCode::kNotFound);
  const std::string s1 = Register("s1", "sft", 2);
  EXPECT_TRUE(manager_->AuthorizeWorker(worker, s1).ok());
  EXPECT_TRUE(manager_->AuthorizeTask(worker, job_id + ".sft.a1.r0").ok());
  const Principal other{"s2", Role::kWorker, {}};
  EXPECT_EQ(manager_->AuthorizeTask(other, job_id + ".sft.a1.r0").code(),
            absl::StatusCode::kPermissionDenied);
  // Admins are not bound.
  EXPECT_TRUE(manager_->AuthorizeWorker(Principal{"ops", Role::kAdmin, {}}, "nobody-9").ok());
}

}  // namespace
}  // namespace paft::coordinator
