#include "worker/agent.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sys/prctl.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"
#include "common/auth.h"
#include "common/exit_reason.h"
#include "common/file_util.h"
#include "common/grpc_server.h"
#include "common/grpc_status.h"
#include "common/logging.h"
#include "common/utf8.h"
#include "worker/device_slots.h"
#include "worker/exit_classifier.h"
#include "worker/thread_guard.h"

extern char** environ;

namespace paft::worker {
namespace {

ExitFacts FailedToStart() {
  ExitFacts facts;
  facts.exit_code = ExitCodeOf(Failure::kFailedToStart);
  return facts;
}

// Last `max_bytes` of a file, for exit messages.
std::string Tail(const std::string& path, size_t max_bytes) {
  auto text = ReadFileToString(path);
  if (!text.ok()) return "";
  std::string s = text->size() > max_bytes ? text->substr(text->size() - max_bytes) : *text;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// Intra-op threads for each of `slots` trainers sharing this host's cores.
int ThreadsPerSlot(int slots) {
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  return std::max(1, cores / std::max(1, slots));
}

}  // namespace

Agent::Agent(AgentOptions options)
    : options_(std::move(options)),
      stub_(paft::v1::WorkerService::NewStub(
          options_.channel ? options_.channel : MakeChannel(options_.coordinator))) {
  // The metrics always exist: without a registry from the caller they are counted in one of the
  // agent's own that nothing serves, so no path depends on whether metrics are exposed.
  if (options_.metrics == nullptr) own_metrics_ = std::make_shared<prometheus::Registry>();
  auto& registry = options_.metrics != nullptr ? *options_.metrics : *own_metrics_;
  registered_gauge_ = &prometheus::BuildGauge()
                           .Name("paft_agent_registered")
                           .Help("1 while the agent holds a lease from the coordinator")
                           .Register(registry)
                           .Add({});
  ranks_gauge_ = &prometheus::BuildGauge()
                      .Name("paft_agent_ranks_running")
                      .Help("Trainer processes (ranks) the agent runs")
                      .Register(registry)
                      .Add({});
  prometheus::BuildGauge()
      .Name("paft_agent_devices")
      .Help("Device slots the agent offers, by pool")
      .Register(registry)
      .Add({{"pool", options_.pool}})
      .Set(options_.devices);
  exits_ = &prometheus::BuildCounter()
                .Name("paft_agent_rank_exits_total")
                .Help("Ranks that ended, by the exit reason reported")
                .Register(registry);
  lines_rejected_ = &prometheus::BuildCounter()
                         .Name("paft_agent_trainer_lines_rejected_total")
                         .Help("Trainer output lines rejected: malformed or unknown events, "
                               "over-long event lines, lines whose handling threw")
                         .Register(registry);
  thread_exceptions_ = &prometheus::BuildCounter()
                            .Name("paft_agent_thread_exceptions_total")
                            .Help("Exceptions caught at the boundary of an agent thread")
                            .Register(registry)
                            .Add({});
}

void Agent::SetRegistered(bool registered) {
  registered_gauge_->Set(registered ? 1 : 0);
}

void Agent::CountRanksLocked() {
  ranks_gauge_->Set(static_cast<double>(children_.size()));
}

Agent::~Agent() { Shutdown(absl::Seconds(5)); }

std::unique_ptr<grpc::ClientContext> Agent::NewContext() const {
  auto context = std::make_unique<grpc::ClientContext>();
  AddToken(context.get(), options_.token);
  context->set_deadline(std::chrono::system_clock::now() +
                        absl::ToChronoNanoseconds(options_.rpc_timeout));
  return context;
}

void Agent::Start() {
  auto count = [this] { thread_exceptions_->Increment(); };
  auto again = [this] { return !stopping_; };
  session_thread_ =
      std::thread([=, this] { RunGuarded("session", [this] { SessionLoop(); }, count, again); });
  heartbeat_thread_ =
      std::thread([=, this] { RunGuarded("heartbeat", [this] { HeartbeatLoop(); }, count, again); });
}

std::vector<std::string> Agent::RunningTaskIds() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> ids;
  for (const auto& [id, child] : children_) ids.push_back(id);
  return ids;
}

bool Agent::Register() {
  paft::v1::RegisterWorkerRequest request;
  request.set_name(options_.name);
  request.set_pool(options_.pool);
  request.set_devices(options_.devices);
  // Slots described by the caller go with their descriptions; else they are CPU slots by name.
  const bool described = static_cast<int>(options_.device_info.size()) == options_.devices;
  for (const auto& slot : described ? options_.device_info : CpuSlots(options_.devices)) {
    request.add_device_names(slot.name());
  }
  if (described) {
    request.mutable_device_info()->Add(options_.device_info.begin(), options_.device_info.end());
  }
  request.set_address(options_.address);
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, child] : children_) {
      request.add_running_task_ids(id);
      auto* running = request.add_running_tasks();
      running->set_task_id(id);
      running->set_device(child->task.local_rank());
    }
  }
  paft::v1::RegisterWorkerResponse response;
  auto context = NewContext();
  grpc::Status status = stub_->RegisterWorker(context.get(), request, &response);
  if (!status.ok()) {
    PAFT_LOG(WARNING) << "registering with " << options_.coordinator << ": "
                      << FromGrpcStatus(status);
    return false;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    worker_id_ = response.worker_id();
    SetRegistered(true);
    heartbeat_interval_ = absl::Milliseconds(std::max<int64_t>(100, response.heartbeat_interval_ms()));
  }
  cv_.notify_all();
  PAFT_LOG(INFO) << "registered as " << response.worker_id() << " (pool " << options_.pool << ", "
                 << options_.devices << " device(s))";
  for (const auto& id : response.stop_task_ids()) {
    HandleStop(id, "unknown to the coordinator", absl::Seconds(10));
  }
  return true;
}

void Agent::SessionLoop() {
  while (!stopping_) {
    std::string worker_id;
    {
      std::lock_guard<std::mutex> lock(mu_);
      worker_id = worker_id_;
    }
    if (worker_id.empty()) {
      if (!Register()) {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait_for(lock, absl::ToChronoNanoseconds(options_.reconnect_backoff),
                     [&] { return stopping_.load(); });
      }
      continue;
    }
    grpc::ClientContext context;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) break;
      stream_context_ = &context;
    }
    paft::v1::StreamAssignmentsRequest request;
    request.set_worker_id(worker_id);
    AddToken(&context, options_.token);
    auto reader = stub_->StreamAssignments(&context, request);
    paft::v1::Assignment assignment;
    while (reader->Read(&assignment)) {
      if (assignment.has_start()) {
        HandleStart(assignment.start());
      } else if (assignment.has_stop()) {
        HandleStop(assignment.stop().task_id(), assignment.stop().reason(),
                   absl::Milliseconds(assignment.stop().grace_period_ms()));
      }
    }
    grpc::Status status = reader->Finish();
    {
      std::lock_guard<std::mutex> lock(mu_);
      stream_context_ = nullptr;
      if (status.error_code() == grpc::StatusCode::NOT_FOUND && worker_id_ == worker_id) {
        worker_id_.clear();  // lease lost or coordinator restarted: register again
        SetRegistered(false);
      }
    }
    if (stopping_) break;
    if (status.error_code() != grpc::StatusCode::NOT_FOUND) {
      PAFT_LOG(WARNING) << "assignment stream ended: " << FromGrpcStatus(status) << "; reconnecting";
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, absl::ToChronoNanoseconds(options_.reconnect_backoff),
                   [&] { return stopping_.load(); });
    }
  }
  // The trainers were forked from this thread (PR_SET_PDEATHSIG): it ends only after them.
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return children_.empty(); });
}

void Agent::HeartbeatLoop() {
  while (!stopping_) {
    std::string worker_id;
    absl::Duration interval;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, absl::ToChronoNanoseconds(heartbeat_interval_),
                   [&] { return stopping_.load(); });
      if (stopping_) return;
      worker_id = worker_id_;
      interval = heartbeat_interval_;
    }
    if (worker_id.empty()) continue;
    paft::v1::HeartbeatRequest request;
    request.set_worker_id(worker_id);
    for (const auto& id : RunningTaskIds()) request.add_running_task_ids(id);
    paft::v1::HeartbeatResponse response;
    auto context = NewContext();
    grpc::Status status = stub_->Heartbeat(context.get(), request, &response);
    if (status.error_code() == grpc::StatusCode::NOT_FOUND) {
      PAFT_LOG(WARNING) << "lease of " << worker_id << " lost; re-registering";
      std::lock_guard<std::mutex> lock(mu_);
      if (worker_id_ == worker_id) {
        worker_id_.clear();
        SetRegistered(false);
        if (stream_context_ != nullptr) stream_context_->TryCancel();
      }
    } else if (!status.ok()) {
      PAFT_LOG(WARNING) << "heartbeat failed: " << FromGrpcStatus(status);
    }
  }
}

void Agent::HandleStart(const paft::v1::Task& task) {
  std::vector<std::unique_ptr<Child>> finished;
  {
    std::lock_guard<std::mutex> lock(mu_);
    finished.swap(finished_);
    if (children_.count(task.task_id())) return;  // duplicate delivery
  }
  for (auto& f : finished) {
    if (f->waiter.joinable()) f->waiter.join();
  }
  auto child = std::make_unique<Child>();
  child->task = task;
  const std::string prefix = JoinPath(task.log_dir(), absl::StrCat("rank-", task.rank()));
  child->log_path = prefix + ".log";
  const std::string task_file = prefix + ".task.json";
  std::string task_json;
  google::protobuf::util::JsonPrintOptions json_options;
  json_options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(task, &task_json, json_options);
  absl::Status status = MakeDirs(task.log_dir());
  if (status.ok()) status = WriteFileAtomic(task_file, task_json);
  int log_fd = -1;
  if (status.ok()) {
    log_fd = ::open(child->log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) status = absl::InternalError(absl::StrCat("opening ", child->log_path));
  }
  int pipe_fds[2] = {-1, -1};
  if (status.ok() && ::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    status = absl::InternalError("pipe2 failed");
  }
  if (!status.ok()) {
    if (log_fd >= 0) ::close(log_fd);
    PAFT_LOG(ERROR) << "cannot start " << task.task_id() << ": " << status;
    ReportExitFor(task, FailedToStart(), std::string(status.message()), "");
    return;
  }

  // Everything the child needs is built before fork (only async-signal-safe calls after it).
  std::vector<std::string> args = {options_.trainer};
  for (const auto& a : options_.trainer_args) args.push_back(a);
  args.push_back("--task_file=" + task_file);
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
  env.push_back(absl::StrCat("RANK=", task.rank()));
  env.push_back(absl::StrCat("WORLD_SIZE=", task.world_size()));
  env.push_back(absl::StrCat("LOCAL_RANK=", task.local_rank()));
  env.push_back(absl::StrCat("MASTER_ADDR=", task.master_addr()));
  env.push_back(absl::StrCat("MASTER_PORT=", task.master_port()));
  env.push_back(absl::StrCat("PAFT_TASK_ID=", task.task_id()));
  // The agent's slots share this host's cores (as torchrun sets OMP_NUM_THREADS for its local
  // ranks): without it every rank would run a pool as wide as the host and the pools would
  // oversubscribe the cores. An operator's own setting wins.
  if (std::getenv("OMP_NUM_THREADS") == nullptr) {
    env.push_back(absl::StrCat("OMP_NUM_THREADS=", ThreadsPerSlot(options_.devices)));
  }
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);

  child->oom_kills_at_start = ReadOomKills();
  const pid_t agent_pid = ::getpid();
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);  // own process group: a stop reaches the trainer's children too
    // Fate sharing: a trainer must not outlive its agent (it would hold the device, unseen by
    // the coordinator). The signal fires when the forking thread ends: this is the session
    // thread, which outlives every child (SessionLoop waits for them).
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != agent_pid) ::_exit(127);  // the agent died before prctl
    ::dup2(pipe_fds[1], STDOUT_FILENO);
    ::dup2(log_fd, STDERR_FILENO);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    ::execve(argv[0], argv.data(), envp.data());
    const char message[] = "paft-worker: exec of the trainer failed\n";
    (void)!::write(STDERR_FILENO, message, sizeof(message) - 1);
    ::_exit(127);
  }
  if (pid > 0) ::setpgid(pid, pid);  // also here, so a stop right after fork cannot miss it
  ::close(pipe_fds[1]);
  ::close(log_fd);
  if (pid < 0) {
    ::close(pipe_fds[0]);
    ReportExitFor(task, FailedToStart(), "fork failed", "");
    return;
  }
  child->pid = pid;
  child->stdout_fd = pipe_fds[0];
  Child* raw = child.get();
  {
    std::lock_guard<std::mutex> lock(mu_);
    children_[task.task_id()] = std::move(child);
    CountRanksLocked();
    auto count = [this] { thread_exceptions_->Increment(); };
    raw->reader = std::thread(
        [this, raw, count] { RunGuarded("output reader", [&] { ReadOutput(raw); }, count, {}); });
    raw->waiter = std::thread(
        [this, raw, count] { RunGuarded("exit waiter", [&] { WaitChild(raw); }, count, {}); });
  }
  PAFT_LOG(INFO) << "started " << task.task_id() << " (pid " << pid << "), log " << raw->log_path;
}

void Agent::HandleStop(const std::string& task_id, const std::string& reason,
                       absl::Duration grace) {
  pid_t pid;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = children_.find(task_id);
    if (it == children_.end()) return;
    it->second->stop_requested = true;
    pid = it->second->pid;
  }
  PAFT_LOG(INFO) << "stopping " << task_id << " (" << reason << ")";
  ::kill(-pid, SIGTERM);
  ::kill(-pid, SIGCONT);  // a stopped (SIGSTOP/SIGTSTP) trainer must see the SIGTERM too
  std::lock_guard<std::mutex> lock(mu_);
  stop_timers_.emplace_back([this, task_id, pid, grace] {
    std::unique_lock<std::mutex> lock(mu_);
    auto gone = [&] {
      auto it = children_.find(task_id);
      return it == children_.end() || it->second->reaped;  // reaped: its group id may be reused
    };
    bool exited = cv_.wait_for(lock, absl::ToChronoNanoseconds(grace), gone);
    if (!exited) {
      PAFT_LOG(WARNING) << task_id << " did not stop within the grace period: SIGKILL";
      ::kill(-pid, SIGKILL);
    }
  });
}

void Agent::WaitChild(Child* child) {
  // Wait for the exit without reaping: while the zombie exists its pid (the group's id) cannot
  // be reused, so the group's leftovers (a trainer's own subprocesses, which would hold its
  // device and its stdout) can be killed safely before the reap.
  siginfo_t info{};
  while (::waitid(P_PID, child->pid, &info, WEXITED | WNOWAIT) < 0 && errno == EINTR) {
  }
  ::kill(-child->pid, SIGKILL);
  int wstatus = 0;
  {
    // Reaped under the lock: a stop timer never signals the group after this.
    std::lock_guard<std::mutex> lock(mu_);
    while (::waitpid(child->pid, &wstatus, 0) < 0 && errno == EINTR) {
    }
    child->reaped = true;
  }
  cv_.notify_all();
  child->drain_deadline_ns = absl::ToUnixNanos(absl::Now() + kDrainAfterExit);
  if (child->reader.joinable()) child->reader.join();
  const int exit_code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
  const int signal = WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : 0;
  std::string last_error;
  {
    std::lock_guard<std::mutex> lock(mu_);
    last_error = child->last_error;
  }
  PAFT_LOG(INFO) << child->task.task_id() << " exited: code " << exit_code << ", signal "
                 << signal;
  ExitFacts facts;
  facts.exit_code = exit_code;
  facts.signal = signal;
  facts.stop_requested = child->stop_requested;
  facts.oom_kills_before = child->oom_kills_at_start;
  facts.oom_kills_after = ReadOomKills();
  ReportExitFor(child->task, facts, last_error, child->log_path);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = children_.find(child->task.task_id());
  if (it != children_.end()) {
    finished_.push_back(std::move(it->second));
    children_.erase(it);
    CountRanksLocked();
  }
  cv_.notify_all();
}

void Agent::ReportExitFor(const paft::v1::Task& task, const ExitFacts& facts,
                          const std::string& last_error, const std::string& log_path) {
  const ExitClass exit_class = ClassifyExit(facts);
  paft::v1::ReportExitRequest request;
  request.set_task_id(task.task_id());
  request.set_exit_code(facts.exit_code);
  request.set_signal(facts.signal);
  request.set_reason(ExitReasonOf(exit_class.failure));
  // The trainer's own last error first; else the end of its log; else the agent's words.
  std::string message = last_error;
  if (message.empty() && facts.signal != 0) message = exit_class.explanation;
  if (message.empty() && facts.exit_code != 0 && !log_path.empty()) message = Tail(log_path, 512);
  if (message.empty() && exit_class.failure != Failure::kNone) message = exit_class.explanation;
  if (exit_class.failure == Failure::kOutOfMemory && facts.signal != 0) {
    message = exit_class.explanation;  // the kernel's verdict outranks the trainer's last words
  }
  // A log's tail is whatever bytes the trainer wrote, possibly cut inside a character: a
  // string field takes valid UTF-8 only, or the report never parses.
  request.set_message(ToValidUtf8(message));
  exits_->Add({{"reason", paft::v1::ExitReason_Name(request.reason())}}).Increment();
  for (int attempt = 0; attempt < kReportAttempts; ++attempt) {
    paft::v1::Ack ack;
    auto context = NewContext();
    grpc::Status s = stub_->ReportExit(context.get(), request, &ack);
    if (s.ok() || s.error_code() == grpc::StatusCode::NOT_FOUND) return;
    PAFT_LOG(WARNING) << "reporting the exit of " << task.task_id() << ": "
                      << FromGrpcStatus(s);
    if (stopping_ && attempt >= 2) return;
    absl::SleepFor(absl::Seconds(1));
  }
}

void Agent::Shutdown(absl::Duration grace) {
  if (stopping_.exchange(true)) return;
  std::vector<std::pair<std::string, pid_t>> running;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, child] : children_) {
      child->stop_requested = true;
      running.emplace_back(id, child->pid);
    }
    if (stream_context_ != nullptr) stream_context_->TryCancel();
  }
  cv_.notify_all();
  for (const auto& [id, pid] : running) ::kill(-pid, SIGTERM);
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, absl::ToChronoNanoseconds(grace), [&] { return children_.empty(); })) {
      for (const auto& [id, child] : children_) ::kill(-child->pid, SIGKILL);
      cv_.wait(lock, [&] { return children_.empty(); });
    }
  }
  if (session_thread_.joinable()) session_thread_.join();
  if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
  std::vector<std::unique_ptr<Child>> finished;
  std::vector<std::thread> timers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    finished.swap(finished_);
    timers.swap(stop_timers_);
  }
  for (auto& f : finished) {
    if (f->waiter.joinable()) f->waiter.join();
  }
  for (auto& t : timers) t.join();
}

}  // namespace paft::worker
