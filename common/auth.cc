#include "common/auth.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/file_util.h"
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

absl::StatusOr<std::unique_ptr<TokenAuthenticator>> TokenAuthenticator::Load(
    const std::string& path) {
  auto text = ReadFileToString(path);
  if (!text.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("token file '", path, "': ", text.status().message()));
  }
  auto parsed = Parse(*text);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("token file '", path, "': ",
                                                   parsed.status().message()));
  }
  return parsed;
}

absl::StatusOr<std::unique_ptr<TokenAuthenticator>> TokenAuthenticator::Parse(
    const std::string& text) {
  auto out = std::unique_ptr<TokenAuthenticator>(new TokenAuthenticator());
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> parts = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (parts.size() != 3) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_number, ": expected ROLE IDENTITY SHA256"));
    }
    Principal principal{parts[1], Role::kAdmin};
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
          "line ", line_number, ": role '", parts[0], "' is not admin, client, worker or coordinator"));
    }
    std::string digest = absl::AsciiStrToLower(parts[2]);
    if (digest.size() != 64 || digest.find_first_not_of("0123456789abcdef") != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_number, ": the token digest must be 64 hex digits (sha256)"));
    }
    if (!out->by_digest_.emplace(digest, principal).second) {
      return absl::InvalidArgumentError(absl::StrCat("line ", line_number, ": duplicate token"));
    }
  }
  if (out->by_digest_.empty()) return absl::InvalidArgumentError("no principals");
  return out;
}

absl::StatusOr<Principal> TokenAuthenticator::Authenticate(
    const grpc::ServerContext& context) const {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return absl::UnauthenticatedError("no credentials: send 'authorization: Bearer TOKEN'");
  }
  const absl::string_view value(it->second.data(), it->second.size());
  if (!absl::StartsWith(value, "Bearer ")) {
    return absl::UnauthenticatedError("the authorization header is not 'Bearer TOKEN'");
  }
  Sha256 sha;
  sha.Update(value.substr(7));
  auto principal = by_digest_.find(sha.HexDigest());
  if (principal == by_digest_.end()) return absl::UnauthenticatedError("unknown token");
  return principal->second;
}

absl::StatusOr<Principal> Authorize(const TokenAuthenticator* authenticator,
                                    const grpc::ServerContext* context,
                                    std::initializer_list<Role> allowed, const char* method) {
  if (authenticator == nullptr) return Principal{"", Role::kAdmin};
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
  }
  return security;
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
