#include "common/auth.h"

#include <fnmatch.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/file_util.h"
#include "common/logging.h"
#include "common/sha256.h"
#include "common/status.h"

namespace paft {

const char* RoleName(Role role) {
  switch (role) {
    case Role::kAdmin:
      return "admin";
    case Role::kClient:
      return "client";
    case Role::kWorker:
      return "worker";
    case Role::kCoordinator:
      return "coordinator";
  }
  return "?";
}

bool Principal::MayActAs(const std::string& name) const {
  if (role == Role::kAdmin) return true;
  if (role != Role::kWorker || name.empty()) return false;
  if (worker_names.empty()) return name == identity;
  for (const std::string& pattern : worker_names) {
    if (::fnmatch(pattern.c_str(), name.c_str(), 0) == 0) return true;
  }
  return false;
}

absl::StatusOr<std::unique_ptr<TokenAuthenticator>> TokenAuthenticator::Load(
    const std::string& path) {
  PAFT_ASSIGN_OR_RETURN(auto table, ReadTable(path));
  auto out = std::unique_ptr<TokenAuthenticator>(new TokenAuthenticator());
  out->table_ = std::move(table);
  out->path_ = path;
  return out;
}

absl::StatusOr<std::shared_ptr<const TokenAuthenticator::Table>> TokenAuthenticator::ReadTable(
    const std::string& path) {
  auto text = ReadFileToString(path);
  if (!text.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("token file '", path, "': ", text.status().message()));
  }
  auto table = ParseTable(*text);
  if (!table.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("token file '", path, "': ", table.status().message()));
  }
  return table;
}

absl::StatusOr<std::unique_ptr<TokenAuthenticator>> TokenAuthenticator::Parse(
    const std::string& text) {
  PAFT_ASSIGN_OR_RETURN(auto table, ParseTable(text));
  auto out = std::unique_ptr<TokenAuthenticator>(new TokenAuthenticator());
  out->table_ = std::move(table);
  return out;
}

absl::StatusOr<std::shared_ptr<const TokenAuthenticator::Table>> TokenAuthenticator::ParseTable(
    const std::string& text) {
  auto table = std::make_shared<Table>();
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    const std::string where = absl::StrCat("line ", line_number, ": ");
    std::vector<std::string> parts = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (parts.size() != 3 && parts.size() != 4) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "expected ROLE IDENTITY SHA256|x509:NAME [names=PATTERN,...]"));
    }
    Principal principal{parts[1], Role::kAdmin, {}};
    if (parts[0] == "admin") {
      principal.role = Role::kAdmin;
    } else if (parts[0] == "client") {
      principal.role = Role::kClient;
    } else if (parts[0] == "worker") {
      principal.role = Role::kWorker;
    } else if (parts[0] == "coordinator") {
      principal.role = Role::kCoordinator;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "role '", parts[0], "' is not admin, client, worker or coordinator"));
    }
    if (parts.size() == 4) {
      if (!absl::StartsWith(parts[3], "names=") || parts[3].size() == 6) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, "the fourth field must be names=PATTERN[,PATTERN...]"));
      }
      if (principal.role != Role::kWorker) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, "names= is for worker principals only"));
      }
      principal.worker_names = absl::StrSplit(parts[3].substr(6), ',', absl::SkipEmpty());
    }
    if (absl::StartsWith(parts[2], "x509:")) {
      const std::string name = parts[2].substr(5);
      if (name.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(where, "x509: needs the certificate name"));
      }
      if (!table->by_cert_name.emplace(name, principal).second) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, "duplicate certificate name '", name, "'"));
      }
      continue;
    }
    std::string digest = absl::AsciiStrToLower(parts[2]);
    if (digest.size() != 64 || digest.find_first_not_of("0123456789abcdef") != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "the token digest must be 64 hex digits (sha256), or x509:NAME"));
    }
    if (!table->by_digest.emplace(digest, principal).second) {
      return absl::InvalidArgumentError(absl::StrCat(where, "duplicate token"));
    }
  }
  if (table->by_digest.empty() && table->by_cert_name.empty()) {
    return absl::InvalidArgumentError("no principals");
  }
  return std::shared_ptr<const Table>(std::move(table));
}

std::shared_ptr<const TokenAuthenticator::Table> TokenAuthenticator::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return table_;
}

absl::Status TokenAuthenticator::Reload() {
  if (path_.empty()) return absl::FailedPreconditionError("principals not loaded from a file");
  PAFT_ASSIGN_OR_RETURN(auto table, ReadTable(path_));
  if (!table->by_cert_name.empty() && !certificates_verified_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "principals file '", path_,
        "' has x509: principals: the server must verify client certificates (--tls_client_ca)"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  table_ = std::move(table);
  return absl::OkStatus();
}

bool TokenAuthenticator::HasCertificatePrincipals() const {
  return !Snapshot()->by_cert_name.empty();
}

absl::StatusOr<Principal> TokenAuthenticator::Authenticate(
    const grpc::ServerContextBase& context) const {
  const std::shared_ptr<const Table> table = Snapshot();
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it != metadata.end()) {
    const absl::string_view value(it->second.data(), it->second.size());
    if (!absl::StartsWith(value, "Bearer ")) {
      return absl::UnauthenticatedError("the authorization header is not 'Bearer TOKEN'");
    }
    Sha256 sha;
    sha.Update(value.substr(7));
    auto principal = table->by_digest.find(sha.HexDigest());
    if (principal == table->by_digest.end()) return absl::UnauthenticatedError("unknown token");
    return principal->second;
  }
  // No token: the client certificate, verified by the TLS handshake, names the principal.
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth != nullptr && auth->IsPeerAuthenticated() && !table->by_cert_name.empty()) {
    for (const char* property : {"x509_subject_alternative_name", "x509_common_name"}) {
      for (const grpc::string_ref& value : auth->FindPropertyValues(property)) {
        auto principal = table->by_cert_name.find(std::string(value.data(), value.size()));
        if (principal != table->by_cert_name.end()) return principal->second;
      }
    }
    return absl::UnauthenticatedError("the client certificate names no known principal");
  }
  return absl::UnauthenticatedError("no credentials: send 'authorization: Bearer TOKEN'");
}

absl::StatusOr<Principal> Authorize(const TokenAuthenticator* authenticator,
                                    const grpc::ServerContextBase* context,
                                    std::initializer_list<Role> allowed, const char* method) {
  if (authenticator == nullptr) return Principal{"", Role::kAdmin, {}};
  auto principal = authenticator->Authenticate(*context);
  if (!principal.ok()) return principal.status();
  for (Role role : allowed) {
    if (principal->role == role) return principal;
  }
  return absl::PermissionDeniedError(absl::StrCat("role ", RoleName(principal->role), " (",
                                                  principal->identity, ") may not call ", method));
}

absl::StatusOr<ServerSecurity> LoadServerSecurity(const TlsConfig& tls, bool plaintext,
                                                  const std::string& auth_tokens_path) {
  PAFT_RETURN_IF_ERROR(CheckTransportChoice(tls, plaintext));
  ServerSecurity security;
  security.tls = tls;
  if (!auth_tokens_path.empty()) {
    PAFT_ASSIGN_OR_RETURN(security.authenticator, TokenAuthenticator::Load(auth_tokens_path));
    security.authenticator->set_client_certificates_verified(!tls.ca_file.empty());
    if (security.authenticator->HasCertificatePrincipals() && tls.ca_file.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token file '", auth_tokens_path,
          "' has x509: principals: the server must verify client certificates (--tls_client_ca)"));
    }
  }
  return security;
}

void ReloadPrincipals(TokenAuthenticator* authenticator) {
  if (authenticator == nullptr) {
    PAFT_LOG(INFO) << "SIGHUP: no principals file to reload (authentication is off)";
    return;
  }
  if (absl::Status s = authenticator->Reload(); !s.ok()) {
    PAFT_LOG(ERROR) << "SIGHUP: principals not reloaded, the previous ones stay: " << s;
  } else {
    PAFT_LOG(INFO) << "SIGHUP: principals reloaded";
  }
}

absl::StatusOr<std::string> ReadToken(const std::string& path) {
  if (path.empty()) return std::string();
  auto text = ReadFileToString(path);
  if (!text.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("token file '", path, "': ", text.status().message()));
  }
  return std::string(absl::StripAsciiWhitespace(*text));
}

void AddToken(grpc::ClientContext* context, const std::string& token) {
  if (!token.empty()) context->AddMetadata("authorization", "Bearer " + token);
}

}  // namespace paft
