// Authentication (bearer tokens or client certificates) and role checks for the gRPC services.
//
// A principals file holds one principal per line:
//   ROLE IDENTITY CREDENTIAL [names=PATTERN,...]
// ROLE is admin, client, worker or coordinator. CREDENTIAL is the sha256 hex digest of a bearer
// token (the tokens themselves are never stored or logged; clients send
// "authorization: Bearer TOKEN"), or x509:NAME for a client certificate (mutual TLS) whose
// subject alternative name or common name is NAME. names= (worker principals only) lists the
// worker names the principal may register and act as, '*' matching any run of characters
// (e.g. names=gpu-node-*); without it, only its IDENTITY. The file is re-read on SIGHUP.
#ifndef PAFT_COMMON_AUTH_H_
#define PAFT_COMMON_AUTH_H_

#include <grpcpp/grpcpp.h>

#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/grpc_server.h"

namespace paft {

enum class Role { kAdmin, kClient, kWorker, kCoordinator };
const char* RoleName(Role role);

struct Principal {
  std::string identity;
  Role role = Role::kAdmin;
  std::vector<std::string> worker_names;  // names= patterns; empty: the identity only
  // Whether this principal may register, heartbeat, stream and report as the worker `name`:
  // admins as any; workers as their identity or a names= pattern; nobody as "".
  bool MayActAs(const std::string& name) const;
};

class TokenAuthenticator {
 public:
  // Errors name the file and the line at fault.
  static absl::StatusOr<std::unique_ptr<TokenAuthenticator>> Load(const std::string& path);
  static absl::StatusOr<std::unique_ptr<TokenAuthenticator>> Parse(const std::string& text);
  // The bearer token's principal; without a token, that of the verified client certificate's
  // names (x509: lines). UNAUTHENTICATED when neither identifies one.
  absl::StatusOr<Principal> Authenticate(const grpc::ServerContextBase& context) const;
  // Re-reads the file Load read, replacing every principal at once; calls in flight and open
  // connections carry on. On error nothing changes (the error names the line); x509: principals
  // are refused unless the server verifies client certificates.
  absl::Status Reload();
  // Whether the server verifies client certificates (x509: principals need it).
  void set_client_certificates_verified(bool verified) { certificates_verified_ = verified; }
  // Whether some principal is identified by a client certificate (the server must then verify
  // client certificates).
  bool HasCertificatePrincipals() const;

 private:
  struct Table {
    std::map<std::string, Principal> by_digest;     // sha256 of a token
    std::map<std::string, Principal> by_cert_name;  // a certificate's SAN or CN
  };
  static absl::StatusOr<std::shared_ptr<const Table>> ParseTable(const std::string& text);
  // The file's principals; errors name the file (and the line).
  static absl::StatusOr<std::shared_ptr<const Table>> ReadTable(const std::string& path);
  std::shared_ptr<const Table> Snapshot() const;

  std::string path_;
  bool certificates_verified_ = false;  // set before serving
  mutable std::mutex mu_;
  std::shared_ptr<const Table> table_;  // GUARDED_BY(mu_); replaced whole by Reload
};

// The caller's principal if its role is one of `allowed` (PERMISSION_DENIED otherwise). Without
// an authenticator (authentication off) every caller is an anonymous admin.
absl::StatusOr<Principal> Authorize(const TokenAuthenticator* authenticator,
                                    const grpc::ServerContextBase* context,
                                    std::initializer_list<Role> allowed, const char* method);

// A server's transport and authentication, as its flags give them: TLS, or plaintext when
// explicitly chosen (CheckTransportChoice), and the principals of `auth_tokens_path` if set
// (certificate principals need the server to verify client certificates: tls.ca_file).
struct ServerSecurity {
  TlsConfig tls;
  std::unique_ptr<TokenAuthenticator> authenticator;  // null: authentication off
};
absl::StatusOr<ServerSecurity> LoadServerSecurity(const TlsConfig& tls, bool plaintext,
                                                  const std::string& auth_tokens_path);

// The server side of SIGHUP: reloads `authenticator` (if any) and logs the outcome; on error
// the principals stay as they were.
void ReloadPrincipals(TokenAuthenticator* authenticator);

// A client's token from a file (whitespace trimmed); empty path: no token.
absl::StatusOr<std::string> ReadToken(const std::string& path);
// Adds the bearer token (if any) to a call.
void AddToken(grpc::ClientContext* context, const std::string& token);

}  // namespace paft

#endif  // PAFT_COMMON_AUTH_H_
