// The demo's results table: reads the evaluations the demo wrote to DIR and prints, for base,
// SFT-only, DPO-only, sequential (SFT, then DPO on the SFT model) and the PAFT merge, the held-out
// SFT exact match, the held-out preference reward accuracy (rewards against the base model), how
// often the model itself prefers the chosen answer, and the density of its delta from the base.
// Writes DIR/results.md and DIR/results.json as well.
//
//   paft-demo-report --dir=DIR
//
// Expected files per row R (base, sft, dpo, sequential, paft): R.sft.json and R.pref.json
// (`paft-worker eval` reports) and, except for the base, R.delta.json (`paft-merger inspect
// --summary --json`). A missing or malformed file is an error naming it.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/file_util.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, dir, "", "Folder with the demo's evaluation files");

namespace {

struct Row {
  const char* key;
  const char* title;
};
constexpr Row kRows[] = {{"base", "base (pre-trained)"},
                         {"sft", "SFT only"},
                         {"dpo", "DPO only"},
                         {"sequential", "sequential: SFT, then DPO"},
                         {"paft", "PAFT: SFT ∥ DPO, merged"}};

absl::StatusOr<nlohmann::json> Load(const std::string& path) {
  auto text = paft::ReadFileToString(path);
  if (!text.ok()) return text.status();
  auto json = nlohmann::json::parse(*text, nullptr, false);
  if (json.is_discarded() || !json.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  }
  return json;
}

absl::StatusOr<double> Number(const nlohmann::json& json, const std::string& key,
                              const std::string& path) {
  if (!json.contains(key) || !json[key].is_number()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no number '", key, "'"));
  }
  return json[key].get<double>();
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string dir = absl::GetFlag(FLAGS_dir);
  if (dir.empty()) {
    std::cerr << "--dir is required\n";
    return 2;
  }
  nlohmann::json results = nlohmann::json::array();
  std::string table =
      "| model | SFT exact match (held-out) | preference reward accuracy (held-out) | "
      "prefers chosen | delta density |\n|---|---|---|---|---|\n";
  for (const Row& row : kRows) {
    const std::string base = paft::JoinPath(dir, row.key);
    auto sft = Load(base + ".sft.json");
    auto pref = Load(base + ".pref.json");
    if (!sft.ok() || !pref.ok()) {
      std::cerr << "error: " << (sft.ok() ? pref.status() : sft.status()) << "\n";
      return 1;
    }
    auto em = Number(*sft, "exact_match", base + ".sft.json");
    auto accuracy = Number(*pref, "reward_accuracy", base + ".pref.json");
    auto prefers = Number(*pref, "policy_prefers_chosen", base + ".pref.json");
    if (!em.ok() || !accuracy.ok() || !prefers.ok()) {
      std::cerr << "error: " << (!em.ok() ? em.status() : !accuracy.ok() ? accuracy.status()
                                                                         : prefers.status())
                << "\n";
      return 1;
    }
    nlohmann::json entry = {{"model", row.key},
                            {"sft_exact_match", *em},
                            {"sft_loss", sft->value("loss", 0.0)},
                            {"preference_reward_accuracy", *accuracy},
                            {"preference_prefers_chosen", *prefers},
                            {"sft_examples", sft->value("examples", 0)},
                            {"preference_examples", pref->value("examples", 0)}};
    std::string density = "-";
    if (std::string(row.key) != "base") {
      auto delta = Load(base + ".delta.json");
      if (!delta.ok()) {
        std::cerr << "error: " << delta.status() << "\n";
        return 1;
      }
      const auto& total = (*delta)["total"];
      if (!total.is_object() || !total["inputs"].is_array() || total["inputs"].empty() ||
          !total["inputs"][0]["density"].is_number()) {
        std::cerr << "error: " << base << ".delta.json: no total density\n";
        return 1;
      }
      entry["delta_density"] = total["inputs"][0]["density"].get<double>();
      entry["delta_l2"] = total["inputs"][0].value("l2", 0.0);
      density = absl::StrFormat("%.3f", entry["delta_density"].get<double>());
    }
    results.push_back(entry);
    absl::StrAppendFormat(&table, "| %s | %.2f (%d) | %.2f (%d) | %.2f | %s |\n", row.title, *em,
                          entry["sft_examples"].get<int>(), *accuracy,
                          entry["preference_examples"].get<int>(), *prefers, density);
  }
  table +=
      "\nExact match: greedy answer equals the reference. Reward accuracy: beta*(log p - log "
      "p_base) is higher for the chosen answer than for the rejected one (0 for the base itself). "
      "Prefers chosen: log p(chosen) > log p(rejected) under the model. Delta density: fraction "
      "of parameters that differ from the base (|delta| > 1e-6).\n";
  std::cout << table;
  if (!paft::WriteFileAtomic(paft::JoinPath(dir, "results.md"), table).ok() ||
      !paft::WriteFileAtomic(paft::JoinPath(dir, "results.json"), results.dump(2) + "\n").ok()) {
    std::cerr << "error: cannot write the results to " << dir << "\n";
    return 1;
  }
  return 0;
}
