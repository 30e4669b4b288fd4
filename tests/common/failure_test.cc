// The failure table: complete, unambiguous, and the same on the wire as in exit codes.
#include "common/failure.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <set>
#include <string>

#include "common/exit_reason.h"
#include "common/status.h"

namespace paft {
namespace {

TEST(FailureTest, ExitCodesAndNamesAreUniqueAndRoundTrip) {
  std::set<int> codes;
  std::set<std::string> names;
  for (const FailureInfo& info : AllFailures()) {
    EXPECT_TRUE(names.insert(info.name).second) << info.name;
    EXPECT_EQ(&InfoOf(info.failure), &info);
    if (info.exit_code < 0) continue;
    EXPECT_TRUE(codes.insert(info.exit_code).second) << info.exit_code;
    EXPECT_EQ(FailureOfExitCode(info.exit_code), info.failure);
  }
  EXPECT_EQ(AllFailures().size(), 11u);
  // The trainer's codes of the protocol (worker/trainer_protocol.h), as agents expect them.
  EXPECT_EQ(ExitCodeOf(Failure::kNone), 0);
  EXPECT_EQ(ExitCodeOf(Failure::kUserError), 2);
  EXPECT_EQ(ExitCodeOf(Failure::kInfrastructure), 3);
  EXPECT_EQ(ExitCodeOf(Failure::kOutOfMemory), 4);
  EXPECT_EQ(ExitCodeOf(Failure::kDiskFull), 5);
  EXPECT_EQ(ExitCodeOf(Failure::kPeerLost), 6);
  EXPECT_EQ(ExitCodeOf(Failure::kPortInUse), 7);
  EXPECT_EQ(FailureOfExitCode(1), Failure::kUnknown);
  EXPECT_EQ(FailureOfExitCode(143), Failure::kUnknown);
}

TEST(FailureTest, EveryExitReasonHasOneClassAndBack) {
  const auto* descriptor = paft::v1::ExitReason_descriptor();
  std::set<Failure> seen;
  for (int i = 0; i < descriptor->value_count(); ++i) {
    const auto reason = static_cast<paft::v1::ExitReason>(descriptor->value(i)->number());
    if (reason == paft::v1::EXIT_REASON_UNSPECIFIED) {
      EXPECT_EQ(FailureOfExitReason(reason), Failure::kUnknown);
      continue;
    }
    const Failure failure = FailureOfExitReason(reason);
    EXPECT_TRUE(seen.insert(failure).second) << descriptor->value(i)->name();
    EXPECT_EQ(ExitReasonOf(failure), reason) << descriptor->value(i)->name();
  }
  EXPECT_EQ(seen.size(), AllFailures().size());  // every class has a wire form
}

TEST(FailureTest, PolicyOfEachClass) {
  // A restart cannot help these; the others restart within the job's budget.
  for (Failure f : {Failure::kUserError, Failure::kOutOfMemory, Failure::kDiskFull}) {
    EXPECT_TRUE(InfoOf(f).permanent) << InfoOf(f).name;
  }
  for (Failure f : {Failure::kInfrastructure, Failure::kPeerLost, Failure::kSignal,
                    Failure::kFailedToStart, Failure::kUnknown, Failure::kStopped}) {
    EXPECT_FALSE(InfoOf(f).permanent) << InfoOf(f).name;
    EXPECT_TRUE(InfoOf(f).uses_budget) << InfoOf(f).name;
  }
  // Another process's port on rank 0's host is no fault of the job: restarted on another port.
  EXPECT_FALSE(InfoOf(Failure::kPortInUse).permanent);
  EXPECT_FALSE(InfoOf(Failure::kPortInUse).uses_budget);
}

TEST(FailureTest, TheClassTravelsOnAStatusThroughAnnotations) {
  // Both RESOURCE_EXHAUSTED: only the mark tells a full disk from a system call's ENOMEM, which
  // is the host's memory at that moment (retryable), not a training step's out of memory.
  const absl::Status disk = ErrnoToStatus(ENOSPC, "writing /ckpt/optimizer.pt");
  const absl::Status quota = ErrnoToStatus(EDQUOT, "writing /ckpt/optimizer.pt");
  const absl::Status memory = ErrnoToStatus(ENOMEM, "mmap");
  EXPECT_EQ(disk.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(memory.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(FailureOf(disk), Failure::kDiskFull);
  EXPECT_EQ(FailureOf(quota), Failure::kDiskFull);
  EXPECT_EQ(FailureOf(memory), Failure::kInfrastructure);
  EXPECT_FALSE(InfoOf(FailureOf(memory)).permanent);
  const absl::Status annotated = Annotate(Annotate(disk, "checkpoint 10"), "saving");
  EXPECT_EQ(FailureOf(annotated), Failure::kDiskFull);
  EXPECT_EQ(annotated.message(),
            "saving: checkpoint 10: writing /ckpt/optimizer.pt: No space left on device");
  // Unmarked statuses by their code; an unmarked RESOURCE_EXHAUSTED is not taken for memory.
  EXPECT_EQ(FailureOf(absl::OkStatus()), Failure::kNone);
  EXPECT_EQ(FailureOf(absl::InvalidArgumentError("x")), Failure::kUserError);
  EXPECT_EQ(FailureOf(absl::DataLossError("x")), Failure::kUserError);
  EXPECT_EQ(FailureOf(absl::ResourceExhaustedError("x")), Failure::kInfrastructure);
  EXPECT_EQ(FailureOf(absl::UnavailableError("x")), Failure::kInfrastructure);
  EXPECT_EQ(FailureOf(MarkFailure(absl::UnavailableError("x"), Failure::kPeerLost)),
            Failure::kPeerLost);
  EXPECT_TRUE(MarkFailure(absl::OkStatus(), Failure::kDiskFull).ok());
}

}  // namespace
}  // namespace paft
