// paftctl: the client CLI of the coordinator's JobService.
//
//   paftctl [--coordinator=HOST:PORT] [--json] COMMAND ...
//     submit SPEC.yaml [--request_id=ID] [--watch]
//     get JOB_ID | list [--state=RUNNING] | watch JOB_ID | cancel JOB_ID [--reason=...]
//     merges JOB_ID                    the merge search's table (merge.search)
//     events JOB_ID [--after=SEQ] | logs JOB_ID sft|alignment|merge-search [--rank=R] [--attempt=N]
//       [--follow]
//     workers [--pool=P] | checkpoints JOB_ID [--all] | health
//     local up [--pools=sft:2,align:2] | local down | local status      [--local_dir=DIR]
//
// The coordinator's address: --coordinator, else $PAFT_COORDINATOR, else the local cluster
// recorded in --local_dir (`paftctl local up`), else localhost:50051.
//
// Exit codes: 0 success (for watch/submit --watch: the job SUCCEEDED), 1 the job FAILED or was
// CANCELLED, 2 usage or spec errors, 3 the coordinator could not be reached or refused the call.
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
#include "cli/exit_codes.h"
#include "cli/local_cluster.h"
#include "cli/local_command.h"
#include "cli/printers.h"
#include "common/auth.h"
#include "common/grpc_server.h"
#include "common/grpc_status.h"
#include "common/job_layout.h"
#include "common/job_spec.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "paft/v1/job.grpc.pb.h"

ABSL_FLAG(std::string, coordinator, "",
          "Coordinator address (default: $PAFT_COORDINATOR or localhost:50051)");
ABSL_FLAG(bool, json, false, "Print responses as JSON");
ABSL_FLAG(std::string, request_id, "", "submit: idempotency key (default: random)");
ABSL_FLAG(bool, watch, false, "submit: watch the job until it ends");
ABSL_FLAG(std::string, state, "", "list: only jobs in this state (e.g. RUNNING)");
ABSL_FLAG(std::string, reason, "", "cancel: reason recorded in the job");
ABSL_FLAG(std::string, pool, "", "workers: only this pool");
ABSL_FLAG(int, timeout_s, 10, "Deadline of unary calls, seconds");
ABSL_FLAG(std::string, tls_ca, "", "Verify the coordinator's TLS certificate with this CA "
          "(default: $PAFT_TLS_CA; empty: plaintext)");
ABSL_FLAG(std::string, tls_cert, "", "Client certificate for mutual TLS (default: $PAFT_TLS_CERT)");
ABSL_FLAG(std::string, tls_key, "", "Client key for mutual TLS (default: $PAFT_TLS_KEY)");
ABSL_FLAG(std::string, token_file, "",
          "File with the bearer token (default: the token in $PAFT_TOKEN, if set)");
ABSL_FLAG(int64_t, after, 0, "events: only events with a larger seq");
ABSL_FLAG(int, rank, 0, "logs: the rank whose output to show");
ABSL_FLAG(int, attempt, 0, "logs: the attempt (default: the current or last one)");
ABSL_FLAG(bool, follow, false, "logs: keep printing what the rank writes until it ends");
ABSL_FLAG(std::string, local_dir, ".paft/local/cluster",
          "local: the local cluster's folder (state database, logs, cluster.json)");
ABSL_FLAG(std::string, bin_dir, "", "local up: where the paft binaries are (default: found)");
ABSL_FLAG(std::string, pools, "sft:2,align:2", "local up: POOL:SLOTS of the worker agents");
ABSL_FLAG(int, grace_s, 40, "local down: seconds to wait for each process before SIGKILL");
ABSL_FLAG(bool, all, false, "checkpoints: include those retired by the retention policy");
ABSL_FLAG(int, progress_every_s, 10,
          "watch: when the output is not a terminal, print a branch's progress at most this often");

namespace {

using paft::cli::BranchStateName;
using paft::cli::EventLine;
using paft::cli::JobStateName;
using paft::cli::kExitJobFailed;
using paft::cli::kExitOk;
using paft::cli::kExitRpc;
using paft::cli::kExitUsage;
using paft::cli::PrintJob;
using paft::cli::ToJson;

using paft::v1::Job;

std::string CoordinatorAddress() {
  std::string address = absl::GetFlag(FLAGS_coordinator);
  if (!address.empty()) return address;
  if (const char* env = std::getenv("PAFT_COORDINATOR"); env != nullptr && *env != '\0') {
    return env;
  }
  if (auto local = paft::cli::LocalStatus(absl::GetFlag(FLAGS_local_dir));
      local.ok() && !local->processes.empty()) {
    return local->coordinator;
  }
  return "localhost:50051";
}

paft::v1::BranchKind ParseBranch(const std::string& name) {
  return paft::BranchKindNamed(name).value_or(paft::v1::BRANCH_KIND_UNSPECIFIED);
}

std::string FlagOrEnv(const std::string& flag, const char* env) {
  if (!flag.empty()) return flag;
  const char* value = std::getenv(env);
  return value == nullptr ? "" : value;
}

// The bearer token: --token_file, else $PAFT_TOKEN. Never printed.
const std::string& Token() {
  static const std::string token = [] {
    if (!absl::GetFlag(FLAGS_token_file).empty()) {
      auto read = paft::ReadToken(absl::GetFlag(FLAGS_token_file));
      if (!read.ok()) {
        std::cerr << "error: " << read.status() << "\n";
        std::exit(2);
      }
      return *read;
    }
    return FlagOrEnv("", "PAFT_TOKEN");
  }();
  return token;
}

std::unique_ptr<grpc::ClientContext> Context() {
  auto context = std::make_unique<grpc::ClientContext>();
  paft::AddToken(context.get(), Token());
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::seconds(absl::GetFlag(FLAGS_timeout_s)));
  return context;
}

int RpcError(const grpc::Status& status) {
  std::cerr << "error: " << paft::FromGrpcStatus(status) << "\n";
  return kExitRpc;
}

int ExitCodeFor(const Job& job) {
  return job.state() == paft::v1::JOB_STATE_SUCCEEDED ? kExitOk : kExitJobFailed;
}

int Watch(paft::v1::JobService::Stub& stub, const std::string& job_id) {
  int64_t after = 0;
  paft::cli::WatchPrinter printer(absl::Seconds(absl::GetFlag(FLAGS_progress_every_s)));
  for (int reconnects = 0;; ++reconnects) {
    grpc::ClientContext context;
    paft::AddToken(&context, Token());
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
      if (event.type() == "Progress") {
        printer.Progress(event);
        continue;
      }
      if (event.type() == "BranchState" && event.branch_state() != paft::v1::BRANCH_STATE_RUNNING) {
        printer.EndBar(event.branch());
      }
      printer.Event(EventLine(event));
    }
    grpc::Status status = reader->Finish();
    printer.Finish();
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
  PrintJob(job, absl::GetFlag(FLAGS_json));
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
      "  get JOB_ID | list [--state=S] | watch JOB_ID | cancel JOB_ID [--reason=R] | merges JOB_ID\n"
      "  events JOB_ID [--after=SEQ] | logs JOB_ID sft|alignment|merge-search [--rank=R] [--attempt=N] "
      "[--follow]\n"
      "  workers [--pool=P] | checkpoints JOB_ID [--all] | health\n"
      "  local up [--pools=sft:2,align:2] | local down | local status   [--local_dir=DIR]");
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
  if (command == "local") {
    need(1);
    return paft::cli::LocalCommand(
        args[2], argv[0],
        paft::cli::LocalCommandFlags{absl::GetFlag(FLAGS_local_dir), absl::GetFlag(FLAGS_bin_dir),
                                     absl::GetFlag(FLAGS_pools), absl::GetFlag(FLAGS_grace_s),
                                     absl::GetFlag(FLAGS_json)});
  }
  auto made = paft::MakeClientChannel(
      CoordinatorAddress(),
      paft::TlsConfig{FlagOrEnv(absl::GetFlag(FLAGS_tls_cert), "PAFT_TLS_CERT"),
                      FlagOrEnv(absl::GetFlag(FLAGS_tls_key), "PAFT_TLS_KEY"),
                      FlagOrEnv(absl::GetFlag(FLAGS_tls_ca), "PAFT_TLS_CA")});
  if (!made.ok()) {
    std::cerr << "error: " << made.status() << "\n";
    return kExitUsage;
  }
  auto channel = *made;
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
        status.error_code() == grpc::StatusCode::FAILED_PRECONDITION ||
        status.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
      std::cerr << "rejected: " << status.error_message() << "\n";
      return kExitUsage;
    }
    if (!status.ok()) return RpcError(status);
    if (absl::GetFlag(FLAGS_json) && !absl::GetFlag(FLAGS_watch)) {
      PrintJob(job, absl::GetFlag(FLAGS_json));
    } else {
      std::cout << "submitted job " << job.job_id() << " (request " << request.request_id()
                << ")\n";
    }
    return absl::GetFlag(FLAGS_watch) ? Watch(*stub, job.job_id()) : kExitOk;
  }
  if (command == "get" || command == "merges") {
    need(1);
    paft::v1::GetJobRequest request;
    request.set_job_id(args[2]);
    Job job;
    auto context = Context();
    grpc::Status status = stub->GetJob(context.get(), request, &job);
    if (!status.ok()) return RpcError(status);
    if (command == "get") {
      PrintJob(job, absl::GetFlag(FLAGS_json));
      return kExitOk;
    }
    if (absl::GetFlag(FLAGS_json)) {
      std::cout << ToJson(job.merge_search_result()) << "\n";
      return kExitOk;
    }
    if (!job.spec().merge().has_search()) {
      std::cerr << "job " << job.job_id() << " has no merge search (merge.search)\n";
      return kExitUsage;
    }
    if (job.merge_search_result().candidates_size() == 0) {
      std::cout << "job " << job.job_id() << ": the merge search has not finished ("
                << BranchStateName(job.merge_search().state()) << ")\n";
      return kExitOk;
    }
    std::cout << paft::cli::FormatMergeSearch(job.merge_search_result());
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
    PrintJob(job, absl::GetFlag(FLAGS_json));
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
    std::cout << absl::StrFormat("%-24s %-10s %-8s %-6s %-22s %s\n", "WORKER", "POOL", "DEVICES",
                                 "BUSY", "ADDRESS", "DEVICE");
    for (const auto& w : response.workers()) {
      // The first slot's device stands for the agent's (one agent's GPUs are alike).
      std::string device = "cpu";
      if (w.device_info_size() > 0 && !w.device_info(0).model().empty()) {
        device = absl::StrFormat("%s, %.1f GiB", w.device_info(0).model(),
                                 w.device_info(0).memory_bytes() / double(1 << 30));
      }
      std::cout << absl::StrFormat("%-24s %-10s %-8d %-6d %-22s %s\n", w.worker_id(), w.pool(),
                                   w.devices(), w.busy_devices(), w.address(), device);
    }
    return kExitOk;
  }
  if (command == "checkpoints") {
    need(1);
    paft::v1::ListCheckpointsRequest request;
    request.set_job_id(args[2]);
    request.set_include_retired(absl::GetFlag(FLAGS_all));
    paft::v1::ListCheckpointsResponse response;
    auto context = Context();
    grpc::Status status = stub->ListCheckpoints(context.get(), request, &response);
    if (!status.ok()) return RpcError(status);
    if (absl::GetFlag(FLAGS_json)) {
      std::cout << ToJson(response) << "\n";
      return kExitOk;
    }
    std::cout << absl::StrFormat("%-10s %8s %8s %12s %10s  %s\n", "BRANCH", "STEP", "ATTEMPT",
                                 "BYTES", "LOSS", "PATH");
    for (const auto& c : response.checkpoints()) {
      auto loss = c.metrics().find("loss");
      std::cout << absl::StrFormat(
          "%-10s %8d %8d %12d %10s  %s%s%s\n",
          paft::BranchName(c.branch()), c.step(), c.attempt(),
          c.size_bytes(),
          loss == c.metrics().end() ? "-" : absl::StrFormat("%.4f", loss->second), c.path(),
          c.pinned() ? " (final, pinned)" : c.final() ? " (final)" : "",
          c.retired() ? " (retired)" : "");
    }
    return kExitOk;
  }
  if (command == "events") {
    need(1);
    paft::v1::ListEventsRequest request;
    request.set_job_id(args[2]);
    request.set_after_seq(absl::GetFlag(FLAGS_after));
    request.set_page_size(1000);
    paft::v1::ListEventsResponse all;
    while (true) {
      paft::v1::ListEventsResponse page;
      auto context = Context();
      grpc::Status status = stub->ListEvents(context.get(), request, &page);
      if (!status.ok()) return RpcError(status);
      for (const auto& e : page.events()) *all.add_events() = e;
      if (!page.more() || page.events().empty()) break;
      request.set_after_seq(page.events(page.events_size() - 1).seq());
    }
    if (absl::GetFlag(FLAGS_json)) {
      std::cout << ToJson(all) << "\n";
      return kExitOk;
    }
    for (const auto& e : all.events()) std::cout << std::setw(4) << e.seq() << "  " << EventLine(e) << "\n";
    return kExitOk;
  }
  if (command == "logs") {
    need(2);
    paft::v1::StreamLogsRequest request;
    request.set_job_id(args[2]);
    request.set_branch(ParseBranch(args[3]));
    if (request.branch() == paft::v1::BRANCH_KIND_UNSPECIFIED) {
      std::cerr << "logs: the branch is sft, alignment or merge-search, not '" << args[3] << "'\n";
      return kExitUsage;
    }
    request.set_rank(absl::GetFlag(FLAGS_rank));
    request.set_attempt(absl::GetFlag(FLAGS_attempt));
    request.set_follow(absl::GetFlag(FLAGS_follow));
    // A follow outlives the coordinator's restarts: resume from the offset reached.
    for (int reconnects = 0;; ++reconnects) {
      grpc::ClientContext context;
      paft::AddToken(&context, Token());
      if (!request.follow()) {
        context.set_deadline(std::chrono::system_clock::now() +
                             std::chrono::seconds(absl::GetFlag(FLAGS_timeout_s) * 6));
      }
      auto reader = stub->StreamLogs(&context, request);
      paft::v1::LogChunk chunk;
      while (reader->Read(&chunk)) {
        std::cout << chunk.data() << std::flush;
        request.set_offset(chunk.offset() + static_cast<int64_t>(chunk.data().size()));
        request.set_attempt(chunk.attempt());  // stay on this attempt when following
      }
      grpc::Status status = reader->Finish();
      if (status.ok()) return kExitOk;
      if (!request.follow() || status.error_code() != grpc::StatusCode::UNAVAILABLE ||
          reconnects >= 30) {
        return RpcError(status);
      }
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
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
