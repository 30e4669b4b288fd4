// The mutex of lock-annotated state (ABSL_GUARDED_BY and friends): absl::Mutex, or, in a
// ThreadSanitizer build (PAFT_TSAN), a std::mutex under the same annotations. Debian's libabsl is
// not built with -fsanitize=thread, so TSan cannot see absl::Mutex's synchronization and would
// report every guarded access; it does see std::mutex (pthread, intercepted by its runtime).
// clang's -Wthread-safety checks the annotations either way.
#ifndef PAFT_COMMON_MUTEX_H_
#define PAFT_COMMON_MUTEX_H_

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

#ifdef PAFT_TSAN
#include <mutex>
#endif

namespace paft {

#ifdef PAFT_TSAN

class ABSL_LOCKABLE Mutex {
 public:
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }

 private:
  std::mutex mu_;
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

#else

using Mutex = absl::Mutex;
using MutexLock = absl::MutexLock;

#endif

}  // namespace paft

#endif  // PAFT_COMMON_MUTEX_H_
