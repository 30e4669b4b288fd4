// `paftctl local up|down|status`: a cluster of paft processes on this machine
// (cli/local_cluster.h), started, stopped and shown.
#ifndef PAFT_CLI_LOCAL_COMMAND_H_
#define PAFT_CLI_LOCAL_COMMAND_H_

#include <string>

namespace paft::cli {

struct LocalCommandFlags {
  std::string dir;      // --local_dir
  std::string bin_dir;  // --bin_dir
  std::string pools;    // --pools, POOL:SLOTS,...
  int grace_s = 40;     // --grace_s
  bool json = false;    // --json
};

// Runs `action` (up, down or status); returns paftctl's exit code.
int LocalCommand(const std::string& action, const char* argv0, const LocalCommandFlags& flags);

}  // namespace paft::cli

#endif  // PAFT_CLI_LOCAL_COMMAND_H_
