// The worker agent: registers its devices with the coordinator under a pool label, keeps its lease
// with heartbeats, receives assignments on a server stream and runs each rank as a child trainer
// process (like torchrun's local agent), reporting progress, checkpoints and exits.
#ifndef PAFT_WORKER_AGENT_H_
#define PAFT_WORKER_AGENT_H_

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "worker/exit_classifier.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "paft/v1/worker.grpc.pb.h"

namespace paft::worker {

struct AgentOptions {
  std::string coordinator = "localhost:50051";
  std::string name;     // stable agent name (host or pod name)
  std::string pool;     // pool label
  int devices = 1;      // device slots offered
  // What each slot is (worker/device_slots.h), `devices` entries; else the slots are "cpu:N".
  std::vector<paft::v1::DeviceInfo> device_info;
  std::string address;  // where this host's trainers are reachable (rank-0 rendezvous)
  std::string trainer;  // trainer executable
  std::vector<std::string> trainer_args;  // extra arguments before --task_file
  absl::Duration reconnect_backoff = absl::Seconds(1);
  absl::Duration rpc_timeout = absl::Seconds(10);
  // A rank's progress is reported at most this often (and always its last step).
  absl::Duration progress_interval = absl::Seconds(1);
  // Where the agent's metrics go (paft_agent_*) to be served; null: counted in a registry of the
  // agent's own that nothing serves.
  prometheus::Registry* metrics = nullptr;
  // The channel to the coordinator (TLS: MakeClientChannel); null: plaintext to `coordinator`.
  std::shared_ptr<grpc::Channel> channel;
  std::string token;  // bearer token (role worker), sent with every call when set
};

class Agent {
 public:
  explicit Agent(AgentOptions options);
  ~Agent();

  void Start();
  // Stops every trainer (SIGTERM, then SIGKILL after `grace`), reports their exits, stops threads.
  void Shutdown(absl::Duration grace);

 private:
  // Tries of a checkpoint or exit report while the coordinator is unreachable (1 s apart).
  static constexpr int kReportAttempts = 30;
  // The longest trainer output line kept whole (events are far shorter).
  static constexpr size_t kMaxTrainerLine = 64 * 1024;
  // How long the output of an exited trainer is still drained (see Child::drain_deadline_ns).
  static constexpr absl::Duration kDrainAfterExit = absl::Seconds(10);

  struct Child {
    paft::v1::Task task;
    pid_t pid = -1;
    int stdout_fd = -1;
    std::string log_path;
    std::atomic<bool> stop_requested{false};
    bool reaped = false;  // guarded by the agent's mu_; its pid (group id) may be reused after
    // Once the trainer has exited, the reader drains its output until EOF or this time (unix
    // nanoseconds): a process outside the trainer's group that inherited its stdout must not
    // hold back the exit report, and with it the slot.
    std::atomic<int64_t> drain_deadline_ns{std::numeric_limits<int64_t>::max()};
    std::string last_error;  // from an "error" event; guarded by the agent's mu_
    std::thread reader;
    std::thread waiter;
    std::optional<int64_t> oom_kills_at_start;  // of the agent's memory cgroup
  };

  void SessionLoop();
  void HeartbeatLoop();
  bool Register();
  void HandleStart(const paft::v1::Task& task);
  void HandleStop(const std::string& task_id, const std::string& reason, absl::Duration grace);
  void ReadOutput(Child* child);  // worker/agent_output.cc
  void WaitChild(Child* child);
  std::vector<std::string> RunningTaskIds();
  void ReportExitFor(const paft::v1::Task& task, const ExitFacts& facts,
                     const std::string& last_error, const std::string& log_path);
  std::unique_ptr<grpc::ClientContext> NewContext() const;
  void SetRegistered(bool registered);  // also the metric
  void CountRanksLocked();              // paft_agent_ranks_running from children_

  const AgentOptions options_;
  std::unique_ptr<paft::v1::WorkerService::Stub> stub_;
  std::atomic<bool> stopping_{false};

  std::mutex mu_;
  std::condition_variable cv_;
  std::string worker_id_;                                 // GUARDED_BY(mu_); empty: unregistered
  absl::Duration heartbeat_interval_ = absl::Seconds(2);  // GUARDED_BY(mu_)
  grpc::ClientContext* stream_context_ = nullptr;         // GUARDED_BY(mu_)
  std::map<std::string, std::unique_ptr<Child>> children_;  // GUARDED_BY(mu_), by task id
  std::vector<std::unique_ptr<Child>> finished_;            // GUARDED_BY(mu_), to join
  std::vector<std::thread> stop_timers_;                    // GUARDED_BY(mu_), SIGKILL timers

  std::shared_ptr<prometheus::Registry> own_metrics_;  // when options_.metrics was null
  prometheus::Gauge* registered_gauge_ = nullptr;
  prometheus::Gauge* ranks_gauge_ = nullptr;
  prometheus::Family<prometheus::Counter>* exits_ = nullptr;
  prometheus::Family<prometheus::Counter>* lines_rejected_ = nullptr;
  prometheus::Counter* thread_exceptions_ = nullptr;

  std::thread session_thread_;
  std::thread heartbeat_thread_;
};

}  // namespace paft::worker

#endif  // PAFT_WORKER_AGENT_H_
