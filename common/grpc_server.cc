#include "common/grpc_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/status.h"

namespace paft {

namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* what) {
  auto text = ReadFileToString(path);
  if (!text.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("TLS ", what, " '", path, "': ", text.status().message()));
  }
  return *text;
}

}  // namespace

absl::StatusOr<StartedServer> StartGrpcServer(const std::string& address,
                                              const std::vector<grpc::Service*>& services,
                                              const TlsConfig& tls, int max_threads) {
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (tls.enabled()) {
    if (tls.cert_file.empty() || tls.key_file.empty()) {
      return absl::InvalidArgumentError("TLS: a server needs both a certificate and a key");
    }
    grpc::SslServerCredentialsOptions options(
        tls.ca_file.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                            : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
    PAFT_ASSIGN_OR_RETURN(pair.private_key, ReadPem(tls.key_file, "key"));
    PAFT_ASSIGN_OR_RETURN(pair.cert_chain, ReadPem(tls.cert_file, "certificate"));
    options.pem_key_cert_pairs.push_back(pair);
    if (!tls.ca_file.empty()) {
      PAFT_ASSIGN_OR_RETURN(options.pem_root_certs, ReadPem(tls.ca_file, "client CA"));
    }
    credentials = grpc::SslServerCredentials(options);
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  StartedServer out;
  builder.AddListeningPort(address, credentials, &out.port);
  builder.SetMaxReceiveMessageSize(kMaxGrpcMessageBytes);
  builder.SetMaxSendMessageSize(kMaxGrpcMessageBytes);
  for (grpc::Service* service : services) builder.RegisterService(service);
  if (max_threads > 0) {
    grpc::ResourceQuota quota("paft-server");
    quota.SetMaxThreads(max_threads);
    builder.SetResourceQuota(quota);
  }
  out.server = builder.BuildAndStart();
  if (out.server == nullptr || out.port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot start a gRPC server on ", address));
  }
  return out;
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxGrpcMessageBytes);
  args.SetMaxSendMessageSize(kMaxGrpcMessageBytes);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

absl::Status CheckTransportChoice(const TlsConfig& tls, bool plaintext) {
  if (tls.enabled() && plaintext) {
    return absl::InvalidArgumentError("--plaintext and TLS flags together: choose one");
  }
  if (!tls.enabled() && !plaintext) {
    return absl::InvalidArgumentError(
        "give --tls_cert and --tls_key, or --plaintext to serve without TLS (a trusted network "
        "or a local cluster only)");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeClientChannel(const std::string& address,
                                                                 const TlsConfig& tls) {
  if (!tls.enabled()) return MakeChannel(address);
  grpc::SslCredentialsOptions options;
  if (!tls.ca_file.empty()) {
    PAFT_ASSIGN_OR_RETURN(options.pem_root_certs, ReadPem(tls.ca_file, "CA"));
  }
  if (!tls.cert_file.empty() || !tls.key_file.empty()) {
    PAFT_ASSIGN_OR_RETURN(options.pem_cert_chain, ReadPem(tls.cert_file, "certificate"));
    PAFT_ASSIGN_OR_RETURN(options.pem_private_key, ReadPem(tls.key_file, "key"));
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxGrpcMessageBytes);
  args.SetMaxSendMessageSize(kMaxGrpcMessageBytes);
  return grpc::CreateCustomChannel(address, grpc::SslCredentials(options), args);
}

bool WaitForChannel(grpc::Channel* channel, int timeout_ms) {
  return channel->WaitForConnected(std::chrono::system_clock::now() +
                                   std::chrono::milliseconds(timeout_ms));
}

}  // namespace paft
