// Identities bound to credentials, with real processes over TLS: a worker token acts only as the
// worker names it is given (register, heartbeat, stream, reports), a client certificate can be an
// identity (mutual TLS), and the principals file is re-read on SIGHUP without dropping anyone.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "tests/integration/auth_fixture.h"

namespace paft::auth_e2e {
namespace {

class IdentityTest : public AuthTest {
 protected:
  std::unique_ptr<v1::WorkerService::Stub> Workers() {
    return v1::WorkerService::NewStub(Tls(address_));
  }
  v1::Job Get(const std::string& job_id) {
    v1::GetJobRequest get;
    get.set_job_id(job_id);
    v1::Job job;
    EXPECT_TRUE(JobStub("")->GetJob(As("admin-secret").get(), get, &job).ok());
    return job;
  }
  static v1::RegisterWorkerRequest Registration(const std::string& name) {
    v1::RegisterWorkerRequest request;
    request.set_name(name);
    request.set_pool("sft");
    request.set_devices(1);
    request.set_address("10.0.0.9");
    return request;
  }
  // The id under which the agent `name` is registered.
  std::string WorkerId(const std::string& name) {
    v1::ListWorkersResponse workers;
    EXPECT_TRUE(JobStub("")->ListWorkers(As("admin-secret").get(), {}, &workers).ok());
    for (const auto& w : workers.workers()) {
      if (w.name() == name) return w.worker_id();
    }
    return "";
  }
  double Metric(const std::string& series) {
    auto metrics = testing::HttpGet(coordinator_ports_["metrics"], "/metrics");
    if (!metrics) return -1;
    const auto pos = metrics->find(series + " ");
    if (pos == std::string::npos) return 0;
    return std::stod(metrics->substr(pos + series.size() + 1));
  }
  // A running job of alice's (one rank per branch, many steps); its id.
  std::string RunningJob() {
    WriteLongJobSpec();
    std::string out;
    EXPECT_EQ(testing::RunCommand(
                  {PAFTCTL, "--coordinator=" + address_, "--json", "submit", root_ + "/long.yaml"},
                  &out, {"PAFT_TOKEN=alice-secret", "PAFT_TLS_CA=" + root_ + "/ca.crt"}),
              0)
        << out;
    const auto pos = out.find("\"job_id\": \"");
    const std::string job_id = out.substr(pos + 11, out.find('"', pos + 11) - pos - 11);
    for (int i = 0; i < 400 && Get(job_id).sft().step() < 1; ++i) {
      absl::SleepFor(absl::Milliseconds(25));
    }
    EXPECT_EQ(Get(job_id).sft().state(), v1::BRANCH_STATE_RUNNING);
    return job_id;
  }
};

TEST_F(IdentityTest, AWorkerTokenActsOnlyAsItsOwnWorkers) {
  const std::string job_id = RunningJob();
  auto workers = Workers();
  const std::string victim = WorkerId("w-sft");
  ASSERT_FALSE(victim.empty());
  // Registering under another worker's name would knock it out: refused.
  v1::RegisterWorkerResponse registered;
  EXPECT_EQ(workers->RegisterWorker(As("intruder-secret").get(), Registration("w-sft"), &registered)
                .error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  ASSERT_TRUE(
      workers->RegisterWorker(As("intruder-secret").get(), Registration("intruder"), &registered)
          .ok());
  // Its lease, its assignment stream, its ranks' reports: refused too.
  v1::HeartbeatRequest heartbeat;
  heartbeat.set_worker_id(victim);
  v1::HeartbeatResponse beat;
  EXPECT_EQ(workers->Heartbeat(As("intruder-secret").get(), heartbeat, &beat).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  v1::StreamAssignmentsRequest stream_request;
  stream_request.set_worker_id(victim);
  {
    auto context = As("intruder-secret");
    auto stream = workers->StreamAssignments(context.get(), stream_request);
    v1::Assignment assignment;
    EXPECT_FALSE(stream->Read(&assignment));
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  v1::ReportExitRequest exit;
  exit.set_task_id(job_id + ".sft.a1.r0");
  exit.set_exit_code(2);
  exit.set_reason(v1::EXIT_REASON_USER_ERROR);
  v1::Ack ack;
  EXPECT_EQ(workers->ReportExit(As("intruder-secret").get(), exit, &ack).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  v1::ReportProgressRequest progress;
  progress.set_task_id(job_id + ".sft.a1.r0");
  progress.set_step(99999);
  EXPECT_EQ(workers->ReportProgress(As("intruder-secret").get(), progress, &ack).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  // Nothing of it took: the job runs on, its own agent's heartbeats are accepted.
  const v1::Job job = Get(job_id);
  EXPECT_EQ(job.sft().state(), v1::BRANCH_STATE_RUNNING);
  EXPECT_LT(job.sft().step(), 99999);
  EXPECT_EQ(WorkerId("w-sft"), victim);
  EXPECT_EQ(workers->Heartbeat(As("worker-secret").get(), heartbeat, &beat).error_code(),
            grpc::StatusCode::OK);
  // Counted by method.
  for (const char* method :
       {"RegisterWorker", "Heartbeat", "StreamAssignments", "ReportExit", "ReportProgress"}) {
    EXPECT_EQ(Metric(absl::StrCat("paft_identity_denied_total{method=\"", method, "\"}")), 1.0)
        << method;
  }
  v1::CancelJobRequest cancel;
  cancel.set_job_id(job_id);
  v1::Job cancelled;
  EXPECT_TRUE(JobStub("")->CancelJob(As("admin-secret").get(), cancel, &cancelled).ok());
}

TEST_F(IdentityTest, SighupReloadsThePrincipalsWithoutDroppingAnyone) {
  const std::string job_id = RunningJob();
  auto workers = Workers();
  v1::RegisterWorkerResponse registered;
  EXPECT_EQ(workers->RegisterWorker(As("late-secret").get(), Registration("late-1"), &registered)
                .error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // A token added (and the intruder's revoked) while everything runs.
  const std::string tokens = *ReadFileToString(root_ + "/tokens");
  std::string rotated;
  for (absl::string_view line : absl::StrSplit(tokens, '\n')) {
    if (!absl::StartsWith(line, "worker intruder ") && !line.empty()) {
      absl::StrAppend(&rotated, line, "\n");
    }
  }
  absl::StrAppend(&rotated, "worker late ", Digest("late-secret"), " names=late-*\n");
  ASSERT_TRUE(WriteFileAtomic(root_ + "/tokens", rotated).ok());
  const int64_t step_before = Get(job_id).sft().step();
  coordinator_->Signal(SIGHUP);
  grpc::StatusCode code = grpc::StatusCode::UNAUTHENTICATED;
  for (int i = 0; i < 200 && code != grpc::StatusCode::OK; ++i) {
    code = workers->RegisterWorker(As("late-secret").get(), Registration("late-1"), &registered)
               .error_code();
    if (code != grpc::StatusCode::OK) absl::SleepFor(absl::Milliseconds(25));
  }
  EXPECT_EQ(code, grpc::StatusCode::OK);
  EXPECT_EQ(
      workers->RegisterWorker(As("intruder-secret").get(), Registration("intruder"), &registered)
          .error_code(),
      grpc::StatusCode::UNAUTHENTICATED);
  // A broken file: the principals stay as they were, and the log says why.
  ASSERT_TRUE(WriteFileAtomic(root_ + "/tokens", rotated + "garbage\n").ok());
  coordinator_->Signal(SIGHUP);
  for (int i = 0; i < 200; ++i) {
    if (ReadFileToString(root_ + "/coordinator.log")->find("principals not reloaded") !=
        std::string::npos) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(25));
  }
  EXPECT_THAT(*ReadFileToString(root_ + "/coordinator.log"),
              HasSubstr("principals not reloaded, the previous ones stay"));
  EXPECT_TRUE(
      workers->RegisterWorker(As("late-secret").get(), Registration("late-2"), &registered).ok());
  // The agents were not disturbed: still registered once, the job still advancing.
  for (int i = 0; i < 200 && Get(job_id).sft().step() <= step_before; ++i) {
    absl::SleepFor(absl::Milliseconds(25));
  }
  EXPECT_GT(Get(job_id).sft().step(), step_before);
  EXPECT_EQ(Get(job_id).sft().attempt(), 1);
  EXPECT_FALSE(coordinator_->Wait(absl::ZeroDuration()).has_value());  // SIGHUP did not stop it
  v1::CancelJobRequest cancel;
  cancel.set_job_id(job_id);
  v1::Job cancelled;
  EXPECT_TRUE(JobStub("")->CancelJob(As("admin-secret").get(), cancel, &cancelled).ok());
}

// Mutual TLS: a client certificate's name is the identity (x509: principals); a bearer token
// still wins when sent; an unknown certificate is UNAUTHENTICATED.
TEST_F(IdentityTest, ClientCertificatesAreIdentities) {
  std::string out;
  const std::string openssl = absl::StrCat(
      "cd ", root_, " && for n in w-cert stranger; do",
      " openssl req -newkey rsa:2048 -nodes -keyout $n.key -out $n.csr -subj /CN=$n"
      " && printf \"subjectAltName=DNS:$n\" > $n.ext"
      " && openssl x509 -req -in $n.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out $n.crt"
      " -days 1 -extfile $n.ext || exit 1; done");
  ASSERT_EQ(testing::RunCommand({"/bin/sh", "-c", openssl + " 2>&1"}, &out), 0) << out;
  ASSERT_TRUE(WriteFileAtomic(root_ + "/mtls-principals",
                              absl::StrCat("worker w-cert x509:w-cert\n", "admin ops ",
                                           Digest("admin-secret"), "\n"))
                  .ok());
  ChildProcess coordinator(
      {PAFT_COORDINATOR, "--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0",
       "--state_db=" + root_ + "/mtls.db", "--merger=" + merger_address_,
       "--merger_tls_ca=" + root_ + "/ca.crt", "--merger_token_file=" + root_ + "/coord.token",
       "--port_file=" + root_ + "/mtls.ports", "--tls_cert=" + root_ + "/server.crt",
       "--tls_key=" + root_ + "/server.key", "--tls_client_ca=" + root_ + "/ca.crt",
       "--auth_tokens=" + root_ + "/mtls-principals"},
      {}, root_ + "/mtls-coordinator.log");
  auto ports = testing::WaitForPortFile(root_ + "/mtls.ports", absl::Seconds(20));
  ASSERT_TRUE(ports.has_value()) << *ReadFileToString(root_ + "/mtls-coordinator.log");
  const std::string address = absl::StrCat("127.0.0.1:", (*ports)["grpc"]);
  auto stub_with = [&](const std::string& cert) {
    auto channel = MakeClientChannel(
        address, TlsConfig{cert.empty() ? "" : root_ + "/" + cert + ".crt",
                           cert.empty() ? "" : root_ + "/" + cert + ".key", root_ + "/ca.crt"});
    EXPECT_TRUE(channel.ok());
    return v1::WorkerService::NewStub(*channel);
  };
  v1::RegisterWorkerResponse registered;
  auto as_cert = stub_with("w-cert");
  EXPECT_TRUE(as_cert->RegisterWorker(As("").get(), Registration("w-cert"), &registered).ok());
  EXPECT_EQ(as_cert->RegisterWorker(As("").get(), Registration("w-sft"), &registered).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  // A token sent over the same connection is the identity instead (an admin may act as anyone).
  EXPECT_TRUE(
      as_cert->RegisterWorker(As("admin-secret").get(), Registration("w-sft"), &registered).ok());
  auto stranger = stub_with("stranger");
  EXPECT_EQ(
      stranger->RegisterWorker(As("").get(), Registration("stranger"), &registered).error_code(),
      grpc::StatusCode::UNAUTHENTICATED);
  // No client certificate: the handshake itself fails.
  auto anonymous = stub_with("");
  auto context = As("admin-secret");
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
  EXPECT_FALSE(anonymous->RegisterWorker(context.get(), Registration("x"), &registered).ok());
  coordinator.Signal(SIGTERM);
  EXPECT_TRUE(coordinator.Wait(absl::Seconds(20)).has_value());
}

}  // namespace
}  // namespace paft::auth_e2e
