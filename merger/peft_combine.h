// PEFT's merge functions (peft.utils.merge_utils, as called by LoraModel.add_weighted_adapter)
// on float tensors. Pure functions. Their semantics differ from mergekit's (merge_methods.h):
//   - density >= 1 prunes nothing; magnitude pruning keeps int(density * n) entries;
//     random pruning (DARE) keeps each entry with probability density and divides by density;
//   - the majority sign of ties / dare_ties is elected from the sum of the *unweighted* pruned
//     tensors (sum >= 0 elects +), and the kept weighted entries are divided by how many inputs
//     agree (not by their weights);
//   - linear, dare_linear and magnitude_prune are weighted sums, never normalised.
// PEFT takes one density for all inputs; here each input has its own (equal densities are
// PEFT's case).
#ifndef PAFT_MERGER_PEFT_COMBINE_H_
#define PAFT_MERGER_PEFT_COMBINE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace paft::merger {

enum class PeftMethod { kLinear, kTies, kDareLinear, kDareTies, kMagnitudePrune };

// PEFT's combination_type names (the *_svd variants are these on deltas, see adapter_merge.h);
// mergekit's "task_arithmetic" is PEFT's "linear". Anything else: InvalidArgument naming them.
absl::StatusOr<PeftMethod> LookupPeftMethod(const std::string& name);

struct PeftTensor {
  std::vector<float> values;  // pruned in place
  double weight = 1.0;
  double density = 1.0;
  uint64_t stream = 0;  // DARE's random stream for this tensor
};

// Combines same-sized tensors into `out` (resized). REQUIRES: inputs not empty, equal sizes.
void PeftCombine(PeftMethod method, std::vector<PeftTensor>& inputs, std::vector<float>* out);

}  // namespace paft::merger

#endif  // PAFT_MERGER_PEFT_COMBINE_H_
