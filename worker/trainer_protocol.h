// The contract between a worker agent and the trainer processes it runs.
//
// The agent starts one trainer per rank with `--task_file=FILE` (the paft.v1.Task as JSON) and
// torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) plus
// PAFT_TASK_ID. The trainer reports on stdout with lines
//   PAFT_EVENT {"type":"progress","step":S,"total_steps":T,"loss":L,"tokens_per_second":R}
//   PAFT_EVENT {"type":"checkpoint","step":S,"path":P,"size_bytes":B,"digest":D,"final":F}
//   PAFT_EVENT {"type":"error","message":M}
// Every other line is log output (worker/trainer_events.h parses them, field by field). The exit
// code classifies a failure: the table of common/failure.h (2 user error, 3 infrastructure,
// 4 out of memory, 5 disk full, 6 peer lost).
#ifndef PAFT_WORKER_TRAINER_PROTOCOL_H_
#define PAFT_WORKER_TRAINER_PROTOCOL_H_

#include <string>

#include "nlohmann/json.hpp"

namespace paft::worker {

inline constexpr char kEventPrefix[] = "PAFT_EVENT ";

// Formats an event line (with the trailing newline).
inline std::string FormatEvent(const nlohmann::json& event) {
  return std::string(kEventPrefix) + event.dump() + "\n";
}

}  // namespace paft::worker

#endif  // PAFT_WORKER_TRAINER_PROTOCOL_H_
