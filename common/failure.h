// Why a rank ended: one table shared by the trainer (its exit code), the worker agent (its exit
// report) and the coordinator (the restart policy, and the reason in events, conditions and
// metrics). docs/failures.md describes each class for operators.
//
// Inside a process a failure travels on an absl::Status as a payload (MarkFailure), so that
// e.g. a full disk and an exhausted memory, both RESOURCE_EXHAUSTED, stay apart up to the exit.
#ifndef PAFT_COMMON_FAILURE_H_
#define PAFT_COMMON_FAILURE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace paft {

enum class Failure {
  kNone,            // completed
  kUserError,       // bad spec, dataset, model or checkpoint: a restart cannot help
  kInfrastructure,  // I/O error, rendezvous timeout, anything transient: restart
  kOutOfMemory,     // device or host memory: the same configuration would fail again
  kDiskFull,        // no room for a checkpoint, even after retention freed what it could
  kPeerLost,        // a collective failed because another rank died or hung: restart
  kPortInUse,       // rank 0's rendezvous port is taken on its host: restart on another port
  kStopped,         // stopped on request (the coordinator's, or its agent shutting down)
  kSignal,          // killed by a signal that is not evidence of anything above
  kFailedToStart,   // the trainer could not be started (exec, log folder)
  kUnknown,         // an exit code outside the table
};

struct FailureInfo {
  Failure failure;
  const char* name;  // "DiskFull": events, conditions, metric labels
  int exit_code;     // what the trainer exits with (-1: decided by the agent, not the trainer)
  bool permanent;    // the branch fails instead of restarting
  bool uses_budget;  // a restart counts against the job's restart_budget
  const char* meaning;
};

// Every class, in enum order.
absl::Span<const FailureInfo> AllFailures();
const FailureInfo& InfoOf(Failure failure);
inline int ExitCodeOf(Failure failure) { return InfoOf(failure).exit_code; }
// The class of a trainer's exit code (kUnknown outside the table).
Failure FailureOfExitCode(int exit_code);

// `status` with its failure class attached (kept by Annotate). OK stays OK.
absl::Status MarkFailure(absl::Status status, Failure failure);
// The attached class, else one from the status code: OK -> kNone; INVALID_ARGUMENT,
// FAILED_PRECONDITION, NOT_FOUND, ALREADY_EXISTS, OUT_OF_RANGE, DATA_LOSS -> kUserError;
// anything else -> kInfrastructure.
Failure FailureOf(const absl::Status& status);

}  // namespace paft

#endif  // PAFT_COMMON_FAILURE_H_
