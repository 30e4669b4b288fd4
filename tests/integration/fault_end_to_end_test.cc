// Failures with real processes: lost agents, hung and misbehaving trainers.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "absl/strings/numbers.h"
#include "absl/strings/ascii.h"

#include "tests/integration/end_to_end_fixture.h"

namespace paft::e2e {
namespace {

class FaultEndToEndTest : public EndToEndTest {
 protected:
  std::vector<AgentSpec> Agents() override {
    return {{"w-sft", "sft", 2}, {"w-sft2", "sft", 2}, {"w-align", "align", 2}};
  }
  std::vector<std::string> ExtraCoordinatorFlags() override {
    // A lost agent is noticed (lease) before its silence would be (progress timeout).
    return {"--lease_ttl=2s", "--progress_timeout=6s", "--stop_grace_period=5s"};
  }

  // The first line of a rank's log that mentions the steps it runs ("steps S..T").
  std::string StepsLine(const std::string& log_path) {
    auto text = ReadFileToString(log_path);
    if (!text.ok()) return "";
    const auto pos = text->find("steps ");
    return pos == std::string::npos ? "" : text->substr(pos, text->find('\n', pos) - pos);
  }
};

TEST_F(FaultEndToEndTest, AgentKilledMidBranchRestartsFromItsCheckpoint) {
  const std::string job_id = Submit(WriteSpec("agentkill", 2, 300));
  ASSERT_FALSE(job_id.empty());
  v1::Job job = WaitFor(job_id, [](const v1::Job& j) {
    return j.sft().state() == v1::BRANCH_STATE_RUNNING && j.sft().checkpoint_step() >= 6;
  });
  ASSERT_GE(job.sft().checkpoint_step(), 6) << "the sft branch made no checkpoint";
  ASSERT_EQ(job.sft().workers_size(), 2);
  // The agent running the sft gang (both ranks on one agent: fewest workers first).
  const std::string victim_id = job.sft().workers(0);
  size_t victim = workers_.size();
  for (size_t i = 0; i < worker_names_.size(); ++i) {
    if (victim_id.rfind(worker_names_[i] + "-", 0) == 0) victim = i;
  }
  ASSERT_LT(victim, workers_.size()) << victim_id;
  const std::string attempt1 = job_id + ".sft.a1.";
  ASSERT_EQ(Trainers(attempt1).size(), 2u);
  workers_[victim]->Signal(SIGKILL);
  ASSERT_TRUE(workers_[victim]->Wait(absl::Seconds(10)).has_value());
  workers_.erase(workers_.begin() + victim);
  worker_names_.erase(worker_names_.begin() + victim);
  // Its trainers die with it (they would otherwise hold their devices, unseen).
  for (int i = 0; i < 100 && !Trainers(attempt1).empty(); ++i) absl::SleepFor(absl::Milliseconds(50));
  EXPECT_TRUE(Trainers(attempt1).empty());

  std::string output;
  ASSERT_EQ(testing::RunCommand({PAFTCTL, "--coordinator=" + address_, "--progress_every_s=0",
                                 "watch", job_id},
                                &output),
            0)
      << output << *ReadFileToString(root_ + "/coordinator.log");
  // Live progress lines (not a terminal: printed as lines) with throughput and ETA.
  EXPECT_THAT(output, HasSubstr("tok/s  ETA "));
  job = GetJob(job_id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job.sft().attempt(), 2);
  EXPECT_EQ(job.alignment().attempt(), 1) << "only the failed branch restarts";
  EXPECT_EQ(job.restarts_used(), 1);
  EXPECT_THAT(output, HasSubstr("sft RESTARTING"));
  EXPECT_THAT(output, HasSubstr("WorkerLost")) << output;
  bool restart_event = false;
  for (const auto& e : Events(job_id)) {
    restart_event = restart_event || (e.branch_state() == v1::BRANCH_STATE_RESTARTING &&
                                      e.reason() == "WorkerLost");
  }
  EXPECT_TRUE(restart_event);
  // Attempt 2 resumed from the checkpoint instead of starting over.
  const std::string steps = StepsLine(root_ + "/jobs/agentkill/sft/logs/attempt-2/rank-0.log");
  EXPECT_THAT(steps, Not(HasSubstr("steps 0..")));
  EXPECT_THAT(steps, HasSubstr("..300"));
}

TEST_F(FaultEndToEndTest, HungTrainerIsDetectedAndRestarted) {
  const std::string job_id = Submit(WriteSpec("hung", 2, 300));
  ASSERT_FALSE(job_id.empty());
  v1::Job job = WaitFor(job_id, [](const v1::Job& j) {
    return j.alignment().state() == v1::BRANCH_STATE_RUNNING && j.alignment().step() >= 3;
  });
  ASSERT_EQ(job.alignment().state(), v1::BRANCH_STATE_RUNNING);
  // Rank 1 of the alignment gang hangs: stopped, it neither trains nor reports.
  auto rank1 = Trainers(job_id + ".alignment.a1.r1");
  ASSERT_EQ(rank1.size(), 1u);
  ASSERT_EQ(::kill(rank1[0], SIGSTOP), 0);
  job = WaitFor(
      job_id, [](const v1::Job& j) { return j.alignment().attempt() >= 2; }, absl::Seconds(30));
  EXPECT_EQ(job.alignment().attempt(), 2);
  std::string output;
  ASSERT_EQ(testing::RunCommand({PAFTCTL, "--coordinator=" + address_, "watch", job_id}, &output),
            0)
      << output << *ReadFileToString(root_ + "/coordinator.log");
  job = GetJob(job_id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job.sft().attempt(), 1);
  EXPECT_THAT(output, HasSubstr("alignment RESTARTING"));
  EXPECT_THAT(output, HasSubstr("NoProgress"));
  EXPECT_TRUE(Trainers(job_id + ".").empty());  // the stopped rank did not linger
}

// The same flow with the real trainer (paft-worker train): LoRA branches on a toy model with a

// A trainer that leaves processes behind when it exits: one in its process group (killed by the
// agent, as it would hold a device) and one that left the group with stdout still open (its
// output is drained a while, then the exit is reported anyway: the slot must not stay busy).
class LeakyTrainerEndToEndTest : public EndToEndTest {
 protected:
  std::vector<std::string> TrainerFlags() override {
    const std::string script = root_ + "/leaky-trainer.sh";
    EXPECT_TRUE(WriteFileAtomic(script, absl::StrCat(R"(#!/bin/sh
sleep 120 &
echo $! > ")", root_, R"(/in-group.$PAFT_TASK_ID"
setsid sleep 120 &
echo $! > ")", root_, R"(/outside.$PAFT_TASK_ID"
exec )", PAFT_PLACEHOLDER_TRAINER, R"( "$@"
)")).ok());
    EXPECT_EQ(::chmod(script.c_str(), 0755), 0);
    return {"--trainer=" + script};
  }
  void TearDown() override {
    for (pid_t pid : Pids("outside.")) ::kill(pid, SIGKILL);
    EndToEndTest::TearDown();
  }
  std::vector<pid_t> Pids(const std::string& prefix) {
    std::vector<pid_t> pids;
    auto names = ListDir(root_);
    if (!names.ok()) return pids;
    for (const auto& name : *names) {
      if (name.rfind(prefix, 0) != 0) continue;
      auto text = ReadFileToString(root_ + "/" + name);
      int pid = 0;
      if (text.ok() && absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &pid)) {
        pids.push_back(pid);
      }
    }
    return pids;
  }
  // Alive and not a zombie.
  static bool Running(pid_t pid) {
    auto stat = ReadFileToString(absl::StrCat("/proc/", pid, "/stat"));
    if (!stat.ok()) return false;
    const auto close = stat->rfind(')');
    return close != std::string::npos && close + 2 < stat->size() && (*stat)[close + 2] != 'Z';
  }
};

TEST_F(LeakyTrainerEndToEndTest, LeftoversAreKilledAndDoNotHoldTheSlot) {
  const std::string job_id = Submit(WriteSpec("leaky", 2));
  ASSERT_FALSE(job_id.empty());
  const v1::Job job = WaitFor(
      job_id, [](const v1::Job& j) { return j.state() == v1::JOB_STATE_SUCCEEDED; },
      absl::Seconds(90));
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED)
      << *ReadFileToString(root_ + "/coordinator.log");
  const auto in_group = Pids("in-group.");
  const auto outside = Pids("outside.");
  EXPECT_EQ(in_group.size(), 4u);  // 2 ranks per branch
  EXPECT_EQ(outside.size(), 4u);
  for (pid_t pid : in_group) EXPECT_FALSE(Running(pid)) << pid << " outlived its trainer";
  for (pid_t pid : outside) EXPECT_TRUE(Running(pid)) << pid << " is not the agent's to kill";
  const std::string agent_log = *ReadFileToString(root_ + "/w-sft.log");
  EXPECT_THAT(agent_log, HasSubstr("no longer read"));
}

// An unreachable merger (it accepts connections and never answers) holds each merge call for its
// whole deadline. The control loop must not wait for it: a lost agent is still noticed within its
// lease while a merge call hangs.
class UnreachableMergerEndToEndTest : public EndToEndTest {
 protected:
  std::vector<std::string> ExtraCoordinatorFlags() override {
    blackhole_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(addr);
    EXPECT_EQ(::bind(blackhole_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(::listen(blackhole_, 16), 0);  // the kernel completes handshakes; nobody answers
    EXPECT_EQ(::getsockname(blackhole_, reinterpret_cast<sockaddr*>(&addr), &length), 0);
    return {absl::StrCat("--merger=127.0.0.1:", ntohs(addr.sin_port)), "--lease_ttl=2s"};
  }
  void TearDown() override {
    EndToEndTest::TearDown();
    if (blackhole_ >= 0) ::close(blackhole_);
  }
  int blackhole_ = -1;
};

TEST_F(UnreachableMergerEndToEndTest, ALostAgentIsNoticedWhileAMergeCallHangs) {
  const std::string job_id = Submit(WriteSpec("stuck", 2));
  ASSERT_FALSE(job_id.empty());
  const v1::Job merging = WaitFor(
      job_id, [](const v1::Job& j) { return j.state() == v1::JOB_STATE_MERGING; });
  ASSERT_EQ(merging.state(), v1::JOB_STATE_MERGING);
  absl::SleepFor(absl::Seconds(1));  // the first merge call is now waiting on the blackhole
  workers_[0]->Signal(SIGKILL);
  ASSERT_TRUE(workers_[0]->Wait(absl::Seconds(10)).has_value());
  workers_.erase(workers_.begin());
  worker_names_.erase(worker_names_.begin());
  const absl::Time killed = absl::Now();
  auto stub = v1::JobService::NewStub(MakeChannel(address_));
  int registered = 2;
  while (registered > 1 && absl::Now() - killed < absl::Seconds(20)) {
    grpc::ClientContext context;
    v1::ListWorkersResponse workers;
    ASSERT_TRUE(stub->ListWorkers(&context, {}, &workers).ok());
    registered = workers.workers_size();
    if (registered > 1) absl::SleepFor(absl::Milliseconds(50));
  }
  const absl::Duration noticed = absl::Now() - killed;
  EXPECT_EQ(registered, 1);
  // The lease (2 s) and a tick; a control loop waiting on the merge call would take its whole
  // 10 s deadline.
  EXPECT_LT(noticed, absl::Seconds(6)) << "the lost agent was noticed after " << noticed;
  EXPECT_EQ(GetJob(job_id).state(), v1::JOB_STATE_MERGING);  // still retrying, not failed
}

}  // namespace
}  // namespace paft::e2e
