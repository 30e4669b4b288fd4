#include "common/failure.h"

#include <array>

#include "absl/strings/cord.h"

namespace paft {
namespace {

constexpr char kPayloadUrl[] = "type.paft.dev/failure";

constexpr std::array<FailureInfo, 11> kTable = {{
    {Failure::kNone, "Completed", 0, false, true, "the rank completed"},
    {Failure::kUserError, "UserError", 2, true, true,
     "the spec, dataset, model or checkpoint is wrong; fix it and resubmit"},
    {Failure::kInfrastructure, "Infrastructure", 3, false, true,
     "an I/O error or another transient fault; restarted from the newest checkpoint"},
    {Failure::kOutOfMemory, "OutOfMemory", 4, true, true,
     "device or host memory ran out (the trainer's allocator, or the kernel's OOM killer); "
     "lower batch.micro_batch_size or max_length, or use more ranks"},
    {Failure::kDiskFull, "DiskFull", 5, true, true,
     "no room for a checkpoint after retention removed what it could; the message names the "
     "folder and the bytes needed"},
    {Failure::kPeerLost, "PeerLost", 6, false, true,
     "a collective failed because another rank died or hung; restarted"},
    {Failure::kPortInUse, "PortInUse", 7, false, false,
     "rank 0 could not listen on its rendezvous port (another process on its host holds it); "
     "restarted on another port"},
    {Failure::kStopped, "Stopped", -1, false, true, "stopped on request"},
    {Failure::kSignal, "Signal", -1, false, true, "killed by a signal; restarted"},
    {Failure::kFailedToStart, "FailedToStart", 127, false, true,
     "the trainer could not be started; restarted"},
    {Failure::kUnknown, "Unknown", -1, false, true, "an exit code outside the table; restarted"},
}};

}  // namespace

absl::Span<const FailureInfo> AllFailures() { return kTable; }

const FailureInfo& InfoOf(Failure failure) {
  for (const FailureInfo& info : kTable) {
    if (info.failure == failure) return info;
  }
  return kTable.back();
}

Failure FailureOfExitCode(int exit_code) {
  for (const FailureInfo& info : kTable) {
    if (info.exit_code == exit_code) return info.failure;
  }
  return Failure::kUnknown;
}

absl::Status MarkFailure(absl::Status status, Failure failure) {
  if (!status.ok()) status.SetPayload(kPayloadUrl, absl::Cord(InfoOf(failure).name));
  return status;
}

Failure FailureOf(const absl::Status& status) {
  if (status.ok()) return Failure::kNone;
  if (auto payload = status.GetPayload(kPayloadUrl)) {
    const std::string name(*payload);
    for (const FailureInfo& info : kTable) {
      if (name == info.name) return info.failure;
    }
  }
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kDataLoss:  // a corrupt dataset or checkpoint: retrying cannot help
      return Failure::kUserError;
    default:
      return Failure::kInfrastructure;
  }
}

}  // namespace paft
