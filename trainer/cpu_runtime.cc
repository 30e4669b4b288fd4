#include "trainer/cpu_runtime.h"

#include <ATen/Parallel.h>
#include <malloc.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

#include "absl/strings/numbers.h"

namespace paft::trainer {

namespace {

// OMP_NUM_THREADS when it is a positive number (a worker agent sets it for its slots), else
// every core.
int DefaultThreads() {
  if (const char* env = std::getenv("OMP_NUM_THREADS")) {
    int n = 0;
    if (absl::SimpleAtoi(env, &n) && n > 0) return n;
  }
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

}  // namespace

int ConfigureCpuRuntime(int threads) {
  const int n = threads > 0 ? threads : DefaultThreads();
  at::set_num_threads(n);
  // The mmap threshold at its largest; a trim threshold that keeps freed memory for reuse.
  ::mallopt(M_MMAP_THRESHOLD, static_cast<int>(kCpuHeapBlockBytes));
  ::mallopt(M_TRIM_THRESHOLD, 1 << 30);
  return n;
}

}  // namespace paft::trainer
