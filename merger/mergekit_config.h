// mergekit-style YAML merge configs, mapped onto a MergeRequest:
//
//   merge_method: ties
//   base_model: models/base
//   models:
//     - model: models/sft            # a full HF folder or a PEFT adapter folder
//       parameters: {weight: 1.0, density: 0.5}
//     - model: models/dpo
//       parameters: {weight: 1.0, density: 0.5, gamma: 0.01}
//     - model: models/base           # the base may be listed without parameters; it is skipped
//   parameters: {normalize: true, lambda: 1.0, rescale: false, int8_mask: true, seed: 0}
//   # the top-level parameters may also hold weight, density and gamma: the default of every
//   # model that does not set its own (mergekit's ConfigReader.parameter)
//   dtype: bfloat16
//   merge_space: delta     # paft's: delta (default), adapter, adapter_svd (docs/merger.md)
//   output: model          # paft's: model, adapter, both
//   svd_rank: 8            # paft's, adapter_svd: rank of the merged adapter
//   svd_clamp: 0.99        # paft's, adapter_svd: PEFT's quantile clamp
//
// Paths are relative to the config file's folder. Per-layer gradients (lists) and filters
// (mappings) for parameters are not supported and are refused naming the key.
#ifndef PAFT_MERGER_MERGEKIT_CONFIG_H_
#define PAFT_MERGER_MERGEKIT_CONFIG_H_

#include <string>

#include "absl/status/statusor.h"
#include "paft/v1/merger.pb.h"

namespace paft::merger {

// `base_dir` resolves relative paths. Errors name the offending key ("models[1].parameters").
absl::StatusOr<paft::v1::MergeRequest> ParseMergekitConfig(const std::string& yaml_text,
                                                           const std::string& base_dir);

}  // namespace paft::merger

#endif  // PAFT_MERGER_MERGEKIT_CONFIG_H_
