// Starts the real binaries as processes (merger, coordinator, one agent per pool) on free ports
// and drives a job to SUCCEEDED through the real client, paftctl.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>
#include <sys/wait.h>

#include <cmath>

#include "absl/strings/str_cat.h"
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
        std::vector<std::string>{PAFT_MERGER, "serve", "--listen=127.0.0.1:0",
                                 "--metrics_listen=127.0.0.1:0",
                                 "--port_file=" + root_ + "/merger.ports"},
        std::vector<std::string>{}, root_ + "/merger.log");
    auto merger_ports = testing::WaitForPortFile(root_ + "/merger.ports", absl::Seconds(20));
    ASSERT_TRUE(merger_ports.has_value()) << "merger did not start; see " << root_;
    merger_ports_ = *merger_ports;

    // A fixed port, so that a restarted coordinator is found at the same address.
    coordinator_argv_ = {PAFT_COORDINATOR,
                         absl::StrCat("--listen=127.0.0.1:", testing::FreePort()),
                         "--metrics_listen=127.0.0.1:0",
                         "--state_db=" + root_ + "/state.db",
                         absl::StrCat("--merger=127.0.0.1:", merger_ports_["grpc"]),
                         "--port_file=" + root_ + "/coordinator.ports",
                         "--lease_ttl=5s",
                         "--heartbeat_interval=500ms",
                         "--tick_interval=100ms",
                         "--adoption_grace=10s"};
    coordinator_ = std::make_unique<ChildProcess>(coordinator_argv_, std::vector<std::string>{},
                                                  root_ + "/coordinator.log");
    auto ports = testing::WaitForPortFile(root_ + "/coordinator.ports", absl::Seconds(20));
    ASSERT_TRUE(ports.has_value()) << "coordinator did not start";
    coordinator_ports_ = *ports;
    address_ = absl::StrCat("127.0.0.1:", coordinator_ports_["grpc"]);

    for (const auto& [name, pool] : {std::pair<std::string, std::string>{"w-sft", "sft"},
                                     {"w-align", "align"}}) {
      std::vector<std::string> argv = {PAFT_WORKER, "--coordinator=" + address_, "--name=" + name,
                                       "--pool=" + pool, "--devices=2", "--address=127.0.0.1"};
      for (const auto& flag : TrainerFlags()) argv.push_back(flag);
      workers_.push_back(std::make_unique<ChildProcess>(
          argv, std::vector<std::string>{"PAFT_PLACEHOLDER_STEP_MS=20"},
          root_ + "/" + name + ".log"));
    }
    // Wait until both agents have registered (they load LibTorch first, which takes a moment).
    auto stub = v1::JobService::NewStub(MakeChannel(address_));
    int registered = 0;
    for (int i = 0; i < 300 && registered < 2; ++i) {
      grpc::ClientContext context;
      v1::ListWorkersResponse workers;
      if (stub->ListWorkers(&context, {}, &workers).ok()) registered = workers.workers_size();
      if (registered < 2) absl::SleepFor(absl::Milliseconds(50));
    }
    ASSERT_EQ(registered, 2) << "the agents did not register";
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
  // Each rank's output is kept with the job.
  EXPECT_TRUE(IsRegularFile(root_ + "/jobs/demo/sft/logs/attempt-1/rank-1.log"));

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
  auto merger_metrics = testing::HttpGet(merger_ports_["metrics"], "/metrics");
  ASSERT_TRUE(merger_metrics.has_value());
  EXPECT_THAT(*merger_metrics, HasSubstr("paft_merges_total{method=\"ties\",result=\"ok\"} 1"));

  // A second submission whose merged output already exists is refused at admission.
  std::string again;
  EXPECT_EQ(testing::RunCommand({PAFTCTL, "--coordinator=" + address_, "submit",
                                 WriteSpec("demo", 2)},
                                &again),
            2);
  EXPECT_THAT(again, HasSubstr("output_dir"));
}

TEST_F(EndToEndTest, CoordinatorKilledMidJobAdoptsRunningRanks) {
  std::string output;
  ASSERT_EQ(testing::RunCommand({PAFTCTL, "--coordinator=" + address_, "--json", "submit",
                                 WriteSpec("survive", 2, 300)},
                                &output),
            0)
      << output;
  const std::string job_id = JobIdOf(output);
  ASSERT_FALSE(job_id.empty()) << output;
  auto stub = v1::JobService::NewStub(MakeChannel(address_));
  auto get = [&]() {
    grpc::ClientContext context;
    v1::GetJobRequest request;
    request.set_job_id(job_id);
    v1::Job job;
    (void)stub->GetJob(&context, request, &job);
    return job;
  };
  // Both gangs running (a gang whose start never reached its agent would, correctly, be
  // restarted after the adoption grace instead).
  auto running = [&] {
    const v1::Job job = get();
    return job.sft().state() == v1::BRANCH_STATE_RUNNING &&
           job.alignment().state() == v1::BRANCH_STATE_RUNNING;
  };
  for (int i = 0; i < 200 && !running(); ++i) absl::SleepFor(absl::Milliseconds(20));
  ASSERT_TRUE(running());
  coordinator_->Signal(SIGKILL);
  ASSERT_TRUE(coordinator_->Wait(absl::Seconds(10)).has_value());
  coordinator_ = std::make_unique<ChildProcess>(coordinator_argv_, std::vector<std::string>{},
                                                root_ + "/coordinator2.log");
  output.clear();
  ASSERT_EQ(testing::RunCommand({PAFTCTL, "--coordinator=" + address_, "watch", job_id}, &output),
            0)
      << output << *ReadFileToString(root_ + "/coordinator2.log");
  const v1::Job job = get();
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
  const std::string log = *ReadFileToString(root_ + "/coordinator2.log");
  EXPECT_EQ(job.sft().attempt(), 1) << "the running ranks were restarted instead of adopted\n" << log;
  EXPECT_EQ(job.alignment().attempt(), 1) << log;
  EXPECT_EQ(job.restarts_used(), 0);
  EXPECT_THAT(*ReadFileToString(root_ + "/coordinator2.log"), HasSubstr("adopted"));
}

TEST_F(EndToEndTest, BadSpecsAreRejectedWithTheField) {
  std::string output;
  EXPECT_EQ(testing::RunCommand(
                {PAFTCTL, "--coordinator=" + address_, "submit", WriteSpec("bad", 0)}, &output),
            2);
  EXPECT_THAT(output, HasSubstr("sft.world_size"));
  output.clear();
  EXPECT_EQ(testing::RunCommand({PAFTCTL, "--coordinator=" + address_, "get", "job-missing"},
                                &output),
            3);
  EXPECT_THAT(output, HasSubstr("NOT_FOUND"));
}

TEST_F(EndToEndTest, CancelStopsTheTrainers) {
  std::string output;
  ASSERT_EQ(testing::RunCommand({PAFTCTL, "--coordinator=" + address_, "--json", "submit",
                                 WriteSpec("long", 2)},
                                &output,
                                {}),
            0)
      << output;
  const std::string job_id = JobIdOf(output);
  ASSERT_FALSE(job_id.empty()) << output;
  output.clear();
  EXPECT_EQ(testing::RunCommand({PAFTCTL, "--coordinator=" + address_, "cancel", job_id}, &output),
            0)
      << output;
  EXPECT_THAT(output, HasSubstr("CANCELLED"));
  output.clear();
  // watch of a cancelled job ends at once with exit code 1.
  EXPECT_EQ(testing::RunCommand({PAFTCTL, "--coordinator=" + address_, "watch", job_id}, &output),
            1);
  EXPECT_FALSE(PathExists(root_ + "/jobs/long/merged"));
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
