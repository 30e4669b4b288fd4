// The threads the coordinator's unary gRPC calls run on. Every method is on gRPC's callback API
// (a server mixing synchronous and callback methods showed a ~100 ms tail on its synchronous
// calls: SubmitJob p99 100 ms vs 24 ms, docs/operations.md#capacity); the calls that may block
// (SQLite commits, file-system checks) are handed from gRPC's threads to this pool, so that
// slow storage never holds the threads that serve heartbeats and streams.
//
// Threads are started on demand up to `max_threads` and then kept; at most `max_queued` calls
// wait for one, beyond that Submit refuses (the caller answers RESOURCE_EXHAUSTED).
#ifndef PAFT_COORDINATOR_HANDLER_POOL_H_
#define PAFT_COORDINATOR_HANDLER_POOL_H_

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace paft::coordinator {

class HandlerPool {
 public:
  HandlerPool(int max_threads, size_t max_queued);
  ~HandlerPool();  // runs what is queued, then joins
  HandlerPool(const HandlerPool&) = delete;
  HandlerPool& operator=(const HandlerPool&) = delete;

  // Runs `work` on a pool thread; false (and `work` dropped) when the queue is full.
  bool Submit(std::function<void()> work);
  int threads() const;

 private:
  void Run();

  const int max_threads_;
  const size_t max_queued_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;  // guarded by mu_
  int idle_ = 0;                             // guarded by mu_
  bool stopping_ = false;                    // guarded by mu_
  std::vector<std::thread> threads_;         // guarded by mu_
};

}  // namespace paft::coordinator

#endif  // PAFT_COORDINATOR_HANDLER_POOL_H_
