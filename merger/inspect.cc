#include "merger/inspect.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "merger/inputs.h"
#include "nlohmann/json.hpp"

namespace paft::merger {

absl::StatusOr<InspectReport> InspectDeltas(const std::string& base_model,
                                            const std::vector<std::string>& inputs,
                                            double epsilon) {
  if (inputs.empty()) return absl::InvalidArgumentError("at least one input is needed");
  PAFT_ASSIGN_OR_RETURN(auto base, SafetensorsModel::Open(base_model));
  std::vector<std::unique_ptr<InputModel>> models;
  for (const auto& path : inputs) {
    PAFT_ASSIGN_OR_RETURN(auto model, OpenInput(path));
    PAFT_RETURN_IF_ERROR(model->Validate(*base));
    models.push_back(std::move(model));
  }
  InspectReport report;
  report.total.name = "total";
  report.total.inputs.resize(inputs.size());
  for (const std::string& name : base->names()) {
    PAFT_ASSIGN_OR_RETURN(auto found, base->Find(name));
    const TensorInfo& info = *found.second;
    if (info.dtype != DType::kF32 && info.dtype != DType::kF16 && info.dtype != DType::kBF16 &&
        info.dtype != DType::kF64) {
      continue;
    }
    const int64_t n = info.numel();
    constexpr int64_t kChunk = int64_t{1} << 20;
    std::vector<float> base_values(static_cast<size_t>(std::min(n, kChunk)));
    std::vector<std::vector<float>> deltas(models.size(), std::vector<float>(base_values.size()));
    TensorReport t;
    t.name = name;
    t.inputs.assign(models.size(), DeltaStats{});
    for (int64_t begin = 0; begin < n; begin += kChunk) {
      const int64_t count = std::min(kChunk, n - begin);
      ReadRangeAsFloat(*found.first, info, begin, count, base_values.data());
      for (size_t i = 0; i < models.size(); ++i) {
        PAFT_RETURN_IF_ERROR(
            models[i]->Delta(name, info, begin, count, base_values.data(), deltas[i].data()));
        DeltaStats& s = t.inputs[i];
        s.numel += count;
        for (int64_t j = 0; j < count; ++j) {
          const float d = deltas[i][j];
          s.above_epsilon += std::fabs(d) > epsilon ? 1 : 0;
          s.l1 += std::fabs(d);
          s.l2_squared += static_cast<double>(d) * d;
        }
      }
      for (int64_t j = 0; j < count; ++j) {
        bool positive = false, negative = false;
        for (const auto& d : deltas) {
          positive |= d[j] > epsilon;
          negative |= d[j] < -epsilon;
        }
        t.sign_conflicts += positive && negative ? 1 : 0;
      }
    }
    found.first->Release(info);
    for (const auto& model : models) model->Release(name);
    for (size_t i = 0; i < models.size(); ++i) {
      DeltaStats& total = report.total.inputs[i];
      total.numel += t.inputs[i].numel;
      total.above_epsilon += t.inputs[i].above_epsilon;
      total.l1 += t.inputs[i].l1;
      total.l2_squared += t.inputs[i].l2_squared;
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
  absl::StrAppend(&out, absl::StrFormat("%-48s %5s %12s %9s %12s %12s %10s\n", "tensor", "input",
                                        "numel", "density", "L1", "L2", "conflicts"));
  auto rows = [&](const TensorReport& t) {
    for (size_t i = 0; i < t.inputs.size(); ++i) {
      const DeltaStats& s = t.inputs[i];
      absl::StrAppend(
          &out, absl::StrFormat("%-48s %5d %12d %9.4f %12.5g %12.5g %10s\n", i == 0 ? t.name : "",
                                i, s.numel, s.density(), s.l1, std::sqrt(s.l2_squared),
                                i == 0 ? absl::StrFormat("%.4f", t.inputs.empty() || !s.numel
                                                                     ? 0.0
                                                                     : static_cast<double>(
                                                                           t.sign_conflicts) /
                                                                           s.numel)
                                       : ""));
    }
  };
  if (!summary_only) {
    for (const auto& t : report.tensors) rows(t);
  }
  rows(report.total);
  return out;
}

std::string ReportToJson(const InspectReport& report, const std::vector<std::string>& inputs) {
  auto tensor_json = [](const TensorReport& t) {
    nlohmann::json j = {{"name", t.name}, {"sign_conflicts", t.sign_conflicts}};
    for (const auto& s : t.inputs) {
      j["inputs"].push_back({{"numel", s.numel},
                             {"density", s.density()},
                             {"l1", s.l1},
                             {"l2", std::sqrt(s.l2_squared)}});
    }
    return j;
  };
  nlohmann::json j = {{"inputs", inputs}, {"total", tensor_json(report.total)}};
  for (const auto& t : report.tensors) j["tensors"].push_back(tensor_json(t));
  return j.dump(2);
}

}  // namespace paft::merger
