// ParallelFor: runs fn(task, worker) for task in [0, tasks) on `workers` threads (the caller is
// worker 0). Blocks until all tasks are done. Small and dependency-free on purpose.
#ifndef PAFT_MERGER_PARALLEL_H_
#define PAFT_MERGER_PARALLEL_H_

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace paft::merger {

template <typename Fn>
void ParallelFor(int64_t tasks, int workers, const Fn& fn) {
  if (tasks <= 0) return;
  if (workers <= 1 || tasks == 1) {
    for (int64_t t = 0; t < tasks; ++t) fn(t, 0);
    return;
  }
  std::atomic<int64_t> next{0};
  auto run = [&](int worker) {
    for (int64_t t = next++; t < tasks; t = next++) fn(t, worker);
  };
  const int n = static_cast<int>(std::min<int64_t>(workers, tasks));
  std::vector<std::thread> threads;
  for (int w = 1; w < n; ++w) threads.emplace_back(run, w);
  run(0);
  for (auto& t : threads) t.join();
}

}  // namespace paft::merger

#endif  // PAFT_MERGER_PARALLEL_H_
