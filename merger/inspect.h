// Delta analysis: how dense each input's task vector is -- and, for a LoRA adapter, how dense
// its factors A and B are -- its norms, and where inputs disagree in sign. PAFT's observation
// (the preference adapter comes out sparse, the SFT adapter dense unless trained with an L1
// penalty) is about the adapters; every merge works on the deltas s B A, which are dense
// whatever A and B look like. Both are reported.
//
// An entry counts as nonzero when |x| > max(epsilon, relative * max|x|), the max taken over the
// tensor it belongs to (the delta of one weight, or one factor): a threshold relative to the
// tensor's own scale, so that weights of different magnitudes are judged alike.
#ifndef PAFT_MERGER_INSPECT_H_
#define PAFT_MERGER_INSPECT_H_

#include <algorithm>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "merger/interference.h"

namespace paft::merger {

struct Threshold {
  double epsilon = 0;   // absolute
  double relative = 0;  // times the tensor's largest |x|
  double For(double max_abs) const { return std::max(epsilon, relative * max_abs); }
};

struct DeltaStats {
  int64_t numel = 0;
  int64_t nonzero = 0;  // entries above the threshold
  double l1 = 0;
  double l2_squared = 0;
  double max_abs = 0;
  double density() const { return numel ? static_cast<double>(nonzero) / numel : 0; }
  void Add(const DeltaStats& other);
};

struct TensorReport {
  std::string name;
  std::vector<DeltaStats> inputs;   // the delta, one per input
  std::vector<DeltaStats> factors;  // A and B together (numel 0: not a LoRA module of it)
  // Entries where one input's delta is above its threshold and another's below minus its own.
  int64_t sign_conflicts = 0;
  Interference interference;  // empty unless measured (InterferenceOptions)
};

struct InspectReport {
  std::vector<TensorReport> tensors;  // float tensors, in name order
  // Sums per decoder layer ("layer N" for the tensors named *layers.N.*, in layer order), then
  // "other" (embeddings, final norm, head) when any.
  std::vector<TensorReport> layers;
  TensorReport total;                 // sums over all tensors (name "total")
  InterferenceOptions interference;   // what the interference was measured with
};

// `interference`: also measure TIES-style interference (interference.h) per tensor, which
// reads each tensor whole (one tensor per input in memory at a time).
absl::StatusOr<InspectReport> InspectDeltas(const std::string& base_model,
                                            const std::vector<std::string>& inputs,
                                            const Threshold& threshold,
                                            const InterferenceOptions& interference = {});

// Human-readable tables: per tensor unless `summary_only`, per layer, the total; then, when
// measured, the interference per layer and in total.
std::string FormatReport(const InspectReport& report, const std::vector<std::string>& inputs,
                         bool summary_only);
std::string ReportToJson(const InspectReport& report, const std::vector<std::string>& inputs,
                         const Threshold& threshold);

}  // namespace paft::merger

#endif  // PAFT_MERGER_INSPECT_H_
