#include "worker/thread_guard.h"

#include <exception>

#include "absl/time/clock.h"
#include "common/logging.h"

namespace paft::worker {

void RunGuarded(const std::string& name, const std::function<void()>& body,
                const std::function<void()>& on_exception,
                const std::function<bool()>& run_again) {
  while (true) {
    try {
      body();
      return;
    } catch (const std::exception& e) {
      PAFT_LOG(ERROR) << name << ": exception caught at the thread boundary: " << e.what();
    } catch (...) {
      PAFT_LOG(ERROR) << name << ": unknown exception caught at the thread boundary";
    }
    if (on_exception) on_exception();
    if (!run_again || !run_again()) return;
    absl::SleepFor(absl::Seconds(1));
  }
}

}  // namespace paft::worker
