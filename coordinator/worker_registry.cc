#include "coordinator/worker_registry.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/time_util.h"

namespace paft::coordinator {

std::string WorkerRegistry::Register(const paft::v1::RegisterWorkerRequest& request,
                                     absl::Time now) {
  std::vector<std::function<void()>> wake;  // the streams of the replaced registration
  std::unique_lock<std::mutex> lock(mu_);
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (it->second.info.name() != request.name()) {
      ++it;
      continue;
    }
    if (auto w = WatcherLocked(it->first)) wake.push_back(std::move(w));
    it = workers_.erase(it);
  }
  std::string id = absl::StrCat(request.name(), "-", next_id_++);
  Worker& w = workers_[id];
  w.info.set_worker_id(id);
  w.info.set_name(request.name());
  w.info.set_pool(request.pool());
  w.info.set_devices(request.devices());
  w.info.set_address(request.address());
  *w.info.mutable_device_info() = request.device_info();
  *w.info.mutable_last_heartbeat() = ToProtoTime(now);
  w.busy.assign(request.devices(), false);
  w.lease_expiry = now + lease_ttl_;
  lock.unlock();
  for (auto& w : wake) w();
  return id;
}

absl::Status WorkerRegistry::Heartbeat(const std::string& worker_id, absl::Time now) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = workers_.find(worker_id);
  if (it == workers_.end()) {
    return absl::NotFoundError(
        absl::StrCat("worker '", worker_id, "' is not registered (lease expired?): re-register"));
  }
  it->second.lease_expiry = now + lease_ttl_;
  *it->second.info.mutable_last_heartbeat() = ToProtoTime(now);
  return absl::OkStatus();
}

std::vector<std::string> WorkerRegistry::ExpireLeases(absl::Time now) {
  std::vector<std::function<void()>> wake;
  std::vector<std::string> lost;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = workers_.begin(); it != workers_.end();) {
      if (it->second.lease_expiry < now) {
        lost.push_back(it->first);
        if (auto w = WatcherLocked(it->first)) wake.push_back(std::move(w));
        it = workers_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& w : wake) w();
  return lost;
}

bool WorkerRegistry::Exists(const std::string& worker_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  return workers_.count(worker_id) > 0;
}

std::optional<std::string> WorkerRegistry::NameOf(const std::string& worker_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = workers_.find(worker_id);
  if (it == workers_.end()) return std::nullopt;
  return it->second.info.name();
}

std::optional<std::vector<Slot>> WorkerRegistry::Allocate(const std::string& pool, int count) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::pair<int, Worker*>> candidates;  // (free slots, worker)
  int total_free = 0;
  for (auto& [id, w] : workers_) {
    if (w.info.pool() != pool) continue;
    int free = static_cast<int>(std::count(w.busy.begin(), w.busy.end(), false));
    if (free > 0) candidates.emplace_back(free, &w);
    total_free += free;
  }
  if (total_free < count) return std::nullopt;
  // Fewest workers first: fill the emptiest agents (keeps ranks of a gang together).
  std::stable_sort(candidates.begin(), candidates.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<Slot> slots;
  for (auto& [free, w] : candidates) {
    for (size_t d = 0; d < w->busy.size() && static_cast<int>(slots.size()) < count; ++d) {
      if (w->busy[d]) continue;
      w->busy[d] = true;
      slots.push_back(
          Slot{w->info.worker_id(), w->info.name(), static_cast<int>(d), w->info.address()});
    }
    if (static_cast<int>(slots.size()) == count) break;
  }
  return slots;
}

bool WorkerRegistry::Occupy(const std::string& worker_id, int device) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = workers_.find(worker_id);
  if (it == workers_.end() || device < 0 || device >= static_cast<int>(it->second.busy.size())) {
    return false;
  }
  it->second.busy[device] = true;
  return true;
}

void WorkerRegistry::Release(const std::string& worker_id, int device) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = workers_.find(worker_id);
  if (it == workers_.end() || device < 0 || device >= static_cast<int>(it->second.busy.size())) {
    return;
  }
  it->second.busy[device] = false;
}

int WorkerRegistry::PoolCapacity(const std::string& pool) const {
  std::lock_guard<std::mutex> lock(mu_);
  int total = 0;
  for (const auto& [id, w] : workers_) {
    if (w.info.pool() == pool) total += static_cast<int>(w.busy.size());
  }
  return total;
}

void WorkerRegistry::Send(const std::string& worker_id, paft::v1::Assignment assignment) {
  std::function<void()> wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = workers_.find(worker_id);
    if (it == workers_.end()) return;
    it->second.pending.push_back(std::move(assignment));
    wake = WatcherLocked(worker_id);
  }
  if (wake) wake();
}

absl::StatusOr<std::vector<paft::v1::Assignment>> WorkerRegistry::TakeAssignments(
    const std::string& worker_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = workers_.find(worker_id);
  if (it == workers_.end()) {
    return absl::NotFoundError(absl::StrCat("worker '", worker_id, "' is not registered"));
  }
  std::vector<paft::v1::Assignment> out(it->second.pending.begin(), it->second.pending.end());
  it->second.pending.clear();
  return out;
}

void WorkerRegistry::Requeue(const std::string& worker_id,
                             std::vector<paft::v1::Assignment> assignments) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = workers_.find(worker_id);
  if (it == workers_.end()) return;
  for (auto a = assignments.rbegin(); a != assignments.rend(); ++a) {
    it->second.pending.push_front(std::move(*a));
  }
}

std::function<void()> WorkerRegistry::WatcherLocked(const std::string& worker_id) const {
  auto it = watchers_.find(worker_id);
  return it == watchers_.end() ? std::function<void()>() : it->second.wake;
}

uint64_t WorkerRegistry::Watch(const std::string& worker_id, std::function<void()> wake) {
  std::function<void()> replaced;
  uint64_t handle;
  {
    std::lock_guard<std::mutex> lock(mu_);
    handle = next_handle_++;
    Watcher& w = watchers_[worker_id];
    replaced = std::move(w.wake);
    w = Watcher{handle, std::move(wake)};
  }
  if (replaced) replaced();
  return handle;
}

void WorkerRegistry::Unwatch(const std::string& worker_id, uint64_t handle) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = watchers_.find(worker_id);
  if (it != watchers_.end() && it->second.handle == handle) watchers_.erase(it);
}

std::map<std::string, WorkerRegistry::PoolStats> WorkerRegistry::Stats(absl::Time now) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, PoolStats> out;
  for (const auto& [id, w] : workers_) {
    PoolStats& p = out[w.info.pool()];
    const int busy = static_cast<int>(std::count(w.busy.begin(), w.busy.end(), true));
    (busy > 0 ? p.busy_workers : p.idle) += 1;
    p.busy += busy;
    p.free += static_cast<int>(w.busy.size()) - busy;
    p.stalest_heartbeat = std::max(p.stalest_heartbeat, now - (w.lease_expiry - lease_ttl_));
  }
  return out;
}

bool WorkerRegistry::Watching(const std::string& worker_id, uint64_t handle) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = watchers_.find(worker_id);
  return it != watchers_.end() && it->second.handle == handle;
}

void WorkerRegistry::WakeAll() {
  std::vector<std::function<void()>> wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, w] : watchers_) wake.push_back(w.wake);
  }
  for (auto& w : wake) w();
}

std::vector<paft::v1::WorkerInfo> WorkerRegistry::List(const std::string& pool) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<paft::v1::WorkerInfo> out;
  for (const auto& [id, w] : workers_) {
    if (!pool.empty() && w.info.pool() != pool) continue;
    paft::v1::WorkerInfo info = w.info;
    info.set_busy_devices(static_cast<int>(std::count(w.busy.begin(), w.busy.end(), true)));
    out.push_back(std::move(info));
  }
  return out;
}

}  // namespace paft::coordinator
