// Wakes the reactors of the job streams (WatchJob, StreamLogs) without a thread per stream: a
// reactor registers a wake-up under a key (its job id); whoever changes the job notifies the key,
// and the hub runs that key's wake-ups, and only those, on its one thread. A reactor can also ask
// to be woken at once (its last write went out) or after a delay (a log file is polled).
//
// Notify and Wake never block and never call out, so they may be called under any lock. Wake-ups
// run on the hub's thread outside its lock; they may do blocking reads (SQLite, files), which
// therefore stay off gRPC's callback threads.
#ifndef PAFT_COORDINATOR_WATCH_HUB_H_
#define PAFT_COORDINATOR_WATCH_HUB_H_

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "absl/time/time.h"

namespace paft::coordinator {

class WatchHub {
 public:
  WatchHub();
  ~WatchHub();  // stops the thread; wake-ups not yet run are dropped
  WatchHub(const WatchHub&) = delete;
  WatchHub& operator=(const WatchHub&) = delete;

  // Registers `wake` under `key`; the handle is for Unwatch and Wake. `wake` must tolerate being
  // run after its owner is gone if the owner unwatches concurrently (hold a weak reference).
  uint64_t Watch(const std::string& key, std::function<void()> wake);
  void Unwatch(uint64_t handle);

  // Runs the wake-ups of every watcher of `key` (once each, however often notified meanwhile).
  void Notify(const std::string& key);
  // Runs one watcher's wake-up, now or after `delay`. A watcher has at most one timer: a later
  // one than it has is dropped, an earlier one replaces it.
  void Wake(uint64_t handle, absl::Duration delay = absl::ZeroDuration());
  // Runs every watcher's wake-up (shutdown).
  void NotifyAll();

  size_t watchers() const;

 private:
  struct Watcher {
    std::string key;
    std::function<void()> wake;
  };
  void Run();
  void DropTimerLocked(uint64_t handle);

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;                            // guarded by mu_
  uint64_t next_handle_ = 1;                         // guarded by mu_
  std::map<uint64_t, Watcher> watchers_;             // guarded by mu_
  std::multimap<std::string, uint64_t> by_key_;      // guarded by mu_
  std::set<std::string> notified_keys_;              // guarded by mu_
  std::set<uint64_t> woken_;                         // guarded by mu_
  std::map<absl::Time, std::set<uint64_t>> timers_;  // guarded by mu_; due -> watchers
  std::map<uint64_t, absl::Time> timer_of_;          // guarded by mu_; watcher -> due
  std::thread thread_;
};

}  // namespace paft::coordinator

#endif  // PAFT_COORDINATOR_WATCH_HUB_H_
