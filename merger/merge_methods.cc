#include "merger/merge_methods.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "merger/inputs.h"
#include "merger/parallel.h"

namespace paft::merger {
namespace {

const std::vector<MethodTraits>& Methods() {
  static const auto* methods = new std::vector<MethodTraits>{
      {"linear", true, Consensus::kNone, Sparsification::kNone, true, false},
      {"task_arithmetic", false, Consensus::kNone, Sparsification::kNone, false, false},
      {"ties", false, Consensus::kSum, Sparsification::kMagnitude, true, false},
      {"dare_linear", false, Consensus::kNone, Sparsification::kRandom, false, true},
      {"dare_ties", false, Consensus::kSum, Sparsification::kRandom, false, true},
      {"breadcrumbs", false, Consensus::kNone, Sparsification::kMagnitudeOutliers, false, false},
      {"breadcrumbs_ties", false, Consensus::kSum, Sparsification::kMagnitudeOutliers, false,
       false},
      {"magnitude_prune", false, Consensus::kNone, Sparsification::kMagnitude, false, false},
  };
  return *methods;
}

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Entries are ordered by key (bits of |delta|, index). For non-negative floats the bit pattern
// orders like the value (NaN above infinity).
inline uint32_t MagnitudeBits(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  return bits & 0x7fffffffu;
}

struct Boundary {
  uint32_t bits = 0;
  int64_t index = 0;
};

inline bool KeyAtLeast(uint32_t bits, int64_t index, const Boundary& b) {
  return bits != b.bits ? bits > b.bits : index >= b.index;
}
inline bool KeyAtMost(uint32_t bits, int64_t index, const Boundary& b) {
  return bits != b.bits ? bits < b.bits : index <= b.index;
}

// What survives sparsification of one input's delta on one tensor.
struct KeepRule {
  enum Kind { kAll, kNone, kRange, kRandom } kind = kAll;
  bool has_lo = false, has_hi = false;
  Boundary lo, hi;  // kRange: keep lo <= key <= hi
  uint64_t threshold = 0;  // kRandom: keep when the 53-bit draw is below density * 2^53
  uint64_t stream = 0;     // kRandom
  float scale = 1.0f;   // applied to kept entries

  bool Keeps(float d, int64_t j) const {
    switch (kind) {
      case kAll:
        return true;
      case kNone:
        return false;
      case kRandom:  // uniform 53-bit draw below density * 2^53
        return (SplitMix64(stream ^ static_cast<uint64_t>(j)) >> 11) < threshold;
      case kRange: {
        const uint32_t bits = MagnitudeBits(d);
        return (!has_lo || KeyAtLeast(bits, j, lo)) && (!has_hi || KeyAtMost(bits, j, hi));
      }
    }
    return true;
  }
};

// Zeroes what `rule` drops of d[0..count) (elements begin..begin+count) and scales the rest;
// one loop per rule kind so the common cases stay tight.
void ApplyKeepRule(const KeepRule& rule, int64_t begin, int64_t count, float* d) {
  switch (rule.kind) {
    case KeepRule::kAll:
      if (rule.scale != 1.0f) {
        for (int64_t j = 0; j < count; ++j) d[j] *= rule.scale;
      }
      return;
    case KeepRule::kNone:
      std::fill(d, d + count, 0.0f);
      return;
    case KeepRule::kRandom:
      // Multiplying by the 0/1 decision instead of branching: the decisions are coin flips, and
      // mispredicted branches cost more than the arithmetic.
      for (int64_t j = 0; j < count; ++j) {
        const bool keep = (SplitMix64(rule.stream ^ static_cast<uint64_t>(begin + j)) >> 11) <
                          rule.threshold;
        d[j] *= rule.scale * static_cast<float>(keep);
      }
      return;
    case KeepRule::kRange:
      for (int64_t j = 0; j < count; ++j) {
        const uint32_t bits = MagnitudeBits(d[j]);
        const int64_t index = begin + j;
        const bool keep = (!rule.has_lo || KeyAtLeast(bits, index, rule.lo)) &
                          (!rule.has_hi || KeyAtMost(bits, index, rule.hi));
        d[j] *= rule.scale * static_cast<float>(keep);
      }
      return;
  }
}

// Reads input i's delta over a chunk into `out`, using `scratch` for the base values.
class DeltaReader {
 public:
  DeltaReader(const TensorSource& source, size_t input, int threads, int64_t chunk)
      : source_(source), input_(input), chunk_(chunk), scratch_(threads) {
    for (auto& s : scratch_) s.resize(static_cast<size_t>(chunk));
  }
  int64_t chunks() const { return (source_.numel() + chunk_ - 1) / chunk_; }
  int64_t begin(int64_t c) const { return c * chunk_; }
  int64_t count(int64_t c) const { return std::min(chunk_, source_.numel() - c * chunk_); }
  absl::Status Read(int64_t c, int worker, float* out) const {
    float* base = scratch_[worker].data();
    PAFT_RETURN_IF_ERROR(source_.Base(begin(c), count(c), base));
    return source_.Delta(input_, begin(c), count(c), base, out);
  }

 private:
  const TensorSource& source_;
  size_t input_;
  int64_t chunk_;
  mutable std::vector<std::vector<float>> scratch_;
};

// First error of a parallel pass.
class ErrorSlot {
 public:
  void Set(const absl::Status& s) {
    if (s.ok()) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (status_.ok()) status_ = s;
  }
  absl::Status Get() {
    std::lock_guard<std::mutex> lock(mu_);
    return status_;
  }

 private:
  std::mutex mu_;
  absl::Status status_;
};

// The boundary of ascending rank `rank` (0-based) of the delta's entries by key: a radix select
// over the high then low 16 bits of |delta|, then the index among equal magnitudes.
// `want_last`: the boundary is an upper one (keep keys <= it); else a lower one (keep >=).
absl::StatusOr<Boundary> SelectRank(const DeltaReader& reader, int threads, int64_t rank,
                                    bool want_last) {
  const int64_t chunks = reader.chunks();
  std::vector<std::vector<float>> buffers(threads, std::vector<float>(reader.count(0)));
  ErrorSlot error;
  auto histogram = [&](auto bucket_of) -> std::vector<int64_t> {
    std::vector<std::vector<int64_t>> per_thread(threads, std::vector<int64_t>(65536, 0));
    ParallelFor(chunks, threads, [&](int64_t c, int w) {
      absl::Status s = reader.Read(c, w, buffers[w].data());
      if (!s.ok()) return error.Set(s);
      const int64_t n = reader.count(c);
      for (int64_t j = 0; j < n; ++j) {
        const int bucket = bucket_of(MagnitudeBits(buffers[w][j]));
        if (bucket >= 0) ++per_thread[w][bucket];
      }
    });
    std::vector<int64_t> total(65536, 0);
    for (const auto& h : per_thread) {
      for (int b = 0; b < 65536; ++b) total[b] += h[b];
    }
    return total;
  };
  // Walks a histogram to the bucket holding `rank`; `below` counts the entries before it.
  auto find = [](const std::vector<int64_t>& h, int64_t rank, int64_t* below) {
    for (int b = 0; b < 65536; ++b) {
      if (*below + h[b] > rank) return b;
      *below += h[b];
    }
    return 65535;
  };
  int64_t below = 0;
  auto high = histogram([](uint32_t bits) { return static_cast<int>(bits >> 16); });
  PAFT_RETURN_IF_ERROR(error.Get());
  const uint32_t hi16 = static_cast<uint32_t>(find(high, rank, &below));
  auto low = histogram([hi16](uint32_t bits) {
    return (bits >> 16) == hi16 ? static_cast<int>(bits & 0xffffu) : -1;
  });
  PAFT_RETURN_IF_ERROR(error.Get());
  const uint32_t lo16 = static_cast<uint32_t>(find(low, rank, &below));
  Boundary boundary;
  boundary.bits = (hi16 << 16) | lo16;
  // Among the entries equal to the boundary value, which one is it? When it is the first or
  // the last of them, every equal entry falls on one side and no third pass is needed.
  if (rank == below) {
    boundary.index = std::numeric_limits<int64_t>::min();  // keep-from: all equal ones kept
    if (!want_last) return boundary;
  }
  if (rank == below + low[lo16] - 1 && want_last) {
    boundary.index = std::numeric_limits<int64_t>::max();  // keep-up-to: all equal ones kept
    return boundary;
  }
  // `below` entries are smaller; the boundary is the (rank - below)-th entry equal to it.
  std::vector<int64_t> equal_per_chunk(chunks, 0);
  ParallelFor(chunks, threads, [&](int64_t c, int w) {
    absl::Status s = reader.Read(c, w, buffers[w].data());
    if (!s.ok()) return error.Set(s);
    for (int64_t j = 0; j < reader.count(c); ++j) {
      equal_per_chunk[c] += MagnitudeBits(buffers[w][j]) == boundary.bits ? 1 : 0;
    }
  });
  PAFT_RETURN_IF_ERROR(error.Get());
  int64_t ordinal = rank - below;
  for (int64_t c = 0; c < chunks; ++c) {
    if (ordinal >= equal_per_chunk[c]) {
      ordinal -= equal_per_chunk[c];
      continue;
    }
    PAFT_RETURN_IF_ERROR(reader.Read(c, 0, buffers[0].data()));
    for (int64_t j = 0; j < reader.count(c); ++j) {
      if (MagnitudeBits(buffers[0][j]) == boundary.bits && ordinal-- == 0) {
        boundary.index = reader.begin(c) + j;
        return boundary;
      }
    }
  }
  return absl::InternalError("rank selection ran past the tensor");
}

// Plans what input `i` keeps of this tensor (and how kept entries are scaled).
absl::StatusOr<KeepRule> PlanKeep(const MergeOptions& options, const InputWeights& w,
                                  const DeltaReader& reader, int64_t n, int threads,
                                  uint64_t stream) {
  KeepRule rule;
  const Sparsification method = options.method.sparsification;
  if (method == Sparsification::kNone || w.density >= 1.0 || n == 0) return rule;
  if (method == Sparsification::kRandom) {
    rule.kind = KeepRule::kRandom;
    rule.threshold = static_cast<uint64_t>(std::ldexp(w.density, 53));
    rule.stream = SplitMix64(stream);
  } else {
    const bool outliers = method == Sparsification::kMagnitudeOutliers;
    const int64_t target = KeptCount(n, w.density, /*at_least_one=*/!outliers);
    if (target == 0) {
      rule.kind = KeepRule::kNone;
      return rule;
    }
    int64_t top = 0;  // largest entries dropped (breadcrumbs)
    if (outliers) {
      top = static_cast<int64_t>(w.gamma * static_cast<double>(n));
      if (n - target - top < 0) top = n - target;
    }
    const int64_t bottom = n - target - top;  // smallest entries dropped
    rule.kind = KeepRule::kRange;
    if (bottom > 0) {
      PAFT_ASSIGN_OR_RETURN(rule.lo, SelectRank(reader, threads, bottom, /*want_last=*/false));
      rule.has_lo = true;
    }
    if (top > 0) {
      PAFT_ASSIGN_OR_RETURN(rule.hi,
                            SelectRank(reader, threads, n - top - 1, /*want_last=*/true));
      rule.has_hi = true;
    }
  }
  if (options.rescale) {
    // mergekit 0.1's rescale (sparsify.rescaled_masked_tensor with RescaleNorm.l1), for every
    // sparsification, DARE included: the kept entries scaled to the tensor's original L1 norm,
    // unless either norm is below 1e-7. (mergekit 0.0.x divided DARE's kept entries by density.)
    std::vector<std::array<double, 2>> sums(threads, {0.0, 0.0});
    std::vector<std::vector<float>> buffers(threads, std::vector<float>(reader.count(0)));
    ErrorSlot error;
    ParallelFor(reader.chunks(), threads, [&](int64_t c, int t) {
      absl::Status s = reader.Read(c, t, buffers[t].data());
      if (!s.ok()) return error.Set(s);
      for (int64_t j = 0; j < reader.count(c); ++j) {
        const float d = buffers[t][j];
        sums[t][0] += std::fabs(d);
        if (rule.Keeps(d, reader.begin(c) + j)) sums[t][1] += std::fabs(d);
      }
    });
    PAFT_RETURN_IF_ERROR(error.Get());
    double before = 0, after = 0;
    for (const auto& s : sums) {
      before += s[0];
      after += s[1];
    }
    if (before >= 1e-7 && after >= 1e-7) rule.scale = static_cast<float>(before / after);
  }
  return rule;
}

// In-memory source for the conveniences below.
class MemorySource : public TensorSource {
 public:
  MemorySource(const float* base, std::vector<const float*> deltas, int64_t n)
      : base_(base), deltas_(std::move(deltas)), n_(n) {}
  int64_t numel() const override { return n_; }
  size_t num_inputs() const override { return deltas_.size(); }
  absl::Status Base(int64_t begin, int64_t count, float* out) const override {
    if (base_ == nullptr) {
      std::fill(out, out + count, 0.0f);
    } else {
      std::copy(base_ + begin, base_ + begin + count, out);
    }
    return absl::OkStatus();
  }
  absl::Status Delta(size_t input, int64_t begin, int64_t count, const float*,
                     float* out) const override {
    std::copy(deltas_[input] + begin, deltas_[input] + begin + count, out);
    return absl::OkStatus();
  }

 private:
  const float* base_;
  std::vector<const float*> deltas_;
  int64_t n_;
};

void SparsifyInPlace(Sparsification method, float* delta, int64_t n, double density,
                     double gamma, bool rescale, uint64_t stream) {
  MergeOptions options;
  options.method.sparsification = method;
  options.rescale = rescale;
  InputWeights w;
  w.density = density;
  w.gamma = gamma;
  MemorySource source(nullptr, {delta}, n);
  // Small chunks: the in-memory path runs the same multi-chunk selection as the streaming one.
  DeltaReader reader(source, 0, 1, std::min<int64_t>(4096, std::max<int64_t>(n, 1)));
  auto rule = PlanKeep(options, w, reader, n, 1, stream);
  if (!rule.ok()) return;  // in-memory reads cannot fail
  for (int64_t j = 0; j < n; ++j) {
    delta[j] = rule->Keeps(delta[j], j) ? delta[j] * rule->scale : 0.0f;
  }
}

}  // namespace

absl::StatusOr<MethodTraits> LookupMergeMethod(const std::string& name) {
  std::string known;
  for (const auto& m : Methods()) {
    if (m.name == name) return m;
    absl::StrAppend(&known, known.empty() ? "" : ", ", m.name);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown merge method '", name, "' (known: ", known, ")"));
}

int64_t KeptCount(int64_t n, double density, bool at_least_one) {
  // Python's int(density * n), as mergekit: truncated, so 0.57 * 100 = 56.99999999999999 keeps 56.
  auto k = static_cast<int64_t>(density * static_cast<double>(n));
  if (at_least_one && density > 0 && n > 0) k = std::max<int64_t>(k, 1);
  return std::clamp<int64_t>(k, 0, n);
}

uint64_t TensorKey(const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : name) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

absl::Status MergeTensor(const MergeOptions& options, const std::vector<InputWeights>& weights,
                         const TensorSource& source, uint64_t tensor_key,
                         const StreamOptions& stream, const ChunkSink& sink) {
  const int64_t n = source.numel();
  const size_t m = source.num_inputs();
  const int threads = std::max(1, stream.threads);
  const int64_t chunk = std::max<int64_t>(1, std::min(stream.chunk, std::max<int64_t>(n, 1)));
  if (n == 0) return absl::OkStatus();
  const MethodTraits& method = options.method;

  std::vector<KeepRule> rules(m);
  for (size_t i = 0; i < m && !method.linear; ++i) {
    DeltaReader reader(source, i, threads, chunk);
    PAFT_ASSIGN_OR_RETURN(rules[i],
                          PlanKeep(options, weights[i], reader, n, threads,
                                   options.seed ^ SplitMix64(tensor_key + i)));
  }
  double weight_sum = 0;
  for (const auto& w : weights) weight_sum += w.weight;
  const double plain_divisor = std::fabs(weight_sum) < 1e-8 ? 1.0 : weight_sum;
  const double linear_norm = options.normalize && weight_sum != 0 ? weight_sum : 1.0;

  struct Scratch {
    std::vector<float> base, out, mixed, sign_weight, divisor;
    std::vector<std::vector<float>> deltas;
  };
  std::vector<Scratch> scratch(threads);
  for (auto& s : scratch) {
    for (auto* v : {&s.base, &s.out, &s.mixed, &s.sign_weight, &s.divisor}) v->resize(chunk);
    s.deltas.assign(m, std::vector<float>(chunk));
  }
  // Waves of `threads` chunks: merged in parallel, handed to the sink in order.
  const int64_t chunks = (n + chunk - 1) / chunk;
  std::vector<std::vector<uint8_t>> wave_bytes(threads);
  for (int64_t first = 0; first < chunks; first += threads) {
    const int64_t wave = std::min<int64_t>(threads, chunks - first);
    ErrorSlot error;
    ParallelFor(wave, threads, [&](int64_t k, int w) {
      const int64_t c = first + k;
      const int64_t begin = c * chunk, count = std::min(chunk, n - begin);
      Scratch& s = scratch[w];
      absl::Status st = source.Base(begin, count, s.base.data());
      for (size_t i = 0; i < m && st.ok(); ++i) {
        st = source.Delta(i, begin, count, s.base.data(), s.deltas[i].data());
      }
      if (!st.ok()) return error.Set(st);
      float* out = s.out.data();
      if (method.linear) {
        // out = sum_i w_i * (base + d_i) / norm
        const float inv = static_cast<float>(1.0 / linear_norm);
        std::fill(out, out + count, 0.0f);
        for (size_t i = 0; i < m; ++i) {
          const float w_i = static_cast<float>(weights[i].weight);
          const float* d = s.deltas[i].data();
          for (int64_t j = 0; j < count; ++j) out[j] += w_i * (s.base[j] + d[j]);
        }
        for (int64_t j = 0; j < count; ++j) out[j] *= inv;
      } else {
        for (size_t i = 0; i < m; ++i) ApplyKeepRule(rules[i], begin, count, s.deltas[i].data());
        // Branch-free, vectorisable passes over the chunk: mixed = sum of (kept) w_i * d_i.
        float* mixed = s.mixed.data();
        std::fill(mixed, mixed + count, 0.0f);
        const float lambda = static_cast<float>(options.lambda);
        if (method.consensus == Consensus::kSum) {
          float* sign_weight = s.sign_weight.data();
          float* divisor = s.divisor.data();
          std::fill(sign_weight, sign_weight + count, 0.0f);
          std::fill(divisor, divisor + count, 0.0f);
          for (size_t i = 0; i < m; ++i) {
            const float w_i = static_cast<float>(weights[i].weight);
            const float* d = s.deltas[i].data();
            for (int64_t j = 0; j < count; ++j) sign_weight[j] += w_i * d[j];
          }
          for (size_t i = 0; i < m; ++i) {
            const float w_i = static_cast<float>(weights[i].weight);
            const float* d = s.deltas[i].data();
            for (int64_t j = 0; j < count; ++j) {
              const float wd = w_i * d[j];
              // Agrees with the majority sign (a tie elects +); zeros never agree.
              const bool keep = (wd != 0.0f) & ((wd > 0.0f) == (sign_weight[j] >= 0.0f));
              const float k = static_cast<float>(keep);  // branch-free: signs are unpredictable
              mixed[j] += wd * k;
              divisor[j] += w_i * k;
            }
          }
          if (options.normalize) {
            for (int64_t j = 0; j < count; ++j) {
              mixed[j] /= divisor[j] + static_cast<float>(divisor[j] == 0.0f);
            }
          }
        } else {
          for (size_t i = 0; i < m; ++i) {
            const float w_i = static_cast<float>(weights[i].weight);
            const float* d = s.deltas[i].data();
            for (int64_t j = 0; j < count; ++j) mixed[j] += w_i * d[j];
          }
          if (options.normalize) {
            const float inv = static_cast<float>(1.0 / plain_divisor);
            for (int64_t j = 0; j < count; ++j) mixed[j] *= inv;
          }
        }
        for (int64_t j = 0; j < count; ++j) out[j] = s.base[j] + lambda * mixed[j];
      }
      std::vector<uint8_t>& bytes = wave_bytes[k];
      bytes.resize(static_cast<size_t>(count) * DTypeSize(stream.out_dtype));
      StoreFloats(stream.out_dtype, out, count, bytes.data());
    });
    PAFT_RETURN_IF_ERROR(error.Get());
    for (int64_t k = 0; k < wave; ++k) {
      const int64_t begin = (first + k) * chunk;
      PAFT_RETURN_IF_ERROR(sink(begin, std::min(chunk, n - begin), wave_bytes[k]));
    }
  }
  return absl::OkStatus();
}

void SparsifyMagnitude(float* delta, int64_t n, double density, bool rescale) {
  SparsifyInPlace(Sparsification::kMagnitude, delta, n, density, 0, rescale, 0);
}

void SparsifyRandom(float* delta, int64_t n, double density, bool rescale, uint64_t stream) {
  SparsifyInPlace(Sparsification::kRandom, delta, n, density, 0, rescale, stream);
}

void SparsifyMagnitudeOutliers(float* delta, int64_t n, double density, double gamma,
                               bool rescale) {
  SparsifyInPlace(Sparsification::kMagnitudeOutliers, delta, n, density, gamma, rescale, 0);
}

void MergeDeltas(const MergeOptions& options, const float* base,
                 const std::vector<float*>& deltas, const std::vector<InputWeights>& weights,
                 int64_t n, uint64_t tensor_key, float* out) {
  MemorySource source(base, std::vector<const float*>(deltas.begin(), deltas.end()), n);
  StreamOptions stream;
  stream.chunk = 4096;  // several chunks even for small tensors: exercises the streaming path
  stream.out_dtype = DType::kF32;
  (void)MergeTensor(options, weights, source, tensor_key, stream,
                    [&](int64_t begin, int64_t count, absl::Span<const uint8_t> bytes) {
                      std::memcpy(out + begin, bytes.data(), static_cast<size_t>(count) * 4);
                      return absl::OkStatus();
                    });
}

}  // namespace paft::merger
