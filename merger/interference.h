// Interference of task vectors under TIES-style merging, measured: how much of each input's
// delta survives trimming and sign election, and where the inputs fight. For one tensor, with
// per-input weights w_i and a density d, as ties merges (merge_methods.h):
//   1. trim: each delta keeps its KeptCount(n, d) largest |entries| (exact, SparsifyMagnitude);
//   2. elect: per entry, the sign of sum_i w_i trimmed_i (a tie elects +);
//   3. drop: kept entries whose sign disagrees with the elected one.
// "Shared" entries are kept by two or more inputs; a shared entry is a conflict when their kept
// signs differ, and an input wins a conflict when its sign is the one elected. Mass is the L1 of
// the untrimmed delta, so kept_mass / mass is the share that survives trimming and
// elected_mass / mass the share that survives trimming and election.
#ifndef PAFT_MERGER_INTERFERENCE_H_
#define PAFT_MERGER_INTERFERENCE_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"

namespace paft::merger {

struct InterferenceOptions {
  double density = 0;           // in (0, 1]; 0: not measured
  std::vector<double> weights;  // one per input; empty: 1 each
  bool enabled() const { return density > 0; }
};

// The options checked against the number of inputs: density in [0, 1], one finite weight per
// input (or none), at least two inputs when measured.
absl::Status ValidateInterference(const InterferenceOptions& options, size_t inputs);

struct Interference {
  int64_t shared = 0;
  int64_t conflicts = 0;
  std::vector<int64_t> conflicts_won;  // per input
  std::vector<double> mass;            // per input: sum |delta|
  std::vector<double> kept_mass;       // per input: sum |delta| over the entries trimming keeps
  std::vector<double> elected_mass;    // per input: ... that also agree with the elected sign
  bool empty() const { return mass.empty(); }
  double conflict_rate() const { return shared ? static_cast<double>(conflicts) / shared : 0; }
  void Add(const Interference& other);
};

// `deltas`: one whole tensor's delta per input, n entries each (read, not changed).
Interference MeasureInterference(const std::vector<const float*>& deltas, int64_t n,
                                 const InterferenceOptions& options);

}  // namespace paft::merger

#endif  // PAFT_MERGER_INTERFERENCE_H_
