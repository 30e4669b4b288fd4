#include "coordinator/handler_pool.h"

#include <exception>
#include <utility>

#include "common/logging.h"

namespace paft::coordinator {

HandlerPool::HandlerPool(int max_threads, size_t max_queued)
    : max_threads_(max_threads < 1 ? 1 : max_threads), max_queued_(max_queued) {}

HandlerPool::~HandlerPool() {
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    threads.swap(threads_);
  }
  cv_.notify_all();
  for (auto& t : threads) t.join();
}

bool HandlerPool::Submit(std::function<void()> work) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ || queue_.size() >= max_queued_) return false;
    queue_.push_back(std::move(work));
    if (idle_ < static_cast<int>(queue_.size()) &&
        static_cast<int>(threads_.size()) < max_threads_) {
      threads_.emplace_back([this] { Run(); });
    }
  }
  cv_.notify_one();
  return true;
}

int HandlerPool::threads() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(threads_.size());
}

void HandlerPool::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    ++idle_;
    cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    --idle_;
    if (queue_.empty()) return;  // stopping, nothing left
    std::function<void()> work = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    try {
      work();
    } catch (const std::exception& e) {  // a handler's bug must not take the pool's thread
      PAFT_LOG(ERROR) << "gRPC handler failed: " << e.what();
    } catch (...) {
      PAFT_LOG(ERROR) << "gRPC handler failed with a non-standard exception";
    }
    lock.lock();
  }
}

}  // namespace paft::coordinator
