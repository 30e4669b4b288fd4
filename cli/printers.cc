#include "cli/printers.h"

#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/job_layout.h"
#include "common/merge_search.h"
#include "common/time_util.h"

namespace paft::cli {

using paft::v1::Job;

namespace {

std::string Short(const std::string& enum_name, const std::string& prefix) {
  return enum_name.rfind(prefix, 0) == 0 ? enum_name.substr(prefix.size()) : enum_name;
}

std::string ProgressBar(int64_t step, int64_t total, int width = 24) {
  const int filled = total > 0 ? static_cast<int>(width * std::min<int64_t>(step, total) / total) : 0;
  return "[" + std::string(filled, '#') + std::string(width - filled, '.') + "]";
}

void PrintBranch(const char* name, const paft::v1::BranchStatus& b) {
  std::cout << absl::StrFormat("  %-10s %-11s attempt %d  %s %lld/%lld  loss %.4f", name,
                               BranchStateName(b.state()), b.attempt(),
                               ProgressBar(b.step(), b.total_steps()),
                               static_cast<long long>(b.step()),
                               static_cast<long long>(b.total_steps()), b.loss());
  if (!b.reason().empty()) std::cout << "  (" << b.reason() << ")";
  std::cout << "\n";
  if (!b.checkpoint_path().empty()) {
    std::cout << "             checkpoint step " << b.checkpoint_step() << ": "
              << b.checkpoint_path() << "\n";
  }
}

std::string FormatEta(double seconds) {
  if (seconds <= 0) return "--";
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return absl::StrFormat("%dh%02dm", s / 3600, (s / 60) % 60);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

std::string ProgressLine(const paft::v1::BranchStatus& b) {
  return absl::StrFormat("%-9s %s %lld/%lld  loss %.4f  %.0f tok/s  ETA %s",
                         BranchName(b.kind()),
                         ProgressBar(b.step(), b.total_steps()), static_cast<long long>(b.step()),
                         static_cast<long long>(b.total_steps()), b.loss(),
                         b.tokens_per_second(), FormatEta(b.eta_seconds()));
}

std::string Metric(const paft::v1::MergeSearchRow& row, const char* key) {
  const auto it = row.metrics().find(key);
  return it == row.metrics().end() ? "-" : absl::StrFormat("%.4f", it->second);
}

}  // namespace

std::string JobStateName(paft::v1::JobState s) {
  return Short(paft::v1::JobState_Name(s), "JOB_STATE_");
}

std::string BranchStateName(paft::v1::BranchState s) {
  return Short(paft::v1::BranchState_Name(s), "BRANCH_STATE_");
}

std::string EventLine(const paft::v1::JobEvent& event) {
  std::string what;
  if (event.type() == "JobState") {
    what = "job " + JobStateName(event.job_state());
  } else if (event.type() == "BranchState") {
    what = absl::StrCat(BranchName(event.branch()), " ",
                        BranchStateName(event.branch_state()));
  } else {
    what = event.type();
  }
  return absl::StrFormat(
      "%s  %-24s %s%s",
      absl::FormatTime("%H:%M:%S", FromProtoTime(event.time()), absl::LocalTimeZone()),
      what, event.reason(), event.message().empty() ? "" : ": " + event.message());
}

std::string ToJson(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

void PrintJob(const Job& job, bool json) {
  if (json) {
    std::cout << ToJson(job) << "\n";
    return;
  }
  std::cout << "job " << job.job_id() << (job.spec().name().empty() ? "" : " (" + job.spec().name() + ")")
            << ": " << JobStateName(job.state());
  if (!job.reason().empty()) std::cout << " - " << job.reason() << ": " << job.message();
  std::cout << "\n";
  if (job.queue_position() > 0) std::cout << "  queue position " << job.queue_position() << "\n";
  PrintBranch(BranchName(paft::v1::BRANCH_KIND_SFT), job.sft());
  PrintBranch(BranchName(paft::v1::BRANCH_KIND_ALIGNMENT), job.alignment());
  if (job.spec().merge().has_search() && job.merge_search().state() != 0) {
    PrintBranch("search", job.merge_search());
    if (job.merge_search_result().candidates_size() > 0) {
      const auto& result = job.merge_search_result();
      std::cout << "             chose " << result.candidates(result.chosen()).label() << " of "
                << result.candidates_size() << " (paftctl merges " << job.job_id() << ")\n";
    }
  }
  std::cout << "  restarts used " << job.restarts_used() << " of " << job.spec().restart_budget()
            << "\n";
  if (!job.merged_adapter_path().empty()) {
    std::cout << "  merged adapter: " << job.merged_adapter_path() << "\n";
  }
  if (!job.merged_model_path().empty()) {
    std::cout << "  merged model: " << job.merged_model_path() << "\n";
  }
}

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

WatchPrinter::WatchPrinter(absl::Duration every)
    : tty_(::isatty(STDOUT_FILENO) == 1), every_(every) {}

void WatchPrinter::Event(const std::string& line) {
  ClearBars();
  std::cout << line << "\n";
  DrawBars();
}

void WatchPrinter::Progress(const paft::v1::JobEvent& event) {
  const int kind = event.branch();
  if (tty_) {
    bars_[kind] = ProgressLine(event.progress());
    ClearBars();
    DrawBars();
    return;
  }
  const absl::Time now = absl::Now();
  auto& last = last_printed_[kind];
  const bool done = event.progress().step() >= event.progress().total_steps();
  if (now - last < every_ && !done) return;
  last = now;
  std::cout << absl::FormatTime("%H:%M:%S", FromProtoTime(event.time()), absl::LocalTimeZone())
            << "  " << ProgressLine(event.progress()) << "\n"
            << std::flush;
}

void WatchPrinter::EndBar(int kind) {
  ClearBars();
  bars_.erase(kind);
  DrawBars();
}

void WatchPrinter::ClearBars() {
  if (tty_ && drawn_ > 0) std::cout << "\033[" << drawn_ << "F\033[J";
  drawn_ = 0;
}

void WatchPrinter::DrawBars() {
  if (tty_) {
    for (const auto& [kind, line] : bars_) std::cout << "  " << line << "\n";
    drawn_ = static_cast<int>(bars_.size());
  }
  std::cout << std::flush;
}

}  // namespace paft::cli
