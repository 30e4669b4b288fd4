// paft-worker: the worker agent of one node (or pod).
#include <unistd.h>

#include <climits>
#include <filesystem>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "common/logging.h"
#include "common/process_util.h"
#include "worker/agent.h"

ABSL_FLAG(std::string, coordinator, "localhost:50051", "Coordinator address");
ABSL_FLAG(std::string, name, "", "Stable agent name (default: host name)");
ABSL_FLAG(std::string, pool, "", "Pool label of this agent's devices (required)");
ABSL_FLAG(int, devices, 1, "Device slots offered (one trainer rank each)");
ABSL_FLAG(std::string, address, "", "Address of this host for rank-0 rendezvous (default: host name)");
ABSL_FLAG(std::string, trainer, "",
          "Trainer executable (default: paft-placeholder-trainer beside this binary)");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(30),
          "On SIGTERM, how long trainers get to stop before SIGKILL");

int main(int argc, char** argv) {
  paft::BlockTerminationSignals();
  absl::SetProgramUsageMessage("paft-worker --pool=sft --devices=2 --coordinator=HOST:PORT");
  absl::ParseCommandLine(argc, argv);
  char host[HOST_NAME_MAX + 1] = {};
  ::gethostname(host, sizeof(host));

  paft::worker::AgentOptions options;
  options.coordinator = absl::GetFlag(FLAGS_coordinator);
  options.name = absl::GetFlag(FLAGS_name).empty() ? host : absl::GetFlag(FLAGS_name);
  options.pool = absl::GetFlag(FLAGS_pool);
  options.devices = absl::GetFlag(FLAGS_devices);
  options.address = absl::GetFlag(FLAGS_address).empty() ? host : absl::GetFlag(FLAGS_address);
  options.trainer = absl::GetFlag(FLAGS_trainer);
  if (options.trainer.empty()) {
    std::error_code ec;
    auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
    options.trainer = (self.parent_path() / "paft-placeholder-trainer").string();
  }
  paft::SetLogTag("worker " + options.name);
  if (options.pool.empty()) {
    PAFT_LOG(ERROR) << "--pool is required";
    return 2;
  }
  if (options.devices < 1) {
    PAFT_LOG(ERROR) << "--devices must be >= 1";
    return 2;
  }
  if (::access(options.trainer.c_str(), X_OK) != 0) {
    PAFT_LOG(ERROR) << "trainer '" << options.trainer << "' is not executable";
    return 2;
  }
  paft::worker::Agent agent(options);
  agent.Start();
  int signal_number = paft::WaitForTerminationSignal();
  PAFT_LOG(INFO) << "signal " << signal_number << ": stopping trainers";
  agent.Shutdown(absl::GetFlag(FLAGS_shutdown_grace));
  PAFT_LOG(INFO) << "stopped";
  return 0;
}
