#include "trainer/cpu_runtime.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <malloc.h>

#include <algorithm>
#include <thread>

namespace paft::trainer {

int ConfigureCpuRuntime(int threads) {
  const int n = threads > 0 ? threads : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  at::set_num_threads(n);
  if (n > 1) {
    // Present only when the loaded BLAS is OpenBLAS (the reference BLAS has no threads).
    using SetThreads = void (*)(int);
    if (auto set = reinterpret_cast<SetThreads>(::dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
      set(1);
    }
  }
  // glibc's largest mmap threshold (HEAP_MAX_SIZE / 2 on 64-bit); a trim threshold that keeps
  // freed memory for reuse.
  ::mallopt(M_MMAP_THRESHOLD, 32 << 20);
  ::mallopt(M_TRIM_THRESHOLD, 1 << 30);
  return n;
}

}  // namespace paft::trainer
