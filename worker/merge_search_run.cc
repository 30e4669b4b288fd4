#include "worker/merge_search_run.h"

#include <google/protobuf/util/json_util.h>

#include <chrono>
#include <iostream>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/job_layout.h"
#include "common/merge_request.h"
#include "common/merge_search.h"
#include "common/process_util.h"
#include "common/status.h"
#include "paft/v1/merger.pb.h"
#include "trainer/cpu_runtime.h"
#include "trainer/trainer.h"

namespace paft::worker {
namespace {

using paft::v1::BranchSpec;
using paft::v1::MergeSearchResult;
using paft::v1::MergeSearchRow;
using paft::v1::MergeSpec;

// What every row is evaluated on.
struct Validation {
  std::string base;
  std::string sft_data;   // prepared sft.dataset.eval_path
  std::string pref_data;  // prepared alignment.dataset.eval_path
  double beta = 0.1;      // the alignment objective's: DPO's implicit reward against the base
  int64_t max_new_tokens = 0;  // 0: no generation (answer_nll only)
};

double ObjectiveBeta(const BranchSpec& b) {
  if (b.has_dpo()) return b.dpo().beta();
  if (b.has_orpo()) return b.orpo().beta();
  if (b.has_simpo()) return b.simpo().beta();
  return 0.1;
}

bool IsAdapterFolder(const std::string& dir) {
  return IsRegularFile(JoinPath(dir, "adapter_config.json"));
}

absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions print;
  print.preserve_proto_field_names = true;
  print.add_whitespace = true;
  print.always_print_primitive_fields = true;  // a table a person reads: zeros too
  std::string out;
  auto s = google::protobuf::util::MessageToJsonString(message, &out, print);
  if (!s.ok()) return absl::InternalError(s.message().as_string());
  return out;
}

// A model folder with, optionally, a PEFT adapter on it: its numbers on both validation sets.
// The rewards are against the base (the model itself with its adapter off when it is the base).
absl::StatusOr<std::map<std::string, double>> Measure(const std::string& model,
                                                      const std::string& adapter,
                                                      const Validation& v) {
  const std::string reference = model == v.base ? "" : v.base;
  PAFT_ASSIGN_OR_RETURN(nlohmann::json sft, trainer::Evaluate(model, adapter, v.sft_data, v.beta,
                                                              v.max_new_tokens, reference));
  PAFT_ASSIGN_OR_RETURN(nlohmann::json pref, trainer::Evaluate(model, adapter, v.pref_data, v.beta,
                                                               0, reference));
  std::map<std::string, double> metrics = {
      {kSftAnswerNll, sft["loss"].get<double>()},
      {kAlignmentRewardAccuracy, pref["reward_accuracy"].get<double>()},
      {kAlignmentRewardMargin, pref["reward_margin"].get<double>()}};
  if (v.max_new_tokens > 0) metrics[kSftExactMatch] = sft["exact_match"].get<double>();
  return metrics;
}

// A branch's final checkpoint: a PEFT adapter on the base, or a full model.
absl::StatusOr<std::map<std::string, double>> MeasureCheckpoint(const std::string& checkpoint,
                                                                const Validation& v) {
  if (IsAdapterFolder(checkpoint)) return Measure(v.base, checkpoint, v);
  return Measure(checkpoint, "", v);
}

// Merges `candidate` as the merger service would (the same request, the same code) into
// `dir`/model (delta space) or `dir`/adapter, and measures the result; the folder goes after.
absl::StatusOr<std::map<std::string, double>> MeasureCandidate(
    const paft::v1::Task& task, const MergeSpec& candidate, int index, const std::string& dir,
    const Validation& v, const MergeSearchRunOptions& options) {
  const auto& search = task.merge_search();
  paft::v1::MergeRequest request = BranchMergeRequest(
      task.base_model(), search.sft_checkpoint(), search.alignment_checkpoint(), candidate);
  request.set_merge_id(absl::StrCat(task.job_id(), "-search-", index));
  const bool as_model = candidate.merge_space() == "delta";
  const std::string out = JoinPath(dir, as_model ? "model" : "adapter");
  if (as_model) {
    request.set_output_dir(out);
  } else {
    request.set_adapter_output_dir(out);
  }
  request.set_threads(options.threads);
  PAFT_RETURN_IF_ERROR(RemoveAll(dir));  // what a killed attempt left
  PAFT_RETURN_IF_ERROR(MakeDirs(dir));
  const std::string request_file = JoinPath(dir, "request.json");
  PAFT_ASSIGN_OR_RETURN(std::string text, ToJson(request));
  PAFT_RETURN_IF_ERROR(WriteFileAtomic(request_file, text));
  PAFT_ASSIGN_OR_RETURN(auto result, RunProcess({options.merger_binary, "merge",
                                                 "--request=" + request_file}));
  if (result.first != 0) {
    std::string message = result.second;
    while (!message.empty() && message.back() == '\n') message.pop_back();
    const std::string what = absl::StrCat("merge search: merging candidate ", index, " (",
                                          CandidateLabel(candidate), ") failed: ", message);
    return result.first == 2 ? absl::InvalidArgumentError(what) : absl::InternalError(what);
  }
  auto metrics = as_model ? Measure(out, "", v) : Measure(v.base, out, v);
  PAFT_RETURN_IF_ERROR(RemoveAll(dir));
  return metrics;
}

std::string RowFile(const std::string& attempt_dir, int index) {
  return JoinPath(attempt_dir, absl::StrCat("row-", index, ".json"));
}

int RowsWritten(const std::string& attempt_dir, int rows) {
  int n = 0;
  for (int i = 0; i < rows; ++i) n += IsRegularFile(RowFile(attempt_dir, i)) ? 1 : 0;
  return n;
}

absl::StatusOr<MergeSearchRow> ReadRow(const std::string& path) {
  PAFT_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  MergeSearchRow row;
  if (auto s = google::protobuf::util::JsonStringToMessage(text, &row); !s.ok()) {
    return absl::DataLossError(absl::StrCat(path, ": ", s.message().as_string()));
  }
  return row;
}

}  // namespace

absl::Status RunMergeSearch(const paft::v1::Task& task, const MergeSearchRunOptions& options) {
  const auto& search_task = task.merge_search();
  const auto& search = search_task.merge().search();
  if (!search_task.merge().has_search()) {
    return absl::InvalidArgumentError("merge search task: merge.search is not set");
  }
  trainer::ConfigureCpuRuntime(options.threads);
  const std::string work = task.checkpoint_dir();
  const std::string attempt_dir = JobLayout::MergeSearchAttemptDirOf(work, task.attempt());
  PAFT_RETURN_IF_ERROR(MakeDirs(attempt_dir));

  Validation v;
  v.base = task.base_model();
  v.beta = ObjectiveBeta(search_task.alignment());
  v.max_new_tokens = search.sft_metric() == "exact_match" ? search.max_new_tokens() : 0;
  const std::string data_dir = JobLayout::MergeSearchDataDirOf(work);
  PAFT_ASSIGN_OR_RETURN(v.sft_data, trainer::PrepareDataset(search_task.sft().dataset().eval_path(),
                                                            v.base, search_task.sft(), data_dir,
                                                            options.prepare_binary));
  PAFT_ASSIGN_OR_RETURN(
      v.pref_data, trainer::PrepareDataset(search_task.alignment().dataset().eval_path(), v.base,
                                           search_task.alignment(), data_dir,
                                           options.prepare_binary));

  // Rows: 0 the base, 1 the sft branch, 2 the alignment branch, 3... the candidates.
  const std::vector<MergeSpec> candidates = MergeCandidates(search_task.merge());
  const int kReferences = 3;
  const int rows = kReferences + static_cast<int>(candidates.size());
  const int world = std::max(1, task.world_size());
  auto report = [&](int done) {
    if (options.emit) options.emit({{"type", "progress"}, {"step", done}, {"total_steps", rows}});
  };
  for (int i = task.rank(); i < rows; i += world) {
    if (options.stop_requested && options.stop_requested()) {
      return absl::UnavailableError("merge search stopped");
    }
    MergeSearchRow row;
    absl::StatusOr<std::map<std::string, double>> metrics;
    if (i == 0) {
      row.set_label("base");
      metrics = Measure(v.base, "", v);
    } else if (i == 1) {
      row.set_label("sft");
      metrics = MeasureCheckpoint(search_task.sft_checkpoint(), v);
    } else if (i == 2) {
      row.set_label("alignment");
      metrics = MeasureCheckpoint(search_task.alignment_checkpoint(), v);
    } else {
      const MergeSpec& candidate = candidates[i - kReferences];
      row.set_label(CandidateLabel(candidate));
      *row.mutable_merge() = candidate;
      metrics = MeasureCandidate(task, candidate, i - kReferences,
                                 JoinPath(attempt_dir, absl::StrCat("candidate-", i - kReferences)),
                                 v, options);
    }
    if (!metrics.ok()) return metrics.status();
    for (const auto& [key, value] : *metrics) (*row.mutable_metrics())[key] = value;
    PAFT_ASSIGN_OR_RETURN(std::string text, ToJson(row));
    PAFT_RETURN_IF_ERROR(WriteFileAtomic(RowFile(attempt_dir, i), text));
    std::cerr << "merge search: row " << i << " (" << row.label() << "): " << text << std::endl;
    report(RowsWritten(attempt_dir, rows));
  }
  if (task.rank() != 0) return absl::OkStatus();

  // Rank 0: the other ranks' rows (a failed rank fails the gang, and the coordinator stops this
  // one), then the table.
  auto last_report = std::chrono::steady_clock::now();
  while (RowsWritten(attempt_dir, rows) < rows) {
    if (options.stop_requested && options.stop_requested()) {
      return absl::UnavailableError("merge search stopped");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    if (std::chrono::steady_clock::now() - last_report > std::chrono::seconds(10)) {
      report(RowsWritten(attempt_dir, rows));
      last_report = std::chrono::steady_clock::now();
    }
  }
  MergeSearchResult result;
  for (int i = 0; i < rows; ++i) {
    PAFT_ASSIGN_OR_RETURN(MergeSearchRow row, ReadRow(RowFile(attempt_dir, i)));
    *(i < kReferences ? result.add_references() : result.add_candidates()) = std::move(row);
  }
  PAFT_RETURN_IF_ERROR(ScoreMergeSearch(search, &result));
  const std::string table = JobLayout::MergeSearchTableOf(work);
  result.set_table_path(table);
  PAFT_ASSIGN_OR_RETURN(std::string text, ToJson(result));
  PAFT_RETURN_IF_ERROR(WriteFileAtomic(table, text));
  const MergeSearchRow& chosen = result.candidates(result.chosen());
  std::cerr << "merge search: chose candidate " << result.chosen() << " (" << chosen.label()
            << ", score " << chosen.score() << ") of " << candidates.size() << "; table " << table
            << std::endl;
  report(rows);
  return absl::OkStatus();
}

}  // namespace paft::worker
