// How the agent classifies a trainer's end (common/failure.h): by the stop it asked for, the
// exit code the trainer chose, or the signal that killed it, with the kernel's OOM killer told
// apart from other SIGKILLs by the memory cgroup's oom_kill counter.
#ifndef PAFT_WORKER_EXIT_CLASSIFIER_H_
#define PAFT_WORKER_EXIT_CLASSIFIER_H_

#include <cstdint>
#include <optional>
#include <string>

#include "common/failure.h"

namespace paft::worker {

// The oom_kill counter of the memory cgroup this process is in: cgroup v2's memory.events, or
// v1's memory.oom_control (kernel 4.13+), under `cgroup_root` (/sys/fs/cgroup). nullopt where
// neither is readable (no cgroup, a container without the controller).
std::optional<int64_t> ReadOomKills(const std::string& proc_self_cgroup_text,
                                    const std::string& cgroup_root = "/sys/fs/cgroup");
std::optional<int64_t> ReadOomKills();  // this process, from /proc/self/cgroup

struct ExitFacts {
  int exit_code = 0;  // -1 when killed by a signal
  int signal = 0;
  bool stop_requested = false;
  // oom_kill of the agent's cgroup when the rank started and when it ended (ranks share it).
  std::optional<int64_t> oom_kills_before, oom_kills_after;
};

struct ExitClass {
  Failure failure = Failure::kNone;
  std::string explanation;  // the agent's own words, for when the trainer said nothing
};

ExitClass ClassifyExit(const ExitFacts& facts);

}  // namespace paft::worker

#endif  // PAFT_WORKER_EXIT_CLASSIFIER_H_
