// Merging LoRA adapters into one adapter, as PEFT's LoraModel.add_weighted_adapter does
// (merge_space "adapter" and "adapter_svd" of a MergeSpec; docs/merger.md):
//
//   adapter      every factor stack is combined on its own: A_m = f({sign_i sqrt|w_i s_i| A_i}),
//                B_m = f({sqrt|w_i s_i| B_i}) with PEFT's linear / ties / dare_linear /
//                dare_ties / magnitude_prune (peft_combine.h). All inputs must share r. Note
//                that B_m A_m is not the weighted sum of the deltas: products of different
//                inputs' factors (cross terms) enter it, as in PEFT.
//   adapter_svd  the deltas D_i = s_i B_i A_i are combined with weights w_i, then truncated to
//                rank svd_rank (default: the largest input r) by SVD: B_m = U_r S_r,
//                A_m = V_r^T, optionally clamped at PEFT's svd_clamp quantile. (PEFT multiplies
//                D_i, which already holds s_i, by w_i s_i -- s_i twice; here s_i counts once, so
//                the merged delta is the weighted sum of the real deltas. With s_i = 1 the two
//                agree.)
//
// The merged adapter has lora_alpha = r (scale 1), use_rslora false (PEFT copies the first
// input's use_rslora, which with lora_alpha = r would scale by sqrt(r); the scale here is 1),
// target_modules the union of the inputs' adapted module names. A module adapted by only some
// inputs combines those. A single input is merged "linear" on its factors whatever the method
// and space, svd_rank and svd_clamp unused (PEFT's rule).
#ifndef PAFT_MERGER_ADAPTER_MERGE_H_
#define PAFT_MERGER_ADAPTER_MERGE_H_

#include <string>

#include "absl/status/status.h"
#include "paft/v1/merger.pb.h"

namespace paft::merger {

// Writes the merged adapter folder (adapter_config.json, adapter_model.safetensors) of
// `request` (spec.merge_space adapter or adapter_svd) into the existing folder `dir`.
// Errors name the input and tensor at fault (a full model among the inputs, ranks that differ,
// an svd_rank a module cannot have, options PEFT does not have).
absl::Status WriteMergedAdapter(const paft::v1::MergeRequest& request, const std::string& dir);

}  // namespace paft::merger

#endif  // PAFT_MERGER_ADAPTER_MERGE_H_
