// WatchHub: who is woken by a notification, a direct wake-up and a timer, and on which thread.
#include "coordinator/watch_hub.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace paft::coordinator {
namespace {

// Counts wake-ups and lets a test wait for a number of them.
struct Counter {
  std::mutex mu;
  std::condition_variable cv;
  int n = 0;
  std::thread::id thread;
  void Hit() {
    std::lock_guard<std::mutex> lock(mu);
    ++n;
    thread = std::this_thread::get_id();
    cv.notify_all();
  }
  bool WaitFor(int count, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, timeout, [&] { return n >= count; });
  }
  int Get() {
    std::lock_guard<std::mutex> lock(mu);
    return n;
  }
};

TEST(WatchHubTest, ANotificationWakesTheWatchersOfItsKeyOnly) {
  WatchHub hub;
  Counter a1, a2, b;
  hub.Watch("job-a", [&] { a1.Hit(); });
  hub.Watch("job-a", [&] { a2.Hit(); });
  hub.Watch("job-b", [&] { b.Hit(); });
  hub.Notify("job-a");
  ASSERT_TRUE(a1.WaitFor(1));
  ASSERT_TRUE(a2.WaitFor(1));
  hub.Notify("nobody-watches");
  hub.Wake(0);  // an unknown handle is ignored
  // A later notification of job-b is run after anything queued before it.
  hub.Notify("job-b");
  ASSERT_TRUE(b.WaitFor(1));
  EXPECT_EQ(a1.Get(), 1);
  EXPECT_EQ(a2.Get(), 1);
  EXPECT_NE(a1.thread, std::this_thread::get_id());  // run on the hub's thread
}

TEST(WatchHubTest, NotificationsWhileBusyCoalesceIntoOneMoreWakeUp) {
  WatchHub hub;
  std::mutex gate;
  std::unique_lock<std::mutex> held(gate);
  Counter c;
  hub.Watch("job", [&] {
    std::lock_guard<std::mutex> wait(gate);  // the first wake-up blocks until released
    c.Hit();
  });
  hub.Notify("job");
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the hub is now inside it
  for (int i = 0; i < 100; ++i) hub.Notify("job");
  held.unlock();
  ASSERT_TRUE(c.WaitFor(2));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(c.Get(), 2);  // not 101
}

TEST(WatchHubTest, AWatcherHasAtMostOneTimer) {
  WatchHub hub;
  Counter c;
  const uint64_t h = hub.Watch("job", [&] { c.Hit(); });
  // A stream woken by many notifications while it polls asks for its poll each time: one timer.
  for (int i = 0; i < 100; ++i) hub.Wake(h, absl::Milliseconds(100));
  ASSERT_TRUE(c.WaitFor(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(c.Get(), 1);
  // An earlier timer replaces a later one.
  const auto start = std::chrono::steady_clock::now();
  hub.Wake(h, absl::Seconds(60));
  hub.Wake(h, absl::Milliseconds(50));
  ASSERT_TRUE(c.WaitFor(2));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST(WatchHubTest, DelayedWakeUpsAndUnwatch) {
  WatchHub hub;
  Counter c, gone;
  const uint64_t h = hub.Watch("job", [&] { c.Hit(); });
  const uint64_t g = hub.Watch("job", [&] { gone.Hit(); });
  const auto start = std::chrono::steady_clock::now();
  hub.Wake(h, absl::Milliseconds(200));
  hub.Wake(g, absl::Milliseconds(100));
  hub.Unwatch(g);  // its timer finds no watcher
  ASSERT_TRUE(c.WaitFor(1));
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(200));
  hub.NotifyAll();
  ASSERT_TRUE(c.WaitFor(2));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(gone.Get(), 0);
  EXPECT_EQ(hub.watchers(), 1u);
}

}  // namespace
}  // namespace paft::coordinator
