// The names a job's branches go by, and every path of a job under its output_dir, in one place:
//
//   <output_dir>/<branch>/checkpoints/checkpoint-<step>   a branch's checkpoints
//   <output_dir>/<branch>/logs/attempt-<n>                the rank logs of a gang attempt
//   <output_dir>/<branch>/data                            its prepared datasets (a cache)
//   <output_dir>/merged, <output_dir>/merged-adapter      the merge's model and adapter
//
// <branch> is BranchName: "sft" or "alignment".
#ifndef PAFT_COMMON_JOB_LAYOUT_H_
#define PAFT_COMMON_JOB_LAYOUT_H_

#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "paft/v1/job.pb.h"

namespace paft {

// "sft" or "alignment": in paths, task ids, events and the CLI.
const char* BranchName(paft::v1::BranchKind kind);
// The kind a name stands for ("sft"; "alignment" or its short form "align"), else nullopt.
std::optional<paft::v1::BranchKind> BranchKindNamed(absl::string_view name);

class JobLayout {
 public:
  explicit JobLayout(std::string output_dir) : output_dir_(std::move(output_dir)) {}

  std::string BranchDir(paft::v1::BranchKind kind) const;
  std::string CheckpointDir(paft::v1::BranchKind kind) const;
  std::string LogDir(paft::v1::BranchKind kind, int attempt) const;
  std::string MergedModelDir() const;
  std::string MergedAdapterDir() const;
  // A branch's dataset cache, from its checkpoint folder (what a task carries).
  static std::string DataDirOfCheckpointDir(const std::string& checkpoint_dir);

 private:
  std::string output_dir_;
};

}  // namespace paft

#endif  // PAFT_COMMON_JOB_LAYOUT_H_
