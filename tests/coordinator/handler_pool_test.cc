// HandlerPool: calls run on its threads, at most max_threads of them, at most max_queued waiting;
// what is queued runs before the pool is gone.
#include "coordinator/handler_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace paft::coordinator {
namespace {

// Holds every call that enters until Open().
class Gate {
 public:
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    ++waiting_;
    cv_.notify_all();
    cv_.wait(lock, [&] { return open_; });
  }
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  bool WaitForWaiting(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(5), [&] { return waiting_ >= n; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int waiting_ = 0;
  bool open_ = false;
};

TEST(HandlerPoolTest, CallsRunOnAtMostMaxThreadsAndTheQueueIsBounded) {
  Gate gate;
  std::atomic<int> done{0};
  std::atomic<bool> on_caller_thread{false};
  const auto caller = std::this_thread::get_id();
  {
    HandlerPool pool(/*max_threads=*/3, /*max_queued=*/2);
    EXPECT_EQ(pool.threads(), 0);  // started on demand
    auto call = [&] {
      on_caller_thread = on_caller_thread || std::this_thread::get_id() == caller;
      gate.Wait();
      ++done;
    };
    for (int i = 1; i <= 3; ++i) {  // three run at once, one per thread
      ASSERT_TRUE(pool.Submit(call));
      if (!gate.WaitForWaiting(i)) {
        gate.Open();  // let the pool's threads end before failing
        FAIL() << "call " << i << " did not start";
      }
    }
    EXPECT_EQ(pool.threads(), 3);
    EXPECT_TRUE(pool.Submit(call));  // two may wait ...
    EXPECT_TRUE(pool.Submit(call));
    EXPECT_FALSE(pool.Submit(call));  // ... a third is refused
    EXPECT_EQ(pool.threads(), 3);
    gate.Open();
  }  // the destructor runs what was queued, then joins
  EXPECT_EQ(done.load(), 5);
  EXPECT_FALSE(on_caller_thread.load());
}

TEST(HandlerPoolTest, AThrowingCallDoesNotTakeItsThread) {
  std::atomic<int> done{0};
  {
    HandlerPool pool(1, 10);
    ASSERT_TRUE(pool.Submit([] { throw std::runtime_error("handler bug"); }));
    ASSERT_TRUE(pool.Submit([&] { ++done; }));
  }
  EXPECT_EQ(done.load(), 1);
}

}  // namespace
}  // namespace paft::coordinator
