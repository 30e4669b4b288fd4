// Helpers shared by the parts of JobManager (coordinator/job_manager*.cc, scheduler.cc, ...):
// reading a job's branches and merge search (its gangs) by kind. Internal to the coordinator.
#ifndef PAFT_COORDINATOR_JOB_MANAGER_INTERNAL_H_
#define PAFT_COORDINATOR_JOB_MANAGER_INTERNAL_H_

#include <string>

#include "paft/v1/job.pb.h"

namespace paft::coordinator::internal {

// The two training branches.
inline constexpr paft::v1::BranchKind kBranches[] = {paft::v1::BRANCH_KIND_SFT,
                                                     paft::v1::BRANCH_KIND_ALIGNMENT};
// Every gang a job may run: its branches and its merge search (merge.search), which is
// scheduled, tracked, restarted and adopted as they are. A job without a search never sets its
// status (state UNSPECIFIED).
inline constexpr paft::v1::BranchKind kGangs[] = {paft::v1::BRANCH_KIND_SFT,
                                                  paft::v1::BRANCH_KIND_ALIGNMENT,
                                                  paft::v1::BRANCH_KIND_MERGE_SEARCH};

// Attempts that may end with PortInUse and restart without using the job's restart budget.
inline constexpr int kFreePortConflicts = 8;

inline paft::v1::BranchStatus* MutableBranch(paft::v1::Job& job, paft::v1::BranchKind kind) {
  switch (kind) {
    case paft::v1::BRANCH_KIND_SFT: return job.mutable_sft();
    case paft::v1::BRANCH_KIND_MERGE_SEARCH: return job.mutable_merge_search();
    default: return job.mutable_alignment();
  }
}
inline const paft::v1::BranchStatus& Branch(const paft::v1::Job& job, paft::v1::BranchKind kind) {
  switch (kind) {
    case paft::v1::BRANCH_KIND_SFT: return job.sft();
    case paft::v1::BRANCH_KIND_MERGE_SEARCH: return job.merge_search();
    default: return job.alignment();
  }
}
// What admission, the scheduler and the task tracking read of a gang (a copy): a branch's spec,
// or for the merge search its pool and world_size.
inline paft::v1::BranchSpec GangSpec(const paft::v1::JobSpec& spec, paft::v1::BranchKind kind) {
  switch (kind) {
    case paft::v1::BRANCH_KIND_SFT: return spec.sft();
    case paft::v1::BRANCH_KIND_MERGE_SEARCH: {
      paft::v1::BranchSpec gang;
      gang.set_pool(spec.merge().search().pool());
      gang.set_world_size(spec.merge().search().world_size());
      return gang;
    }
    default: return spec.alignment();
  }
}
inline paft::v1::BranchSpec Spec(const paft::v1::Job& job, paft::v1::BranchKind kind) {
  return GangSpec(job.spec(), kind);
}
inline bool BranchTerminal(paft::v1::BranchState s) {
  return s == paft::v1::BRANCH_STATE_SUCCEEDED || s == paft::v1::BRANCH_STATE_FAILED ||
         s == paft::v1::BRANCH_STATE_CANCELLED;
}
inline bool BranchWaiting(paft::v1::BranchState s) {
  return s == paft::v1::BRANCH_STATE_PENDING || s == paft::v1::BRANCH_STATE_RESTARTING;
}
// A gang that exists in this job: the branches always; the merge search once it is pending.
inline bool GangActive(const paft::v1::Job& job, paft::v1::BranchKind kind) {
  return Branch(job, kind).state() != paft::v1::BRANCH_STATE_UNSPECIFIED;
}
// "Sft" / "Alignment" / "MergeSearch": the prefix of a job's failure reason (SftBranchFailed).
inline std::string BranchTitle(paft::v1::BranchKind kind) {
  switch (kind) {
    case paft::v1::BRANCH_KIND_SFT: return "Sft";
    case paft::v1::BRANCH_KIND_MERGE_SEARCH: return "MergeSearch";
    default: return "Alignment";
  }
}

}  // namespace paft::coordinator::internal

// The names every part of JobManager uses, in its namespace (this header is included only by
// those parts).
namespace paft::coordinator {
using internal::Branch;
using internal::BranchTerminal;
using internal::BranchTitle;
using internal::BranchWaiting;
using internal::GangActive;
using internal::GangSpec;
using internal::kBranches;
using internal::kGangs;
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
