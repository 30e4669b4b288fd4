// The one place where absl::Status and grpc::Status convert. The codes map 1:1.
#ifndef PAFT_COMMON_GRPC_STATUS_H_
#define PAFT_COMMON_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace paft {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace paft

#endif  // PAFT_COMMON_GRPC_STATUS_H_
