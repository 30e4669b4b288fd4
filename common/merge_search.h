// merge.search (docs/job-spec.md#merge-search): its defaults, its checks, the grid of candidate
// merges it spans, and how a candidate's validation metrics become its score and the choice.
// Shared by admission (the grid's size), the worker that evaluates the candidates and the
// coordinator that reads the chosen one back.
#ifndef PAFT_COMMON_MERGE_SEARCH_H_
#define PAFT_COMMON_MERGE_SEARCH_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "paft/v1/job.pb.h"

namespace paft {

// Most candidates one search may span: each is a merge and two evaluations.
inline constexpr int kMaxMergeCandidates = 64;

// Metric names of a row (MergeSearchRow.metrics).
inline constexpr const char* kSftAnswerNll = "sft_answer_nll";
inline constexpr const char* kSftExactMatch = "sft_exact_match";
inline constexpr const char* kAlignmentRewardAccuracy = "alignment_reward_accuracy";
inline constexpr const char* kAlignmentRewardMargin = "alignment_reward_margin";

// Fills merge.search's unset fields from the rest of the resolved spec (the merge's method,
// density and weights; the sft branch's pool). Does nothing without a search.
void ApplyMergeSearchDefaults(paft::v1::JobSpec* spec);

// "merge.search.FIELD: what" for each bad field of a defaulted spec's search (none without one).
std::vector<std::string> MergeSearchErrors(const paft::v1::JobSpec& spec);

// The candidates in grid order: for each method, each density (once, unset, for methods that
// keep the whole delta), each weights pair. Each is the job's merge with method, weights and
// densities replaced and no search.
std::vector<paft::v1::MergeSpec> MergeCandidates(const paft::v1::MergeSpec& merge);

// "ties density 0.2 weights 1/1".
std::string CandidateLabel(const paft::v1::MergeSpec& candidate);

// The metric a rule reads for each branch, its name in a row's metrics.
std::string SftMetricKey(const paft::v1::MergeSearch& search);
std::string AlignmentMetricKey(const paft::v1::MergeSearch& search);

// Scores every candidate of `result` (its references base, sft, alignment hold their metrics)
// and sets `chosen`. FailedPrecondition when a branch's adapter does not improve its metric over
// the base: there is then nothing to keep and no score.
absl::Status ScoreMergeSearch(const paft::v1::MergeSearch& search,
                              paft::v1::MergeSearchResult* result);

// Reads a search's table (MergeSearchResult as JSON) and checks it against the job's merge:
// the candidates are the grid's, in its order, and `chosen` is one of them. Errors name the file.
absl::StatusOr<paft::v1::MergeSearchResult> ReadMergeSearchTable(const std::string& path,
                                                                 const paft::v1::MergeSpec& merge);

}  // namespace paft

#endif  // PAFT_COMMON_MERGE_SEARCH_H_
