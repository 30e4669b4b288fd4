#include "coordinator/watch_hub.h"

#include <chrono>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "common/logging.h"

namespace paft::coordinator {

WatchHub::WatchHub() : thread_([this] { Run(); }) {}

WatchHub::~WatchHub() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

uint64_t WatchHub::Watch(const std::string& key, std::function<void()> wake) {
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t handle = next_handle_++;
  watchers_[handle] = Watcher{key, std::move(wake)};
  by_key_.emplace(key, handle);
  return handle;
}

void WatchHub::Unwatch(uint64_t handle) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = watchers_.find(handle);
  if (it == watchers_.end()) return;
  auto [first, last] = by_key_.equal_range(it->second.key);
  for (auto k = first; k != last; ++k) {
    if (k->second == handle) {
      by_key_.erase(k);
      break;
    }
  }
  watchers_.erase(it);
  woken_.erase(handle);
  DropTimerLocked(handle);
}

void WatchHub::Notify(const std::string& key) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (by_key_.find(key) == by_key_.end()) return;  // nobody watches this job
    notified_keys_.insert(key);
  }
  cv_.notify_one();
}

void WatchHub::Wake(uint64_t handle, absl::Duration delay) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (delay <= absl::ZeroDuration()) {
      woken_.insert(handle);
    } else {
      const absl::Time due = absl::Now() + delay;
      auto it = timer_of_.find(handle);
      if (it != timer_of_.end() && it->second <= due) return;  // an earlier one is set
      DropTimerLocked(handle);
      timers_[due].insert(handle);
      timer_of_[handle] = due;
    }
  }
  cv_.notify_one();
}

void WatchHub::NotifyAll() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [handle, watcher] : watchers_) woken_.insert(handle);
  }
  cv_.notify_one();
}

void WatchHub::DropTimerLocked(uint64_t handle) {
  auto it = timer_of_.find(handle);
  if (it == timer_of_.end()) return;
  auto due = timers_.find(it->second);
  due->second.erase(handle);
  if (due->second.empty()) timers_.erase(due);
  timer_of_.erase(it);
}

size_t WatchHub::watchers() const {
  std::lock_guard<std::mutex> lock(mu_);
  return watchers_.size();
}

void WatchHub::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    // Due timers become wake-ups; then wait for work or the next timer.
    const absl::Time now = absl::Now();
    while (!timers_.empty() && timers_.begin()->first <= now) {
      for (uint64_t handle : timers_.begin()->second) {
        woken_.insert(handle);
        timer_of_.erase(handle);
      }
      timers_.erase(timers_.begin());
    }
    for (const std::string& key : notified_keys_) {
      auto [first, last] = by_key_.equal_range(key);
      for (auto k = first; k != last; ++k) woken_.insert(k->second);
    }
    notified_keys_.clear();
    if (woken_.empty()) {
      if (timers_.empty()) {
        cv_.wait(lock);
      } else {
        cv_.wait_for(lock, absl::ToChronoNanoseconds(timers_.begin()->first - now));
      }
      continue;
    }
    std::vector<std::function<void()>> batch;
    for (uint64_t handle : woken_) {
      if (auto it = watchers_.find(handle); it != watchers_.end()) batch.push_back(it->second.wake);
    }
    woken_.clear();
    lock.unlock();
    for (auto& wake : batch) {
      try {
        wake();
      } catch (const std::exception& e) {  // a reactor's bug must not stop every other stream
        PAFT_LOG(ERROR) << "stream wake-up failed: " << e.what();
      }
    }
    lock.lock();
  }
}

}  // namespace paft::coordinator
