#include "merger/inspect.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include "absl/strings/str_cat.h"
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
                                            const Threshold& threshold) {
  if (inputs.empty()) return absl::InvalidArgumentError("at least one input is needed");
  if (!(threshold.epsilon >= 0) || !(threshold.relative >= 0)) {
    return absl::InvalidArgumentError("epsilon and relative_threshold must be >= 0");
  }
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
  report.total.name = "total";
  report.total.inputs.resize(n_inputs);
  report.total.factors.resize(n_inputs);
  for (const std::string& name : base->names()) {
    PAFT_ASSIGN_OR_RETURN(auto found, base->Find(name));
    const TensorInfo& info = *found.second;
    if (!IsFloat(info.dtype)) continue;
    const int64_t n = info.numel();
    std::vector<float> base_values(static_cast<size_t>(std::min(n, kChunk)));
    std::vector<std::vector<float>> deltas(n_inputs, std::vector<float>(base_values.size()));
    TensorReport t;
    t.name = name;
    t.inputs.assign(n_inputs, DeltaStats{});
    t.factors.assign(n_inputs, DeltaStats{});
    // Pass 1: norms and each input's largest |delta|; pass 2: counts against the thresholds.
    std::vector<double> limit(n_inputs);
    for (int pass = 0; pass < 2; ++pass) {
      for (int64_t begin = 0; begin < n; begin += kChunk) {
        const int64_t count = std::min(kChunk, n - begin);
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
        if (pass == 0) continue;
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
    for (size_t i = 0; i < n_inputs; ++i) {
      report.total.inputs[i].Add(t.inputs[i]);
      report.total.factors[i].Add(t.factors[i]);
    }
    report.total.sign_conflicts += t.sign_conflicts;
    report.tensors.push_back(std::move(t));
  }
  return report;
}

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
  rows(report.total);
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
    return j;
  };
  nlohmann::json j = {{"inputs", inputs},
                      {"threshold", {{"epsilon", threshold.epsilon}, {"relative", threshold.relative}}},
                      {"total", tensor_json(report.total)}};
  for (const auto& t : report.tensors) j["tensors"].push_back(tensor_json(t));
  return j.dump(2);
}

}  // namespace paft::merger
