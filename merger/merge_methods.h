// Per-tensor merge math on float buffers, with mergekit's semantics. Pure functions.
//
//   delta_i   = input_i - base
//   linear          : out = sum_i w_i * input_i / (normalize ? sum_i w_i : 1)
//   task_arithmetic : out = base + lambda * sum_i w_i * delta_i / (normalize ? sum_i w_i : 1)
//   ties            : delta_i trimmed to its top-`density` fraction by |delta|; elected sign
//                     s = sign(sum_i w_i * trimmed_i); out = base + lambda * sum over agreeing
//                     entries of w_i * trimmed_i, divided (if normalize) by the sum of the
//                     agreeing weights.
// Other mergekit methods (dare_*, breadcrumbs, magnitude_prune) arrive with the merger issue.
#ifndef PAFT_MERGER_MERGE_METHODS_H_
#define PAFT_MERGER_MERGE_METHODS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace paft::merger {

enum class MergeMethod { kLinear, kTaskArithmetic, kTies };

// Parses mergekit's method name; Unimplemented for known methods not yet built, InvalidArgument
// for unknown names.
absl::StatusOr<MergeMethod> ParseMergeMethod(const std::string& name);

struct MergeOptions {
  MergeMethod method = MergeMethod::kTaskArithmetic;
  double lambda = 1.0;
  bool normalize = false;
};

struct InputWeights {
  double weight = 1.0;
  double density = 1.0;  // ties: fraction of entries kept, in (0, 1]
};

// Merges one tensor of `n` elements. `inputs[i]` points at input i's values, `weights[i]` are its
// parameters. REQUIRES: inputs.size() == weights.size() >= 1; every buffer holds n floats.
void MergeTensor(const MergeOptions& options, const float* base,
                 const std::vector<const float*>& inputs,
                 const std::vector<InputWeights>& weights, int64_t n, float* out);

// How many of n entries a density keeps: floor(density * n), as mergekit.
int64_t KeptCount(int64_t n, double density);

// Magnitude threshold of the top KeptCount(n, density) entries of |values|: entries above it are
// kept, entries equal to it are kept in index order until the count is reached. 0 when everything
// is kept, +inf when nothing is.
float TopKThreshold(const float* values, int64_t n, double density);

}  // namespace paft::merger

#endif  // PAFT_MERGER_MERGE_METHODS_H_
