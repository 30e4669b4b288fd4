// The TLS + principals fixture: certificates made with openssl, a merger that accepts only the
// coordinator, a coordinator with a principals file, and one agent per pool registering over TLS
// with a worker token.
#ifndef PAFT_TESTS_INTEGRATION_AUTH_FIXTURE_H_
#define PAFT_TESTS_INTEGRATION_AUTH_FIXTURE_H_

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/file_util.h"
#include "common/grpc_server.h"
#include "common/sha256.h"
#include "paft/v1/job.grpc.pb.h"
#include "paft/v1/merger.grpc.pb.h"
#include "paft/v1/worker.grpc.pb.h"
#include "tests/testing/process.h"
#include "tests/testing/temp_dir.h"

namespace paft::auth_e2e {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::ChildProcess;

inline std::string Digest(const std::string& token) {
  Sha256 sha;
  sha.Update(token);
  return sha.HexDigest();
}

class AuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_.path();
    std::string out;
    const std::string openssl = absl::StrCat(
        "cd ", root_,
        " && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 1"
        " -subj /CN=paft-test-ca"
        " && openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr"
        " -subj /CN=localhost"
        " && printf 'subjectAltName=DNS:localhost,IP:127.0.0.1' > san.ext"
        " && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial"
        " -out server.crt -days 1 -extfile san.ext");
    ASSERT_EQ(testing::RunCommand({"/bin/sh", "-c", openssl + " 2>&1"}, &out), 0) << out;
    ASSERT_TRUE(WriteFileAtomic(root_ + "/tokens",
                                absl::StrCat("# role identity sha256(token)\n",
                                             "admin ops ", Digest("admin-secret"), "\n",
                                             "client alice ", Digest("alice-secret"), "\n",
                                             "client bob ", Digest("bob-secret"), "\n",
                                             // One token for both agents, bound to their names.
                                             "worker agents ", Digest("worker-secret"),
                                             " names=w-*\n",
                                             "worker intruder ", Digest("intruder-secret"), "\n",
                                             "coordinator coord ", Digest("coord-secret"), "\n"))
                    .ok());
    for (const auto& [file, token] : {std::pair<std::string, std::string>{"worker.token", "worker-secret"},
                                      {"coord.token", "coord-secret"}}) {
      ASSERT_TRUE(WriteFileAtomic(root_ + "/" + file, token + "\n").ok());
    }
    ASSERT_EQ(testing::RunCommand({PAFT_MAKE_TOY_MODEL, "--out=" + root_ + "/models/base",
                                   "--vocab_size=64", "--hidden_size=32", "--intermediate_size=64",
                                   "--layers=2", "--heads=4", "--kv_heads=2"},
                                  &out),
              0)
        << out;
    ASSERT_TRUE(MakeDirs(root_ + "/data").ok());
    ASSERT_TRUE(WriteFileAtomic(root_ + "/data/sft.jsonl",
                                "{\"prompt\": \"1+1=\", \"completion\": \"2\"}\n").ok());
    ASSERT_TRUE(WriteFileAtomic(root_ + "/data/pref.jsonl",
                                "{\"prompt\": \"hi\", \"chosen\": \"hello\", \"rejected\": \"go\"}\n")
                    .ok());
    const std::vector<std::string> server_tls = {"--tls_cert=" + root_ + "/server.crt",
                                                 "--tls_key=" + root_ + "/server.key",
                                                 "--auth_tokens=" + root_ + "/tokens"};
    std::vector<std::string> merger_argv = {PAFT_MERGER, "serve", "--listen=127.0.0.1:0",
                                            "--metrics_listen=127.0.0.1:0",
                                            "--port_file=" + root_ + "/merger.ports"};
    merger_argv.insert(merger_argv.end(), server_tls.begin(), server_tls.end());
    merger_ = std::make_unique<ChildProcess>(merger_argv, std::vector<std::string>{},
                                             root_ + "/merger.log");
    auto merger_ports = testing::WaitForPortFile(root_ + "/merger.ports", absl::Seconds(20));
    ASSERT_TRUE(merger_ports.has_value());
    merger_address_ = absl::StrCat("127.0.0.1:", (*merger_ports)["grpc"]);
    std::vector<std::string> coordinator_argv = {
        PAFT_COORDINATOR, "--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0",
        "--state_db=" + root_ + "/state.db", "--merger=" + merger_address_,
        "--merger_tls_ca=" + root_ + "/ca.crt", "--merger_token_file=" + root_ + "/coord.token",
        "--port_file=" + root_ + "/coordinator.ports", "--tick_interval=100ms",
        "--max_active_jobs_per_client=1", "--max_streams_per_client=1",
        "--heartbeat_interval=500ms"};
    coordinator_argv.insert(coordinator_argv.end(), server_tls.begin(), server_tls.end());
    coordinator_ = std::make_unique<ChildProcess>(coordinator_argv, std::vector<std::string>{},
                                                  root_ + "/coordinator.log");
    auto ports = testing::WaitForPortFile(root_ + "/coordinator.ports", absl::Seconds(20));
    ASSERT_TRUE(ports.has_value());
    coordinator_ports_ = *ports;
    address_ = absl::StrCat("127.0.0.1:", (*ports)["grpc"]);
    for (const char* pool : {"sft", "align"}) {
      workers_.push_back(std::make_unique<ChildProcess>(
          std::vector<std::string>{PAFT_WORKER, "--coordinator=" + address_,
                                   std::string("--name=w-") + pool, std::string("--pool=") + pool,
                                   "--devices=2", "--address=127.0.0.1",
                                   "--tls_ca=" + root_ + "/ca.crt",
                                   "--token_file=" + root_ + "/worker.token",
                                   std::string("--trainer=") + PAFT_PLACEHOLDER_TRAINER},
          std::vector<std::string>{"PAFT_PLACEHOLDER_STEP_MS=10"},
          root_ + "/worker-" + pool + ".log"));
    }
    auto stub = JobStub("admin-secret");
    int registered = 0;
    for (int i = 0; i < 300 && registered < 2; ++i) {
      grpc::ClientContext context;
      context.AddMetadata("authorization", "Bearer admin-secret");
      v1::ListWorkersResponse workers;
      if (stub->ListWorkers(&context, {}, &workers).ok()) registered = workers.workers_size();
      if (registered < 2) absl::SleepFor(absl::Milliseconds(50));
    }
    ASSERT_EQ(registered, 2) << "the agents did not register over TLS with their token";
  }

  void TearDown() override {
    for (auto& w : workers_) w->Signal(SIGTERM);
    for (auto& w : workers_) w->Wait(absl::Seconds(20));
    for (auto* process : {coordinator_.get(), merger_.get()}) {
      if (process == nullptr) continue;
      process->Signal(SIGTERM);
      process->Wait(absl::Seconds(20));
    }
  }

  // A job that runs until cancelled (one rank per branch, many steps); its spec file.
  std::string WriteLongJobSpec() {
    const std::string path = root_ + "/long.yaml";
    EXPECT_TRUE(WriteFileAtomic(path, R"(
name: long
base_model: models/base
output_dir: jobs/long
sft: {pool: sft, world_size: 1, dataset: {path: data/sft.jsonl}, max_steps: 100000}
alignment: {pool: align, world_size: 1, dataset: {path: data/pref.jsonl}, max_steps: 100000}
)").ok());
    return path;
  }

  std::shared_ptr<grpc::Channel> Tls(const std::string& address) {
    auto channel = MakeClientChannel(address, TlsConfig{"", "", root_ + "/ca.crt"});
    EXPECT_TRUE(channel.ok());
    return *channel;
  }
  int MergerMetricsPort() {
    auto ports = testing::WaitForPortFile(root_ + "/merger.ports", absl::Seconds(1));
    return ports ? (*ports)["metrics"] : 0;
  }
  std::unique_ptr<v1::JobService::Stub> JobStub(const std::string&) {
    return v1::JobService::NewStub(Tls(address_));
  }
  static std::unique_ptr<grpc::ClientContext> As(const std::string& token) {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    if (!token.empty()) context->AddMetadata("authorization", "Bearer " + token);
    return context;
  }

  testing::TempDir dir_;
  std::string root_, address_, merger_address_;
  std::map<std::string, int> coordinator_ports_;
  std::unique_ptr<ChildProcess> merger_, coordinator_;
  std::vector<std::unique_ptr<ChildProcess>> workers_;
};

}  // namespace paft::auth_e2e

#endif  // PAFT_TESTS_INTEGRATION_AUTH_FIXTURE_H_
