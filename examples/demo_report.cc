// The demo's results: reads the evaluations the demo wrote to DIR and prints, per model, the mean
// and sample standard deviation over seeds of each metric, then the differences the demo is
// about and whether each exceeds the spread (|mean_a - mean_b| > sd_a + sd_b). Writes
// DIR/results.md and DIR/results.json as well.
//
//   paft-demo-report --dir=DIR [--rows=key:title,...] [--compare=a-b:metric,...] [--select=PREFIX]
//
// Files: DIR/<seed folder>/<row>.sft.json and <row>.pref.json (`paft-worker eval` reports) and,
// for rows that have one, <row>.delta.json (`paft-merger inspect --summary --json`). Seed folders
// are DIR's subfolders named seed-*; a row found directly in DIR (the base: no seed) counts once.
// A missing or malformed file is an error naming it.
#include <cmath>
#include <filesystem>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/file_util.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, dir, "", "Folder with the demo's evaluation files");
ABSL_FLAG(std::string, rows,
          "base:base (pre-trained),sft:SFT only,dpo:DPO only,sequential:sequential: SFT then "
          "DPO,paft:PAFT: SFT ∥ DPO merged",
          "Rows, as key:title");
ABSL_FLAG(std::string, select, "",
          "Also name the row (among those whose key starts with this) with the best mean of "
          "exact match and reward accuracy");
ABSL_FLAG(std::string, compare,
          "sequential-sft:exact_match,paft-sequential:exact_match,paft-sft:exact_match,"
          "paft-dpo:reward_accuracy,paft-sequential:reward_accuracy",
          "Differences to report, as a-b:metric");

namespace {

using json = nlohmann::json;

struct Metric {
  const char* key;
  const char* title;
  const char* format;
};
constexpr Metric kMetrics[] = {
    {"exact_match", "SFT exact match", "%.2f"},
    {"sft_nll", "SFT answer NLL", "%.3f"},
    {"reward_accuracy", "reward accuracy", "%.2f"},
    {"prefers_chosen", "prefers chosen", "%.2f"},
    {"factor_density", "adapter factor density", "%.3f"},
    {"delta_density", "delta density", "%.3f"},
};

struct Stats {
  std::vector<double> values;
  double mean() const {
    double s = 0;
    for (double v : values) s += v;
    return values.empty() ? 0 : s / values.size();
  }
  double sd() const {  // sample standard deviation (n - 1)
    if (values.size() < 2) return 0;
    double m = mean(), s = 0;
    for (double v : values) s += (v - m) * (v - m);
    return std::sqrt(s / (values.size() - 1));
  }
};

absl::StatusOr<json> Load(const std::string& path) {
  auto text = paft::ReadFileToString(path);
  if (!text.ok()) return text.status();
  auto j = json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  }
  return j;
}

absl::StatusOr<double> Number(const json& j, const std::string& key, const std::string& path) {
  if (!j.contains(key) || !j[key].is_number()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no number '", key, "'"));
  }
  return j[key].get<double>();
}

// One evaluation of one row: its metrics (density ones only where a delta file exists).
absl::Status ReadRow(const std::string& prefix, std::map<std::string, Stats>* metrics,
                     int* sft_examples, int* pref_examples) {
  auto sft = Load(prefix + ".sft.json");
  if (!sft.ok()) return sft.status();
  auto pref = Load(prefix + ".pref.json");
  if (!pref.ok()) return pref.status();
  auto em = Number(*sft, "exact_match", prefix + ".sft.json");
  auto nll = Number(*sft, "loss", prefix + ".sft.json");
  auto accuracy = Number(*pref, "reward_accuracy", prefix + ".pref.json");
  auto prefers = Number(*pref, "policy_prefers_chosen", prefix + ".pref.json");
  for (const auto* s : {&em, &nll, &accuracy, &prefers}) {
    if (!s->ok()) return s->status();
  }
  (*metrics)["exact_match"].values.push_back(*em);
  (*metrics)["sft_nll"].values.push_back(*nll);
  (*metrics)["reward_accuracy"].values.push_back(*accuracy);
  (*metrics)["prefers_chosen"].values.push_back(*prefers);
  *sft_examples = sft->value("examples", 0);
  *pref_examples = pref->value("examples", 0);
  if (!paft::PathExists(prefix + ".delta.json")) return absl::OkStatus();
  auto delta = Load(prefix + ".delta.json");
  if (!delta.ok()) return delta.status();
  const json& input = (*delta)["total"]["inputs"][0];
  if (!input.is_object() || !input["density"].is_number()) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, ".delta.json: no total density"));
  }
  (*metrics)["delta_density"].values.push_back(input["density"].get<double>());
  if (input.contains("factors")) {
    (*metrics)["factor_density"].values.push_back(input["factors"]["density"].get<double>());
  }
  return absl::OkStatus();
}

std::string Cell(const Metric& m, const std::map<std::string, Stats>& metrics) {
  auto it = metrics.find(m.key);
  if (it == metrics.end() || it->second.values.empty()) return "-";
  const Stats& s = it->second;
  if (s.values.size() == 1) return absl::StrFormat(m.format, s.mean());
  return absl::StrCat(absl::StrFormat(m.format, s.mean()), " ± ", absl::StrFormat(m.format, s.sd()));
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string dir = absl::GetFlag(FLAGS_dir);
  if (dir.empty()) {
    std::cerr << "--dir is required\n";
    return 2;
  }
  std::vector<std::string> seeds;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_directory() && name.rfind("seed-", 0) == 0) seeds.push_back(entry.path().string());
  }
  std::sort(seeds.begin(), seeds.end());

  std::vector<std::pair<std::string, std::string>> rows;
  for (absl::string_view item : absl::StrSplit(absl::GetFlag(FLAGS_rows), ',')) {
    std::pair<std::string, std::string> row = absl::StrSplit(item, absl::MaxSplits(':', 1));
    rows.push_back(row);
  }
  std::map<std::string, std::map<std::string, Stats>> all;
  json results = {{"seeds", seeds.size()}, {"rows", json::array()}};
  std::string table = "| model | n |";
  for (const Metric& m : kMetrics) absl::StrAppend(&table, " ", m.title, " |");
  absl::StrAppend(&table, "\n|---|---|");
  for (size_t i = 0; i < std::size(kMetrics); ++i) absl::StrAppend(&table, "---|");
  table += "\n";
  int sft_examples = 0, pref_examples = 0;
  for (const auto& [key, title] : rows) {
    std::map<std::string, Stats>& metrics = all[key];
    std::vector<std::string> prefixes;
    if (paft::PathExists(paft::JoinPath(dir, key + ".sft.json"))) {
      prefixes.push_back(paft::JoinPath(dir, key));
    } else {
      for (const auto& seed : seeds) prefixes.push_back(paft::JoinPath(seed, key));
    }
    if (prefixes.empty()) {
      std::cerr << "error: no evaluation of '" << key << "' in " << dir << "\n";
      return 1;
    }
    for (const auto& prefix : prefixes) {
      if (absl::Status s = ReadRow(prefix, &metrics, &sft_examples, &pref_examples); !s.ok()) {
        std::cerr << "error: " << s << "\n";
        return 1;
      }
    }
    absl::StrAppend(&table, "| ", title, " | ", prefixes.size(), " |");
    json entry = {{"model", key}, {"title", title}, {"n", prefixes.size()}};
    for (const Metric& m : kMetrics) {
      absl::StrAppend(&table, " ", Cell(m, metrics), " |");
      if (metrics.count(m.key)) {
        entry["metrics"][m.key] = {{"mean", metrics[m.key].mean()},
                                   {"sd", metrics[m.key].sd()},
                                   {"values", metrics[m.key].values}};
      }
    }
    table += "\n";
    results["rows"].push_back(entry);
  }
  absl::StrAppendFormat(&table,
                        "\nEvaluated on %d SFT questions and %d preference pairs; mean ± "
                        "sample standard deviation over n runs (seeds).\n",
                        sft_examples, pref_examples);
  results["sft_examples"] = sft_examples;
  results["preference_examples"] = pref_examples;

  const std::string compare = absl::GetFlag(FLAGS_compare);
  if (!compare.empty()) table += "\nDifferences (a difference exceeds the spread when |mean_a - mean_b| > sd_a + sd_b):\n";
  for (absl::string_view item : (compare.empty() ? std::vector<absl::string_view>{}
                                                 : absl::StrSplit(compare, ','))) {
    std::pair<std::string, std::string> what = absl::StrSplit(item, ':');
    std::pair<std::string, std::string> ab = absl::StrSplit(what.first, '-');
    const Stats& a = all[ab.first][what.second];
    const Stats& b = all[ab.second][what.second];
    if (a.values.empty() || b.values.empty()) {
      std::cerr << "error: --compare " << item << ": no such rows or metric\n";
      return 1;
    }
    const double diff = a.mean() - b.mean(), spread = a.sd() + b.sd();
    const bool exceeds = std::fabs(diff) > spread;
    const std::string verdict = exceeds ? "exceeds the spread" : "within the spread";
    absl::StrAppendFormat(&table, "- %s %s vs %s: %+.3f (spread %.3f): %s\n", what.second,
                          ab.first, ab.second, diff, spread, verdict);
    results["differences"].push_back({{"a", ab.first}, {"b", ab.second}, {"metric", what.second},
                                      {"difference", diff}, {"spread", spread},
                                      {"exceeds_spread", exceeds}});
  }
  if (const std::string prefix = absl::GetFlag(FLAGS_select); !prefix.empty()) {
    std::string best;
    double best_score = -1;
    for (const auto& [key, title] : rows) {
      if (key.rfind(prefix, 0) != 0) continue;
      const double score =
          (all[key]["exact_match"].mean() + all[key]["reward_accuracy"].mean()) / 2;
      if (score > best_score) best_score = score, best = title;  // the first of equals wins
    }
    absl::StrAppendFormat(&table, "\nBest by the mean of exact match and reward accuracy: %s (%.3f)\n",
                          best, best_score);
    results["best"] = {{"title", best}, {"score", best_score}};
  }
  std::cout << table;
  if (!paft::WriteFileAtomic(paft::JoinPath(dir, "results.md"), table).ok() ||
      !paft::WriteFileAtomic(paft::JoinPath(dir, "results.json"), results.dump(2) + "\n").ok()) {
    std::cerr << "error: cannot write the results to " << dir << "\n";
    return 1;
  }
  return 0;
}
