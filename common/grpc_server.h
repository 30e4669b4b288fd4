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

// TLS material, from files (Kubernetes secrets). Server: cert_file + key_file are its own; with
// ca_file, clients must present a certificate signed by it (mutual TLS). Client: ca_file verifies
// the server; cert_file + key_file are presented for mutual TLS. Empty: plaintext.
struct TlsConfig {
  std::string cert_file;
  std::string key_file;
  std::string ca_file;
  bool enabled() const { return !cert_file.empty() || !ca_file.empty(); }
};

// `max_threads` > 0 caps the threads of the synchronous handlers (a gRPC resource quota): a call
// arriving when all are busy and none can be added is refused with RESOURCE_EXHAUSTED ("Server
// Threadpool Exhausted") instead of growing the process. Callback-API streams use none of them.
absl::StatusOr<StartedServer> StartGrpcServer(const std::string& address,
                                              const std::vector<grpc::Service*>& services,
                                              const TlsConfig& tls = {}, int max_threads = 0);

// A server serves TLS, or plaintext when explicitly chosen: InvalidArgument otherwise (or when
// both are asked for).
absl::Status CheckTransportChoice(const TlsConfig& tls, bool plaintext);

// A plaintext client channel with our message limits (a local cluster, tests).
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address);
// A channel with TLS when `tls` is enabled (errors name the unreadable file), else plaintext.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeClientChannel(const std::string& address,
                                                                 const TlsConfig& tls);

// Blocks until the channel connects or `timeout_ms` passes.
bool WaitForChannel(grpc::Channel* channel, int timeout_ms);

}  // namespace paft

#endif  // PAFT_COMMON_GRPC_SERVER_H_
