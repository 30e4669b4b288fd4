// Starting a gRPC server the same way in every binary: the given services, grpc.health.v1 (gRPC's
// built-in implementation) and server reflection.
#ifndef PAFT_COMMON_GRPC_SERVER_H_
#define PAFT_COMMON_GRPC_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace paft {

struct StartedServer {
  std::unique_ptr<grpc::Server> server;
  int port = 0;  // the bound port (useful with "host:0")
};

// Largest gRPC message accepted or sent (job specs and reports are small; this bounds abuse).
inline constexpr int kMaxGrpcMessageBytes = 16 << 20;

absl::StatusOr<StartedServer> StartGrpcServer(const std::string& address,
                                              const std::vector<grpc::Service*>& services);

// A client channel with our message limits. Plaintext (TLS arrives with the security issue).
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address);

// Blocks until the channel connects or `timeout_ms` passes.
bool WaitForChannel(grpc::Channel* channel, int timeout_ms);

}  // namespace paft

#endif  // PAFT_COMMON_GRPC_SERVER_H_
