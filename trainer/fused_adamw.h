// AdamW (decoupled weight decay, as torch.optim.AdamW) with one fused pass over each fp32 CPU
// parameter: moments, bias corrections, decay and the update in a single loop over memory
// instead of nine tensor operations. LibTorch 1.13's C++ AdamW took 0.105 s a step for 6.8M
// parameters on 2 cores where Python's took 0.056 s (bench/, docs/trainer.md).
//
// The state (step, exp_avg, exp_avg_sq) is torch::optim::AdamW's own, so optimizer.pt files are
// interchangeable with it. Parameters that are not contiguous fp32 CPU tensors, and amsgrad,
// take AdamW's own path.
#ifndef PAFT_TRAINER_FUSED_ADAMW_H_
#define PAFT_TRAINER_FUSED_ADAMW_H_

#include <torch/torch.h>

namespace paft::trainer {

class FusedAdamW : public torch::optim::AdamW {
 public:
  using torch::optim::AdamW::AdamW;
  torch::Tensor step(LossClosure closure = nullptr) override;
};

}  // namespace paft::trainer

#endif  // PAFT_TRAINER_FUSED_ADAMW_H_
