// A job driven to SUCCEEDED through paftctl on a cluster of real processes, and what the
// operator sees on the way: events, logs, metrics, refusals, cancellation.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/integration/end_to_end_fixture.h"

namespace paft::e2e {
namespace {

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

}  // namespace
}  // namespace paft::e2e
