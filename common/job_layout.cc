#include "common/job_layout.h"

#include "absl/strings/str_cat.h"
#include "common/file_util.h"

namespace paft {

const char* BranchName(paft::v1::BranchKind kind) {
  switch (kind) {
    case paft::v1::BRANCH_KIND_SFT: return "sft";
    case paft::v1::BRANCH_KIND_MERGE_SEARCH: return "merge-search";
    default: return "alignment";
  }
}

std::optional<paft::v1::BranchKind> BranchKindNamed(absl::string_view name) {
  if (name == "sft") return paft::v1::BRANCH_KIND_SFT;
  if (name == "alignment" || name == "align") return paft::v1::BRANCH_KIND_ALIGNMENT;
  if (name == "merge-search") return paft::v1::BRANCH_KIND_MERGE_SEARCH;
  return std::nullopt;
}

std::string JobLayout::BranchDir(paft::v1::BranchKind kind) const {
  return JoinPath(output_dir_, BranchName(kind));
}

std::string JobLayout::CheckpointDir(paft::v1::BranchKind kind) const {
  return JoinPath(BranchDir(kind), "checkpoints");
}

std::string JobLayout::LogDir(paft::v1::BranchKind kind, int attempt) const {
  return JoinPath(BranchDir(kind), absl::StrCat("logs/attempt-", attempt));
}

std::string JobLayout::MergeSearchDir() const {
  return BranchDir(paft::v1::BRANCH_KIND_MERGE_SEARCH);
}

std::string JobLayout::MergeSearchTable() const { return MergeSearchTableOf(MergeSearchDir()); }

std::string JobLayout::MergeSearchTableOf(const std::string& search_dir) {
  return JoinPath(search_dir, "table.json");
}

std::string JobLayout::MergeSearchAttemptDirOf(const std::string& search_dir, int attempt) {
  return JoinPath(search_dir, absl::StrCat("attempt-", attempt));
}

std::string JobLayout::MergeSearchDataDirOf(const std::string& search_dir) {
  return JoinPath(search_dir, "data");
}

std::string JobLayout::MergedModelDir() const { return JoinPath(output_dir_, "merged"); }

std::string JobLayout::MergedAdapterDir() const { return JoinPath(output_dir_, "merged-adapter"); }

std::string JobLayout::DataDirOfCheckpointDir(const std::string& checkpoint_dir) {
  return JoinPath(checkpoint_dir, "../data");
}

}  // namespace paft
