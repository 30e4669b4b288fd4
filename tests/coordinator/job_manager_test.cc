#include "tests/coordinator/job_manager_fixture.h"

namespace paft::coordinator {
namespace {

TEST_F(JobManagerTest, JobFlowsToSucceeded) {
  Job job = Submit("r1");
  EXPECT_EQ(job.state(), paft::v1::JOB_STATE_QUEUED);
  EXPECT_EQ(job.queue_position(), 1);

  // The SFT pool appears: the SFT branch runs while alignment still waits for devices.
  std::string sft_worker = Register("s1", "sft", 2);
  auto sft_starts = Take(sft_worker);
  ASSERT_EQ(sft_starts.size(), 2u);
  EXPECT_EQ(sft_starts[0].start().world_size(), 2);
  EXPECT_EQ(sft_starts[0].start().master_addr(), "s1.local");
  EXPECT_EQ(sft_starts[0].start().master_port(), sft_starts[1].start().master_port());
  EXPECT_EQ(sft_starts[1].start().rank(), 1);
  job = Get(job.job_id());
  EXPECT_EQ(job.state(), paft::v1::JOB_STATE_RUNNING);
  EXPECT_EQ(job.sft().state(), paft::v1::BRANCH_STATE_SCHEDULED);
  EXPECT_EQ(job.alignment().state(), paft::v1::BRANCH_STATE_PENDING);

  // One align device is not a gang of two; two single-device agents are.
  std::string a1 = Register("a1", "align", 1);
  EXPECT_TRUE(Take(a1).empty());
  std::string a2 = Register("a2", "align", 1);
  auto align_starts = Take(a1);
  auto more = Take(a2);
  align_starts.insert(align_starts.end(), more.begin(), more.end());
  ASSERT_EQ(align_starts.size(), 2u);
  EXPECT_EQ(Get(job.job_id()).alignment().state(), paft::v1::BRANCH_STATE_SCHEDULED);

  paft::v1::ReportProgressRequest progress;
  progress.set_task_id(sft_starts[0].start().task_id());
  progress.set_step(3);
  progress.set_total_steps(10);
  progress.set_loss(1.25);
  ASSERT_TRUE(manager_->ReportProgress(progress).ok());
  job = Get(job.job_id());
  EXPECT_EQ(job.sft().state(), paft::v1::BRANCH_STATE_RUNNING);
  EXPECT_EQ(job.sft().step(), 3);
  EXPECT_DOUBLE_EQ(job.sft().loss(), 1.25);

  // Checkpoints only from rank 0.
  EXPECT_EQ(Checkpoint(sft_starts[1].start().task_id(), 5, false).code(),
            absl::StatusCode::kInvalidArgument);
  Complete(sft_starts);
  job = Get(job.job_id());
  EXPECT_EQ(job.sft().state(), paft::v1::BRANCH_STATE_SUCCEEDED);
  EXPECT_EQ(job.state(), paft::v1::JOB_STATE_RUNNING);
  EXPECT_TRUE(manager_->PendingMerges().empty());

  Complete(align_starts);
  job = Get(job.job_id());
  EXPECT_EQ(job.state(), paft::v1::JOB_STATE_MERGING);
  auto merges = manager_->PendingMerges();
  ASSERT_EQ(merges.size(), 1u);
  EXPECT_EQ(merges[0].job_id, job.job_id());
  EXPECT_EQ(merges[0].request.base_model(), "/m");
  ASSERT_EQ(merges[0].request.inputs_size(), 2);
  EXPECT_EQ(merges[0].request.inputs(0).path(), job.sft().checkpoint_path());
  EXPECT_EQ(merges[0].request.inputs(1).path(), job.alignment().checkpoint_path());
  EXPECT_EQ(merges[0].request.output_dir(), "/out/merged");
  EXPECT_EQ(merges[0].request.spec().method(), "ties");  // the default
  EXPECT_TRUE(merges[0].request.adapter_output_dir().empty());  // a delta merge writes a model

  paft::v1::MergeOperation done;
  done.set_state(paft::v1::MERGE_STATE_SUCCEEDED);
  done.set_output_dir("/out/merged");
  manager_->OnMergeFinished(job.job_id(), done);
  job = Get(job.job_id());
  EXPECT_EQ(job.state(), paft::v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job.merged_model_path(), "/out/merged");
  EXPECT_TRUE(job.has_end_time());

  // Events are contiguous from 1 and end with the terminal state.
  auto events = manager_->EventsAfter(job.job_id(), 0, 1000);
  ASSERT_TRUE(events.ok());
  for (size_t i = 0; i < events->size(); ++i) EXPECT_EQ((*events)[i].seq(), int64_t(i + 1));
  EXPECT_EQ(events->back().job_state(), paft::v1::JOB_STATE_SUCCEEDED);
  EXPECT_TRUE(manager_->WatchComplete(job.job_id(), events->back().seq()));
  // Slots are free again.
  EXPECT_EQ(registry_->List("sft")[0].busy_devices(), 0);
  paft::v1::ListCheckpointsRequest list;
  list.set_job_id(job.job_id());
  auto checkpoints = manager_->ListCheckpoints(list);
  ASSERT_TRUE(checkpoints.ok());
  EXPECT_EQ(checkpoints->checkpoints_size(), 2);
}

TEST_F(JobManagerTest, SubmissionIsIdempotentAndValidated) {
  Job a = Submit("same");
  Job b = Submit("same");
  EXPECT_EQ(a.job_id(), b.job_id());
  paft::v1::SubmitJobRequest other;
  other.set_request_id("same");
  *other.mutable_spec() = *ParseJobSpec(kSpec);
  other.mutable_spec()->set_name("different");
  EXPECT_EQ(manager_->SubmitJob(other).status().code(), absl::StatusCode::kAlreadyExists);

  paft::v1::SubmitJobRequest bad;
  bad.set_request_id("bad");
  *bad.mutable_spec() = *ParseJobSpec(kSpec);
  bad.mutable_spec()->mutable_sft()->set_world_size(0);
  auto rejected = manager_->SubmitJob(bad);
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(rejected.status().message()), HasSubstr("sft.world_size"));
  paft::v1::SubmitJobRequest no_id;
  *no_id.mutable_spec() = *ParseJobSpec(kSpec);
  EXPECT_EQ(manager_->SubmitJob(no_id).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(manager_->ListJobs({})->jobs_size(), 1);  // nothing stored for the rejected ones
  EXPECT_EQ(manager_->GetJob("job-nope").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(JobManagerTest, FailedRankRestartsOnlyItsBranchFromTheCheckpoint) {
  Job job = Submit("r", /*restart_budget=*/1);
  std::string s = Register("s1", "sft", 2);
  std::string a = Register("a1", "align", 2);
  auto sft = Take(s);
  auto align = Take(a);
  ASSERT_TRUE(Checkpoint(sft[0].start().task_id(), 4, false).ok());
  ASSERT_TRUE(Exit(sft[1].start().task_id(), 3, paft::v1::EXIT_REASON_INFRASTRUCTURE).ok());
  job = Get(job.job_id());
  EXPECT_EQ(job.sft().state(), paft::v1::BRANCH_STATE_RESTARTING);
  EXPECT_EQ(job.sft().reason(), "Infrastructure");
  EXPECT_EQ(job.alignment().state(), paft::v1::BRANCH_STATE_SCHEDULED);  // untouched
  EXPECT_EQ(job.restarts_used(), 1);
  auto stops = Take(s);
  ASSERT_EQ(stops.size(), 1u);
  EXPECT_EQ(stops[0].stop().task_id(), sft[0].start().task_id());
  EXPECT_TRUE(Take(a).empty());

  // The stopped rank exits; its slot frees and the branch's second attempt resumes.
  ASSERT_TRUE(Exit(sft[0].start().task_id(), 0, paft::v1::EXIT_REASON_STOPPED).ok());
  auto restarted = Take(s);
  ASSERT_EQ(restarted.size(), 2u);
  EXPECT_EQ(restarted[0].start().attempt(), 2);
  EXPECT_EQ(restarted[0].start().resume_from(), "/out/ckpt-" + sft[0].start().task_id() + "-4");
  EXPECT_EQ(Get(job.job_id()).sft().state(), paft::v1::BRANCH_STATE_SCHEDULED);

  // Budget spent: the next failure fails the branch and the job, and stops the other branch.
  ASSERT_TRUE(Exit(restarted[0].start().task_id(), -1, paft::v1::EXIT_REASON_SIGNAL).ok());
  job = Get(job.job_id());
  EXPECT_EQ(job.state(), paft::v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.reason(), "SftBranchFailed");
  EXPECT_THAT(job.message(), HasSubstr("restart budget of 1 used up"));
  EXPECT_EQ(job.alignment().state(), paft::v1::BRANCH_STATE_CANCELLED);
  EXPECT_EQ(Take(a).size(), 2u);  // stops for both alignment ranks
}

TEST_F(JobManagerTest, UserErrorFailsWithoutBurningRestarts) {
  Job job = Submit("r", /*restart_budget=*/3);
  std::string s = Register("s1", "sft", 2);
  auto sft = Take(s);
  paft::v1::ReportExitRequest exit;
  exit.set_task_id(sft[0].start().task_id());
  exit.set_exit_code(2);
  exit.set_reason(paft::v1::EXIT_REASON_USER_ERROR);
  exit.set_message("dataset line 3: missing 'completion'");
  ASSERT_TRUE(manager_->ReportExit(exit).ok());
  job = Get(job.job_id());
  EXPECT_EQ(job.state(), paft::v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.restarts_used(), 0);
  EXPECT_EQ(job.sft().reason(), "UserError");
  EXPECT_THAT(job.message(), HasSubstr("missing 'completion'"));
}

TEST_F(JobManagerTest, LostWorkerRestartsTheBranch) {
  Job job = Submit("r", 1);
  std::string s = Register("s1", "sft", 2);
  Take(s);
  clock_.Advance(absl::Seconds(11));
  std::string s2 = Register("s2", "sft", 2);  // a fresh agent, within its lease
  manager_->Tick();
  job = Get(job.job_id());
  EXPECT_EQ(job.restarts_used(), 1);
  EXPECT_EQ(job.sft().attempt(), 2);
  EXPECT_EQ(Take(s2).size(), 2u);
  EXPECT_EQ(registry_->Heartbeat(s, clock_.Now()).code(), absl::StatusCode::kNotFound);
}

TEST_F(JobManagerTest, SilentGangIsRestarted) {
  Job job = Submit("r", 1);
  std::string s = Register("s1", "sft", 2);
  auto sft = Take(s);
  // Progress from every rank keeps the gang alive past the default 30 minutes...
  clock_.Advance(absl::Minutes(20));
  for (const auto& a : sft) ASSERT_TRUE(Progress(a.start().task_id(), 1, 10, 2.0).ok());
  clock_.Advance(absl::Minutes(20));
  ASSERT_TRUE(registry_->Heartbeat(s, clock_.Now()).ok());
  manager_->Tick();
  EXPECT_EQ(Get(job.job_id()).sft().attempt(), 1);
  // ...but one silent rank is enough: rank 0 keeps reporting, rank 1 does not.
  clock_.Advance(absl::Minutes(5));
  ASSERT_TRUE(Progress(sft[0].start().task_id(), 2, 10, 2.0).ok());
  clock_.Advance(absl::Minutes(6));
  ASSERT_TRUE(registry_->Heartbeat(s, clock_.Now()).ok());
  manager_->Tick();
  job = Get(job.job_id());
  EXPECT_EQ(job.sft().state(), paft::v1::BRANCH_STATE_RESTARTING);
  EXPECT_EQ(job.sft().reason(), "NoProgress");
  EXPECT_EQ(job.restarts_used(), 1);
  EXPECT_EQ(Take(s).size(), 2u);  // stops for both ranks
}

TEST_F(JobManagerTest, CancelStopsEverything) {
  Job job = Submit("r");
  std::string s = Register("s1", "sft", 2);
  Take(s);
  paft::v1::CancelJobRequest cancel;
  cancel.set_job_id(job.job_id());
  cancel.set_reason("changed my mind");
  auto cancelled = manager_->CancelJob(cancel);
  ASSERT_TRUE(cancelled.ok());
  EXPECT_EQ(cancelled->state(), paft::v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(cancelled->message(), "changed my mind");
  EXPECT_EQ(cancelled->alignment().state(), paft::v1::BRANCH_STATE_CANCELLED);
  EXPECT_EQ(Take(s).size(), 2u);
  EXPECT_EQ(manager_->CancelJob(cancel).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(JobManagerTest, StateSurvivesARestart) {
  Job job = Submit("r");
  std::string s = Register("s1", "sft", 2);
  auto sft = Take(s);
  ASSERT_TRUE(Checkpoint(sft[0].start().task_id(), 5, false).ok());
  const int64_t seq_before = manager_->EventsAfter(job.job_id(), 0, 1000)->back().seq();

  Open();  // a new coordinator on the same database
  Job after = Get(job.job_id());
  EXPECT_EQ(after.request_id(), "r");
  EXPECT_EQ(after.sft().checkpoint_step(), 5);
  EXPECT_EQ(after.sft().state(), paft::v1::BRANCH_STATE_SCHEDULED);  // awaiting adoption
  // Resubmission after the restart is still idempotent.
  EXPECT_EQ(Submit("r").job_id(), job.job_id());
  // Nobody reports the ranks within the grace period: the branch restarts from its checkpoint,
  // without using the job's restart budget.
  clock_.Advance(absl::Seconds(31));
  manager_->Tick();
  after = Get(job.job_id());
  EXPECT_EQ(after.sft().state(), paft::v1::BRANCH_STATE_RESTARTING);
  EXPECT_EQ(after.sft().reason(), "CoordinatorRestarted");
  EXPECT_EQ(after.restarts_used(), 0);
  auto events = manager_->EventsAfter(job.job_id(), seq_before, 100);
  ASSERT_TRUE(events.ok());
  ASSERT_FALSE(events->empty());
  EXPECT_EQ(events->front().seq(), seq_before + 1);
  // The old ranks are not part of a current gang: a re-registering agent is told to stop them.
  paft::v1::RegisterWorkerRequest again;
  again.set_name("s1");
  again.set_pool("sft");
  again.set_devices(2);
  again.set_address("s1.local");
  again.add_running_task_ids(sft[0].start().task_id());
  auto* running = again.add_running_tasks();
  running->set_task_id(sft[0].start().task_id());
  running->set_device(0);
  auto response = manager_->RegisterWorker(again);
  ASSERT_TRUE(response.ok());
  ASSERT_EQ(response->stop_task_ids_size(), 1);
  EXPECT_EQ(response->stop_task_ids(0), sft[0].start().task_id());
}

TEST_F(JobManagerTest, RunningRanksAreAdoptedAfterARestart) {
  Job job = Submit("r");
  std::string s = Register("s1", "sft", 2);
  auto sft = Take(s);
  Open();  // the coordinator restarts; the agent keeps running both ranks
  paft::v1::RegisterWorkerRequest again;
  again.set_name("s1");
  again.set_pool("sft");
  again.set_devices(2);
  again.set_address("s1.local");
  for (const auto& a : sft) {
    again.add_running_task_ids(a.start().task_id());
    auto* running = again.add_running_tasks();
    running->set_task_id(a.start().task_id());
    running->set_device(a.start().local_rank());
  }
  auto response = manager_->RegisterWorker(again);
  ASSERT_TRUE(response.ok());
  EXPECT_EQ(response->stop_task_ids_size(), 0);
  EXPECT_EQ(registry_->List("sft")[0].busy_devices(), 2);  // the slots are taken again
  // Past the adoption grace, with the agent heartbeating as it would (the lease is 10 s).
  for (int i = 0; i < 7; ++i) {
    clock_.Advance(absl::Seconds(5));
    ASSERT_TRUE(registry_->Heartbeat(response->worker_id(), clock_.Now()).ok());
  }
  manager_->Tick();
  EXPECT_EQ(Get(job.job_id()).sft().attempt(), 1);  // not restarted
  // The adopted ranks finish the branch.
  Complete(sft);
  EXPECT_EQ(Get(job.job_id()).sft().state(), paft::v1::BRANCH_STATE_SUCCEEDED);
}

TEST_F(JobManagerTest, RanksAdoptedFromReportsAreLostIfTheirAgentNeverComesBack) {
  Job job = Submit("r");
  auto sft = Take(Register("s1", "sft", 2));
  ASSERT_EQ(sft.size(), 2u);
  Open();  // the coordinator restarts; both ranks report before (and without) their agent
  for (const auto& a : sft) ASSERT_TRUE(Progress(a.start().task_id(), 4, 10, 1.0).ok());
  clock_.Advance(absl::Seconds(29));
  manager_->Tick();
  EXPECT_EQ(Get(job.job_id()).sft().attempt(), 1);  // within the grace: still theirs
  clock_.Advance(absl::Seconds(2));
  manager_->Tick();
  // The agent never re-registered: its ranks are lost and the branch restarts, here on the
  // only agent of the pool that is left.
  Job after = Get(job.job_id());
  EXPECT_EQ(after.sft().state(), paft::v1::BRANCH_STATE_RESTARTING);
  EXPECT_EQ(after.sft().reason(), "WorkerLost");
  EXPECT_THAT(after.sft().message(), HasSubstr("did not re-register"));
  Take(Register("s2", "sft", 2));
  EXPECT_EQ(Get(job.job_id()).sft().attempt(), 2);
}

TEST_F(JobManagerTest, ListJobsFiltersAndPages) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(Submit("r" + std::to_string(i)).job_id());
    clock_.Advance(absl::Seconds(1));
  }
  paft::v1::CancelJobRequest cancel;
  cancel.set_job_id(ids[0]);
  ASSERT_TRUE(manager_->CancelJob(cancel).ok());
  paft::v1::ListJobsRequest request;
  request.set_page_size(2);
  std::vector<std::string> seen;
  do {
    auto page = manager_->ListJobs(request);
    ASSERT_TRUE(page.ok());
    for (const auto& j : page->jobs()) seen.push_back(j.job_id());
    request.set_page_token(page->next_page_token());
    // A job submitted between pages neither shifts nor repeats what the next pages show.
    if (seen.size() == 2) Submit("late");
  } while (!request.page_token().empty());
  EXPECT_EQ(seen, (std::vector<std::string>{ids[4], ids[3], ids[2], ids[1], ids[0]}));
  paft::v1::ListJobsRequest queued;
  queued.add_states(paft::v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(manager_->ListJobs(queued)->jobs_size(), 1);
  for (const char* garbage : {"garbage", "12", "x.job-1", "12."}) {
    request.set_page_token(garbage);
    EXPECT_EQ(manager_->ListJobs(request).status().code(), absl::StatusCode::kInvalidArgument)
        << garbage;
  }
  // Queue positions follow submission order.
  EXPECT_EQ(Get(ids[1]).queue_position(), 1);
  EXPECT_EQ(Get(ids[4]).queue_position(), 4);
}

TEST_F(JobManagerTest, ImpossibleJobsAreRejectedAtOnce) {
  // Declared pools: sft and align with 4 slots each.
  paft::v1::SubmitJobRequest request;
  request.set_request_id("x");
  *request.mutable_spec() = *ParseJobSpec(kSpec);
  request.mutable_spec()->mutable_sft()->set_pool("nope");
  auto rejected = manager_->SubmitJob(request);
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(rejected.status().message()), HasSubstr("sft.pool: unknown pool 'nope'"));
  *request.mutable_spec() = *ParseJobSpec(kSpec);
  request.mutable_spec()->mutable_alignment()->set_world_size(5);
  rejected = manager_->SubmitJob(request);
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(rejected.status().message()),
              HasSubstr("alignment.world_size: 5 ranks, but pool 'align' can offer at most 4"));
  EXPECT_EQ(manager_->ListJobs({})->jobs_size(), 0);  // nothing stored
  request.mutable_spec()->mutable_alignment()->set_world_size(4);
  EXPECT_TRUE(manager_->SubmitJob(request).ok());  // the same request id, now admissible
}

TEST_F(JobManagerTest, UndeclaredPoolsAreLearntFromAgentsAndRemembered) {
  Open(/*declared_pools=*/false);
  paft::v1::SubmitJobRequest request;
  request.set_request_id("x");
  *request.mutable_spec() = *ParseJobSpec(kSpec);
  auto rejected = manager_->SubmitJob(request);
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(rejected.status().message()),
              HasSubstr("sft.pool: no worker agent of pool 'sft' has registered"));
  Register("s1", "sft", 1);
  Register("s2", "sft", 1);
  Register("a1", "align", 3);
  EXPECT_TRUE(manager_->SubmitJob(request).ok());
  // The capacity is the most slots the pool has offered at once, and survives a restart
  // (when no agent has re-registered yet).
  Open(/*declared_pools=*/false);
  request.set_request_id("y");
  request.mutable_spec()->mutable_sft()->set_world_size(3);
  rejected = manager_->SubmitJob(request);
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(rejected.status().message()),
              HasSubstr("sft.world_size: 3 ranks, but pool 'sft' can offer at most 2"));
  request.mutable_spec()->mutable_sft()->set_world_size(2);
  request.mutable_spec()->mutable_alignment()->set_world_size(3);
  EXPECT_TRUE(manager_->SubmitJob(request).ok());
}

TEST_F(JobManagerTest, CheckpointRegistryAppliesRetentionAndPinsTheFinal) {
  Job job = Submit("r");
  std::string s = Register("s1", "sft", 2);
  auto sft = Take(s);
  const std::string rank0 = sft[0].start().task_id();
  // keep_last defaults to 2.
  for (int64_t step : {2, 4, 6}) {
    ASSERT_TRUE(Progress(rank0, step, 10, 3.0 - step * 0.1).ok());
    ASSERT_TRUE(Checkpoint(rank0, step, false).ok());
  }
  ASSERT_TRUE(Checkpoint(rank0, 10, true).ok());
  paft::v1::ListCheckpointsRequest list;
  list.set_job_id(job.job_id());
  auto live = manager_->ListCheckpoints(list);
  ASSERT_TRUE(live.ok());
  ASSERT_EQ(live->checkpoints_size(), 2);
  EXPECT_EQ(live->checkpoints(0).step(), 6);
  EXPECT_FALSE(live->checkpoints(0).pinned());
  EXPECT_NEAR(live->checkpoints(0).metrics().at("loss"), 2.4, 1e-12);
  EXPECT_EQ(live->checkpoints(0).metrics().at("learning_rate"), 1e-4);
  EXPECT_EQ(live->checkpoints(0).attempt(), 1);
  EXPECT_EQ(live->checkpoints(1).step(), 10);
  EXPECT_TRUE(live->checkpoints(1).pinned());
  EXPECT_TRUE(live->checkpoints(1).final());
  list.set_include_retired(true);
  auto all = manager_->ListCheckpoints(list);
  ASSERT_EQ(all->checkpoints_size(), 4);
  EXPECT_TRUE(all->checkpoints(0).retired());  // step 2
  EXPECT_TRUE(all->checkpoints(1).retired());  // step 4
  // A Checkpoint event carries the record.
  auto events = manager_->EventsAfter(job.job_id(), 0, 100);
  const auto& last = events->back();
  EXPECT_EQ(last.type(), "Checkpoint");
  EXPECT_EQ(last.checkpoint().step(), 10);
  EXPECT_EQ(Metric("paft_checkpoints_total", {{"branch", "sft"}}), 4);
  // The retention survives a restart (it is stored with the checkpoint in one transaction).
  Open();
  list.set_include_retired(false);
  EXPECT_EQ(manager_->ListCheckpoints(list)->checkpoints_size(), 2);
}

TEST_F(JobManagerTest, ProgressGivesEtaEventsAndGauges) {
  Job job = Submit("r");
  std::string s = Register("s1", "sft", 2);
  auto sft = Take(s);
  const std::string rank0 = sft[0].start().task_id();
  uint64_t version = 0;
  ASSERT_TRUE(Progress(rank0, 1, 101, 2.0).ok());
  EXPECT_EQ(Get(job.job_id()).sft().eta_seconds(), 0);  // one point: no rate yet
  clock_.Advance(absl::Seconds(10));
  ASSERT_TRUE(Progress(rank0, 11, 101, 1.5).ok());  // 1 s per step, 90 steps left
  Job now = Get(job.job_id());
  EXPECT_EQ(now.sft().state(), paft::v1::BRANCH_STATE_RUNNING);
  EXPECT_DOUBLE_EQ(now.sft().eta_seconds(), 90.0);
  EXPECT_EQ(now.sft().metrics().at("learning_rate"), 1e-4);
  auto events = manager_->ProgressEvents(job.job_id(), &version);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].type(), "Progress");
  EXPECT_EQ(events[0].branch(), paft::v1::BRANCH_KIND_SFT);
  EXPECT_EQ(events[0].progress().step(), 11);
  EXPECT_EQ(events[0].seq(), manager_->EventsAfter(job.job_id(), 0, 100)->back().seq());
  EXPECT_TRUE(manager_->ProgressEvents(job.job_id(), &version).empty());  // nothing new
  manager_->Tick();
  const std::map<std::string, std::string> labels = {{"job_id", job.job_id()},
                                                     {"branch", "sft"}};
  EXPECT_EQ(Metric("paft_branch_step", labels), 11);
  EXPECT_EQ(Metric("paft_branch_eta_seconds", labels), 90);
  EXPECT_EQ(Metric("paft_branch_loss", labels), 1.5);
  EXPECT_EQ(Metric("paft_branches", {{"branch", "sft"}, {"state", "BRANCH_STATE_RUNNING"}}), 1);
  EXPECT_EQ(Metric("paft_queue_depth", {{"pool", "align"}}), 1);  // alignment waits for devices
  EXPECT_EQ(Metric("paft_pool_slots", {{"pool", "sft"}, {"state", "busy"}}), 2);
  EXPECT_EQ(Metric("paft_workers", {{"pool", "sft"}, {"state", "busy"}}), 1);
  // A branch that stops running drops its series.
  paft::v1::CancelJobRequest cancel;
  cancel.set_job_id(job.job_id());
  ASSERT_TRUE(manager_->CancelJob(cancel).ok());
  manager_->Tick();
  EXPECT_TRUE(std::isnan(Metric("paft_branch_step", labels)));
  EXPECT_EQ(Metric("paft_queue_depth", {{"pool", "align"}}), 0);
}

TEST_F(JobManagerTest, QueueIsPriorityThenFifoAndSurvivesARestart) {
  auto submit = [&](const std::string& id, int priority) {
    paft::v1::SubmitJobRequest request;
    request.set_request_id(id);
    *request.mutable_spec() = *ParseJobSpec(kSpec);
    request.mutable_spec()->set_priority(priority);
    auto job = manager_->SubmitJob(request);
    EXPECT_TRUE(job.ok()) << job.status();
    clock_.Advance(absl::Seconds(1));
    return job->job_id();
  };
  const std::string low1 = submit("low1", 0), high = submit("high", 5), low2 = submit("low2", 0);
  EXPECT_EQ(Get(high).queue_position(), 1);
  EXPECT_EQ(Get(low1).queue_position(), 2);
  EXPECT_EQ(Get(low2).queue_position(), 3);
  Open();  // the order is rebuilt from the store
  EXPECT_EQ(Get(high).queue_position(), 1);
  EXPECT_EQ(Get(low2).queue_position(), 3);
  // One gang's worth of slots per pool: the high-priority job gets them, then low1.
  std::string s = Register("s1", "sft", 2);
  std::string a = Register("a1", "align", 2);
  EXPECT_EQ(Get(high).state(), paft::v1::JOB_STATE_RUNNING);
  EXPECT_EQ(Get(low1).queue_position(), 1);
  EXPECT_EQ(Get(low2).queue_position(), 2);
  Complete(Take(s));
  Complete(Take(a));
  EXPECT_EQ(Get(high).state(), paft::v1::JOB_STATE_MERGING);
  EXPECT_EQ(Get(low1).state(), paft::v1::JOB_STATE_RUNNING);
  EXPECT_EQ(Get(low2).queue_position(), 1);
  EXPECT_EQ(Get(low2).state(), paft::v1::JOB_STATE_QUEUED);
}

TEST_F(JobManagerTest, RanksStoppedByTheirShuttingDownAgentRestartWithoutTheBudget) {
  Job job = Submit("r", /*restart_budget=*/0);
  std::string s = Register("s1", "sft", 2);
  auto sft = Take(s);
  ASSERT_TRUE(Checkpoint(sft[0].start().task_id(), 4, false).ok());
  // The agent stopped rank 0 on its own (SIGTERM to its pod); the trainer checkpointed first.
  ASSERT_TRUE(Exit(sft[0].start().task_id(), 3, paft::v1::EXIT_REASON_STOPPED).ok());
  job = Get(job.job_id());
  EXPECT_EQ(job.sft().state(), paft::v1::BRANCH_STATE_RESTARTING);
  EXPECT_EQ(job.sft().reason(), "WorkerShutdown");
  EXPECT_EQ(job.restarts_used(), 0);  // a budget of 0, and the job goes on
  EXPECT_EQ(job.state(), paft::v1::JOB_STATE_RUNNING);
  EXPECT_EQ(Metric("paft_branch_restarts_total", {{"reason", "WorkerShutdown"}}), 1);
  // Its peer is stopped; once it is gone the branch restarts from step 4 on free slots.
  ASSERT_TRUE(Exit(sft[1].start().task_id(), 0, paft::v1::EXIT_REASON_STOPPED).ok());
  auto restarted = Take(s);
  int starts = 0;
  for (const auto& a : restarted) {
    if (!a.has_start()) continue;
    ++starts;
    EXPECT_EQ(a.start().attempt(), 2);
    EXPECT_EQ(a.start().resume_from(), "/out/ckpt-" + sft[0].start().task_id() + "-4");
  }
  EXPECT_EQ(starts, 2);
}

TEST_F(JobManagerTest, RendezvousPortsOfAdoptedGangsAreNotReused) {
  Job a = Submit("a");
  std::string s1 = Register("s1", "sft", 2);
  auto sft = Take(s1);
  const int port = sft[0].start().master_port();
  EXPECT_EQ(Get(a.job_id()).sft().rendezvous_port(), port);
  Open();  // a new coordinator process: its port counter starts over
  paft::v1::RegisterWorkerRequest again;
  again.set_name("s1");
  again.set_pool("sft");
  again.set_devices(2);
  again.set_address("s1.local");
  for (const auto& t : sft) {
    again.add_running_task_ids(t.start().task_id());
    auto* running = again.add_running_tasks();
    running->set_task_id(t.start().task_id());
    running->set_device(t.start().local_rank());
  }
  ASSERT_TRUE(manager_->RegisterWorker(again).ok());
  Job b = Submit("b");
  std::string s2 = Register("s2", "sft", 2);
  auto starts = Take(s2);
  ASSERT_EQ(starts.size(), 2u);
  EXPECT_NE(starts[0].start().master_port(), port) << "the adopted gang's port was handed out again";
  EXPECT_EQ(Get(b.job_id()).sft().rendezvous_port(), starts[0].start().master_port());
}

}  // namespace
}  // namespace paft::coordinator
