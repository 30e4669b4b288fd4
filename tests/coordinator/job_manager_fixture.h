// A JobManager on a real SQLite store, a worker registry and a fake clock, with helpers that
// play the agents' side (register, progress, checkpoints, exits).
#ifndef PAFT_TESTS_COORDINATOR_JOB_MANAGER_FIXTURE_H_
#define PAFT_TESTS_COORDINATOR_JOB_MANAGER_FIXTURE_H_

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "common/job_spec.h"
#include "coordinator/job_manager.h"
#include "prometheus/registry.h"
#include "tests/testing/temp_dir.h"

namespace paft::coordinator {

using ::testing::HasSubstr;
using paft::v1::Job;

inline constexpr char kSpec[] = R"yaml(
name: t
base_model: /m
output_dir: /out
restart_budget: 1
sft: {pool: sft, world_size: 2, dataset: {path: /d/sft.jsonl}, max_steps: 10}
alignment: {pool: align, world_size: 2, dataset: {path: /d/pref.jsonl}, max_steps: 10}
)yaml";

class JobManagerTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }

  // A coordinator on the test's database; pools declared unless `declared_pools` is false.
  void Open(bool declared_pools = true) {
    manager_.reset();
    store_.reset();
    auto store = JobStore::Open(dir_.Join("state.db"), store_busy_timeout_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    registry_ = std::make_unique<WorkerRegistry>(absl::Seconds(10));
    JobManagerOptions options;
    options.check_inputs = false;
    if (declared_pools) options.pool_capacity = {{"sft", 4}, {"align", 4}};
    prometheus_ = std::make_unique<prometheus::Registry>();
    metrics_ = std::make_unique<CoordinatorMetrics>(*prometheus_);
    manager_ = std::make_unique<JobManager>(options, store_.get(), registry_.get(), &clock_,
                                            metrics_.get());
    ASSERT_TRUE(manager_->Recover().ok());
  }

  Job Submit(const std::string& request_id, int restart_budget = 1) {
    paft::v1::SubmitJobRequest request;
    request.set_request_id(request_id);
    *request.mutable_spec() = *ParseJobSpec(kSpec);
    request.mutable_spec()->set_restart_budget(restart_budget);
    auto job = manager_->SubmitJob(request);
    EXPECT_TRUE(job.ok()) << job.status();
    return *job;
  }

  std::string Register(const std::string& name, const std::string& pool, int devices) {
    paft::v1::RegisterWorkerRequest request;
    request.set_name(name);
    request.set_pool(pool);
    request.set_devices(devices);
    request.set_address(name + ".local");
    auto response = manager_->RegisterWorker(request);
    EXPECT_TRUE(response.ok()) << response.status();
    return response->worker_id();
  }

  std::vector<paft::v1::Assignment> Take(const std::string& worker_id) {
    auto a = registry_->TakeAssignments(worker_id);
    EXPECT_TRUE(a.ok()) << a.status();
    return a.ok() ? *a : std::vector<paft::v1::Assignment>{};
  }

  Job Get(const std::string& id) { return *manager_->GetJob(id); }

  absl::Status Progress(const std::string& task_id, int64_t step, int64_t total, double loss) {
    paft::v1::ReportProgressRequest request;
    request.set_task_id(task_id);
    request.set_step(step);
    request.set_total_steps(total);
    request.set_loss(loss);
    (*request.mutable_metrics())["learning_rate"] = 1e-4;
    return manager_->ReportProgress(request);
  }

  // Value of the metric `name` with exactly these labels (among others of the family), or NaN.
  double Metric(const std::string& name, const std::map<std::string, std::string>& labels) {
    for (const auto& family : prometheus_->Collect()) {
      if (family.name != name) continue;
      for (const auto& m : family.metric) {
        bool match = true;
        for (const auto& [k, v] : labels) {
          bool found = false;
          for (const auto& l : m.label) found = found || (l.name == k && l.value == v);
          match = match && found;
        }
        if (match) return family.type == prometheus::MetricType::Counter ? m.counter.value
                                                                        : m.gauge.value;
      }
    }
    return std::nan("");
  }

  absl::Status Exit(const std::string& task_id, int code,
                    paft::v1::ExitReason reason = paft::v1::EXIT_REASON_COMPLETED) {
    paft::v1::ReportExitRequest request;
    request.set_task_id(task_id);
    request.set_exit_code(code);
    request.set_reason(reason);
    return manager_->ReportExit(request);
  }

  absl::Status Checkpoint(const std::string& task_id, int64_t step, bool final) {
    paft::v1::ReportCheckpointRequest request;
    request.set_task_id(task_id);
    request.set_step(step);
    request.set_path("/out/ckpt-" + task_id + "-" + std::to_string(step));
    request.set_final(final);
    return manager_->ReportCheckpoint(request);
  }

  // Runs a branch's started tasks to a successful end.
  void Complete(const std::vector<paft::v1::Assignment>& starts) {
    for (const auto& a : starts) {
      if (a.start().rank() == 0) {
        ASSERT_TRUE(Checkpoint(a.start().task_id(), 10, true).ok());
      }
    }
    for (const auto& a : starts) ASSERT_TRUE(Exit(a.start().task_id(), 0).ok());
  }

  testing::TempDir dir_;
  absl::Duration store_busy_timeout_ = absl::Seconds(5);
  FakeClock clock_;
  std::unique_ptr<JobStore> store_;
  std::unique_ptr<WorkerRegistry> registry_;
  std::unique_ptr<prometheus::Registry> prometheus_;
  std::unique_ptr<CoordinatorMetrics> metrics_;
  std::unique_ptr<JobManager> manager_;
};

}  // namespace paft::coordinator

#endif  // PAFT_TESTS_COORDINATOR_JOB_MANAGER_FIXTURE_H_
