#include "tests/testing/adapters.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "common/safetensors.h"

namespace paft::testing {

double MaxAdapterDifference(const std::string& a, const std::string& b) {
  constexpr double kUnreadable = std::numeric_limits<double>::infinity();
  auto x = SafetensorsFile::Open(a + "/adapter_model.safetensors");
  auto y = SafetensorsFile::Open(b + "/adapter_model.safetensors");
  if (!x.ok() || !y.ok()) return kUnreadable;
  double worst = 0;
  for (const auto& t : (*x)->tensors()) {
    const TensorInfo* other = (*y)->Find(t.name);
    if (other == nullptr || other->shape != t.shape || t.dtype != DType::kF32 ||
        other->dtype != DType::kF32) {
      return kUnreadable;
    }
    auto dx = (*x)->Data(t), dy = (*y)->Data(*other);
    for (int64_t i = 0; i < t.numel(); ++i) {
      float fx, fy;
      std::memcpy(&fx, dx.data() + 4 * i, 4);
      std::memcpy(&fy, dy.data() + 4 * i, 4);
      worst = std::max(worst, static_cast<double>(std::fabs(fx - fy)));
    }
  }
  return worst;
}

}  // namespace paft::testing
