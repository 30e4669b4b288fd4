// Per-tensor merge math on float buffers, with mergekit's semantics and names. Pure functions.
//
// Every method but linear works on task vectors delta_i = input_i - base:
//   1. sparsify each delta_i to its `density` (none | magnitude top-k | random (DARE) |
//      magnitude with outliers removed (breadcrumbs)), optionally rescaled;
//   2. weight them: wd_i = weight_i * delta_i;
//   3. with sign consensus (ties, dare_ties, breadcrumbs_ties): majority sign
//      s = (sum_i wd_i >= 0 ? +1 : -1) per entry, keep only wd_i whose sign equals s
//      (zeros never agree); divisor = sum of the kept weights (1 where none);
//      without consensus: divisor = sum_i weight_i (1 where |sum| < 1e-8);
//   4. merged = base + lambda * (sum of kept wd_i) / (normalize ? divisor : 1).
// linear: out = sum_i weight_i * input_i / (normalize ? sum_i weight_i : 1).
//
// | method           | consensus | sparsification | normalize | rescale |   (defaults)
// | linear           | -         | -              | true      | -       |
// | task_arithmetic  | -         | -              | false     | -       |
// | ties             | sum       | magnitude      | true      | false   |
// | dare_linear      | -         | random         | false     | true    |
// | dare_ties        | sum       | random         | false     | true    |
// | breadcrumbs      | -         | outliers       | false     | false   |
// | breadcrumbs_ties | sum       | outliers       | false     | false   |
// | magnitude_prune  | -         | magnitude      | false     | false   |
#ifndef PAFT_MERGER_MERGE_METHODS_H_
#define PAFT_MERGER_MERGE_METHODS_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/dtype.h"

namespace paft::merger {

enum class Consensus { kNone, kSum };
enum class Sparsification { kNone, kMagnitude, kRandom, kMagnitudeOutliers };

struct MethodTraits {
  std::string name;
  bool linear = false;  // weighted average of the inputs, no task vectors
  Consensus consensus = Consensus::kNone;
  Sparsification sparsification = Sparsification::kNone;
  bool default_normalize = false;
  bool default_rescale = false;
};

// Looks a mergekit method name up; InvalidArgument naming the known ones for anything else.
absl::StatusOr<MethodTraits> LookupMergeMethod(const std::string& name);

struct MergeOptions {
  MethodTraits method;
  double lambda = 1.0;
  bool normalize = false;
  bool rescale = false;
  uint64_t seed = 0;  // DARE's stream; combined with the tensor key and input index
};

struct InputWeights {
  double weight = 1.0;
  double density = 1.0;  // fraction kept, in (0, 1]
  double gamma = 0.01;   // breadcrumbs: fraction of the largest entries dropped
};

// How many of n entries a density keeps, as mergekit 0.1's sparsify: int(density * n), and at
// least one of a non-empty tensor where `at_least_one` (magnitude; breadcrumbs' outliers
// variant has no such floor).
int64_t KeptCount(int64_t n, double density, bool at_least_one);

// A stable 64-bit key of a tensor name (FNV-1a), for DARE's per-tensor random stream.
uint64_t TensorKey(const std::string& name);

// One tensor's data, served in chunks so that no full-size float copy is ever needed.
// Thread-safe: chunks are read concurrently.
class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual int64_t numel() const = 0;
  virtual size_t num_inputs() const = 0;
  // Base values of elements [begin, begin + count).
  virtual absl::Status Base(int64_t begin, int64_t count, float* out) const = 0;
  // Input i's task vector (input - base) over the same range; `base` holds Base() of it.
  virtual absl::Status Delta(size_t input, int64_t begin, int64_t count, const float* base,
                             float* out) const = 0;
};

// Called in element order with consecutive chunks of the merged tensor, as `out_dtype` bytes.
using ChunkSink =
    std::function<absl::Status(int64_t begin, int64_t count, absl::Span<const uint8_t> bytes)>;

struct StreamOptions {
  int threads = 1;
  int64_t chunk = int64_t{1} << 16;  // elements per chunk (buffers stay in L2)
  DType out_dtype = DType::kF32;     // a float dtype
};

// Merges one tensor from `source` into `sink`. Sparsification is exact, not approximate:
// magnitude ranks come from a radix select over the float bits of |delta| (three streaming
// passes per rank boundary), ties broken by index, so memory stays at a few chunks per thread
// whatever the tensor size. `tensor_key` seeds DARE (so results do not depend on the order or
// chunking of the work).
absl::Status MergeTensor(const MergeOptions& options, const std::vector<InputWeights>& weights,
                         const TensorSource& source, uint64_t tensor_key,
                         const StreamOptions& stream, const ChunkSink& sink);

// In-memory conveniences over the same code (tests, small tensors). Entries are ranked by
// (|value|, index): equal magnitudes keep the later indices.
// magnitude: keep the KeptCount(n, density, true) largest; rescale: scale the kept ones to the
// original L1 norm.
void SparsifyMagnitude(float* delta, int64_t n, double density, bool rescale);
// random (DARE): keep each entry with probability `density` from a counter-based stream keyed by
// `stream`; rescale: scale the kept ones to the original L1 norm (mergekit 0.1; 0.0.x divided
// them by density).
void SparsifyRandom(float* delta, int64_t n, double density, bool rescale, uint64_t stream);
// outliers (breadcrumbs): drop the int(gamma * n) largest and the smallest, keeping
// KeptCount(n, density, false) entries (fewer outliers dropped if both do not fit); rescale as
// magnitude.
void SparsifyMagnitudeOutliers(float* delta, int64_t n, double density, double gamma,
                               bool rescale);

// Merges one in-memory tensor of n elements. `deltas[i]` holds input i's task vector.
// REQUIRES: deltas.size() == weights.size() >= 1.
void MergeDeltas(const MergeOptions& options, const float* base,
                 const std::vector<float*>& deltas, const std::vector<InputWeights>& weights,
                 int64_t n, uint64_t tensor_key, float* out);

}  // namespace paft::merger

#endif  // PAFT_MERGER_MERGE_METHODS_H_
