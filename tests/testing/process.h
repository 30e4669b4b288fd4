// Real child processes for integration tests, and small helpers to talk to them.
#ifndef PAFT_TESTS_TESTING_PROCESS_H_
#define PAFT_TESTS_TESTING_PROCESS_H_

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace paft::testing {

class ChildProcess {
 public:
  // Starts argv[0] with `argv`, extra environment `env` ("K=V"), stdout+stderr to `log_path`.
  ChildProcess(const std::vector<std::string>& argv, const std::vector<std::string>& env,
               const std::string& log_path);
  ~ChildProcess();  // SIGKILL if still running

  pid_t pid() const { return pid_; }
  void Signal(int signal_number);
  // Waits up to `timeout`; the wait status, or nullopt on timeout.
  std::optional<int> Wait(absl::Duration timeout);

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
};

// Runs a command to completion; returns its exit code (or 128 + signal) and its output.
int RunCommand(const std::vector<std::string>& argv, std::string* output,
               const std::vector<std::string>& env = {});

// Waits for a JSON port file ({"grpc": P, "metrics": Q}) to appear.
std::optional<std::map<std::string, int>> WaitForPortFile(const std::string& path,
                                                          absl::Duration timeout);

// Live (not zombie) processes of this user whose environment has an entry starting with
// `entry_prefix` (e.g. "PAFT_TASK_ID=job-1.sft.a1.").
std::vector<pid_t> ProcessesWithEnv(const std::string& entry_prefix);

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
int FreePort();

// HTTP/1.0 GET of http://127.0.0.1:port/path; the body, or nullopt.
std::optional<std::string> HttpGet(int port, const std::string& path);

}  // namespace paft::testing

#endif  // PAFT_TESTS_TESTING_PROCESS_H_
