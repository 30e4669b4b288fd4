// The outermost frame of an agent thread: no exception may escape it (an escaped exception is
// std::terminate, and through PR_SET_PDEATHSIG every rank the agent runs dies with it).
#ifndef PAFT_WORKER_THREAD_GUARD_H_
#define PAFT_WORKER_THREAD_GUARD_H_

#include <functional>
#include <string>

namespace paft::worker {

// Runs `body`, catching every exception: it is logged with `name` and `on_exception` is called;
// then, while `run_again()` says so, `body` runs again after a second's pause.
void RunGuarded(const std::string& name, const std::function<void()>& body,
                const std::function<void()>& on_exception,
                const std::function<bool()>& run_again);

}  // namespace paft::worker

#endif  // PAFT_WORKER_THREAD_GUARD_H_
