// The end-to-end fixture: starts the real binaries as processes (merger, coordinator, one agent
// per pool) on free ports, with helpers to submit and follow jobs through the real client.
#ifndef PAFT_TESTS_INTEGRATION_END_TO_END_FIXTURE_H_
#define PAFT_TESTS_INTEGRATION_END_TO_END_FIXTURE_H_

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>
#include <sys/wait.h>

#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/dtype.h"
#include "common/file_util.h"
#include "common/grpc_server.h"
#include "common/safetensors.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "paft/v1/job.grpc.pb.h"
#include "tests/testing/process.h"
#include "tests/testing/temp_dir.h"

namespace paft::e2e {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::ChildProcess;

inline std::vector<float> Floats(const SafetensorsModel& model, const std::string& name) {
  auto found = model.Find(name);
  EXPECT_TRUE(found.ok()) << found.status();
  std::vector<float> out(found->second->numel());
  auto data = found->first->Data(*found->second);
  for (size_t i = 0; i < out.size(); ++i) out[i] = LoadAsFloat(found->second->dtype, data.data(), i);
  return out;
}

// The job id in `paftctl --json submit` output ("" if absent).
inline std::string JobIdOf(const std::string& json_output) {
  const auto pos = json_output.find("\"job_id\": \"");
  if (pos == std::string::npos) return "";
  const auto start = pos + 11;
  return json_output.substr(start, json_output.find('"', start) - start);
}

class EndToEndTest : public ::testing::Test {
 protected:
  // How the agents run ranks: the placeholder trainer here; the real one in a subclass.
  virtual std::vector<std::string> TrainerFlags() {
    return {std::string("--trainer=") + PAFT_PLACEHOLDER_TRAINER};
  }
  virtual void PrepareBase() {}
  // Agents started: name, pool, device slots.
  struct AgentSpec {
    std::string name, pool;
    int devices;
  };
  virtual std::vector<AgentSpec> Agents() { return {{"w-sft", "sft", 2}, {"w-align", "align", 2}}; }
  virtual std::vector<std::string> ExtraCoordinatorFlags() { return {}; }

  void SetUp() override {
    root_ = dir_.path();
    std::string output;
    ASSERT_EQ(testing::RunCommand({PAFT_MAKE_TOY_MODEL, "--out=" + root_ + "/models/base",
                                   "--vocab_size=64", "--hidden_size=32", "--intermediate_size=64",
                                   "--layers=2", "--heads=4", "--kv_heads=2"},
                                  &output),
              0)
        << output;
    PrepareBase();
    ASSERT_TRUE(MakeDirs(root_ + "/data").ok());
    ASSERT_TRUE(WriteFileAtomic(root_ + "/data/sft.jsonl",
                                "{\"prompt\": \"1+1=\", \"completion\": \"2\"}\n").ok());
    ASSERT_TRUE(WriteFileAtomic(root_ + "/data/pref.jsonl",
                                "{\"prompt\": \"hi\", \"chosen\": \"hello\", \"rejected\": \"go\"}\n")
                    .ok());

    merger_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{PAFT_MERGER, "serve", "--plaintext", "--listen=127.0.0.1:0",
                                 "--metrics_listen=127.0.0.1:0",
                                 "--port_file=" + root_ + "/merger.ports"},
        std::vector<std::string>{}, root_ + "/merger.log");
    auto merger_ports = testing::WaitForPortFile(root_ + "/merger.ports", absl::Seconds(20));
    ASSERT_TRUE(merger_ports.has_value()) << "merger did not start; see " << root_;
    merger_ports_ = *merger_ports;

    // A fixed port, so that a restarted coordinator is found at the same address.
    coordinator_argv_ = {PAFT_COORDINATOR,
                         "--plaintext",
                         absl::StrCat("--listen=127.0.0.1:", testing::FreePort()),
                         "--metrics_listen=127.0.0.1:0",
                         "--state_db=" + root_ + "/state.db",
                         absl::StrCat("--merger=127.0.0.1:", merger_ports_["grpc"]),
                         "--port_file=" + root_ + "/coordinator.ports",
                         "--lease_ttl=5s",
                         "--heartbeat_interval=500ms",
                         "--tick_interval=100ms",
                         "--adoption_grace=10s",
                         "--storage_roots=" + root_,
                         // c10d ports of its own, apart from other tests' clusters (29500 up).
                         absl::StrCat("--rendezvous_port_base=", 10000 + getpid() % 80 * 100)};
    for (const auto& flag : ExtraCoordinatorFlags()) coordinator_argv_.push_back(flag);
    coordinator_ = std::make_unique<ChildProcess>(coordinator_argv_, std::vector<std::string>{},
                                                  root_ + "/coordinator.log");
    auto ports = testing::WaitForPortFile(root_ + "/coordinator.ports", absl::Seconds(20));
    ASSERT_TRUE(ports.has_value()) << "coordinator did not start";
    coordinator_ports_ = *ports;
    address_ = absl::StrCat("127.0.0.1:", coordinator_ports_["grpc"]);

    const auto agents = Agents();
    for (const auto& agent : agents) {
      std::vector<std::string> argv = {PAFT_WORKER,
                                       "--coordinator=" + address_,
                                       "--name=" + agent.name,
                                       "--pool=" + agent.pool,
                                       absl::StrCat("--devices=", agent.devices),
                                       "--address=127.0.0.1",
                                       "--metrics_listen=127.0.0.1:0",
                                       "--port_file=" + root_ + "/" + agent.name + ".ports"};
      for (const auto& flag : TrainerFlags()) argv.push_back(flag);
      workers_.push_back(std::make_unique<ChildProcess>(
          // Every placeholder trainer first prints malformed, unknown and over-long events: the
          // agents must count them and go on (the jobs still succeed, fail or stop as they
          // would).
          argv,
          std::vector<std::string>{"PAFT_PLACEHOLDER_STEP_MS=20", "PAFT_PLACEHOLDER_HOSTILE=1"},
          root_ + "/" + agent.name + ".log"));
      worker_names_.push_back(agent.name);
    }
    // Wait until the agents have registered (they load LibTorch first, which takes a moment).
    auto stub = v1::JobService::NewStub(MakeChannel(address_));
    const int expected = static_cast<int>(agents.size());
    int registered = 0;
    for (int i = 0; i < 300 && registered < expected; ++i) {
      grpc::ClientContext context;
      v1::ListWorkersResponse workers;
      if (stub->ListWorkers(&context, {}, &workers).ok()) registered = workers.workers_size();
      if (registered < expected) absl::SleepFor(absl::Milliseconds(50));
    }
    ASSERT_EQ(registered, expected) << "the agents did not register";
  }

  v1::Job GetJob(const std::string& job_id) {
    auto stub = v1::JobService::NewStub(MakeChannel(address_));
    grpc::ClientContext context;
    v1::GetJobRequest request;
    request.set_job_id(job_id);
    v1::Job job;
    EXPECT_TRUE(stub->GetJob(&context, request, &job).ok());
    return job;
  }

  // Polls until `done(job)` or `timeout`; the last job seen.
  template <typename Predicate>
  v1::Job WaitFor(const std::string& job_id, Predicate done,
                  absl::Duration timeout = absl::Seconds(30)) {
    const absl::Time deadline = absl::Now() + timeout;
    v1::Job job = GetJob(job_id);
    while (!done(job) && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(20));
      job = GetJob(job_id);
    }
    return job;
  }

  std::vector<v1::JobEvent> Events(const std::string& job_id) {
    auto stub = v1::JobService::NewStub(MakeChannel(address_));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::WatchJobRequest request;
    request.set_job_id(job_id);
    auto reader = stub->WatchJob(&context, request);
    std::vector<v1::JobEvent> events;
    v1::JobEvent event;
    while (reader->Read(&event)) events.push_back(event);
    return events;
  }

  // Submits with paftctl --json; the job id.
  std::string Submit(const std::string& spec_path) {
    std::string output;
    EXPECT_EQ(testing::RunCommand({PAFTCTL, "--coordinator=" + address_, "--json", "submit",
                                   spec_path},
                                  &output),
              0)
        << output;
    return JobIdOf(output);
  }

  // Trainer processes of a job (all branches and attempts), or of a task id prefix.
  static std::vector<pid_t> Trainers(const std::string& task_prefix) {
    return testing::ProcessesWithEnv("PAFT_TASK_ID=" + task_prefix);
  }

  void TearDown() override {
    // Every component drains on SIGTERM and exits 0.
    std::vector<ChildProcess*> all;
    for (auto& w : workers_) all.push_back(w.get());
    if (coordinator_) all.push_back(coordinator_.get());
    if (merger_) all.push_back(merger_.get());
    for (auto* p : all) p->Signal(SIGTERM);
    for (auto* p : all) {
      auto status = p->Wait(absl::Seconds(20));
      ASSERT_TRUE(status.has_value()) << "a component did not stop on SIGTERM";
      EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << "status " << *status;
    }
  }

  std::string WriteSpec(const std::string& name, int sft_world_size, int steps = 6) {
    const std::string path = root_ + "/" + name + ".yaml";
    EXPECT_TRUE(WriteFileAtomic(path, absl::StrCat(R"(
name: )", name, R"(
base_model: models/base
output_dir: jobs/)", name, R"(
restart_budget: 2
sft:
  pool: sft
  world_size: )", sft_world_size, R"(
  dataset: {path: data/sft.jsonl}
  max_steps: )", steps, R"(
  checkpoint: {every_steps: 3}
alignment:
  pool: align
  world_size: 2
  dataset: {path: data/pref.jsonl}
  dpo: {beta: 0.1}
  max_steps: )", steps == 6 ? 4 : steps, R"(
merge:
  method: ties
  normalize: true
  sft: {density: 1.0}
  alignment: {density: 1.0}
)")).ok());
    return path;
  }

  testing::TempDir dir_;
  std::string root_;
  std::string address_;
  std::map<std::string, int> merger_ports_, coordinator_ports_;
  std::unique_ptr<ChildProcess> merger_, coordinator_;
  std::vector<std::string> coordinator_argv_;
  std::vector<std::unique_ptr<ChildProcess>> workers_;
  std::vector<std::string> worker_names_;  // parallel to workers_
};

}  // namespace paft::e2e

#endif  // PAFT_TESTS_INTEGRATION_END_TO_END_FIXTURE_H_
