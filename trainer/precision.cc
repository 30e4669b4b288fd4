#include "trainer/precision.h"

#include <ATen/autocast_mode.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace paft::trainer {
namespace {

// The flags line of the first processor in /proc/cpuinfo, with spaces around it.
std::string CpuFlags() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) == 0) return " " + line.substr(line.find(':') + 1) + " ";
  }
  return "";
}

// Autocast state of one device type.
bool AutocastEnabled(bool cuda) {
  return at::autocast::is_autocast_enabled(cuda ? at::kCUDA : at::kCPU);
}
void SetAutocastEnabled(bool cuda, bool on) {
  at::autocast::set_autocast_enabled(cuda ? at::kCUDA : at::kCPU, on);
}
torch::ScalarType AutocastDtype(bool cuda) {
  return at::autocast::get_autocast_dtype(cuda ? at::kCUDA : at::kCPU);
}
void SetAutocastDtype(bool cuda, torch::ScalarType dtype) {
  at::autocast::set_autocast_dtype(cuda ? at::kCUDA : at::kCPU, dtype);
}

}  // namespace

bool NativeBf16(const torch::Device& device) {
  if (device.is_cuda()) return true;
  static const bool cpu = [] {
    const std::string flags = CpuFlags();
    return flags.find(" avx512_bf16 ") != std::string::npos ||
           flags.find(" amx_bf16 ") != std::string::npos;
  }();
  return cpu;
}

bool AutocastActive(const torch::Device& device) { return AutocastEnabled(device.is_cuda()); }

torch::Tensor AutocastInput(const torch::Tensor& x) {
  const bool cuda = x.device().is_cuda();
  if (x.scalar_type() != torch::kFloat || !AutocastEnabled(cuda)) return x;
  return x.to(AutocastDtype(cuda));
}

torch::ScalarType MatmulResultDtype(const torch::Tensor& weight) {
  const bool cuda = weight.device().is_cuda();
  return AutocastEnabled(cuda) ? AutocastDtype(cuda) : weight.scalar_type();
}

absl::StatusOr<Precision> ResolvePrecision(const std::string& name, const torch::Device& device) {
  if (name.empty() || name == "auto") {
    return NativeBf16(device) ? Precision::kBf16 : Precision::kFp32;
  }
  if (name == "fp32") return Precision::kFp32;
  if (name == "bf16") return Precision::kBf16;
  return absl::InvalidArgumentError(
      absl::StrCat("precision '", name, "' is not one of auto, fp32, bf16"));
}

const char* PrecisionName(Precision precision) {
  return precision == Precision::kBf16 ? "bf16" : "fp32";
}

AutocastScope::AutocastScope(Precision precision, const torch::Device& device) {
  if (precision != Precision::kBf16) return;
  active_ = true;
  cuda_ = device.is_cuda();
  was_enabled_ = AutocastEnabled(cuda_);
  previous_dtype_ = AutocastDtype(cuda_);
  SetAutocastEnabled(cuda_, true);
  SetAutocastDtype(cuda_, torch::kBFloat16);
}

AutocastScope::~AutocastScope() {
  if (!active_) return;
  SetAutocastEnabled(cuda_, was_enabled_);
  SetAutocastDtype(cuda_, previous_dtype_);
  if (!was_enabled_) at::autocast::clear_cache();
}

}  // namespace paft::trainer
