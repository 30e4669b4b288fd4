// The worker agent against a scripted coordinator (a real gRPC server in this process) and
// shell-script trainers: registration and re-registration, a rank's events and exit reaching the
// coordinator, stops, and the failure class of an exit code.
#include "worker/agent.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <condition_variable>
#include <deque>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/file_util.h"
#include "common/grpc_server.h"
#include "paft/v1/worker.grpc.pb.h"
#include "prometheus/registry.h"
#include "tests/testing/temp_dir.h"

namespace paft::worker {
namespace {

using ::testing::HasSubstr;

// Records every call; hands out assignments queued by the test.
class ScriptedCoordinator final : public paft::v1::WorkerService::Service {
 public:
  grpc::Status RegisterWorker(grpc::ServerContext*, const paft::v1::RegisterWorkerRequest* request,
                              paft::v1::RegisterWorkerResponse* response) override {
    std::lock_guard<std::mutex> lock(mu);
    registrations.push_back(*request);
    worker_id = absl::StrCat(request->name(), "-", registrations.size());
    response->set_worker_id(worker_id);
    response->set_lease_ttl_ms(2000);
    response->set_heartbeat_interval_ms(50);
    cv.notify_all();
    return grpc::Status::OK;
  }
  grpc::Status Heartbeat(grpc::ServerContext*, const paft::v1::HeartbeatRequest* request,
                         paft::v1::HeartbeatResponse*) override {
    std::lock_guard<std::mutex> lock(mu);
    ++heartbeats;
    cv.notify_all();
    if (forget || request->worker_id() != worker_id) {
      forget = false;
      worker_id.clear();
      cv.notify_all();
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "not registered");
    }
    return grpc::Status::OK;
  }
  grpc::Status StreamAssignments(grpc::ServerContext* context,
                                 const paft::v1::StreamAssignmentsRequest* request,
                                 grpc::ServerWriter<paft::v1::Assignment>* writer) override {
    std::unique_lock<std::mutex> lock(mu);
    while (!context->IsCancelled() && !shutting_down) {
      if (request->worker_id() != worker_id) {
        return grpc::Status(grpc::StatusCode::NOT_FOUND, "not registered");
      }
      if (!pending.empty()) {
        paft::v1::Assignment next = pending.front();
        pending.pop_front();
        lock.unlock();
        writer->Write(next);
        lock.lock();
        continue;
      }
      cv.wait_for(lock, std::chrono::milliseconds(50));
    }
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "closing");
  }
  grpc::Status ReportProgress(grpc::ServerContext*, const paft::v1::ReportProgressRequest* request,
                              paft::v1::Ack*) override {
    std::lock_guard<std::mutex> lock(mu);
    progress.push_back(*request);
    cv.notify_all();
    return grpc::Status::OK;
  }
  grpc::Status ReportCheckpoint(grpc::ServerContext*,
                                const paft::v1::ReportCheckpointRequest* request,
                                paft::v1::Ack*) override {
    std::lock_guard<std::mutex> lock(mu);
    checkpoints.push_back(*request);
    cv.notify_all();
    return grpc::Status::OK;
  }
  grpc::Status ReportExit(grpc::ServerContext*, const paft::v1::ReportExitRequest* request,
                          paft::v1::Ack*) override {
    std::lock_guard<std::mutex> lock(mu);
    exits.push_back(*request);
    cv.notify_all();
    return grpc::Status::OK;
  }

  // Waits up to 20 s for `done` (evaluated under the lock).
  template <typename Predicate>
  bool WaitUntil(Predicate done) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, std::chrono::seconds(20), done);
  }
  void Send(paft::v1::Assignment assignment) {
    std::lock_guard<std::mutex> lock(mu);
    pending.push_back(std::move(assignment));
    cv.notify_all();
  }

  std::mutex mu;
  std::condition_variable cv;
  std::string worker_id;
  bool forget = false, shutting_down = false;
  int heartbeats = 0;
  std::deque<paft::v1::Assignment> pending;
  std::vector<paft::v1::RegisterWorkerRequest> registrations;
  std::vector<paft::v1::ReportProgressRequest> progress;
  std::vector<paft::v1::ReportCheckpointRequest> checkpoints;
  std::vector<paft::v1::ReportExitRequest> exits;
};

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = StartGrpcServer("127.0.0.1:0", {&coordinator_});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }
  void TearDown() override {
    if (agent_) agent_->Shutdown(absl::Seconds(5));
    {
      std::lock_guard<std::mutex> lock(coordinator_.mu);
      coordinator_.shutting_down = true;
    }
    server_.server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }

  // Starts an agent whose trainer is a shell script with this body; `metrics`: the registry it
  // counts in (null: none given, as an agent started without --metrics_listen).
  void StartAgent(const std::string& trainer_body, prometheus::Registry* metrics = nullptr) {
    const std::string script = dir_.Join("trainer.sh");
    ASSERT_TRUE(WriteFileAtomic(script, "#!/bin/sh\n" + trainer_body).ok());
    ASSERT_EQ(::chmod(script.c_str(), 0755), 0);
    AgentOptions options;
    options.coordinator = absl::StrCat("127.0.0.1:", server_.port);
    options.name = "node-a";
    options.pool = "sft";
    options.devices = 2;
    options.address = "10.1.2.3";
    options.trainer = script;
    options.reconnect_backoff = absl::Milliseconds(50);
    options.progress_interval = absl::ZeroDuration();
    options.metrics = metrics;
    agent_ = std::make_unique<Agent>(options);
    agent_->Start();
    ASSERT_TRUE(coordinator_.WaitUntil([&] { return !coordinator_.worker_id.empty(); }));
  }

  paft::v1::Assignment Start(const std::string& task_id) {
    paft::v1::Assignment a;
    paft::v1::Task* t = a.mutable_start();
    t->set_task_id(task_id);
    t->set_world_size(1);
    t->set_log_dir(dir_.Join("logs"));
    t->set_checkpoint_dir(dir_.Join("checkpoints"));
    return a;
  }

  ScriptedCoordinator coordinator_;
  StartedServer server_;
  testing::TempDir dir_;
  std::unique_ptr<Agent> agent_;
};

constexpr char kEvents[] =
    R"(echo 'PAFT_EVENT {"type":"progress","step":1,"total_steps":2,"loss":1.5,"tokens_per_second":10}'
echo 'a log line'
echo 'PAFT_EVENT {"type":"checkpoint","step":2,"path":"/ckpt/2","size_bytes":10,"digest":"d","final":true}'
echo "rank $RANK of $WORLD_SIZE, task $PAFT_TASK_ID" >&2
exit 0
)";

TEST_F(AgentTest, RegistersThenRunsARankAndReportsWhatItSays) {
  StartAgent(kEvents);
  {
    std::lock_guard<std::mutex> lock(coordinator_.mu);
    ASSERT_EQ(coordinator_.registrations.size(), 1u);
    const auto& r = coordinator_.registrations[0];
    EXPECT_EQ(r.name(), "node-a");
    EXPECT_EQ(r.pool(), "sft");
    EXPECT_EQ(r.devices(), 2);
    EXPECT_EQ(r.address(), "10.1.2.3");
  }
  coordinator_.Send(Start("job.sft.a1.r0"));
  ASSERT_TRUE(coordinator_.WaitUntil([&] { return !coordinator_.exits.empty(); }));
  EXPECT_TRUE(coordinator_.WaitUntil([&] { return coordinator_.heartbeats > 0; }));
  std::lock_guard<std::mutex> lock(coordinator_.mu);
  ASSERT_EQ(coordinator_.progress.size(), 1u);
  EXPECT_EQ(coordinator_.progress[0].task_id(), "job.sft.a1.r0");
  EXPECT_EQ(coordinator_.progress[0].loss(), 1.5);
  ASSERT_EQ(coordinator_.checkpoints.size(), 1u);
  EXPECT_EQ(coordinator_.checkpoints[0].path(), "/ckpt/2");
  EXPECT_TRUE(coordinator_.checkpoints[0].final());
  const auto& exit = coordinator_.exits[0];
  EXPECT_EQ(exit.task_id(), "job.sft.a1.r0");
  EXPECT_EQ(exit.exit_code(), 0);
  EXPECT_EQ(exit.reason(), paft::v1::EXIT_REASON_COMPLETED);
  // Its log holds its output, the environment torchrun would give it included.
  const std::string log = *ReadFileToString(dir_.Join("logs/rank-0.log"));
  EXPECT_THAT(log, HasSubstr("a log line"));
  EXPECT_THAT(log, HasSubstr("rank 0 of 1, task job.sft.a1.r0"));
}

// A rejected trainer line is counted and the rank goes on, whether the agent was given a metrics
// registry or not (an agent without one once crashed on its first rejected line).
TEST_F(AgentTest, RejectedTrainerLinesAreCountedWithAndWithoutAMetricsRegistry) {
  constexpr char kBadLines[] =
      R"(echo 'PAFT_EVENT {"type":"checkpoint","step":-1,"path":"/ckpt/x"}'
echo 'PAFT_EVENT not json'
echo 'PAFT_EVENT {"type":"progress","step":1,"total_steps":1,"loss":0.5,"tokens_per_second":1}'
exit 0
)";
  for (bool with_registry : {false, true}) {
    SCOPED_TRACE(with_registry ? "with a registry" : "without a registry");
    prometheus::Registry registry;
    StartAgent(kBadLines, with_registry ? &registry : nullptr);
    coordinator_.Send(Start(with_registry ? "job.sft.a1.r1" : "job.sft.a1.r0"));
    const size_t exits = with_registry ? 2 : 1;
    ASSERT_TRUE(coordinator_.WaitUntil([&] { return coordinator_.exits.size() == exits; }));
    {
      std::lock_guard<std::mutex> lock(coordinator_.mu);
      EXPECT_EQ(coordinator_.exits.back().reason(), paft::v1::EXIT_REASON_COMPLETED);
      EXPECT_EQ(coordinator_.progress.back().loss(), 0.5);
    }
    if (with_registry) {
      double rejected = 0;
      for (const auto& family : registry.Collect()) {
        if (family.name != "paft_agent_trainer_lines_rejected_total") continue;
        for (const auto& metric : family.metric) rejected += metric.counter.value;
      }
      EXPECT_EQ(rejected, 2);
    }
    agent_->Shutdown(absl::Seconds(5));
    agent_.reset();
    std::lock_guard<std::mutex> lock(coordinator_.mu);
    coordinator_.worker_id.clear();
  }
}

TEST_F(AgentTest, AStopEndsTheRankAsStopped) {
  StartAgent(R"(trap 'exit 143' TERM
echo 'PAFT_EVENT {"type":"progress","step":1,"total_steps":1000,"loss":2,"tokens_per_second":1}'
while :; do sleep 0.05; done
)");
  coordinator_.Send(Start("job.sft.a1.r1"));
  ASSERT_TRUE(coordinator_.WaitUntil([&] { return !coordinator_.progress.empty(); }));
  paft::v1::Assignment stop;
  stop.mutable_stop()->set_task_id("job.sft.a1.r1");
  stop.mutable_stop()->set_grace_period_ms(5000);
  coordinator_.Send(stop);
  ASSERT_TRUE(coordinator_.WaitUntil([&] { return !coordinator_.exits.empty(); }));
  std::lock_guard<std::mutex> lock(coordinator_.mu);
  EXPECT_EQ(coordinator_.exits[0].reason(), paft::v1::EXIT_REASON_STOPPED);
  EXPECT_EQ(coordinator_.exits[0].exit_code(), 143);
}

TEST_F(AgentTest, AnExitCodeArrivesAsItsFailureClassWithTheTrainersMessage) {
  StartAgent(
      R"(echo 'PAFT_EVENT {"type":"error","message":"not enough free space for a checkpoint in /ckpt: 1 bytes free, 9 needed"}'
exit 5
)");
  coordinator_.Send(Start("job.sft.a1.r0"));
  ASSERT_TRUE(coordinator_.WaitUntil([&] { return !coordinator_.exits.empty(); }));
  std::lock_guard<std::mutex> lock(coordinator_.mu);
  EXPECT_EQ(coordinator_.exits[0].reason(), paft::v1::EXIT_REASON_DISK_FULL);
  EXPECT_EQ(coordinator_.exits[0].message(),
            "not enough free space for a checkpoint in /ckpt: 1 bytes free, 9 needed");
}

// A trainer whose last words are not UTF-8 (binary noise, or a log tail cut inside a character):
// the exit report still arrives, the stray bytes replaced, so the rank's slot is freed.
TEST_F(AgentTest, AnExitReportArrivesWhateverBytesTheTrainerLeftInItsLog) {
  StartAgent("printf 'failed: \\377\\376 caf\\303\\251 \\344\\270' >&2\nexit 3\n");
  coordinator_.Send(Start("job.sft.a1.r0"));
  ASSERT_TRUE(coordinator_.WaitUntil([&] { return !coordinator_.exits.empty(); }));
  std::lock_guard<std::mutex> lock(coordinator_.mu);
  EXPECT_EQ(coordinator_.exits[0].reason(), paft::v1::EXIT_REASON_INFRASTRUCTURE);
  EXPECT_EQ(coordinator_.exits[0].message(),
            "failed: \xEF\xBF\xBD\xEF\xBF\xBD caf\xC3\xA9 \xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST_F(AgentTest, ReRegistersWithItsRunningRanksWhenForgotten) {
  StartAgent("trap 'exit 143' TERM\nwhile :; do sleep 0.05; done\n");
  coordinator_.Send(Start("job.sft.a1.r0"));
  // The rank is running once its log exists; then the coordinator forgets the agent.
  for (int i = 0; i < 200 && !PathExists(dir_.Join("logs/rank-0.log")); ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  absl::SleepFor(absl::Milliseconds(100));
  {
    std::lock_guard<std::mutex> lock(coordinator_.mu);
    coordinator_.forget = true;
  }
  ASSERT_TRUE(coordinator_.WaitUntil([&] { return coordinator_.registrations.size() >= 2; }));
  std::lock_guard<std::mutex> lock(coordinator_.mu);
  const auto& again = coordinator_.registrations[1];
  ASSERT_EQ(again.running_task_ids_size(), 1);
  EXPECT_EQ(again.running_task_ids(0), "job.sft.a1.r0");
  ASSERT_EQ(again.running_tasks_size(), 1);
  EXPECT_EQ(again.running_tasks(0).device(), 0);
}

}  // namespace
}  // namespace paft::worker
