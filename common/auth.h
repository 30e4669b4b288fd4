// Bearer-token authentication and role checks for the gRPC services.
//
// A token file holds one principal per line: ROLE IDENTITY SHA256 where ROLE is admin, client,
// worker or coordinator and SHA256 the hex digest of the token (the tokens themselves are never
// stored or logged). Clients send "authorization: Bearer TOKEN".
#ifndef PAFT_COMMON_AUTH_H_
#define PAFT_COMMON_AUTH_H_

#include <grpcpp/grpcpp.h>

#include <initializer_list>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/grpc_server.h"

namespace paft {

enum class Role { kAdmin, kClient, kWorker, kCoordinator };
const char* RoleName(Role role);

struct Principal {
  std::string identity;
  Role role = Role::kAdmin;
};

class TokenAuthenticator {
 public:
  // Errors name the line at fault.
  static absl::StatusOr<std::unique_ptr<TokenAuthenticator>> Load(const std::string& path);
  static absl::StatusOr<std::unique_ptr<TokenAuthenticator>> Parse(const std::string& text);
  // UNAUTHENTICATED when the call carries no token or an unknown one.
  absl::StatusOr<Principal> Authenticate(const grpc::ServerContext& context) const;

 private:
  std::map<std::string, Principal> by_digest_;
};

// The caller's principal if its role is one of `allowed` (PERMISSION_DENIED otherwise). Without
// an authenticator (authentication off) every caller is an anonymous admin.
absl::StatusOr<Principal> Authorize(const TokenAuthenticator* authenticator,
                                    const grpc::ServerContext* context,
                                    std::initializer_list<Role> allowed, const char* method);

// A server's transport and authentication, as its flags give them: TLS, or plaintext when
// explicitly chosen (CheckTransportChoice), and the principals of `auth_tokens_path` if set.
struct ServerSecurity {
  TlsConfig tls;
  std::unique_ptr<TokenAuthenticator> authenticator;  // null: authentication off
};
absl::StatusOr<ServerSecurity> LoadServerSecurity(const TlsConfig& tls, bool plaintext,
                                                  const std::string& auth_tokens_path);

// A client's token from a file (whitespace trimmed); empty path: no token.
absl::StatusOr<std::string> ReadToken(const std::string& path);
// Adds the bearer token (if any) to a call.
void AddToken(grpc::ClientContext* context, const std::string& token);

}  // namespace paft

#endif  // PAFT_COMMON_AUTH_H_
