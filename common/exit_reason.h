// The wire form of a failure class (common/failure.h): paft.v1.ExitReason in exit reports.
#ifndef PAFT_COMMON_EXIT_REASON_H_
#define PAFT_COMMON_EXIT_REASON_H_

#include "common/failure.h"
#include "paft/v1/worker.pb.h"

namespace paft {

paft::v1::ExitReason ExitReasonOf(Failure failure);
// UNSPECIFIED (an agent older than the reason) reads as kUnknown.
Failure FailureOfExitReason(paft::v1::ExitReason reason);

}  // namespace paft

#endif  // PAFT_COMMON_EXIT_REASON_H_
