// Starts the real binaries as processes (merger, coordinator, one agent per pool) on free ports
// and drives a job to SUCCEEDED through the real client, paftctl.
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

namespace paft {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::ChildProcess;


std::vector<float> Floats(const SafetensorsModel& model, const std::string& name) {
  auto found = model.Find(name);
  EXPECT_TRUE(found.ok()) << found.status();
  std::vector<float> out(found->second->numel());
  auto data = found->first->Data(*found->second);
  for (size_t i = 0; i < out.size(); ++i) out[i] = LoadAsFloat(found->second->dtype, data.data(), i);
  return out;
}

// The job id in `paftctl --json submit` output ("" if absent).
std::string JobIdOf(const std::string& json_output) {
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
                         "--storage_roots=" + root_};
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
          // In the main test every trainer first prints malformed, unknown and over-long
          // events: the agents must count them and go on (the job still succeeds).
          argv,
          std::vector<std::string>{
              "PAFT_PLACEHOLDER_STEP_MS=20",
              std::string("PAFT_PLACEHOLDER_HOSTILE=") +
                  (std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) ==
                           "JobRunsToSucceededAndTheMergeIsRight"
                       ? "1"
                       : "0")},
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

TEST_F(EndToEndTest, JobRunsToSucceededAndTheMergeIsRight) {
  std::string output;
  const int code = testing::RunCommand(
      {PAFTCTL, "--coordinator=" + address_, "submit", WriteSpec("demo", 2), "--watch"}, &output);
  ASSERT_EQ(code, 0) << output;
  EXPECT_THAT(output, HasSubstr("SUCCEEDED"));
  EXPECT_THAT(output, HasSubstr("merged model: " + root_ + "/jobs/demo/merged"));
  EXPECT_THAT(output, HasSubstr("sft RUNNING"));
  EXPECT_THAT(output, HasSubstr("alignment SUCCEEDED"));

  auto stub = v1::JobService::NewStub(MakeChannel(address_));
  grpc::ClientContext context;
  v1::ListJobsResponse jobs;
  ASSERT_TRUE(stub->ListJobs(&context, {}, &jobs).ok());
  ASSERT_EQ(jobs.jobs_size(), 1);
  const v1::Job& job = jobs.jobs(0);
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job.sft().step(), 6);
  EXPECT_EQ(job.sft().checkpoint_step(), 6);
  EXPECT_EQ(job.alignment().checkpoint_step(), 4);
  grpc::ClientContext context2;
  v1::ListCheckpointsRequest list_checkpoints;
  list_checkpoints.set_job_id(job.job_id());
  v1::ListCheckpointsResponse checkpoints;
  ASSERT_TRUE(stub->ListCheckpoints(&context2, list_checkpoints, &checkpoints).ok());
  EXPECT_EQ(checkpoints.checkpoints_size(), 3);  // sft 3 and 6, alignment 4
  // Each rank's output is kept with the job, and served by the coordinator.
  EXPECT_TRUE(IsRegularFile(root_ + "/jobs/demo/sft/logs/attempt-1/rank-1.log"));
  std::string logs;
  EXPECT_EQ(testing::RunCommand({PAFTCTL, "--coordinator=" + address_, "logs", job.job_id(), "sft",
                                 "--rank=1"},
                                &logs),
            0)
      << logs;
  EXPECT_THAT(logs, HasSubstr("placeholder-trainer: " + job.job_id() + ".sft.a1.r1 rank 1/2"));
  EXPECT_THAT(logs, HasSubstr("\"step\":6"));
  logs.clear();
  EXPECT_EQ(testing::RunCommand({PAFTCTL, "--coordinator=" + address_, "logs", job.job_id(),
                                 "alignment", "--rank=2"},
                                &logs),
            3);
  EXPECT_THAT(logs, HasSubstr("rank: the alignment branch has ranks 0..1, got 2"));
  // The stored events, listed.
  std::string events;
  EXPECT_EQ(testing::RunCommand({PAFTCTL, "--coordinator=" + address_, "events", job.job_id()},
                                &events),
            0);
  EXPECT_THAT(events, HasSubstr("   1  "));
  EXPECT_THAT(events, HasSubstr("job SUCCEEDED"));
  EXPECT_THAT(events, HasSubstr("FinalCheckpoint"));

  // The merged folder is a loadable HF folder, and its values are TIES (density 1, normalize)
  // of the two final checkpoints, computed here independently.
  const std::string merged = job.merged_model_path();
  EXPECT_TRUE(IsRegularFile(merged + "/config.json"));
  auto base = SafetensorsModel::Open(root_ + "/models/base");
  auto sft = SafetensorsModel::Open(job.sft().checkpoint_path());
  auto align = SafetensorsModel::Open(job.alignment().checkpoint_path());
  auto out = SafetensorsModel::Open(merged);
  ASSERT_TRUE(base.ok() && sft.ok() && align.ok() && out.ok()) << out.status();
  EXPECT_EQ((*out)->names(), (*base)->names());
  int64_t differing = 0;
  for (const std::string& name : (*base)->names()) {
    auto b = Floats(**base, name), s = Floats(**sft, name), a = Floats(**align, name),
         m = Floats(**out, name);
    for (size_t i = 0; i < b.size(); ++i) {
      const double d1 = s[i] - b[i], d2 = a[i] - b[i];
      const bool positive = d1 + d2 >= 0;  // mergekit: a tie elects +
      double sum = 0, count = 0;
      for (double d : {d1, d2}) {
        if (d != 0 && (d > 0) == positive) {
          sum += d;
          count += 1;
        }
      }
      const float expected = Bf16ToFloat(FloatToBf16(static_cast<float>(b[i] + (count ? sum / count : 0))));
      ASSERT_NEAR(m[i], expected, std::fabs(expected) * 0x1p-7 + 1e-7) << name << "[" << i << "]";
      differing += m[i] != b[i];
    }
  }
  EXPECT_GT(differing, 0);

  // Health and metrics of both servers.
  for (int port : {coordinator_ports_["grpc"], merger_ports_["grpc"]}) {
    auto health = grpc::health::v1::Health::NewStub(MakeChannel(absl::StrCat("127.0.0.1:", port)));
    grpc::ClientContext c;
    grpc::health::v1::HealthCheckResponse response;
    ASSERT_TRUE(health->Check(&c, {}, &response).ok());
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  }
  auto coordinator_metrics = testing::HttpGet(coordinator_ports_["metrics"], "/metrics");
  ASSERT_TRUE(coordinator_metrics.has_value());
  EXPECT_THAT(*coordinator_metrics, HasSubstr("paft_jobs_submitted_total 1"));
  EXPECT_THAT(*coordinator_metrics, HasSubstr("paft_jobs{state=\"JOB_STATE_SUCCEEDED\"} 1"));
  EXPECT_THAT(*coordinator_metrics,
              HasSubstr("paft_branches{branch=\"sft\",state=\"BRANCH_STATE_SUCCEEDED\"} 1"));
  EXPECT_THAT(*coordinator_metrics, HasSubstr("paft_checkpoints_total{branch=\"sft\"} 2"));
  EXPECT_THAT(*coordinator_metrics, HasSubstr("paft_queue_depth{pool=\"sft\"} 0"));
  EXPECT_THAT(*coordinator_metrics,
              HasSubstr("paft_coordinator_rpc_duration_seconds_count{method=\"SubmitJob\"} 1"));
  auto merger_metrics = testing::HttpGet(merger_ports_["metrics"], "/metrics");
  ASSERT_TRUE(merger_metrics.has_value());
  EXPECT_THAT(*merger_metrics, HasSubstr("paft_merges_total{method=\"ties\",result=\"ok\"} 1"));
  // The hostile lines every trainer printed first were refused and counted; the agents lived.
  int64_t rejected = 0;
  for (const auto& name : worker_names_) {
    auto ports = testing::WaitForPortFile(root_ + "/" + name + ".ports", absl::Seconds(5));
    ASSERT_TRUE(ports.has_value()) << name;
    auto agent_metrics = testing::HttpGet((*ports)["metrics"], "/metrics");
    ASSERT_TRUE(agent_metrics.has_value()) << name;
    for (const char* reason : {"malformed", "too_long"}) {
      const std::string key =
          absl::StrCat("paft_agent_trainer_lines_rejected_total{reason=\"", reason, "\"} ");
      const size_t at = agent_metrics->find(key);
      if (at != std::string::npos) rejected += std::atoll(agent_metrics->c_str() + at + key.size());
    }
  }
  EXPECT_EQ(rejected, 4 * 5);  // 4 ranks x (4 malformed + 1 too long)

  // A second submission whose merged output already exists is refused at admission.
  std::string again;
  EXPECT_EQ(testing::RunCommand({PAFTCTL, "--coordinator=" + address_, "submit",
                                 WriteSpec("demo", 2)},
                                &again),
            2);
  EXPECT_THAT(again, HasSubstr("output_dir"));
}

TEST_F(EndToEndTest, CoordinatorKilledMidJobAdoptsRunningRanks) {
  const std::string job_id = Submit(WriteSpec("survive", 2, 300));
  ASSERT_FALSE(job_id.empty());
  // Both gangs running (a gang whose start never reached its agent would, correctly, be
  // restarted after the adoption grace instead).
  auto running = [](const v1::Job& job) {
    return job.sft().state() == v1::BRANCH_STATE_RUNNING &&
           job.alignment().state() == v1::BRANCH_STATE_RUNNING;
  };
  ASSERT_TRUE(running(WaitFor(job_id, running, absl::Seconds(4))));
  coordinator_->Signal(SIGKILL);
  ASSERT_TRUE(coordinator_->Wait(absl::Seconds(10)).has_value());
  coordinator_ = std::make_unique<ChildProcess>(coordinator_argv_, std::vector<std::string>{},
                                                root_ + "/coordinator2.log");
  std::string output;
  ASSERT_EQ(testing::RunCommand({PAFTCTL, "--coordinator=" + address_, "watch", job_id}, &output),
            0)
      << output << *ReadFileToString(root_ + "/coordinator2.log");
  const v1::Job job = GetJob(job_id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
  const std::string log = *ReadFileToString(root_ + "/coordinator2.log");
  EXPECT_EQ(job.sft().attempt(), 1) << "the running ranks were restarted instead of adopted\n" << log;
  EXPECT_EQ(job.alignment().attempt(), 1) << log;
  EXPECT_EQ(job.restarts_used(), 0);
  EXPECT_THAT(*ReadFileToString(root_ + "/coordinator2.log"), HasSubstr("adopted"));
}

TEST_F(EndToEndTest, LogsFollowARankUntilItsAttemptEnds) {
  const std::string job_id = Submit(WriteSpec("follow", 2, 100));
  ASSERT_FALSE(job_id.empty());
  // Started at once: waits for the branch to start, prints as the rank writes, ends with it.
  std::string logs;
  EXPECT_EQ(testing::RunCommand({PAFTCTL, "--coordinator=" + address_, "logs", job_id,
                                 "alignment", "--follow"},
                                &logs),
            0)
      << logs;
  EXPECT_THAT(logs, HasSubstr("steps 0..100"));
  EXPECT_THAT(logs, HasSubstr("\"step\":100"));
  EXPECT_THAT(logs, HasSubstr("\"final\":true"));
  const v1::Job job = WaitFor(job_id, [](const v1::Job& j) {
    return j.state() == v1::JOB_STATE_SUCCEEDED;
  });
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
}

// The alert rules and the Grafana dashboard name only metrics the servers export, and the
// exposition passes promtool's lint (Debian's prometheus package provides promtool).
TEST_F(EndToEndTest, AlertsAndDashboardUseExportedMetrics) {
  std::set<std::string> exported;
  std::vector<std::string> scrapes;
  auto scrape = [&](int port) {
    auto text = testing::HttpGet(port, "/metrics");
    ASSERT_TRUE(text.has_value());
    scrapes.push_back(*text);
    for (absl::string_view line : absl::StrSplit(*text, '\n')) {
      if (line.empty() || line[0] == '#') continue;
      exported.insert(std::string(line.substr(0, line.find_first_of("{ "))));
    }
  };
  const std::string job_id = Submit(WriteSpec("observed", 2, 150));
  ASSERT_FALSE(job_id.empty());
  // Per-branch series exist while branches run; scrape after a control-loop tick.
  const v1::Job running = WaitFor(job_id, [](const v1::Job& j) {
    return j.sft().state() == v1::BRANCH_STATE_RUNNING &&
           j.alignment().state() == v1::BRANCH_STATE_RUNNING && j.sft().step() > 5;
  });
  ASSERT_EQ(running.sft().state(), v1::BRANCH_STATE_RUNNING);
  absl::SleepFor(absl::Milliseconds(300));
  scrape(coordinator_ports_["metrics"]);
  const v1::Job done = WaitFor(job_id, [](const v1::Job& j) { return j.state() == v1::JOB_STATE_SUCCEEDED; });
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
  scrape(coordinator_ports_["metrics"]);
  scrape(merger_ports_["metrics"]);
  for (const auto& name : worker_names_) {
    auto ports = testing::WaitForPortFile(root_ + "/" + name + ".ports", absl::Seconds(5));
    ASSERT_TRUE(ports.has_value()) << name;
    scrape((*ports)["metrics"]);
  }

  std::set<std::string> named;
  for (const char* file : {"/deploy/prometheus/paft-alerts.yaml", "/deploy/grafana/paft-dashboard.json"}) {
    auto text = ReadFileToString(std::string(PAFT_SOURCE_DIR) + file);
    ASSERT_TRUE(text.ok()) << file;
    for (size_t pos = 0; (pos = text->find("paft_", pos)) != std::string::npos;) {
      const size_t end = text->find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_", pos);
      named.insert(text->substr(pos, end - pos));
      pos = end;
    }
  }
  EXPECT_GE(named.size(), 15u);
  for (const auto& name : named) EXPECT_TRUE(exported.count(name)) << name << " is not exported";

  auto promtool = [](const std::vector<std::string>& argv, std::string* out) {
    return testing::RunCommand(argv, out);
  };
  std::string out;
  ASSERT_EQ(promtool({"/bin/sh", "-c", "command -v promtool"}, &out), 0)
      << "promtool is missing (Debian package prometheus; ./setup.sh installs it)";
  out.clear();
  EXPECT_EQ(promtool({"/bin/sh", "-c",
                      "promtool check rules " + std::string(PAFT_SOURCE_DIR) +
                          "/deploy/prometheus/paft-alerts.yaml"},
                     &out),
            0)
      << out;
  for (size_t i = 0; i < scrapes.size(); ++i) {
    const std::string path = root_ + "/scrape-" + std::to_string(i) + ".txt";
    ASSERT_TRUE(WriteFileAtomic(path, scrapes[i]).ok());
    out.clear();
    EXPECT_EQ(promtool({"/bin/sh", "-c", "promtool check metrics < " + path}, &out), 0) << out;
  }
}

TEST_F(EndToEndTest, BadSpecsAreRejectedWithTheField) {
  std::string output;
  EXPECT_EQ(testing::RunCommand(
                {PAFTCTL, "--coordinator=" + address_, "submit", WriteSpec("bad", 0)}, &output),
            2);
  EXPECT_THAT(output, HasSubstr("sft.world_size"));
  // Impossible on this cluster: more ranks than the sft pool's 2 slots, an unknown pool.
  output.clear();
  EXPECT_EQ(testing::RunCommand(
                {PAFTCTL, "--coordinator=" + address_, "submit", WriteSpec("big", 3)}, &output),
            2);
  EXPECT_THAT(output, HasSubstr("sft.world_size: 3 ranks, but pool 'sft' can offer at most 2"));
  const std::string spec = *ReadFileToString(WriteSpec("lost", 2));
  ASSERT_TRUE(WriteFileAtomic(root_ + "/lost.yaml",
                              absl::StrReplaceAll(spec, {{"pool: align", "pool: gpu-h100"}}))
                  .ok());
  output.clear();
  EXPECT_EQ(testing::RunCommand({PAFTCTL, "--coordinator=" + address_, "submit",
                                 root_ + "/lost.yaml"},
                                &output),
            2);
  EXPECT_THAT(output, HasSubstr("alignment.pool: no worker agent of pool 'gpu-h100'"));
  // Paths outside the storage roots (here: the test's folder), directly or through a symlink.
  ASSERT_EQ(::symlink("/etc", (root_ + "/data/etc").c_str()), 0);
  ASSERT_TRUE(WriteFileAtomic(root_ + "/escape.yaml",
                              absl::StrReplaceAll(spec, {{"data/pref.jsonl", "data/etc/hostname"}}))
                  .ok());
  output.clear();
  EXPECT_EQ(testing::RunCommand({PAFTCTL, "--coordinator=" + address_, "submit",
                                 root_ + "/escape.yaml"},
                                &output),
            2);
  EXPECT_THAT(output, HasSubstr("alignment.dataset.path: "));
  EXPECT_THAT(output, HasSubstr("outside the storage roots"));
  output.clear();
  EXPECT_EQ(testing::RunCommand({PAFTCTL, "--coordinator=" + address_, "list"}, &output), 0);
  EXPECT_THAT(output, Not(HasSubstr("job-")));  // nothing was stored
  output.clear();
  EXPECT_EQ(testing::RunCommand({PAFTCTL, "--coordinator=" + address_, "get", "job-missing"},
                                &output),
            3);
  EXPECT_THAT(output, HasSubstr("NOT_FOUND"));
}

TEST_F(EndToEndTest, OversizedRequestsAreRefusedAndTheCoordinatorCarriesOn) {
  // A channel that would send anything: the server's own limit must refuse it.
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(-1);
  auto stub = v1::JobService::NewStub(
      grpc::CreateCustomChannel(address_, grpc::InsecureChannelCredentials(), args));
  v1::SubmitJobRequest huge;
  huge.set_request_id("huge");
  huge.mutable_spec()->set_name(std::string(kMaxGrpcMessageBytes + 1024, 'x'));
  grpc::ClientContext c1;
  v1::Job job;
  EXPECT_EQ(stub->SubmitJob(&c1, huge, &job).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // Within the message limit but beyond a field's: refused naming the field.
  v1::SubmitJobRequest long_id;
  long_id.set_request_id(std::string(10000, 'r'));
  grpc::ClientContext c2;
  grpc::Status status = stub->SubmitJob(&c2, long_id, &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("request_id"));
  grpc::ClientContext c3;
  v1::ListJobsRequest list;
  list.set_page_size(100000);
  v1::ListJobsResponse jobs;
  EXPECT_EQ(stub->ListJobs(&c3, list, &jobs).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // Nothing was stored and the coordinator still answers.
  grpc::ClientContext c4;
  ASSERT_TRUE(stub->ListJobs(&c4, {}, &jobs).ok());
  EXPECT_EQ(jobs.jobs_size(), 0);
}

TEST_F(EndToEndTest, CancelStopsTheTrainers) {
  const std::string job_id = Submit(WriteSpec("long", 2, 1000));
  ASSERT_FALSE(job_id.empty());
  const v1::Job running = WaitFor(job_id, [](const v1::Job& j) {
    return j.sft().state() == v1::BRANCH_STATE_RUNNING &&
           j.alignment().state() == v1::BRANCH_STATE_RUNNING;
  });
  ASSERT_EQ(running.sft().state(), v1::BRANCH_STATE_RUNNING);
  EXPECT_EQ(Trainers(job_id + ".").size(), 4u);  // 2 ranks per branch
  std::string output;
  EXPECT_EQ(testing::RunCommand({PAFTCTL, "--coordinator=" + address_, "cancel", job_id}, &output),
            0)
      << output;
  EXPECT_THAT(output, HasSubstr("CANCELLED"));
  output.clear();
  // watch of a cancelled job ends at once with exit code 1.
  EXPECT_EQ(testing::RunCommand({PAFTCTL, "--coordinator=" + address_, "watch", job_id}, &output),
            1);
  // Every rank is stopped (SIGTERM; the placeholder exits at once) and its slot freed.
  for (int i = 0; i < 200 && !Trainers(job_id + ".").empty(); ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_TRUE(Trainers(job_id + ".").empty());
  auto stub = v1::JobService::NewStub(MakeChannel(address_));
  int busy = -1;
  const absl::Time since = absl::Now();
  for (int i = 0; i < 400 && busy != 0; ++i) {  // up to 20 s: slow under a loaded machine
    grpc::ClientContext context;
    v1::ListWorkersResponse workers;
    ASSERT_TRUE(stub->ListWorkers(&context, {}, &workers).ok());
    busy = 0;
    for (const auto& w : workers.workers()) busy += w.busy_devices();
    if (busy != 0) absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(busy, 0) << "after " << absl::Now() - since;
  EXPECT_FALSE(PathExists(root_ + "/jobs/long/merged"));
}

// Failures with real processes: a second sft agent to restart on, a short progress timeout.
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
// sentencepiece tokenizer trained here, adapters as checkpoints, merged by TIES.
class RealTrainerEndToEndTest : public EndToEndTest {
 protected:
  std::vector<std::string> TrainerFlags() override { return {"--threads=1"}; }
  void PrepareBase() override {
    std::string corpus;
    const char* words[] = {"1+1=", "2", "hi", "hello", "go", "away", "what", "is", "the", "cat"};
    for (int i = 0; i < 200; ++i) corpus += std::string(words[(i * 7) % 10]) + " " + words[(i * 3) % 10] + "\n";
    ASSERT_TRUE(WriteFileAtomic(root_ + "/corpus.txt", corpus).ok());
    std::string out;
    ASSERT_EQ(testing::RunCommand({"/usr/bin/spm_train", "--input=" + root_ + "/corpus.txt",
                                   "--model_prefix=" + root_ + "/models/base/tokenizer",
                                   "--vocab_size=40", "--model_type=bpe", "--bos_id=1",
                                   "--eos_id=2", "--unk_id=0"},
                                  &out),
              0)
        << out;
  }
};

TEST_F(RealTrainerEndToEndTest, LoraBranchesTrainAndMerge) {
  std::string output;
  const int code = testing::RunCommand(
      {PAFTCTL, "--coordinator=" + address_, "submit", WriteSpec("real", 2), "--watch"}, &output);
  ASSERT_EQ(code, 0) << output;
  EXPECT_THAT(output, HasSubstr("SUCCEEDED"));
  auto stub = v1::JobService::NewStub(MakeChannel(address_));
  grpc::ClientContext context;
  v1::ListJobsResponse jobs;
  ASSERT_TRUE(stub->ListJobs(&context, {}, &jobs).ok());
  const v1::Job& job = jobs.jobs(0);
  // Checkpoints are PEFT adapters; the merge produced a full model that differs from the base.
  EXPECT_TRUE(IsRegularFile(job.sft().checkpoint_path() + "/adapter_config.json"));
  EXPECT_TRUE(IsRegularFile(job.alignment().checkpoint_path() + "/adapter_model.safetensors"));
  auto base = SafetensorsModel::Open(root_ + "/models/base");
  auto merged = SafetensorsModel::Open(job.merged_model_path());
  ASSERT_TRUE(base.ok() && merged.ok());
  EXPECT_EQ((*merged)->names(), (*base)->names());
  EXPECT_NE(Floats(**merged, "model.layers.0.self_attn.q_proj.weight"),
            Floats(**base, "model.layers.0.self_attn.q_proj.weight"));
  EXPECT_EQ(Floats(**merged, "model.norm.weight"), Floats(**base, "model.norm.weight"));
  EXPECT_TRUE(IsRegularFile(job.merged_model_path() + "/tokenizer.model"));
  EXPECT_GT(job.sft().loss(), 0.0);
}

}  // namespace
}  // namespace paft
