// TLS and bearer-token roles with real processes: certificates made here with openssl, the merger
// accepting only the coordinator, agents registering with a worker token over TLS, a client's job
// running to SUCCEEDED through paftctl, and every cross-role or cross-client call refused.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/integration/auth_fixture.h"

namespace paft::auth_e2e {
namespace {

TEST_F(AuthTest, RolesAndOwnersAreEnforcedOverTls) {
  auto jobs = JobStub("");
  v1::ListJobsResponse list;
  // Plaintext to a TLS server does not get through.
  {
    auto plain = v1::JobService::NewStub(MakeChannel(address_));
    auto context = As("admin-secret");
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
    EXPECT_FALSE(plain->ListJobs(context.get(), {}, &list).ok());
  }
  // No token, an unknown token: UNAUTHENTICATED, on both services.
  EXPECT_EQ(jobs->ListJobs(As("").get(), {}, &list).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(jobs->ListJobs(As("guess").get(), {}, &list).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  auto workers = v1::WorkerService::NewStub(Tls(address_));
  v1::HeartbeatRequest heartbeat;
  v1::HeartbeatResponse beat;
  EXPECT_EQ(workers->Heartbeat(As("").get(), heartbeat, &beat).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // Cross-role: a worker may not use the JobService, a client not the WorkerService.
  EXPECT_EQ(jobs->ListJobs(As("worker-secret").get(), {}, &list).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(workers->Heartbeat(As("alice-secret").get(), heartbeat, &beat).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  v1::RegisterWorkerRequest rogue;
  rogue.set_name("rogue");
  rogue.set_pool("sft");
  rogue.set_devices(1);
  rogue.set_address("10.0.0.1");
  v1::RegisterWorkerResponse registered;
  EXPECT_EQ(workers->RegisterWorker(As("bob-secret").get(), rogue, &registered).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  // Only the coordinator (and admins) may call the merger.
  auto merger = v1::MergerService::NewStub(Tls(merger_address_));
  v1::GetMergeRequest get_merge;
  get_merge.set_merge_id("nope");
  v1::MergeOperation operation;
  EXPECT_EQ(merger->GetMerge(As("alice-secret").get(), get_merge, &operation).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(merger->GetMerge(As("").get(), get_merge, &operation).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(merger->GetMerge(As("coord-secret").get(), get_merge, &operation).error_code(),
            grpc::StatusCode::NOT_FOUND);  // allowed through; the merge does not exist

  // alice's job runs to SUCCEEDED through paftctl over TLS (agents and the merger included).
  ASSERT_TRUE(WriteFileAtomic(root_ + "/job.yaml", R"(
name: alices
base_model: models/base
output_dir: jobs/alice
sft: {pool: sft, world_size: 2, dataset: {path: data/sft.jsonl}, max_steps: 6}
alignment: {pool: align, world_size: 2, dataset: {path: data/pref.jsonl}, max_steps: 4}
)").ok());
  std::string out;
  const std::vector<std::string> env = {"PAFT_TOKEN=alice-secret", "PAFT_TLS_CA=" + root_ + "/ca.crt"};
  ASSERT_EQ(testing::RunCommand({PAFTCTL, "--coordinator=" + address_, "submit",
                                 root_ + "/job.yaml", "--watch"},
                                &out, env),
            0)
      << out << *ReadFileToString(root_ + "/coordinator.log");
  EXPECT_THAT(out, HasSubstr("SUCCEEDED"));
  ASSERT_TRUE(jobs->ListJobs(As("alice-secret").get(), {}, &list).ok());
  ASSERT_EQ(list.jobs_size(), 1);
  const v1::Job job = list.jobs(0);
  EXPECT_EQ(job.owner(), "alice");
  // bob sees none of it; an admin sees everything.
  v1::GetJobRequest get;
  get.set_job_id(job.job_id());
  v1::Job seen;
  EXPECT_EQ(jobs->GetJob(As("bob-secret").get(), get, &seen).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  v1::CancelJobRequest cancel;
  cancel.set_job_id(job.job_id());
  EXPECT_EQ(jobs->CancelJob(As("bob-secret").get(), cancel, &seen).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  out.clear();
  EXPECT_EQ(testing::RunCommand({PAFTCTL, "--coordinator=" + address_, "logs", job.job_id(), "sft"},
                                &out, {"PAFT_TOKEN=bob-secret", "PAFT_TLS_CA=" + root_ + "/ca.crt"}),
            3);
  EXPECT_THAT(out, HasSubstr("PERMISSION_DENIED"));
  ASSERT_TRUE(jobs->ListJobs(As("bob-secret").get(), {}, &list).ok());
  EXPECT_EQ(list.jobs_size(), 0);
  EXPECT_TRUE(jobs->GetJob(As("admin-secret").get(), get, &seen).ok());
  // Refusals are counted; tokens appear in no log.
  auto metrics = testing::HttpGet(coordinator_ports_["metrics"], "/metrics");
  ASSERT_TRUE(metrics.has_value());
  EXPECT_THAT(*metrics, HasSubstr("code=\"UNAUTHENTICATED\""));
  EXPECT_THAT(*metrics, HasSubstr("code=\"PERMISSION_DENIED\""));
  for (const char* log : {"/coordinator.log", "/merger.log", "/worker-sft.log"}) {
    const std::string text = *ReadFileToString(root_ + log);
    for (const char* secret : {"alice-secret", "bob-secret", "worker-secret", "coord-secret"}) {
      EXPECT_THAT(text, Not(HasSubstr(secret))) << log;
    }
  }
}

// Every RPC of every service refuses a call without a token and a call with the wrong role.
TEST_F(AuthTest, EveryRpcRefusesMissingTokensAndWrongRoles) {
  auto jobs = v1::JobService::NewStub(Tls(address_));
  auto workers = v1::WorkerService::NewStub(Tls(address_));
  auto merger = v1::MergerService::NewStub(Tls(merger_address_));
  using Call = std::function<grpc::StatusCode(const std::string& token)>;
  auto unary = [](auto method) {
    return [method](const std::string& token) { return method(As(token).get()).error_code(); };
  };
  std::vector<std::pair<std::string, Call>> job_rpcs = {
      {"SubmitJob", unary([&](grpc::ClientContext* c) { v1::Job j; return jobs->SubmitJob(c, {}, &j); })},
      {"GetJob", unary([&](grpc::ClientContext* c) { v1::Job j; return jobs->GetJob(c, {}, &j); })},
      {"ListJobs", unary([&](grpc::ClientContext* c) { v1::ListJobsResponse r; return jobs->ListJobs(c, {}, &r); })},
      {"CancelJob", unary([&](grpc::ClientContext* c) { v1::Job j; return jobs->CancelJob(c, {}, &j); })},
      {"ListWorkers", unary([&](grpc::ClientContext* c) { v1::ListWorkersResponse r; return jobs->ListWorkers(c, {}, &r); })},
      {"ListCheckpoints", unary([&](grpc::ClientContext* c) { v1::ListCheckpointsResponse r; return jobs->ListCheckpoints(c, {}, &r); })},
      {"ListEvents", unary([&](grpc::ClientContext* c) { v1::ListEventsResponse r; return jobs->ListEvents(c, {}, &r); })},
      {"WatchJob", unary([&](grpc::ClientContext* c) { auto r = jobs->WatchJob(c, {}); v1::JobEvent e; while (r->Read(&e)) {} return r->Finish(); })},
      {"StreamLogs", unary([&](grpc::ClientContext* c) { auto r = jobs->StreamLogs(c, {}); v1::LogChunk e; while (r->Read(&e)) {} return r->Finish(); })},
  };
  std::vector<std::pair<std::string, Call>> worker_rpcs = {
      {"RegisterWorker", unary([&](grpc::ClientContext* c) { v1::RegisterWorkerResponse r; return workers->RegisterWorker(c, {}, &r); })},
      {"Heartbeat", unary([&](grpc::ClientContext* c) { v1::HeartbeatResponse r; return workers->Heartbeat(c, {}, &r); })},
      {"StreamAssignments", unary([&](grpc::ClientContext* c) { auto r = workers->StreamAssignments(c, {}); v1::Assignment a; while (r->Read(&a)) {} return r->Finish(); })},
      {"ReportProgress", unary([&](grpc::ClientContext* c) { v1::Ack a; return workers->ReportProgress(c, {}, &a); })},
      {"ReportCheckpoint", unary([&](grpc::ClientContext* c) { v1::Ack a; return workers->ReportCheckpoint(c, {}, &a); })},
      {"ReportExit", unary([&](grpc::ClientContext* c) { v1::Ack a; return workers->ReportExit(c, {}, &a); })},
  };
  std::vector<std::pair<std::string, Call>> merger_rpcs = {
      {"Merge", unary([&](grpc::ClientContext* c) { v1::MergeOperation o; return merger->Merge(c, {}, &o); })},
      {"GetMerge", unary([&](grpc::ClientContext* c) { v1::MergeOperation o; return merger->GetMerge(c, {}, &o); })},
  };
  for (const auto& [name, call] : job_rpcs) {
    EXPECT_EQ(call(""), grpc::StatusCode::UNAUTHENTICATED) << name;
    EXPECT_EQ(call("worker-secret"), grpc::StatusCode::PERMISSION_DENIED) << name;
    EXPECT_EQ(call("coord-secret"), grpc::StatusCode::PERMISSION_DENIED) << name;
  }
  for (const auto& [name, call] : worker_rpcs) {
    EXPECT_EQ(call(""), grpc::StatusCode::UNAUTHENTICATED) << name;
    EXPECT_EQ(call("alice-secret"), grpc::StatusCode::PERMISSION_DENIED) << name;
  }
  for (const auto& [name, call] : merger_rpcs) {
    EXPECT_EQ(call(""), grpc::StatusCode::UNAUTHENTICATED) << name;
    EXPECT_EQ(call("alice-secret"), grpc::StatusCode::PERMISSION_DENIED) << name;
    EXPECT_EQ(call("worker-secret"), grpc::StatusCode::PERMISSION_DENIED) << name;
  }
  auto merger_metrics = testing::HttpGet(MergerMetricsPort(), "/metrics");
  ASSERT_TRUE(merger_metrics.has_value());
  EXPECT_THAT(*merger_metrics, HasSubstr("paft_merger_rpc_refusals_total{code=\"PERMISSION_DENIED\"} 4"));
  EXPECT_THAT(*merger_metrics, HasSubstr("paft_merger_rpc_refusals_total{code=\"UNAUTHENTICATED\"} 2"));
}

// A client cannot hold more unfinished jobs or open streams than the coordinator allows.
TEST_F(AuthTest, PerClientLimitsHold) {
  WriteLongJobSpec();
  const std::vector<std::string> env = {"PAFT_TOKEN=bob-secret", "PAFT_TLS_CA=" + root_ + "/ca.crt"};
  std::string out;
  ASSERT_EQ(testing::RunCommand({PAFTCTL, "--coordinator=" + address_, "--json", "submit",
                                 root_ + "/long.yaml"},
                                &out, env),
            0)
      << out;
  out.clear();
  EXPECT_EQ(testing::RunCommand({PAFTCTL, "--coordinator=" + address_, "submit",
                                 root_ + "/long.yaml", "--request_id=second"},
                                &out, env),
            3);
  EXPECT_THAT(out, HasSubstr("RESOURCE_EXHAUSTED"));
  EXPECT_THAT(out, HasSubstr("bob has 1 unfinished jobs"));
  auto jobs = v1::JobService::NewStub(Tls(address_));
  v1::ListJobsResponse list;
  ASSERT_TRUE(jobs->ListJobs(As("bob-secret").get(), {}, &list).ok());
  ASSERT_EQ(list.jobs_size(), 1);
  v1::WatchJobRequest watch;
  watch.set_job_id(list.jobs(0).job_id());
  auto first_context = As("bob-secret");
  first_context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  auto first = jobs->WatchJob(first_context.get(), watch);
  v1::JobEvent event;
  ASSERT_TRUE(first->Read(&event));  // the first stream is open
  auto second_context = As("bob-secret");
  auto second = jobs->WatchJob(second_context.get(), watch);
  while (second->Read(&event)) {
  }
  EXPECT_EQ(second->Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // Another client is not affected; when the stream closes, the slot is free again.
  auto alice_context = As("admin-secret");
  v1::Job cancelled;
  v1::CancelJobRequest cancel;
  cancel.set_job_id(list.jobs(0).job_id());
  ASSERT_TRUE(jobs->CancelJob(alice_context.get(), cancel, &cancelled).ok());
  while (first->Read(&event)) {
  }
  EXPECT_TRUE(first->Finish().ok());
  auto third_context = As("bob-secret");
  auto third = jobs->WatchJob(third_context.get(), watch);
  while (third->Read(&event)) {
  }
  EXPECT_TRUE(third->Finish().ok());  // a finished job's watch replays and ends
}

}  // namespace
}  // namespace paft::auth_e2e
