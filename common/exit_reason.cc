#include "common/exit_reason.h"

namespace paft {
namespace {

struct Pair {
  Failure failure;
  paft::v1::ExitReason reason;
};

constexpr Pair kPairs[] = {
    {Failure::kNone, paft::v1::EXIT_REASON_COMPLETED},
    {Failure::kUserError, paft::v1::EXIT_REASON_USER_ERROR},
    {Failure::kInfrastructure, paft::v1::EXIT_REASON_INFRASTRUCTURE},
    {Failure::kOutOfMemory, paft::v1::EXIT_REASON_OOM},
    {Failure::kDiskFull, paft::v1::EXIT_REASON_DISK_FULL},
    {Failure::kPeerLost, paft::v1::EXIT_REASON_PEER_LOST},
    {Failure::kPortInUse, paft::v1::EXIT_REASON_PORT_IN_USE},
    {Failure::kStopped, paft::v1::EXIT_REASON_STOPPED},
    {Failure::kSignal, paft::v1::EXIT_REASON_SIGNAL},
    {Failure::kFailedToStart, paft::v1::EXIT_REASON_FAILED_TO_START},
    {Failure::kUnknown, paft::v1::EXIT_REASON_UNKNOWN},
};

}  // namespace

paft::v1::ExitReason ExitReasonOf(Failure failure) {
  for (const Pair& p : kPairs) {
    if (p.failure == failure) return p.reason;
  }
  return paft::v1::EXIT_REASON_UNKNOWN;
}

Failure FailureOfExitReason(paft::v1::ExitReason reason) {
  for (const Pair& p : kPairs) {
    if (p.reason == reason) return p.failure;
  }
  return Failure::kUnknown;
}

}  // namespace paft
