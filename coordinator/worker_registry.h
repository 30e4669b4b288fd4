// Registered worker agents, their device slots and their pending assignments. In memory: after a
// coordinator restart, agents re-register and say what they still run.
//
// Thread-safe. JobManager calls it under its own lock (lock order: JobManager, then registry);
// the assignment stream handlers call TakeAssignments directly.
#ifndef PAFT_COORDINATOR_WORKER_REGISTRY_H_
#define PAFT_COORDINATOR_WORKER_REGISTRY_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "paft/v1/job.pb.h"
#include "paft/v1/worker.pb.h"

namespace paft::coordinator {

// One device of one worker.
struct Slot {
  std::string worker_id;
  std::string worker_name;  // the agent's stable name
  int device = 0;
  std::string address;
};

class WorkerRegistry {
 public:
  explicit WorkerRegistry(absl::Duration lease_ttl) : lease_ttl_(lease_ttl) {}

  // Registers an agent; a previous registration with the same name is dropped (its id becomes
  // unknown, its slots free). Returns the new worker id.
  std::string Register(const paft::v1::RegisterWorkerRequest& request, absl::Time now);
  // NotFound when the id is unknown (lease expired or replaced): the agent must re-register.
  absl::Status Heartbeat(const std::string& worker_id, absl::Time now);
  // Removes workers whose lease ran out; returns their ids.
  std::vector<std::string> ExpireLeases(absl::Time now);
  bool Exists(const std::string& worker_id) const;
  // The name the worker registered under; nullopt for an unknown id.
  std::optional<std::string> NameOf(const std::string& worker_id) const;

  // Gang allocation: `count` free slots of `pool`, all or none (fewest workers first).
  std::optional<std::vector<Slot>> Allocate(const std::string& pool, int count);
  // Marks a specific slot busy (re-adoption of a running task after re-registration).
  bool Occupy(const std::string& worker_id, int device);
  void Release(const std::string& worker_id, int device);
  // Total device slots a pool has now (free or busy).
  int PoolCapacity(const std::string& pool) const;

  // Queues an assignment for a worker and wakes its stream. Dropped if the worker is unknown.
  void Send(const std::string& worker_id, paft::v1::Assignment assignment);
  // Takes the worker's pending assignments (none: empty; a stream waits for its watcher's
  // wake-up, below). NotFound if the worker is unknown.
  absl::StatusOr<std::vector<paft::v1::Assignment>> TakeAssignments(const std::string& worker_id);
  // Puts assignments back at the front (a stream write failed).
  void Requeue(const std::string& worker_id, std::vector<paft::v1::Assignment> assignments);

  // Streams without a thread (gRPC's callback API) watch their worker: `wake` is called, outside
  // the registry's lock, when assignments are queued for it or when it leaves the registry
  // (lease expired, replaced by a new registration of its name) — one worker's stream is woken,
  // not all. A worker has one watcher; a new one replaces (and wakes) the old. The handle is for
  // Unwatch, which is a no-op once replaced.
  uint64_t Watch(const std::string& worker_id, std::function<void()> wake);
  void Unwatch(const std::string& worker_id, uint64_t handle);
  // Whether `handle` is still the worker's watcher (not replaced, not unwatched).
  bool Watching(const std::string& worker_id, uint64_t handle) const;
  // Wakes every watcher (shutdown).
  void WakeAll();

  std::vector<paft::v1::WorkerInfo> List(const std::string& pool) const;
  // Per pool: agents idle and busy (at least one busy slot), free and busy slots, and the age of
  // the stalest heartbeat. Computed in place (the gauges' per-tick need: no copy of every agent).
  struct PoolStats {
    int idle = 0, busy_workers = 0, free = 0, busy = 0;
    absl::Duration stalest_heartbeat = absl::ZeroDuration();
  };
  std::map<std::string, PoolStats> Stats(absl::Time now) const;
  absl::Duration lease_ttl() const { return lease_ttl_; }

 private:
  struct Worker {
    paft::v1::WorkerInfo info;
    std::vector<bool> busy;  // per device
    absl::Time lease_expiry;
    std::deque<paft::v1::Assignment> pending;
  };

  const absl::Duration lease_ttl_;
  mutable std::mutex mu_;
  struct Watcher {
    uint64_t handle = 0;
    std::function<void()> wake;
  };
  // The watcher of `worker_id` (an empty function when none), to call after unlocking.
  std::function<void()> WatcherLocked(const std::string& worker_id) const;

  std::map<std::string, Worker> workers_;  // GUARDED_BY(mu_), by worker id
  uint64_t next_id_ = 1;                   // GUARDED_BY(mu_)
  std::map<std::string, Watcher> watchers_;  // GUARDED_BY(mu_), by worker id
  uint64_t next_handle_ = 1;                 // GUARDED_BY(mu_)
};

}  // namespace paft::coordinator

#endif  // PAFT_COORDINATOR_WORKER_REGISTRY_H_
