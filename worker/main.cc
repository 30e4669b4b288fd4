// paft-worker: the worker agent of one node (or pod), and the trainer it runs.
//
//   paft-worker --pool=sft --devices=2 --coordinator=HOST:PORT     the agent
//   paft-worker train --task_file=TASK.json                         one rank (run by the agent)
//   paft-worker train SPEC.yaml --branch=sft                        one branch, standalone
//   paft-worker eval --base=MODEL [--adapter=DIR] [--reference=MODEL] --dataset=DATA
//                                                                  evaluation report (JSON)
//   paft-worker devices                                             the GPUs it sees, LibTorch,
//                                                                  CUDA and NCCL versions (JSON)
#include <unistd.h>

#include <climits>
#include <filesystem>
#include <iostream>
#include <map>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "common/auth.h"
#include "common/grpc_server.h"
#include "common/logging.h"
#include "common/metrics.h"
#include "common/process_util.h"
#include "nlohmann/json.hpp"
#include "trainer/devices.h"
#include "worker/agent.h"
#include "worker/device_slots.h"
#include "worker/train_command.h"

ABSL_FLAG(std::string, coordinator, "localhost:50051", "Coordinator address");
ABSL_FLAG(std::string, name, "", "Stable agent name (default: host name)");
ABSL_FLAG(std::string, pool, "", "Pool label of this agent's devices (required)");
ABSL_FLAG(int, devices, 0,
          "Device slots offered, one trainer rank each (0: one per visible GPU, or 1 without GPUs)");
ABSL_FLAG(std::string, address, "", "Address of this host for rank-0 rendezvous (default: host name)");
ABSL_FLAG(std::string, trainer, "",
          "Trainer executable (default: this binary's `train` mode)");
ABSL_FLAG(std::string, task_file, "", "train: the Task as JSON (agent mode)");
ABSL_FLAG(std::string, branch, "", "train: sft or alignment (standalone mode)");
ABSL_FLAG(std::string, prepare, "", "train/eval: paft-prepare (default: found beside this binary)");
ABSL_FLAG(std::string, merger, "",
          "train: paft-merger, for merge search tasks (default: found beside this binary)");
ABSL_FLAG(int, threads, 0, "train/eval: intra-op threads (0: OMP_NUM_THREADS, else all cores)");
ABSL_FLAG(int, collective_timeout_s, 120,
          "train: rendezvous and collective timeout; a dead peer fails the rank this soon");
ABSL_FLAG(std::string, base, "", "eval: base model folder");
ABSL_FLAG(std::string, adapter, "", "eval: PEFT adapter folder");
ABSL_FLAG(std::string, cache_dir, "",
          "eval: where a JSONL dataset's tokenized copy goes (default: beside the dataset)");
ABSL_FLAG(std::string, reference, "",
          "eval: reference model of the preference rewards (default: --base without the adapter)");
ABSL_FLAG(std::string, dataset, "", "eval: dataset (JSONL or .paftds)");
ABSL_FLAG(double, beta, 0.1, "eval: DPO beta for rewards");
ABSL_FLAG(int64_t, max_new_tokens, 64, "eval: generation length for exact match");
ABSL_FLAG(std::string, metrics_listen, "",
          "agent: serve Prometheus /metrics here (e.g. 0.0.0.0:9092; empty: no metrics)");
ABSL_FLAG(std::string, port_file, "", "agent: write the metrics port here as JSON");
ABSL_FLAG(std::string, tls_ca, "", "agent: verify the coordinator's TLS certificate with this CA");
ABSL_FLAG(std::string, tls_cert, "", "agent: client certificate for mutual TLS");
ABSL_FLAG(std::string, tls_key, "", "agent: client key for mutual TLS");
ABSL_FLAG(std::string, token_file, "", "agent: bearer token (role worker) for the coordinator");
ABSL_FLAG(absl::Duration, progress_interval, absl::Seconds(1),
          "Report a rank's progress to the coordinator at most this often");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(30),
          "On SIGTERM, how long trainers get to stop before SIGKILL");

namespace {

std::string SelfPath() {
  std::error_code ec;
  return std::filesystem::read_symlink("/proc/self/exe", ec).string();
}

}  // namespace

int main(int argc, char** argv) {
  // First thing, before any thread exists: the agent drains on SIGTERM (the trainer modes below
  // unblock it again and die on it as usual).
  paft::BlockTerminationSignals();
  absl::SetProgramUsageMessage(
      "paft-worker --pool=sft --devices=2 --coordinator=HOST:PORT\n"
      "paft-worker train --task_file=TASK.json | paft-worker train SPEC.yaml --branch=sft\n"
      "paft-worker eval --base=MODEL [--adapter=DIR] [--reference=MODEL] --dataset=DATA\n"
      "paft-worker devices");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  const std::string command = args.size() >= 2 ? args[1] : "";
  const std::string prepare =
      absl::GetFlag(FLAGS_prepare).empty()
          ? paft::worker::FindSiblingBinary(SelfPath(), "paft-prepare", "tokenizer")
          : absl::GetFlag(FLAGS_prepare);
  if (command == "train" || command == "eval") paft::UnblockTerminationSignals();
  if (command == "train") {
    paft::worker::TrainCommandOptions options;
    options.task_file = absl::GetFlag(FLAGS_task_file);
    if (args.size() >= 3) options.spec_file = args[2];
    options.branch = absl::GetFlag(FLAGS_branch);
    options.prepare_binary = prepare;
    options.merger_binary = absl::GetFlag(FLAGS_merger).empty()
                                ? paft::worker::FindSiblingBinary(SelfPath(), "paft-merger", "merger")
                                : absl::GetFlag(FLAGS_merger);
    options.threads = absl::GetFlag(FLAGS_threads);
    options.collective_timeout_seconds = absl::GetFlag(FLAGS_collective_timeout_s);
    return paft::worker::RunTrainCommand(options);
  }
  if (command == "eval") {
    paft::worker::EvalCommandOptions options;
    options.base_model = absl::GetFlag(FLAGS_base);
    options.adapter = absl::GetFlag(FLAGS_adapter);
    options.reference = absl::GetFlag(FLAGS_reference);
    options.cache_dir = absl::GetFlag(FLAGS_cache_dir);
    options.dataset = absl::GetFlag(FLAGS_dataset);
    options.beta = absl::GetFlag(FLAGS_beta);
    options.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
    options.prepare_binary = prepare;
    if (options.base_model.empty() || options.dataset.empty()) {
      std::cerr << "eval needs --base and --dataset\n";
      return 2;
    }
    return paft::worker::RunEvalCommand(options);
  }
  if (command == "devices") {
    const paft::trainer::BuildInfo build = paft::trainer::TrainerBuildInfo();
    nlohmann::json report = {{"torch", build.torch_version},
                             {"cuda", build.cuda_version},
                             {"nccl", build.nccl_version},
                             {"cuda_available", build.cuda_available},
                             {"devices", nlohmann::json::array()}};
    for (const auto& d : paft::trainer::CudaDevices()) {
      report["devices"].push_back({{"name", absl::StrCat("cuda:", d.index)},
                                   {"model", d.model},
                                   {"memory_bytes", d.memory_bytes},
                                   {"compute_capability", absl::StrCat(d.major, ".", d.minor)}});
    }
    std::cout << report.dump(2) << "\n";
    return 0;
  }
  if (!command.empty()) {
    std::cerr << "unknown command '" << command << "'\n" << absl::ProgramUsageMessage() << "\n";
    return 2;
  }
  char host[HOST_NAME_MAX + 1] = {};
  ::gethostname(host, sizeof(host));

  paft::worker::AgentOptions options;
  options.coordinator = absl::GetFlag(FLAGS_coordinator);
  options.name = absl::GetFlag(FLAGS_name).empty() ? host : absl::GetFlag(FLAGS_name);
  options.pool = absl::GetFlag(FLAGS_pool);
  options.address = absl::GetFlag(FLAGS_address).empty() ? host : absl::GetFlag(FLAGS_address);
  options.trainer = absl::GetFlag(FLAGS_trainer);
  options.progress_interval = absl::GetFlag(FLAGS_progress_interval);
  if (options.trainer.empty()) {
    options.trainer = SelfPath();  // this binary's `train` mode
    options.trainer_args = {"train"};
  }
  paft::SetLogTag("worker " + options.name);
  if (options.pool.empty()) {
    PAFT_LOG(ERROR) << "--pool is required";
    return 2;
  }
  auto slots = paft::worker::ResolveDeviceSlots(absl::GetFlag(FLAGS_devices),
                                                paft::trainer::CudaDevices());
  if (!slots.ok()) {
    PAFT_LOG(ERROR) << slots.status().message();
    return 2;
  }
  options.devices = static_cast<int>(slots->size());
  options.device_info = std::move(*slots);
  if (::access(options.trainer.c_str(), X_OK) != 0) {
    PAFT_LOG(ERROR) << "trainer '" << options.trainer << "' is not executable";
    return 2;
  }
  // The agent counts its metrics whether or not they are served.
  auto registry = std::make_shared<prometheus::Registry>();
  options.metrics = registry.get();
  std::unique_ptr<paft::MetricsServer> metrics_server;
  if (!absl::GetFlag(FLAGS_metrics_listen).empty()) {
    auto started = paft::MetricsServer::Start(absl::GetFlag(FLAGS_metrics_listen), "worker", registry);
    if (!started.ok()) {
      PAFT_LOG(ERROR) << started.status();
      return 1;
    }
    metrics_server = std::move(*started);
    PAFT_LOG(INFO) << "metrics on port " << metrics_server->port();
  }
  if (!absl::GetFlag(FLAGS_port_file).empty()) {
    std::map<std::string, int> ports;
    if (metrics_server) ports["metrics"] = metrics_server->port();
    if (absl::Status s = paft::WritePortFile(absl::GetFlag(FLAGS_port_file), ports); !s.ok()) {
      PAFT_LOG(ERROR) << s;
      return 1;
    }
  }
  paft::TlsConfig tls{absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
                      absl::GetFlag(FLAGS_tls_ca)};
  auto channel = paft::MakeClientChannel(options.coordinator, tls);
  auto token = paft::ReadToken(absl::GetFlag(FLAGS_token_file));
  if (!channel.ok() || !token.ok()) {
    PAFT_LOG(ERROR) << (channel.ok() ? token.status() : channel.status());
    return 2;
  }
  options.channel = *channel;
  options.token = *token;
  paft::worker::Agent agent(options);
  agent.Start();
  int signal_number = paft::WaitForTerminationSignal();
  PAFT_LOG(INFO) << "signal " << signal_number << ": stopping trainers";
  agent.Shutdown(absl::GetFlag(FLAGS_shutdown_grace));
  PAFT_LOG(INFO) << "stopped";
  return 0;
}
