// Helpers shared by the parts of JobManager (coordinator/job_manager*.cc, scheduler.cc, ...):
// reading a job's two branches by kind. Internal to the coordinator.
#ifndef PAFT_COORDINATOR_JOB_MANAGER_INTERNAL_H_
#define PAFT_COORDINATOR_JOB_MANAGER_INTERNAL_H_

#include <string>

#include "paft/v1/job.pb.h"

namespace paft::coordinator::internal {

inline constexpr paft::v1::BranchKind kBranches[] = {paft::v1::BRANCH_KIND_SFT,
                                                     paft::v1::BRANCH_KIND_ALIGNMENT};

// Attempts that may end with PortInUse and restart without using the job's restart budget.
inline constexpr int kFreePortConflicts = 8;

inline paft::v1::BranchStatus* MutableBranch(paft::v1::Job& job, paft::v1::BranchKind kind) {
  return kind == paft::v1::BRANCH_KIND_SFT ? job.mutable_sft() : job.mutable_alignment();
}
inline const paft::v1::BranchStatus& Branch(const paft::v1::Job& job, paft::v1::BranchKind kind) {
  return kind == paft::v1::BRANCH_KIND_SFT ? job.sft() : job.alignment();
}
inline const paft::v1::BranchSpec& Spec(const paft::v1::Job& job, paft::v1::BranchKind kind) {
  return kind == paft::v1::BRANCH_KIND_SFT ? job.spec().sft() : job.spec().alignment();
}
inline bool BranchTerminal(paft::v1::BranchState s) {
  return s == paft::v1::BRANCH_STATE_SUCCEEDED || s == paft::v1::BRANCH_STATE_FAILED ||
         s == paft::v1::BRANCH_STATE_CANCELLED;
}
inline bool BranchWaiting(paft::v1::BranchState s) {
  return s == paft::v1::BRANCH_STATE_PENDING || s == paft::v1::BRANCH_STATE_RESTARTING;
}
// "Sft" / "Alignment": the prefix of a job's failure reason (SftBranchFailed).
inline std::string BranchTitle(paft::v1::BranchKind kind) {
  return kind == paft::v1::BRANCH_KIND_SFT ? "Sft" : "Alignment";
}

}  // namespace paft::coordinator::internal

// The names every part of JobManager uses, in its namespace (this header is included only by
// those parts).
namespace paft::coordinator {
using internal::Branch;
using internal::BranchTerminal;
using internal::BranchTitle;
using internal::BranchWaiting;
using internal::kBranches;
using internal::MutableBranch;
using internal::Spec;
using paft::v1::BranchKind;
using paft::v1::BranchSpec;
using paft::v1::BranchState;
using paft::v1::BranchStatus;
using paft::v1::Job;
using paft::v1::JobEvent;
using paft::v1::JobState;
}  // namespace paft::coordinator

#endif  // PAFT_COORDINATOR_JOB_MANAGER_INTERNAL_H_
