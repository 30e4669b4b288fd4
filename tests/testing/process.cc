#include "tests/testing/process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "absl/time/clock.h"
#include "common/file_util.h"
#include "nlohmann/json.hpp"

extern char** environ;

namespace paft::testing {
namespace {

pid_t Spawn(const std::vector<std::string>& argv, const std::vector<std::string>& env, int out_fd) {
  std::vector<std::string> all_env;
  for (char** e = environ; *e != nullptr; ++e) all_env.emplace_back(*e);
  for (const auto& e : env) all_env.push_back(e);
  std::vector<std::string> args = argv;
  std::vector<char*> cargv, cenv;
  for (auto& a : args) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  for (auto& e : all_env) cenv.push_back(e.data());
  cenv.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out_fd, STDOUT_FILENO);
    ::dup2(out_fd, STDERR_FILENO);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(cargv[0], cargv.data(), cenv.data());
    ::_exit(127);
  }
  return pid;
}

}  // namespace

ChildProcess::ChildProcess(const std::vector<std::string>& argv,
                           const std::vector<std::string>& env, const std::string& log_path) {
  int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  pid_ = Spawn(argv, env, fd);
  ::close(fd);
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && !reaped_) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status_, 0);
  }
}

void ChildProcess::Signal(int signal_number) {
  if (pid_ > 0 && !reaped_) ::kill(pid_, signal_number);
}

std::optional<int> ChildProcess::Wait(absl::Duration timeout) {
  if (reaped_) return status_;
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    pid_t r = ::waitpid(pid_, &status_, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      return status_;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return std::nullopt;
}

int RunCommand(const std::vector<std::string>& argv, std::string* output,
               const std::vector<std::string>& env) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return -1;
  pid_t pid = Spawn(argv, env, fds[1]);
  ::close(fds[1]);
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(fds[0], buffer, sizeof(buffer))) > 0) output->append(buffer, n);
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::optional<std::map<std::string, int>> WaitForPortFile(const std::string& path,
                                                          absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    auto text = ReadFileToString(path);
    if (text.ok()) {
      auto j = nlohmann::json::parse(*text, nullptr, false);
      if (!j.is_discarded()) return j.get<std::map<std::string, int>>();
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return std::nullopt;
}

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::optional<std::string> HttpGet(int port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return std::nullopt;
  }
  std::string request = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
  (void)!::write(fd, request.data(), request.size());
  std::string response;
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(fd, buffer, sizeof(buffer))) > 0) response.append(buffer, n);
  ::close(fd);
  auto body = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.", 0) != 0 || body == std::string::npos) return std::nullopt;
  if (response.find(" 200 ") == std::string::npos) return std::nullopt;
  return response.substr(body + 4);
}

std::vector<pid_t> ProcessesWithEnv(const std::string& entry_prefix) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    auto stat = ReadFileToString(entry.path().string() + "/stat");
    if (!stat.ok()) continue;
    const auto close = stat->rfind(')');  // "pid (comm) S ...": the state after the comm
    if (close == std::string::npos || close + 2 >= stat->size() || (*stat)[close + 2] == 'Z') {
      continue;
    }
    auto environ_text = ReadFileToString(entry.path().string() + "/environ");
    if (!environ_text.ok()) continue;
    size_t start = 0;
    while (start < environ_text->size()) {
      size_t end = environ_text->find('\0', start);
      if (end == std::string::npos) end = environ_text->size();
      if (environ_text->compare(start, entry_prefix.size(), entry_prefix) == 0) {
        out.push_back(static_cast<pid_t>(std::stoi(name)));
        break;
      }
      start = end + 1;
    }
  }
  return out;
}

}  // namespace paft::testing
