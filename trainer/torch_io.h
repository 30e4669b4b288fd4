// safetensors <-> LibTorch tensors.
#ifndef PAFT_TRAINER_TORCH_IO_H_
#define PAFT_TRAINER_TORCH_IO_H_

#include <torch/types.h>

#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/safetensors.h"

namespace paft::trainer {

// The torch dtype of a safetensors dtype; InvalidArgument for ones torch lacks (U16, U32, U64,
// F8 on LibTorch 1.x).
absl::StatusOr<torch::ScalarType> ToTorchDType(DType dtype);
absl::StatusOr<DType> FromTorchDType(torch::ScalarType dtype);

// A CPU tensor holding a copy of the tensor's data.
absl::StatusOr<torch::Tensor> ReadTensor(const SafetensorsFile& file, const TensorInfo& info);

// Writes named tensors (any dtype/device; converted to `dtype` per name when given in
// `dtypes`, else kept) to one safetensors file, atomically.
absl::Status WriteTensors(const std::string& path,
                          const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                          const std::map<std::string, DType>& dtypes = {},
                          const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

}  // namespace paft::trainer

#endif  // PAFT_TRAINER_TORCH_IO_H_
