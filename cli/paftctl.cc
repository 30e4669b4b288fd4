// paftctl: the client CLI of the coordinator's JobService.
//
//   paftctl [--coordinator=HOST:PORT] [--json] COMMAND ...
//     submit SPEC.yaml [--request_id=ID] [--watch]
//     get JOB_ID | list [--state=RUNNING] | watch JOB_ID | cancel JOB_ID [--reason=...]
//     workers [--pool=P] | checkpoints JOB_ID | health
//
// Exit codes: 0 success (for watch/submit --watch: the job SUCCEEDED), 1 the job FAILED or was
// CANCELLED, 2 usage or spec errors, 3 the coordinator could not be reached or refused the call.
#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <random>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/grpc_server.h"
#include "common/grpc_status.h"
#include "common/job_spec.h"
#include "common/time_util.h"
#include "paft/v1/job.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"

ABSL_FLAG(std::string, coordinator, "",
          "Coordinator address (default: $PAFT_COORDINATOR or localhost:50051)");
ABSL_FLAG(bool, json, false, "Print responses as JSON");
ABSL_FLAG(std::string, request_id, "", "submit: idempotency key (default: random)");
ABSL_FLAG(bool, watch, false, "submit: watch the job until it ends");
ABSL_FLAG(std::string, state, "", "list: only jobs in this state (e.g. RUNNING)");
ABSL_FLAG(std::string, reason, "", "cancel: reason recorded in the job");
ABSL_FLAG(std::string, pool, "", "workers: only this pool");
ABSL_FLAG(int, timeout_s, 10, "Deadline of unary calls, seconds");

namespace {

constexpr int kExitOk = 0;
constexpr int kExitJobFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitRpc = 3;

using paft::v1::Job;

std::string CoordinatorAddress() {
  std::string address = absl::GetFlag(FLAGS_coordinator);
  if (address.empty()) {
    const char* env = std::getenv("PAFT_COORDINATOR");
    address = env != nullptr ? env : "localhost:50051";
  }
  return address;
}

std::unique_ptr<grpc::ClientContext> Context() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::seconds(absl::GetFlag(FLAGS_timeout_s)));
  return context;
}

int RpcError(const grpc::Status& status) {
  std::cerr << "error: " << paft::FromGrpcStatus(status) << "\n";
  return kExitRpc;
}

std::string ToJson(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

std::string Short(const std::string& enum_name, const std::string& prefix) {
  return enum_name.rfind(prefix, 0) == 0 ? enum_name.substr(prefix.size()) : enum_name;
}
std::string JobStateName(paft::v1::JobState s) {
  return Short(paft::v1::JobState_Name(s), "JOB_STATE_");
}
std::string BranchStateName(paft::v1::BranchState s) {
  return Short(paft::v1::BranchState_Name(s), "BRANCH_STATE_");
}

std::string ProgressBar(int64_t step, int64_t total, int width = 24) {
  const int filled = total > 0 ? static_cast<int>(width * std::min<int64_t>(step, total) / total) : 0;
  return "[" + std::string(filled, '#') + std::string(width - filled, '.') + "]";
}

void PrintBranch(const char* name, const paft::v1::BranchStatus& b) {
  std::cout << absl::StrFormat("  %-10s %-11s attempt %d  %s %lld/%lld  loss %.4f", name,
                               BranchStateName(b.state()), b.attempt(),
                               ProgressBar(b.step(), b.total_steps()),
                               static_cast<long long>(b.step()),
                               static_cast<long long>(b.total_steps()), b.loss());
  if (!b.reason().empty()) std::cout << "  (" << b.reason() << ")";
  std::cout << "\n";
  if (!b.checkpoint_path().empty()) {
    std::cout << "             checkpoint step " << b.checkpoint_step() << ": "
              << b.checkpoint_path() << "\n";
  }
}

void PrintJob(const Job& job) {
  if (absl::GetFlag(FLAGS_json)) {
    std::cout << ToJson(job) << "\n";
    return;
  }
  std::cout << "job " << job.job_id() << (job.spec().name().empty() ? "" : " (" + job.spec().name() + ")")
            << ": " << JobStateName(job.state());
  if (!job.reason().empty()) std::cout << " - " << job.reason() << ": " << job.message();
  std::cout << "\n";
  if (job.queue_position() > 0) std::cout << "  queue position " << job.queue_position() << "\n";
  PrintBranch("sft", job.sft());
  PrintBranch("alignment", job.alignment());
  std::cout << "  restarts used " << job.restarts_used() << " of " << job.spec().restart_budget()
            << "\n";
  if (!job.merged_model_path().empty()) {
    std::cout << "  merged model: " << job.merged_model_path() << "\n";
  }
}

int ExitCodeFor(const Job& job) {
  return job.state() == paft::v1::JOB_STATE_SUCCEEDED ? kExitOk : kExitJobFailed;
}

int Watch(paft::v1::JobService::Stub& stub, const std::string& job_id) {
  int64_t after = 0;
  for (int reconnects = 0;; ++reconnects) {
    grpc::ClientContext context;
    paft::v1::WatchJobRequest request;
    request.set_job_id(job_id);
    request.set_after_seq(after);
    auto reader = stub.WatchJob(&context, request);
    paft::v1::JobEvent event;
    while (reader->Read(&event)) {
      after = event.seq();
      if (absl::GetFlag(FLAGS_json)) {
        std::cout << ToJson(event) << "\n" << std::flush;
        continue;
      }
      std::string what;
      if (event.type() == "JobState") {
        what = "job " + JobStateName(event.job_state());
      } else if (event.type() == "BranchState") {
        what = absl::StrCat(event.branch() == paft::v1::BRANCH_KIND_SFT ? "sft" : "alignment",
                            " ", BranchStateName(event.branch_state()));
      } else {
        what = event.type();
      }
      std::cout << absl::FormatTime("%H:%M:%S", paft::FromProtoTime(event.time()),
                                    absl::LocalTimeZone())
                << "  " << std::left << std::setw(24) << what << " " << event.reason()
                << (event.message().empty() ? "" : ": " + event.message()) << "\n"
                << std::flush;
    }
    grpc::Status status = reader->Finish();
    if (status.ok()) break;
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE || reconnects >= 30) {
      return RpcError(status);
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));  // coordinator restarting: resume
  }
  Job job;
  auto context = Context();
  paft::v1::GetJobRequest get;
  get.set_job_id(job_id);
  grpc::Status status = stub.GetJob(context.get(), get, &job);
  if (!status.ok()) return RpcError(status);
  PrintJob(job);
  return ExitCodeFor(job);
}

std::string RandomRequestId() {
  std::mt19937_64 rng(std::random_device{}());
  return absl::StrFormat("req-%016x", rng());
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "paftctl [--coordinator=HOST:PORT] [--json] COMMAND\n"
      "  submit SPEC.yaml [--request_id=ID] [--watch]\n"
      "  get JOB_ID | list [--state=S] | watch JOB_ID | cancel JOB_ID [--reason=R]\n"
      "  workers [--pool=P] | checkpoints JOB_ID | health");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() < 2) {
    std::cerr << absl::ProgramUsageMessage() << "\n";
    return kExitUsage;
  }
  const std::string command = args[1];
  auto need = [&](size_t n) {
    if (args.size() != n + 2) {
      std::cerr << "usage: " << absl::ProgramUsageMessage() << "\n";
      std::exit(kExitUsage);
    }
  };
  auto channel = paft::MakeChannel(CoordinatorAddress());
  auto stub = paft::v1::JobService::NewStub(channel);

  if (command == "submit") {
    need(1);
    auto spec = paft::LoadJobSpecFile(args[2]);
    if (!spec.ok()) {
      std::cerr << "error: " << spec.status() << "\n";
      return kExitUsage;
    }
    std::error_code ec;
    auto spec_dir = std::filesystem::absolute(args[2], ec).parent_path().string();
    paft::ResolveRelativePaths(&*spec, spec_dir);
    paft::v1::SubmitJobRequest request;
    request.set_request_id(absl::GetFlag(FLAGS_request_id).empty() ? RandomRequestId()
                                                                   : absl::GetFlag(FLAGS_request_id));
    *request.mutable_spec() = *spec;
    Job job;
    auto context = Context();
    grpc::Status status = stub->SubmitJob(context.get(), request, &job);
    if (status.error_code() == grpc::StatusCode::INVALID_ARGUMENT ||
        status.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
      std::cerr << "rejected: " << status.error_message() << "\n";
      return kExitUsage;
    }
    if (!status.ok()) return RpcError(status);
    if (absl::GetFlag(FLAGS_json) && !absl::GetFlag(FLAGS_watch)) {
      PrintJob(job);
    } else {
      std::cout << "submitted job " << job.job_id() << " (request " << request.request_id()
                << ")\n";
    }
    return absl::GetFlag(FLAGS_watch) ? Watch(*stub, job.job_id()) : kExitOk;
  }
  if (command == "get") {
    need(1);
    paft::v1::GetJobRequest request;
    request.set_job_id(args[2]);
    Job job;
    auto context = Context();
    grpc::Status status = stub->GetJob(context.get(), request, &job);
    if (!status.ok()) return RpcError(status);
    PrintJob(job);
    return kExitOk;
  }
  if (command == "list") {
    need(0);
    paft::v1::ListJobsRequest request;
    if (!absl::GetFlag(FLAGS_state).empty()) {
      paft::v1::JobState state;
      if (!paft::v1::JobState_Parse("JOB_STATE_" + absl::GetFlag(FLAGS_state), &state)) {
        std::cerr << "--state: unknown state '" << absl::GetFlag(FLAGS_state) << "'\n";
        return kExitUsage;
      }
      request.add_states(state);
    }
    std::vector<Job> jobs;
    do {
      paft::v1::ListJobsResponse response;
      auto context = Context();
      grpc::Status status = stub->ListJobs(context.get(), request, &response);
      if (!status.ok()) return RpcError(status);
      for (const auto& j : response.jobs()) jobs.push_back(j);
      request.set_page_token(response.next_page_token());
    } while (!request.page_token().empty());
    if (absl::GetFlag(FLAGS_json)) {
      paft::v1::ListJobsResponse all;
      for (const auto& j : jobs) *all.add_jobs() = j;
      std::cout << ToJson(all) << "\n";
      return kExitOk;
    }
    std::cout << absl::StrFormat("%-20s %-10s %-11s %-11s %s\n", "JOB", "STATE", "SFT",
                                 "ALIGNMENT", "NAME");
    for (const auto& j : jobs) {
      std::cout << absl::StrFormat("%-20s %-10s %-11s %-11s %s\n", j.job_id(),
                                   JobStateName(j.state()), BranchStateName(j.sft().state()),
                                   BranchStateName(j.alignment().state()), j.spec().name());
    }
    return kExitOk;
  }
  if (command == "watch") {
    need(1);
    return Watch(*stub, args[2]);
  }
  if (command == "cancel") {
    need(1);
    paft::v1::CancelJobRequest request;
    request.set_job_id(args[2]);
    request.set_reason(absl::GetFlag(FLAGS_reason));
    Job job;
    auto context = Context();
    grpc::Status status = stub->CancelJob(context.get(), request, &job);
    if (!status.ok()) return RpcError(status);
    PrintJob(job);
    return kExitOk;
  }
  if (command == "workers") {
    need(0);
    paft::v1::ListWorkersRequest request;
    request.set_pool(absl::GetFlag(FLAGS_pool));
    paft::v1::ListWorkersResponse response;
    auto context = Context();
    grpc::Status status = stub->ListWorkers(context.get(), request, &response);
    if (!status.ok()) return RpcError(status);
    if (absl::GetFlag(FLAGS_json)) {
      std::cout << ToJson(response) << "\n";
      return kExitOk;
    }
    std::cout << absl::StrFormat("%-24s %-10s %-8s %-6s %s\n", "WORKER", "POOL", "DEVICES",
                                 "BUSY", "ADDRESS");
    for (const auto& w : response.workers()) {
      std::cout << absl::StrFormat("%-24s %-10s %-8d %-6d %s\n", w.worker_id(), w.pool(),
                                   w.devices(), w.busy_devices(), w.address());
    }
    return kExitOk;
  }
  if (command == "checkpoints") {
    need(1);
    paft::v1::ListCheckpointsRequest request;
    request.set_job_id(args[2]);
    paft::v1::ListCheckpointsResponse response;
    auto context = Context();
    grpc::Status status = stub->ListCheckpoints(context.get(), request, &response);
    if (!status.ok()) return RpcError(status);
    if (absl::GetFlag(FLAGS_json)) {
      std::cout << ToJson(response) << "\n";
      return kExitOk;
    }
    for (const auto& c : response.checkpoints()) {
      std::cout << absl::StrFormat("%-10s step %-8d %10d bytes %s%s\n",
                                   c.branch() == paft::v1::BRANCH_KIND_SFT ? "sft" : "alignment",
                                   c.step(), c.size_bytes(), c.path(), c.final() ? " (final)" : "");
    }
    return kExitOk;
  }
  if (command == "health") {
    need(0);
    auto health = grpc::health::v1::Health::NewStub(channel);
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
    auto context = Context();
    grpc::Status status = health->Check(context.get(), request, &response);
    if (!status.ok()) return RpcError(status);
    std::cout << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status())
              << "\n";
    return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? kExitOk
                                                                                : kExitRpc;
  }
  std::cerr << "unknown command '" << command << "'\n" << absl::ProgramUsageMessage() << "\n";
  return kExitUsage;
}
