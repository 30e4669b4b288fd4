// Delta analysis: how dense each input's task vector is, its norms, and where inputs disagree in
// sign. PAFT's observation -- the preference (DPO) delta is sparse, the SFT delta dense unless
// trained with an L1 penalty -- shows up here.
#ifndef PAFT_MERGER_INSPECT_H_
#define PAFT_MERGER_INSPECT_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace paft::merger {

struct DeltaStats {
  int64_t numel = 0;
  int64_t above_epsilon = 0;  // entries with |delta| > epsilon
  double l1 = 0;
  double l2_squared = 0;
  double density() const { return numel ? static_cast<double>(above_epsilon) / numel : 0; }
};

struct TensorReport {
  std::string name;
  std::vector<DeltaStats> inputs;  // one per input
  // Entries where at least one input's delta is > epsilon and another's < -epsilon.
  int64_t sign_conflicts = 0;
};

struct InspectReport {
  std::vector<TensorReport> tensors;  // float tensors, in name order
  TensorReport total;                 // sums over all tensors (name "total")
};

absl::StatusOr<InspectReport> InspectDeltas(const std::string& base_model,
                                            const std::vector<std::string>& inputs,
                                            double epsilon);

// Human-readable table (per tensor unless `summary_only`, then the total).
std::string FormatReport(const InspectReport& report, const std::vector<std::string>& inputs,
                         bool summary_only);
std::string ReportToJson(const InspectReport& report, const std::vector<std::string>& inputs);

}  // namespace paft::merger

#endif  // PAFT_MERGER_INSPECT_H_
