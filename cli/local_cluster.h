// `paftctl local up|down|status`: a PAFT cluster on this machine -- the merger, the coordinator
// (SQLite state in the cluster folder) and one worker agent per pool, as background processes
// whose addresses and pids are recorded in <dir>/cluster.json.
#ifndef PAFT_CLI_LOCAL_CLUSTER_H_
#define PAFT_CLI_LOCAL_CLUSTER_H_

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace paft::cli {

struct LocalClusterOptions {
  std::string dir = ".paft/local/cluster";
  std::string bin_dir;  // where paft-coordinator etc. are (default: found from paftctl's path)
  std::map<std::string, int> pools = {{"sft", 2}, {"align", 2}};  // pool -> CPU slots
  std::vector<std::string> worker_flags;  // extra flags for every agent
};

struct LocalCluster {
  std::string dir;
  std::string coordinator;  // host:port of the JobService
  int coordinator_metrics_port = 0;
  std::string merger;
  int merger_metrics_port = 0;
  struct Process {
    std::string name;  // "merger", "coordinator", "worker-sft", ...
    pid_t pid = 0;
  };
  std::vector<Process> processes;  // in start order
};

// Starts the cluster and waits until every agent has registered. FailedPrecondition if one is
// already running from `dir`; on any failure what was started is stopped again.
absl::StatusOr<LocalCluster> LocalUp(const LocalClusterOptions& options,
                                     const std::string& paftctl_path);
// Stops the cluster in `dir` (agents first, so that they stop their trainers; SIGTERM, then
// SIGKILL after `grace`). The state database and logs stay.
absl::Status LocalDown(const std::string& dir, int grace_seconds);
// The cluster recorded in `dir`; NotFound if none. Processes no longer alive are dropped.
absl::StatusOr<LocalCluster> LocalStatus(const std::string& dir);

}  // namespace paft::cli

#endif  // PAFT_CLI_LOCAL_CLUSTER_H_
