// Process-level helpers shared by the binaries: termination signals and port files.
#ifndef PAFT_COMMON_PROCESS_UTIL_H_
#define PAFT_COMMON_PROCESS_UTIL_H_

#include <sys/types.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

#include "absl/status/status.h"

namespace paft {

// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread and every thread it starts afterwards;
// call first thing in main(), then WaitForTerminationSignal() from the main thread.
void BlockTerminationSignals();
// Undoes BlockTerminationSignals for the calling thread (a mode of the binary that should die on
// SIGTERM as usual).
void UnblockTerminationSignals();
// Waits for one of those signals and returns its number.
int WaitForTerminationSignal();
// Sends SIGTERM to this process (to end WaitForTerminationSignal from inside, e.g. on fatal error).
void RequestTermination();

// Starts argv[0] (a path) with stdout and stderr on `out_fd`, stdin on `in_fd` (-1: inherited),
// no signal blocked, and, with `new_session`, in a session of its own (a terminal's Ctrl-C
// does not reach it). The fds are the caller's to close. Returns the child's pid.
absl::StatusOr<pid_t> StartProcess(const std::vector<std::string>& argv, int in_fd, int out_fd,
                                   bool new_session);

// Runs argv[0] (a path) to completion with stdout and stderr captured together. Returns the
// exit code (128 + signal when killed) and the output.
absl::StatusOr<std::pair<int, std::string>> RunProcess(const std::vector<std::string>& argv);

// Writes {"name": port, ...} as JSON atomically (lets scripts and tests use port 0).
absl::Status WritePortFile(const std::string& path, const std::map<std::string, int>& ports);

}  // namespace paft

#endif  // PAFT_COMMON_PROCESS_UTIL_H_
