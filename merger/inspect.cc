#include "merger/inspect.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_format.h"
#include "common/file_util.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "merger/inputs.h"
#include "nlohmann/json.hpp"

namespace paft::merger {
namespace {

constexpr int64_t kChunk = int64_t{1} << 20;

bool IsFloat(DType d) {
  return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16 || d == DType::kF64;
}

// Stats of a factor held in a safetensors file (two passes: its max, then the count).
DeltaStats FactorStats(const SafetensorsFile& file, const TensorInfo& info,
                       const Threshold& threshold) {
  std::vector<float> v(static_cast<size_t>(info.numel()));
  ReadRangeAsFloat(file, info, 0, info.numel(), v.data());
  DeltaStats s;
  s.numel = info.numel();
  for (float x : v) {
    s.max_abs = std::max(s.max_abs, static_cast<double>(std::fabs(x)));
    s.l1 += std::fabs(x);
    s.l2_squared += static_cast<double>(x) * x;
  }
  const double t = threshold.For(s.max_abs);
  for (float x : v) s.nonzero += std::fabs(x) > t ? 1 : 0;
  return s;
}

// The decoder layer a tensor belongs to (the N of "...layers.N."), or -1.
int LayerOf(const std::string& name) {
  const size_t at = name.find("layers.");
  if (at == std::string::npos) return -1;
  int layer = 0;
  size_t i = at + 7;
  if (i >= name.size() || !std::isdigit(static_cast<unsigned char>(name[i]))) return -1;
  for (; i < name.size() && std::isdigit(static_cast<unsigned char>(name[i])); ++i) {
    layer = layer * 10 + (name[i] - '0');
  }
  return i < name.size() && name[i] == '.' ? layer : -1;
}

void AddTo(TensorReport& sum, const TensorReport& t) {
  for (size_t i = 0; i < t.inputs.size(); ++i) {
    sum.inputs[i].Add(t.inputs[i]);
    sum.factors[i].Add(t.factors[i]);
  }
  sum.sign_conflicts += t.sign_conflicts;
  sum.interference.Add(t.interference);
}

std::vector<TensorReport> LayerTotals(const std::vector<TensorReport>& tensors, size_t n_inputs) {
  std::map<int, TensorReport> by_layer;  // -1 ("other") sorts first; moved last below
  for (const TensorReport& t : tensors) {
    const int layer = LayerOf(t.name);
    auto [it, added] = by_layer.try_emplace(layer);
    if (added) {
      it->second.name = layer < 0 ? "other" : absl::StrCat("layer ", layer);
      it->second.inputs.resize(n_inputs);
      it->second.factors.resize(n_inputs);
    }
    AddTo(it->second, t);
  }
  std::vector<TensorReport> out;
  for (auto& [layer, sum] : by_layer) {
    if (layer >= 0) out.push_back(std::move(sum));
  }
  if (by_layer.count(-1)) out.push_back(std::move(by_layer[-1]));
  return out;
}

}  // namespace

void DeltaStats::Add(const DeltaStats& o) {
  numel += o.numel;
  nonzero += o.nonzero;
  l1 += o.l1;
  l2_squared += o.l2_squared;
  max_abs = std::max(max_abs, o.max_abs);
}

absl::StatusOr<InspectReport> InspectDeltas(const std::string& base_model,
                                            const std::vector<std::string>& inputs,
                                            const Threshold& threshold,
                                            const InterferenceOptions& interference) {
  if (inputs.empty()) return absl::InvalidArgumentError("at least one input is needed");
  if (!(threshold.epsilon >= 0) || !(threshold.relative >= 0)) {
    return absl::InvalidArgumentError("epsilon and relative_threshold must be >= 0");
  }
  PAFT_RETURN_IF_ERROR(ValidateInterference(interference, inputs.size()));
  PAFT_ASSIGN_OR_RETURN(auto base, SafetensorsModel::Open(base_model));
  std::vector<std::unique_ptr<InputModel>> models;
  std::vector<std::unique_ptr<AdapterFile>> adapters;  // null for full models
  for (const auto& path : inputs) {
    PAFT_ASSIGN_OR_RETURN(auto model, OpenInput(path));
    PAFT_RETURN_IF_ERROR(model->Validate(*base));
    models.push_back(std::move(model));
    adapters.emplace_back();
    if (PathExists(JoinPath(path, "adapter_config.json"))) {
      PAFT_ASSIGN_OR_RETURN(AdapterFile adapter, OpenAdapterFile(path));
      adapters.back() = std::make_unique<AdapterFile>(std::move(adapter));
    }
  }
  const size_t n_inputs = models.size();
  InspectReport report;
  report.interference = interference;
  report.total.name = "total";
  report.total.inputs.resize(n_inputs);
  report.total.factors.resize(n_inputs);
  for (const std::string& name : base->names()) {
    PAFT_ASSIGN_OR_RETURN(auto found, base->Find(name));
    const TensorInfo& info = *found.second;
    if (!IsFloat(info.dtype)) continue;
    const int64_t n = info.numel();
    // Interference trims each delta by its whole tensor's magnitudes: one chunk then.
    const int64_t chunk = interference.enabled() ? n : std::min(n, kChunk);
    std::vector<float> base_values(static_cast<size_t>(chunk));
    std::vector<std::vector<float>> deltas(n_inputs, std::vector<float>(base_values.size()));
    TensorReport t;
    t.name = name;
    t.inputs.assign(n_inputs, DeltaStats{});
    t.factors.assign(n_inputs, DeltaStats{});
    // Pass 1: norms and each input's largest |delta|; pass 2: counts against the thresholds.
    std::vector<double> limit(n_inputs);
    for (int pass = 0; pass < 2; ++pass) {
      for (int64_t begin = 0; begin < n; begin += chunk) {
        const int64_t count = std::min(chunk, n - begin);
        ReadRangeAsFloat(*found.first, info, begin, count, base_values.data());
        for (size_t i = 0; i < n_inputs; ++i) {
          PAFT_RETURN_IF_ERROR(
              models[i]->Delta(name, info, begin, count, base_values.data(), deltas[i].data()));
          DeltaStats& s = t.inputs[i];
          for (int64_t j = 0; j < count; ++j) {
            const float d = std::fabs(deltas[i][j]);
            if (pass == 0) {
              s.numel += 1;
              s.l1 += d;
              s.l2_squared += static_cast<double>(d) * d;
              s.max_abs = std::max(s.max_abs, static_cast<double>(d));
            } else {
              s.nonzero += d > limit[i] ? 1 : 0;
            }
          }
        }
        if (pass == 0) {
          if (interference.enabled()) {  // the whole tensor is in `deltas`
            std::vector<const float*> whole;
            for (const auto& d : deltas) whole.push_back(d.data());
            t.interference = MeasureInterference(whole, n, interference);
          }
          continue;
        }
        for (int64_t j = 0; j < count; ++j) {
          bool positive = false, negative = false;
          for (size_t i = 0; i < n_inputs; ++i) {
            positive |= deltas[i][j] > limit[i];
            negative |= deltas[i][j] < -limit[i];
          }
          t.sign_conflicts += positive && negative ? 1 : 0;
        }
      }
      for (size_t i = 0; i < n_inputs; ++i) limit[i] = threshold.For(t.inputs[i].max_abs);
    }
    for (size_t i = 0; i < n_inputs; ++i) {
      if (adapters[i] == nullptr) continue;
      auto it = adapters[i]->modules.find(name);
      if (it == adapters[i]->modules.end()) continue;
      t.factors[i].Add(FactorStats(*adapters[i]->file, *it->second.a, threshold));
      t.factors[i].Add(FactorStats(*adapters[i]->file, *it->second.b, threshold));
    }
    found.first->Release(info);
    for (const auto& model : models) model->Release(name);
    AddTo(report.total, t);
    report.tensors.push_back(std::move(t));
  }
  report.layers = LayerTotals(report.tensors, n_inputs);
  return report;
}

namespace {

double Share(double part, double whole) { return whole > 0 ? part / whole : 0; }

std::string WeightsText(const InterferenceOptions& o, size_t n_inputs) {
  std::vector<std::string> w;
  for (size_t i = 0; i < n_inputs; ++i) {
    w.push_back(absl::StrFormat("%g", o.weights.empty() ? 1.0 : o.weights[i]));
  }
  return absl::StrJoin(w, ",");
}

}  // namespace

std::string FormatReport(const InspectReport& report, const std::vector<std::string>& inputs,
                         bool summary_only) {
  std::string out;
  for (size_t i = 0; i < inputs.size(); ++i) absl::StrAppend(&out, "input ", i, ": ", inputs[i], "\n");
  absl::StrAppend(&out, absl::StrFormat("%-48s %5s %12s %9s %12s %12s %10s %9s\n", "tensor",
                                        "input", "numel", "density", "L1", "L2", "conflicts",
                                        "factors"));
  auto rows = [&](const TensorReport& t) {
    for (size_t i = 0; i < t.inputs.size(); ++i) {
      const DeltaStats& s = t.inputs[i];
      const DeltaStats& f = t.factors[i];
      const std::string conflicts =
          i == 0 ? absl::StrFormat("%.4f", s.numel ? static_cast<double>(t.sign_conflicts) / s.numel : 0.0)
                 : "";
      const std::string factors = f.numel ? absl::StrFormat("%.4f", f.density()) : "-";
      absl::StrAppend(&out, absl::StrFormat("%-48s %5d %12d %9.4f %12.5g %12.5g %10s %9s\n",
                                            i == 0 ? t.name : "", i, s.numel, s.density(), s.l1,
                                            std::sqrt(s.l2_squared), conflicts, factors));
    }
  };
  if (!summary_only) {
    for (const auto& t : report.tensors) rows(t);
  }
  for (const auto& t : report.layers) rows(t);
  rows(report.total);
  if (report.interference.enabled()) {
    absl::StrAppend(
        &out, "\ninterference as ties merges (docs/merger.md): each delta trimmed to density ",
        absl::StrFormat("%g", report.interference.density),
        " of its tensor, a sign elected per entry with weights ",
        WeightsText(report.interference, inputs.size()),
        "; shared: entries two or more inputs keep; conflict: their signs differ; won: the "
        "input's sign elected in a conflict; kept/elected: the input's L1 mass left after "
        "trimming / after trimming and election; L2 ratio: the delta's L2 over input 0's\n");
    absl::StrAppend(&out, absl::StrFormat("%-48s %5s %12s %9s %9s %9s %9s %9s\n", "scope",
                                          "input", "shared", "conflict", "won", "L2 ratio",
                                          "kept", "elected"));
    auto interference_rows = [&](const TensorReport& t) {
      const Interference& x = t.interference;
      if (x.empty()) return;
      const double l2_0 = std::sqrt(t.inputs[0].l2_squared);
      for (size_t i = 0; i < x.mass.size(); ++i) {
        absl::StrAppend(
            &out, absl::StrFormat(
                      "%-48s %5d %12s %9s %9.4f %9.4g %9.4f %9.4f\n", i == 0 ? t.name : "", i,
                      i == 0 ? absl::StrCat(x.shared) : "",
                      i == 0 ? absl::StrFormat("%.4f", x.conflict_rate()) : "",
                      Share(static_cast<double>(x.conflicts_won[i]), static_cast<double>(x.conflicts)),
                      Share(std::sqrt(t.inputs[i].l2_squared), l2_0),
                      Share(x.kept_mass[i], x.mass[i]), Share(x.elected_mass[i], x.mass[i])));
      }
    };
    if (!summary_only) {
      for (const auto& t : report.tensors) interference_rows(t);
    }
    for (const auto& t : report.layers) interference_rows(t);
    interference_rows(report.total);
  }
  return out;
}

std::string ReportToJson(const InspectReport& report, const std::vector<std::string>& inputs,
                         const Threshold& threshold) {
  auto stats_json = [](const DeltaStats& s) {
    return nlohmann::json{{"numel", s.numel},     {"nonzero", s.nonzero},
                          {"density", s.density()}, {"l1", s.l1},
                          {"l2", std::sqrt(s.l2_squared)}, {"max_abs", s.max_abs}};
  };
  auto tensor_json = [&](const TensorReport& t) {
    nlohmann::json j = {{"name", t.name}, {"sign_conflicts", t.sign_conflicts}};
    for (size_t i = 0; i < t.inputs.size(); ++i) {
      nlohmann::json input = stats_json(t.inputs[i]);
      if (t.factors[i].numel > 0) input["factors"] = stats_json(t.factors[i]);
      j["inputs"].push_back(input);
    }
    const Interference& x = t.interference;
    if (!x.empty()) {
      nlohmann::json per_input = nlohmann::json::array();
      for (size_t i = 0; i < x.mass.size(); ++i) {
        per_input.push_back({{"mass", x.mass[i]},
                             {"kept_mass", x.kept_mass[i]},
                             {"elected_mass", x.elected_mass[i]},
                             {"kept_share", Share(x.kept_mass[i], x.mass[i])},
                             {"elected_share", Share(x.elected_mass[i], x.mass[i])},
                             {"conflicts_won", x.conflicts_won[i]}});
      }
      j["interference"] = {{"shared", x.shared},
                           {"conflicts", x.conflicts},
                           {"conflict_rate", x.conflict_rate()},
                           {"inputs", per_input}};
    }
    return j;
  };
  nlohmann::json j = {{"inputs", inputs},
                      {"threshold", {{"epsilon", threshold.epsilon}, {"relative", threshold.relative}}},
                      {"total", tensor_json(report.total)}};
  if (report.interference.enabled()) {
    nlohmann::json weights = nlohmann::json::array();
    for (size_t i = 0; i < inputs.size(); ++i) {
      weights.push_back(report.interference.weights.empty() ? 1.0 : report.interference.weights[i]);
    }
    j["interference"] = {{"density", report.interference.density}, {"weights", weights}};
  }
  for (const auto& t : report.tensors) j["tensors"].push_back(tensor_json(t));
  for (const auto& t : report.layers) j["layers"].push_back(tensor_json(t));
  return j.dump(2);
}

}  // namespace paft::merger
