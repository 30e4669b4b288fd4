#include "trainer/torch_io.h"

#include <torch/torch.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace paft::trainer {

absl::StatusOr<torch::ScalarType> ToTorchDType(DType dtype) {
  switch (dtype) {
    case DType::kBool: return torch::kBool;
    case DType::kU8: return torch::kUInt8;
    case DType::kI8: return torch::kInt8;
    case DType::kI16: return torch::kInt16;
    case DType::kI32: return torch::kInt32;
    case DType::kI64: return torch::kInt64;
    case DType::kF16: return torch::kHalf;
    case DType::kBF16: return torch::kBFloat16;
    case DType::kF32: return torch::kFloat;
    case DType::kF64: return torch::kDouble;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("dtype ", DTypeName(dtype), " has no LibTorch equivalent here"));
  }
}

absl::StatusOr<DType> FromTorchDType(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kBool: return DType::kBool;
    case torch::kUInt8: return DType::kU8;
    case torch::kInt8: return DType::kI8;
    case torch::kInt16: return DType::kI16;
    case torch::kInt32: return DType::kI32;
    case torch::kInt64: return DType::kI64;
    case torch::kHalf: return DType::kF16;
    case torch::kBFloat16: return DType::kBF16;
    case torch::kFloat: return DType::kF32;
    case torch::kDouble: return DType::kF64;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("torch dtype ", c10::toString(dtype), " cannot be stored in safetensors"));
  }
}

absl::StatusOr<torch::Tensor> ReadTensor(const SafetensorsFile& file, const TensorInfo& info) {
  PAFT_ASSIGN_OR_RETURN(torch::ScalarType dtype, ToTorchDType(info.dtype));
  torch::Tensor out = torch::empty(info.shape, torch::TensorOptions().dtype(dtype));
  auto data = file.Data(info);
  if (!data.empty()) std::memcpy(out.data_ptr(), data.data(), data.size());
  return out;
}

absl::Status WriteTensors(const std::string& path,
                          const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                          const std::map<std::string, DType>& dtypes,
                          const std::map<std::string, std::string>& metadata) {
  std::vector<TensorSpec> specs;
  std::vector<torch::Tensor> prepared;
  for (const auto& [name, tensor] : tensors) {
    torch::Tensor t = tensor.detach().to(torch::kCPU);
    auto it = dtypes.find(name);
    if (it != dtypes.end()) {
      PAFT_ASSIGN_OR_RETURN(torch::ScalarType want, ToTorchDType(it->second));
      t = t.to(want);
    }
    t = t.contiguous();
    PAFT_ASSIGN_OR_RETURN(DType dtype, FromTorchDType(t.scalar_type()));
    specs.push_back({name, dtype, t.sizes().vec()});
    prepared.push_back(t);
  }
  PAFT_ASSIGN_OR_RETURN(auto writer, SafetensorsWriter::Create(path, specs, metadata));
  for (const auto& t : prepared) {
    PAFT_RETURN_IF_ERROR(writer->Append(absl::Span<const uint8_t>(
        static_cast<const uint8_t*>(t.data_ptr()), t.numel() * t.element_size())));
  }
  return writer->Commit();
}

}  // namespace paft::trainer
