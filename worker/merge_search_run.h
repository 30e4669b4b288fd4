// One rank of a job's merge search (merge.search; docs/job-spec.md#merge-search): a task of kind
// BRANCH_KIND_MERGE_SEARCH that the coordinator schedules once both branches have succeeded.
//
// The rows to fill are the base, each branch alone, then every candidate in grid order; rank r of
// n takes rows r, r + n, ... For each it merges the candidate (paft-merger merge --request, the
// merge the service would run: a full model in delta space, an adapter otherwise) into its work
// folder, evaluates it on both validation sets (paft-worker eval's numbers) and writes the row
// atomically to <output_dir>/merge-search/attempt-<n>/row-<i>.json. Rank 0 then waits for every
// row, scores them by the rule and writes the table (MergeSearchResult as JSON) atomically to
// <output_dir>/merge-search/table.json, which the coordinator reads when the gang has exited 0.
#ifndef PAFT_WORKER_MERGE_SEARCH_RUN_H_
#define PAFT_WORKER_MERGE_SEARCH_RUN_H_

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "paft/v1/worker.pb.h"

namespace paft::worker {

struct MergeSearchRunOptions {
  std::string prepare_binary;  // paft-prepare
  std::string merger_binary;   // paft-merger
  int threads = 0;
  std::function<void(const nlohmann::json&)> emit;  // progress events
  std::function<bool()> stop_requested;
};

absl::Status RunMergeSearch(const paft::v1::Task& task, const MergeSearchRunOptions& options);

}  // namespace paft::worker

#endif  // PAFT_WORKER_MERGE_SEARCH_RUN_H_
