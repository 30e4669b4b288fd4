#include "worker/device_slots.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace paft::worker {

absl::StatusOr<std::vector<paft::v1::DeviceInfo>> ResolveDeviceSlots(
    int requested, const std::vector<paft::trainer::CudaDevice>& gpus) {
  if (requested < 0) {
    return absl::InvalidArgumentError(absl::StrCat("--devices must be >= 0, got ", requested));
  }
  if (gpus.empty()) return CpuSlots(std::max(1, requested));
  std::vector<paft::v1::DeviceInfo> slots;
  const int count = static_cast<int>(gpus.size());
  if (requested > count) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--devices=", requested, " but only ", count,
        " CUDA device(s) are visible (CUDA_VISIBLE_DEVICES); one rank runs per GPU"));
  }
  for (int i = 0; i < (requested > 0 ? requested : count); ++i) {
    auto& slot = slots.emplace_back();
    slot.set_name(absl::StrCat("cuda:", gpus[i].index));
    slot.set_model(gpus[i].model);
    slot.set_memory_bytes(gpus[i].memory_bytes);
  }
  return slots;
}

std::vector<paft::v1::DeviceInfo> CpuSlots(int count) {
  std::vector<paft::v1::DeviceInfo> slots(static_cast<size_t>(std::max(0, count)));
  for (size_t i = 0; i < slots.size(); ++i) slots[i].set_name(absl::StrCat("cpu:", i));
  return slots;
}

}  // namespace paft::worker
