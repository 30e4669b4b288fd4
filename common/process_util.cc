#include "common/process_util.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/status.h"
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

void UnblockTerminationSignals() {
  sigset_t set = TerminationSignals();
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

int WaitForTerminationSignal() {
  sigset_t set = TerminationSignals();
  int signal_number = 0;
  while (sigwait(&set, &signal_number) != 0) {
  }
  return signal_number;
}

void RequestTermination() { ::kill(::getpid(), SIGTERM); }

absl::StatusOr<pid_t> StartProcess(const std::vector<std::string>& argv, int in_fd, int out_fd,
                                   bool new_session) {
  if (argv.empty()) return absl::InvalidArgumentError("empty command");
  std::vector<std::string> args = argv;
  std::vector<char*> cargv;
  for (auto& a : args) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    if (new_session) ::setsid();
    if (in_fd >= 0) ::dup2(in_fd, STDIN_FILENO);
    ::dup2(out_fd, STDOUT_FILENO);
    ::dup2(out_fd, STDERR_FILENO);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execv(cargv[0], cargv.data());
    ::_exit(127);
  }
  if (pid < 0) return ErrnoToStatus(errno, absl::StrCat("fork of ", argv[0]));
  return pid;
}

absl::StatusOr<std::pair<int, std::string>> RunProcess(const std::vector<std::string>& argv) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return absl::InternalError("pipe2 failed");
  auto started = StartProcess(argv, -1, fds[1], /*new_session=*/false);
  ::close(fds[1]);
  if (!started.ok()) {
    ::close(fds[0]);
    return started.status();
  }
  const pid_t pid = *started;
  std::string output;
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(fds[0], buffer, sizeof(buffer))) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0) output.append(buffer, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return std::make_pair(code, output);
}

absl::Status WritePortFile(const std::string& path, const std::map<std::string, int>& ports) {
  nlohmann::json j = ports;
  return WriteFileAtomic(path, j.dump());
}

}  // namespace paft
