#include "cli/local_cluster.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/grpc_server.h"
#include "common/process_util.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "paft/v1/job.grpc.pb.h"

namespace paft::cli {
namespace {

constexpr char kClusterFile[] = "cluster.json";

std::string BinaryFor(const std::string& process_name) {
  if (process_name == "merger") return "paft-merger";
  if (process_name == "coordinator") return "paft-coordinator";
  return "paft-worker";
}

// The executable `name` beside paftctl (installed layout) or in its build-tree folder.
absl::StatusOr<std::string> FindBinary(const std::string& bin_dir, const std::string& paftctl,
                                       const std::string& name) {
  std::vector<std::filesystem::path> candidates;
  if (!bin_dir.empty()) candidates.push_back(std::filesystem::path(bin_dir) / name);
  std::error_code ec;
  auto self = std::filesystem::canonical("/proc/self/exe", ec);
  if (ec) self = std::filesystem::absolute(paftctl, ec);
  const auto dir = self.parent_path();
  const std::string folder = name == "paft-merger"        ? "merger"
                             : name == "paft-coordinator" ? "coordinator"
                                                          : "worker";
  candidates.push_back(dir / name);
  candidates.push_back(dir / ".." / folder / name);
  for (const auto& c : candidates) {
    if (::access(c.c_str(), X_OK) == 0) return c.lexically_normal().string();
  }
  return absl::NotFoundError(absl::StrCat("cannot find ", name, " beside paftctl (", dir.string(),
                                          "); give --bin_dir"));
}

// True when `pid` runs `binary` (guards against a recycled pid).
bool Alive(pid_t pid, const std::string& binary) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  auto cmdline = ReadFileToString(absl::StrCat("/proc/", pid, "/cmdline"));
  if (!cmdline.ok()) return false;
  const std::string argv0 = cmdline->substr(0, cmdline->find('\0'));
  auto stat = ReadFileToString(absl::StrCat("/proc/", pid, "/stat"));
  if (stat.ok()) {
    const auto close = stat->rfind(')');
    if (close != std::string::npos && close + 2 < stat->size() && (*stat)[close + 2] == 'Z') {
      return false;  // a zombie of ours (started by this paftctl, exited)
    }
  }
  return std::filesystem::path(argv0).filename() == binary;
}

// Starts `argv` in its own session with stdout/stderr appended to `log`.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv, const std::string& log) {
  int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot open ", log));
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  auto pid = StartProcess(argv, null_fd, fd, /*new_session=*/true);
  ::close(fd);
  if (null_fd >= 0) ::close(null_fd);
  return pid;
}

absl::StatusOr<std::map<std::string, int>> WaitForPorts(const std::string& path, pid_t pid,
                                                        const std::string& what,
                                                        const std::string& log) {
  for (int i = 0; i < 600; ++i) {
    auto text = ReadFileToString(path);
    if (text.ok()) {
      auto json = nlohmann::json::parse(*text, nullptr, false);
      if (json.is_object()) return json.get<std::map<std::string, int>>();
    }
    int status;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      return absl::InternalError(absl::StrCat(what, " exited at start; see ", log));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return absl::DeadlineExceededError(absl::StrCat(what, " did not start in 30 s; see ", log));
}

nlohmann::json ToJson(const LocalCluster& cluster) {
  nlohmann::json processes = nlohmann::json::array();
  for (const auto& p : cluster.processes) processes.push_back({{"name", p.name}, {"pid", p.pid}});
  return {{"coordinator", cluster.coordinator},
          {"coordinator_metrics_port", cluster.coordinator_metrics_port},
          {"merger", cluster.merger},
          {"merger_metrics_port", cluster.merger_metrics_port},
          {"processes", processes}};
}

void StopProcesses(const std::vector<LocalCluster::Process>& processes, int grace_seconds) {
  // Agents first (they stop their trainers and report), then the coordinator, then the merger.
  std::vector<std::vector<LocalCluster::Process>> waves(3);
  for (const auto& p : processes) {
    waves[p.name == "merger" ? 2 : p.name == "coordinator" ? 1 : 0].push_back(p);
  }
  for (const auto& wave : waves) {
    for (const auto& p : wave) {
      if (Alive(p.pid, BinaryFor(p.name))) ::kill(p.pid, SIGTERM);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(grace_seconds);
    for (const auto& p : wave) {
      while (Alive(p.pid, BinaryFor(p.name)) && std::chrono::steady_clock::now() < deadline) {
        int status;
        (void)::waitpid(p.pid, &status, WNOHANG);  // ours if this paftctl started it
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      if (Alive(p.pid, BinaryFor(p.name))) ::kill(p.pid, SIGKILL);
      int status;
      (void)::waitpid(p.pid, &status, WNOHANG);
    }
  }
}

}  // namespace

absl::StatusOr<LocalCluster> LocalStatus(const std::string& dir) {
  const std::string path = JoinPath(dir, kClusterFile);
  auto text = ReadFileToString(path);
  if (!text.ok()) return absl::NotFoundError(absl::StrCat("no local cluster in ", dir));
  auto json = nlohmann::json::parse(*text, nullptr, false);
  if (!json.is_object() || !json["processes"].is_array()) {
    return absl::DataLossError(absl::StrCat(path, " is not a cluster record"));
  }
  LocalCluster cluster;
  cluster.dir = dir;
  cluster.coordinator = json.value("coordinator", "");
  cluster.coordinator_metrics_port = json.value("coordinator_metrics_port", 0);
  cluster.merger = json.value("merger", "");
  cluster.merger_metrics_port = json.value("merger_metrics_port", 0);
  for (const auto& p : json["processes"]) {
    LocalCluster::Process process{p.value("name", ""), p.value("pid", 0)};
    if (Alive(process.pid, BinaryFor(process.name))) cluster.processes.push_back(process);
  }
  return cluster;
}

absl::StatusOr<LocalCluster> LocalUp(const LocalClusterOptions& options,
                                     const std::string& paftctl_path) {
  if (auto existing = LocalStatus(options.dir);
      existing.ok() && !existing->processes.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("a local cluster is already running from ", options.dir, " (coordinator ",
                     existing->coordinator, "); `paftctl local down` stops it"));
  }
  PAFT_RETURN_IF_ERROR(MakeDirs(JoinPath(options.dir, "logs")));
  std::error_code ec;
  const std::string dir = std::filesystem::absolute(options.dir, ec).lexically_normal().string();
  PAFT_ASSIGN_OR_RETURN(const std::string merger_bin,
                        FindBinary(options.bin_dir, paftctl_path, "paft-merger"));
  PAFT_ASSIGN_OR_RETURN(const std::string coordinator_bin,
                        FindBinary(options.bin_dir, paftctl_path, "paft-coordinator"));
  PAFT_ASSIGN_OR_RETURN(const std::string worker_bin,
                        FindBinary(options.bin_dir, paftctl_path, "paft-worker"));

  LocalCluster cluster;
  cluster.dir = dir;
  auto started = [&]() -> absl::Status {
    for (const char* f : {"merger.ports", "coordinator.ports"}) (void)RemoveAll(JoinPath(dir, f));
    const std::string merger_log = JoinPath(dir, "logs/merger.log");
    PAFT_ASSIGN_OR_RETURN(pid_t merger_pid,
                          Spawn({merger_bin, "serve", "--plaintext", "--listen=127.0.0.1:0",
                                 "--metrics_listen=127.0.0.1:0",
                                 "--port_file=" + JoinPath(dir, "merger.ports")},
                                merger_log));
    cluster.processes.push_back({"merger", merger_pid});
    PAFT_ASSIGN_OR_RETURN(auto merger_ports, WaitForPorts(JoinPath(dir, "merger.ports"),
                                                          merger_pid, "the merger", merger_log));
    cluster.merger = absl::StrCat("127.0.0.1:", merger_ports["grpc"]);
    cluster.merger_metrics_port = merger_ports["metrics"];

    const std::string coordinator_log = JoinPath(dir, "logs/coordinator.log");
    PAFT_ASSIGN_OR_RETURN(
        pid_t coordinator_pid,
        Spawn({coordinator_bin, "--plaintext", "--listen=127.0.0.1:0",
               "--metrics_listen=127.0.0.1:0",
               "--state_db=" + JoinPath(dir, "coordinator.db"), "--merger=" + cluster.merger,
               "--port_file=" + JoinPath(dir, "coordinator.ports")},
              coordinator_log));
    cluster.processes.push_back({"coordinator", coordinator_pid});
    PAFT_ASSIGN_OR_RETURN(auto ports, WaitForPorts(JoinPath(dir, "coordinator.ports"),
                                                   coordinator_pid, "the coordinator",
                                                   coordinator_log));
    cluster.coordinator = absl::StrCat("127.0.0.1:", ports["grpc"]);
    cluster.coordinator_metrics_port = ports["metrics"];

    for (const auto& [pool, slots] : options.pools) {
      std::vector<std::string> argv = {worker_bin,
                                       "--coordinator=" + cluster.coordinator,
                                       "--name=local-" + pool,
                                       "--pool=" + pool,
                                       absl::StrCat("--devices=", slots),
                                       "--address=127.0.0.1"};
      for (const auto& f : options.worker_flags) argv.push_back(f);
      PAFT_ASSIGN_OR_RETURN(pid_t pid,
                            Spawn(argv, JoinPath(dir, absl::StrCat("logs/worker-", pool, ".log"))));
      cluster.processes.push_back({"worker-" + pool, pid});
    }
    // Every agent registered (they load LibTorch first, which takes a moment).
    auto stub = paft::v1::JobService::NewStub(MakeChannel(cluster.coordinator));
    for (int i = 0; i < 600; ++i) {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
      paft::v1::ListWorkersResponse workers;
      if (stub->ListWorkers(&context, {}, &workers).ok() &&
          workers.workers_size() == static_cast<int>(options.pools.size())) {
        return absl::OkStatus();
      }
      for (const auto& p : cluster.processes) {
        int status;
        if (::waitpid(p.pid, &status, WNOHANG) == p.pid) {
          return absl::InternalError(absl::StrCat(p.name, " exited at start; see ",
                                                  JoinPath(dir, "logs")));
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return absl::DeadlineExceededError(absl::StrCat(
        "the worker agents did not register in 30 s; see ", JoinPath(dir, "logs")));
  }();
  if (started.ok()) {
    started = WriteFileAtomic(JoinPath(dir, kClusterFile), ToJson(cluster).dump(2) + "\n");
  }
  if (!started.ok()) {
    StopProcesses(cluster.processes, 10);
    return started;
  }
  return cluster;
}

absl::Status LocalDown(const std::string& dir, int grace_seconds) {
  PAFT_ASSIGN_OR_RETURN(LocalCluster cluster, LocalStatus(dir));
  StopProcesses(cluster.processes, grace_seconds);
  for (const auto& p : cluster.processes) {
    if (Alive(p.pid, BinaryFor(p.name))) {
      return absl::InternalError(absl::StrCat(p.name, " (pid ", p.pid, ") did not stop"));
    }
  }
  return RemoveAll(JoinPath(dir, kClusterFile));
}

}  // namespace paft::cli
