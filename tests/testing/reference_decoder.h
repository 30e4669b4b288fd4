// An independent double-precision reference of the supported decoder families (llama, mistral,
// qwen2), for golden tests: plain loops over std::vector<double>, no LibTorch, reading config.json
// itself (not through paft's ModelConfig) and computing RoPE scaling from transformers' formulas
// written out again here. Slow; meant for test models of a few thousand parameters.
#ifndef PAFT_TESTS_TESTING_REFERENCE_DECODER_H_
#define PAFT_TESTS_TESTING_REFERENCE_DECODER_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace paft::testing {

struct RefTensor {
  std::vector<int64_t> shape;
  std::vector<double> data;  // row-major
};
using RefWeights = std::map<std::string, RefTensor>;
using RefMatrix = std::vector<std::vector<double>>;  // [row][column]

// Every tensor of a model folder's model.safetensors, as doubles.
absl::StatusOr<RefWeights> ReadReferenceWeights(const std::string& folder);

// RoPE inverse frequencies (head_dim / 2 of them) and the cos/sin multiplier for a forward of
// `sequence_length` tokens, from config.json's rope_theta and rope_scaling.
struct RefRope {
  std::vector<double> inv_freq;
  double attention_factor = 1.0;
};
RefRope ReferenceRope(const nlohmann::json& config, int64_t sequence_length);

// Logits [T][vocab] of one unpadded sequence at positions 0..T-1.
RefMatrix ReferenceLogits(const nlohmann::json& config, const RefWeights& weights,
                          const std::vector<int64_t>& ids);

// Sum of log-softmax(logits[t-1])[ids[t]] over t in [prompt_length, T): the completion's
// log-probability, as TRL scores a sequence.
double ReferenceCompletionLogProb(const nlohmann::json& config, const RefWeights& weights,
                                  const std::vector<int64_t>& ids, int64_t prompt_length);

}  // namespace paft::testing

#endif  // PAFT_TESTS_TESTING_REFERENCE_DECODER_H_
