#include "trainer/devices.h"

#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/version.h>

#include "absl/strings/str_cat.h"

#if __has_include(<cuda_runtime_api.h>) && __has_include(<ATen/cuda/CUDAContext.h>)
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#define PAFT_HAS_CUDA_HEADERS 1
#endif
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/NCCLUtils.hpp>
#endif

namespace paft::trainer {

std::vector<CudaDevice> CudaDevices() {
  std::vector<CudaDevice> out;
  const auto& hooks = at::detail::getCUDAHooks();
  // hasCUDA() is false without a driver or a device; it never throws for that.
  if (!hooks.hasCUDA()) return out;
#ifdef PAFT_HAS_CUDA_HEADERS
  const int count = hooks.deviceCount();
  for (int i = 0; i < count; ++i) {
    const cudaDeviceProp* prop = at::cuda::getDeviceProperties(static_cast<c10::DeviceIndex>(i));
    CudaDevice d;
    d.index = i;
    d.model = prop->name;
    d.memory_bytes = static_cast<int64_t>(prop->totalGlobalMem);
    d.major = prop->major;
    d.minor = prop->minor;
    out.push_back(std::move(d));
  }
#endif
  return out;
}

int64_t CudaPeakAllocatedBytes(int device) {
#ifdef PAFT_HAS_CUDA_HEADERS
  if (!at::detail::getCUDAHooks().hasCUDA()) return 0;
  const auto stats =
      c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
  return stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak;
#else
  return 0;
#endif
}

BuildInfo TrainerBuildInfo() {
  BuildInfo info;
  info.torch_version = TORCH_VERSION;
  const auto& hooks = at::detail::getCUDAHooks();
  info.cuda_available = hooks.hasCUDA();
  if (hooks.hasCUDART()) {
    // The CUDA runtime LibTorch was built against (the wheel ships that runtime).
    const long version = hooks.versionCUDART();
    info.cuda_version = absl::StrCat(version / 1000, ".", (version % 1000) / 10);
  }
#ifdef USE_C10D_NCCL
  info.nccl_version = c10d::getNcclVersion();
#endif
  return info;
}

}  // namespace paft::trainer
