#include "cli/local_command.h"

#include <iomanip>
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "cli/exit_codes.h"
#include "cli/local_cluster.h"

namespace paft::cli {

int LocalCommand(const std::string& action, const char* argv0, const LocalCommandFlags& flags) {
  const std::string& dir = flags.dir;
  if (action == "up") {
    LocalClusterOptions options;
    options.dir = dir;
    options.bin_dir = flags.bin_dir;
    options.pools.clear();
    for (absl::string_view item :
         absl::StrSplit(flags.pools, ',', absl::SkipWhitespace())) {
      std::pair<std::string, std::string> kv = absl::StrSplit(item, absl::MaxSplits(':', 1));
      int slots = 0;
      if (kv.first.empty() || !absl::SimpleAtoi(kv.second, &slots) || slots < 1) {
        std::cerr << "--pools: '" << item << "' is not POOL:SLOTS with SLOTS >= 1\n";
        return kExitUsage;
      }
      options.pools[kv.first] = slots;
    }
    if (options.pools.empty()) {
      std::cerr << "--pools: at least one pool is needed\n";
      return kExitUsage;
    }
    auto cluster = LocalUp(options, argv0);
    if (!cluster.ok()) {
      std::cerr << "error: " << cluster.status() << "\n";
      return cluster.status().code() == absl::StatusCode::kFailedPrecondition ? kExitUsage
                                                                               : kExitRpc;
    }
    std::cout << "local cluster up in " << cluster->dir << "\n  coordinator "
              << cluster->coordinator << " (metrics :" << cluster->coordinator_metrics_port
              << "), merger " << cluster->merger << "\n";
    for (const auto& p : cluster->processes) {
      std::cout << "  " << std::left << std::setw(14) << p.name << " pid " << p.pid << "\n";
    }
    std::cout << "paftctl finds it from this folder; elsewhere: export PAFT_COORDINATOR="
              << cluster->coordinator << "\n";
    return kExitOk;
  }
  if (action == "down") {
    absl::Status s = LocalDown(dir, flags.grace_s);
    if (!s.ok()) {
      std::cerr << "error: " << s << "\n";
      return s.code() == absl::StatusCode::kNotFound ? kExitUsage : kExitRpc;
    }
    std::cout << "local cluster in " << dir << " stopped (state and logs kept)\n";
    return kExitOk;
  }
  if (action == "status") {
    auto cluster = LocalStatus(dir);
    if (!cluster.ok()) {
      std::cerr << "error: " << cluster.status() << "\n";
      return kExitUsage;
    }
    if (flags.json) {
      std::cout << "{\"coordinator\": \"" << cluster->coordinator
                << "\", \"coordinator_metrics_port\": " << cluster->coordinator_metrics_port
                << ", \"merger\": \"" << cluster->merger
                << "\", \"running\": " << cluster->processes.size() << "}\n";
      return kExitOk;
    }
    std::cout << "coordinator " << cluster->coordinator << ", merger " << cluster->merger << "\n";
    for (const auto& p : cluster->processes) {
      std::cout << "  " << std::left << std::setw(14) << p.name << " pid " << p.pid << "\n";
    }
    return cluster->processes.empty() ? kExitRpc : kExitOk;
  }
  std::cerr << "local: up, down or status\n";
  return kExitUsage;
}

}  // namespace paft::cli
