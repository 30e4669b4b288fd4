// The names a job's branches go by, and every path of a job under its output_dir, in one place:
//
//   <output_dir>/<branch>/checkpoints/checkpoint-<step>   a branch's checkpoints
//   <output_dir>/<branch>/logs/attempt-<n>                the rank logs of a gang attempt
//   <output_dir>/<branch>/data                            its prepared datasets (a cache)
//   <output_dir>/merge-search/table.json                  the merge search's table
//   <output_dir>/merge-search/attempt-<n>                 its work (rows, candidates)
//   <output_dir>/merge-search/data                        its prepared validation sets
//   <output_dir>/merge-search/logs/attempt-<n>            its rank logs
//   <output_dir>/merged, <output_dir>/merged-adapter      the merge's model and adapter
//
// <branch> is BranchName: "sft", "alignment" or "merge-search" (the search's gang).
#ifndef PAFT_COMMON_JOB_LAYOUT_H_
#define PAFT_COMMON_JOB_LAYOUT_H_

#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "paft/v1/job.pb.h"

namespace paft {

// "sft", "alignment" or "merge-search": in paths, task ids, events and the CLI.
const char* BranchName(paft::v1::BranchKind kind);
// The kind a name stands for ("sft"; "alignment" or its short form "align"; "merge-search"),
// else nullopt.
std::optional<paft::v1::BranchKind> BranchKindNamed(absl::string_view name);

class JobLayout {
 public:
  explicit JobLayout(std::string output_dir) : output_dir_(std::move(output_dir)) {}

  std::string BranchDir(paft::v1::BranchKind kind) const;
  std::string CheckpointDir(paft::v1::BranchKind kind) const;
  std::string LogDir(paft::v1::BranchKind kind, int attempt) const;
  // The merge search's folder (what its tasks carry as checkpoint_dir) and its table.
  std::string MergeSearchDir() const;
  std::string MergeSearchTable() const;
  // Paths inside a merge search's folder.
  static std::string MergeSearchTableOf(const std::string& search_dir);
  static std::string MergeSearchAttemptDirOf(const std::string& search_dir, int attempt);
  static std::string MergeSearchDataDirOf(const std::string& search_dir);
  std::string MergedModelDir() const;
  std::string MergedAdapterDir() const;
  // A branch's dataset cache, from its checkpoint folder (what a task carries).
  static std::string DataDirOfCheckpointDir(const std::string& checkpoint_dir);

 private:
  std::string output_dir_;
};

}  // namespace paft

#endif  // PAFT_COMMON_JOB_LAYOUT_H_
