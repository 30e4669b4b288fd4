// Mixed precision: which compute dtype a branch trains in, and the autocast scope that applies
// it. bf16 autocast runs matmuls (linear, matmul, bmm) in bf16 while parameters, optimizer state,
// losses, softmax and norms stay in fp32, as torch.autocast(dtype=torch.bfloat16) does, on CPU
// (oneDNN) as on CUDA.
#ifndef PAFT_TRAINER_PRECISION_H_
#define PAFT_TRAINER_PRECISION_H_

#include <torch/types.h>

#include <string>

#include "absl/status/statusor.h"

namespace paft::trainer {

enum class Precision { kFp32, kBf16 };

// Whether `device` computes bf16 natively: CUDA devices, and CPUs with avx512_bf16 or AMX
// (read from /proc/cpuinfo).
bool NativeBf16(const torch::Device& device);

// Whether autocast is on for `device`'s type in this thread.
bool AutocastActive(const torch::Device& device);

// `x` in autocast's lower precision when autocast is on for its device and x is fp32, else x.
// Casting a block's input once, before the matmuls that share it (q/k/v, gate/up, a LoRA
// branch), gives the same numbers as letting autocast cast it at every matmul.
torch::Tensor AutocastInput(const torch::Tensor& x);

// The dtype of a matmul's result with `weight` here: autocast's lower precision when autocast is
// on for the weight's device, else the weight's own.
torch::ScalarType MatmulResultDtype(const torch::Tensor& weight);

// A spec's `precision` ("auto" or "", "fp32", "bf16") on `device`. "auto" is bf16 where the
// device computes it natively, else fp32. Unknown names are InvalidArgument naming the value.
absl::StatusOr<Precision> ResolvePrecision(const std::string& name, const torch::Device& device);

const char* PrecisionName(Precision precision);

// While alive, autocasts to bf16 on `device`'s type when `precision` is kBf16; a no-op for
// kFp32 (fp32 training stays bit-for-bit what it is without it). Restores the previous state
// and clears the cast cache on destruction. Not reentrant across threads (autocast state is
// thread-local, like torch.autocast).
class AutocastScope {
 public:
  AutocastScope(Precision precision, const torch::Device& device);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool active_ = false;
  bool cuda_ = false;
  bool was_enabled_ = false;
  torch::ScalarType previous_dtype_ = torch::kBFloat16;
};

}  // namespace paft::trainer

#endif  // PAFT_TRAINER_PRECISION_H_
