#include "trainer/batching.h"

#include <algorithm>
#include <random>
#include <utility>

namespace paft::trainer {

namespace {

// One sequence of a batch: prompt, completion and the completion's loss runs (empty: all trained).
struct Row {
  absl::Span<const uint32_t> prompt, completion, runs;
};
using Rows = std::vector<Row>;

// Every sequence one after the other in one row. A sequence's first token is never a target (no
// token of its own precedes it), though a completion may start there.
Batch PackRows(const Rows& rows) {
  Batch b;
  int64_t total = 0;
  for (const Row& r : rows) total += static_cast<int64_t>(r.prompt.size() + r.completion.size());
  b.input_ids = torch::empty({1, total}, torch::kLong);
  b.completion_mask = torch::zeros({1, total}, torch::kLong);
  b.sequence_ids = torch::empty({total}, torch::kLong);
  auto ids = b.input_ids.accessor<int64_t, 2>();
  auto cm = b.completion_mask.accessor<int64_t, 2>();
  auto seq = b.sequence_ids.accessor<int64_t, 1>();
  int64_t pos = 0;
  for (size_t row = 0; row < rows.size(); ++row) {
    const Row& r = rows[row];
    const int64_t start = pos;
    for (uint32_t tok : r.prompt) {
      seq[pos] = static_cast<int64_t>(row);
      ids[0][pos++] = tok;
    }
    for (size_t k = 0; k < r.completion.size(); ++k) {
      seq[pos] = static_cast<int64_t>(row);
      cm[0][pos] = pos > start && TrainedToken(r.runs, static_cast<int64_t>(k)) ? 1 : 0;
      ids[0][pos++] = r.completion[k];
    }
    b.lengths.push_back(pos - start);
  }
  b.tokens = total;
  return b;
}

}  // namespace

Batch MakeBatch(const TokenDataset& data, const std::vector<int64_t>& indices, int64_t pad_id,
                bool packed) {
  const bool preference = data.kind() == DatasetKind::kPreference;
  Rows rows;
  for (int64_t i : indices) rows.push_back({data.prompt(i), data.completion(i), data.loss_runs(i)});
  if (preference) {
    for (int64_t i : indices) rows.push_back({data.prompt(i), data.rejected(i), {}});
  }
  if (packed) {
    Batch b = PackRows(rows);
    b.pairs = preference ? static_cast<int64_t>(indices.size()) : 0;
    b.indices = indices;
    return b;
  }
  int64_t t = 0;
  for (const Row& row : rows) t = std::max<int64_t>(t, row.prompt.size() + row.completion.size());
  const int64_t r = static_cast<int64_t>(rows.size());
  Batch b;
  b.input_ids = torch::full({r, t}, pad_id, torch::kLong);
  b.attention_mask = torch::zeros({r, t}, torch::kLong);
  b.completion_mask = torch::zeros({r, t}, torch::kLong);
  auto ids = b.input_ids.accessor<int64_t, 2>();
  auto am = b.attention_mask.accessor<int64_t, 2>();
  auto cm = b.completion_mask.accessor<int64_t, 2>();
  for (int64_t row = 0; row < r; ++row) {
    const Row& sequence = rows[row];
    int64_t pos = 0;
    for (uint32_t tok : sequence.prompt) {
      ids[row][pos] = tok;
      am[row][pos++] = 1;
    }
    for (size_t k = 0; k < sequence.completion.size(); ++k) {
      ids[row][pos] = sequence.completion[k];
      am[row][pos] = 1;
      cm[row][pos++] = TrainedToken(sequence.runs, static_cast<int64_t>(k)) ? 1 : 0;
    }
    b.tokens += pos;
  }
  b.pairs = preference ? static_cast<int64_t>(indices.size()) : 0;
  b.indices = indices;
  return b;
}

int64_t PadId(const ModelConfig& config) {
  return config.eos_token_id() >= 0 ? config.eos_token_id() : 0;
}

Batch ToDevice(Batch b, const torch::Device& device) {
  if (b.input_ids.device() == device) return b;
  b.input_ids = b.input_ids.to(device);
  if (b.attention_mask.defined()) b.attention_mask = b.attention_mask.to(device);
  b.completion_mask = b.completion_mask.to(device);
  if (b.sequence_ids.defined()) b.sequence_ids = b.sequence_ids.to(device);
  return b;
}

int64_t TargetTokens(absl::Span<const uint32_t> prompt, absl::Span<const uint32_t> completion,
                     absl::Span<const uint32_t> loss_runs) {
  int64_t n = 0;
  for (int64_t k = prompt.empty() ? 1 : 0; k < static_cast<int64_t>(completion.size()); ++k) {
    n += TrainedToken(loss_runs, k) ? 1 : 0;
  }
  return n;
}

std::vector<int64_t> EpochOrder(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  std::mt19937_64 rng(seed * 1000003ULL + static_cast<uint64_t>(epoch));
  std::shuffle(order.begin(), order.end(), rng);
  return order;
}

DataSchedule::DataSchedule(const TokenDataset* data, uint64_t seed, int64_t batch,
                           int64_t accumulation, int world)
    : data_(data), seed_(seed), batch_(batch), accumulation_(accumulation), world_(world) {}

int64_t DataSchedule::Example(int64_t position) {
  const int64_t n = data_->size();
  const int64_t epoch = position / n;
  auto it = orders_.find(epoch);
  if (it == orders_.end()) {
    // A step may straddle two epochs: keep the two newest orders.
    if (orders_.size() >= 2) orders_.erase(orders_.begin());
    it = orders_.emplace(epoch, EpochOrder(n, seed_, epoch)).first;
  }
  return it->second[position % n];
}

std::vector<int64_t> DataSchedule::MicroBatch(int64_t step, int64_t micro, int rank) {
  const int64_t first = ((step * accumulation_ + micro) * world_ + rank) * batch_;
  std::vector<int64_t> indices;
  indices.reserve(batch_);
  for (int64_t k = 0; k < batch_; ++k) indices.push_back(Example(first + k));
  return indices;
}

StepCounts DataSchedule::Counts(int64_t step) {
  StepCounts counts;
  counts.sequences = examples_per_step();
  const int64_t first = step * examples_per_step();
  for (int64_t k = 0; k < examples_per_step(); ++k) {
    const int64_t i = Example(first + k);
    counts.targets += TargetTokens(data_->prompt(i), data_->completion(i), data_->loss_runs(i));
    const int64_t sequence = static_cast<int64_t>(data_->prompt(i).size() + data_->completion(i).size());
    counts.chosen_sequence_targets += std::max<int64_t>(0, sequence - 1);
  }
  return counts;
}

}  // namespace paft::trainer
