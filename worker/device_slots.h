// The device slots an agent offers: one per GPU it can see, or CPU slots where it sees none.
#ifndef PAFT_WORKER_DEVICE_SLOTS_H_
#define PAFT_WORKER_DEVICE_SLOTS_H_

#include <vector>

#include "absl/status/statusor.h"
#include "paft/v1/job.pb.h"
#include "trainer/devices.h"

namespace paft::worker {

// `requested` is the agent's --devices: 0 (the default) offers every visible GPU, or one CPU slot
// on a machine without any; N > 0 offers the first N GPUs (more than are visible is refused,
// naming the flag), or N CPU slots (ranks sharing the host's cores) without GPUs.
absl::StatusOr<std::vector<paft::v1::DeviceInfo>> ResolveDeviceSlots(
    int requested, const std::vector<paft::trainer::CudaDevice>& gpus);

// `count` CPU slots, named "cpu:0", "cpu:1", ...
std::vector<paft::v1::DeviceInfo> CpuSlots(int count);

}  // namespace paft::worker

#endif  // PAFT_WORKER_DEVICE_SLOTS_H_
