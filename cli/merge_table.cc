#include "cli/merge_table.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/merge_search.h"

namespace paft::cli {
namespace {

std::string Metric(const paft::v1::MergeSearchRow& row, const char* key) {
  const auto it = row.metrics().find(key);
  return it == row.metrics().end() ? "-" : absl::StrFormat("%.4f", it->second);
}

}  // namespace

std::string FormatMergeSearch(const paft::v1::MergeSearchResult& result) {
  std::string out = absl::StrCat(
      "rule ", result.rule(),
      result.rule() == "weighted" ? absl::StrCat(" (sft_share ", result.sft_share(), ")") : "",
      "; sft metric ", result.sft_metric(), ", alignment metric ", result.alignment_metric(),
      "\nscores: the share of each branch's own improvement over the base that a merge keeps\n\n");
  const std::vector<const char*> keys = {kSftAnswerNll, kSftExactMatch, kAlignmentRewardAccuracy,
                                         kAlignmentRewardMargin};
  absl::StrAppendFormat(&out, "  %-40s %10s %10s %10s %10s %9s %9s %9s\n", "merge", "sft nll",
                        "sft EM", "align acc", "margin", "sft", "align", "score");
  auto line = [&](const paft::v1::MergeSearchRow& row, bool scored, bool chosen) {
    absl::StrAppendFormat(&out, "%s %-40s %10s %10s %10s %10s", chosen ? "*" : " ", row.label(),
                          Metric(row, keys[0]), Metric(row, keys[1]), Metric(row, keys[2]),
                          Metric(row, keys[3]));
    if (scored) {
      absl::StrAppendFormat(&out, " %9.3f %9.3f %9.3f", row.sft_score(), row.alignment_score(),
                            row.score());
    }
    out += "\n";
  };
  for (const auto& row : result.references()) line(row, false, false);
  for (int i = 0; i < result.candidates_size(); ++i) {
    line(result.candidates(i), true, i == result.chosen());
  }
  if (result.chosen() >= 0 && result.chosen() < result.candidates_size()) {
    absl::StrAppend(&out, "\nchosen (*): ", result.candidates(result.chosen()).label(), "\n");
  }
  if (!result.table_path().empty()) absl::StrAppend(&out, "table: ", result.table_path(), "\n");
  return out;
}

}  // namespace paft::cli
