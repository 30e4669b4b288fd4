#include "common/process_util.h"

#include <signal.h>
#include <unistd.h>

#include "common/file_util.h"
#include "nlohmann/json.hpp"

namespace paft {
namespace {

sigset_t TerminationSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  return set;
}

}  // namespace

void BlockTerminationSignals() {
  sigset_t set = TerminationSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

int WaitForTerminationSignal() {
  sigset_t set = TerminationSignals();
  int signal_number = 0;
  while (sigwait(&set, &signal_number) != 0) {
  }
  return signal_number;
}

void RequestTermination() { ::kill(::getpid(), SIGTERM); }

absl::Status WritePortFile(const std::string& path, const std::map<std::string, int>& ports) {
  nlohmann::json j = ports;
  return WriteFileAtomic(path, j.dump());
}

}  // namespace paft
