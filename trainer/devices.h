// The devices this process can train on, as LibTorch sees them: the CUDA devices (after
// CUDA_VISIBLE_DEVICES) with their model and memory, or none on a machine without a GPU or
// driver (the CPU path, not an error). Torch-free interface: the agent's code includes it.
#ifndef PAFT_TRAINER_DEVICES_H_
#define PAFT_TRAINER_DEVICES_H_

#include <cstdint>
#include <string>
#include <vector>

namespace paft::trainer {

struct CudaDevice {
  int index = 0;
  std::string model;         // cudaDeviceProp::name
  int64_t memory_bytes = 0;  // total global memory
  int major = 0, minor = 0;  // compute capability
};

// Reads device properties only: creates no CUDA context and holds no device memory.
std::vector<CudaDevice> CudaDevices();

// The most memory LibTorch's CUDA caching allocator has held allocated on `device` in this
// process (0 without CUDA): what a training step needs of the GPU.
int64_t CudaPeakAllocatedBytes(int device);

// What the trainer was built with: LibTorch's version, and the CUDA and NCCL versions of the
// wheel's libraries ("" when LibTorch has no CUDA), for logs and `paft-worker devices`.
struct BuildInfo {
  std::string torch_version;
  std::string cuda_version;
  std::string nccl_version;
  bool cuda_available = false;  // a CUDA driver and at least one device are present
};
BuildInfo TrainerBuildInfo();

}  // namespace paft::trainer

#endif  // PAFT_TRAINER_DEVICES_H_
