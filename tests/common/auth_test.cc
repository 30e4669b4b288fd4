#include "common/auth.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <grpcpp/test/server_context_test_spouse.h>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/grpc_server.h"
#include "common/sha256.h"
#include "tests/testing/temp_dir.h"

namespace paft {
namespace {

using ::testing::HasSubstr;

std::string Digest(const std::string& token) {
  Sha256 sha;
  sha.Update(token);
  return sha.HexDigest();
}

TEST(TokenAuthenticatorTest, ParsesPrincipalsAndNamesBadLines) {
  EXPECT_TRUE(TokenAuthenticator::Parse(absl::StrCat("# comment\n\nadmin ops ", Digest("a"),
                                                     "\nclient alice ", Digest("b"), "\n"))
                  .ok());
  auto check = [](const std::string& text, const std::string& expected) {
    auto parsed = TokenAuthenticator::Parse(text);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr(expected)) << text;
  };
  check("admin ops\n", "line 1: expected ROLE IDENTITY SHA256|x509:NAME");
  check(absl::StrCat("root ops ", Digest("a")), "role 'root'");
  check("client alice not-a-digest", "64 hex digits");
  check(absl::StrCat("client alice ", Digest("a"), " names=x*"), "names= is for worker");
  check(absl::StrCat("worker w ", Digest("a"), " nams=x*"), "names=PATTERN");
  check(absl::StrCat("worker w ", Digest("a"), " names="), "names=PATTERN");
  check("worker w x509:", "x509: needs the certificate name");
  check("worker w x509:node-1\nworker v x509:node-1\n", "line 2: duplicate certificate name");
  check(absl::StrCat("client a ", Digest("x"), "\nadmin b ", Digest("x")), "line 2: duplicate");
  check("# only comments\n", "no principals");
  EXPECT_EQ(TokenAuthenticator::Load("/nonexistent/tokens").status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(PrincipalTest, WorkersActAsTheirOwnNamesOnly) {
  Principal worker{"w-sft", Role::kWorker, {}};
  EXPECT_TRUE(worker.MayActAs("w-sft"));
  EXPECT_FALSE(worker.MayActAs("w-align"));
  EXPECT_FALSE(worker.MayActAs(""));
  Principal fleet{"sft-fleet", Role::kWorker, {"gpu-a-*", "spare"}};
  EXPECT_TRUE(fleet.MayActAs("gpu-a-17"));
  EXPECT_TRUE(fleet.MayActAs("spare"));
  EXPECT_FALSE(fleet.MayActAs("sft-fleet"));  // names= replaces the identity
  EXPECT_FALSE(fleet.MayActAs("gpu-b-1"));
  EXPECT_TRUE((Principal{"ops", Role::kAdmin, {}}).MayActAs("anything"));
  EXPECT_FALSE((Principal{"alice", Role::kClient, {}}).MayActAs("alice"));
}

// A call carrying "authorization: <value>".
class CallWith {
 public:
  explicit CallWith(const std::string& value) {
    grpc::testing::ServerContextTestSpouse spouse(&context_);
    if (!value.empty()) spouse.AddClientMetadata("authorization", value);
  }
  const grpc::ServerContext& context() const { return context_; }

 private:
  grpc::ServerContext context_;
};

TEST(TokenAuthenticatorTest, AuthenticatesBearerTokens) {
  auto auth = TokenAuthenticator::Parse(absl::StrCat("worker fleet ", Digest("w"),
                                                     " names=gpu-*\nclient alice ", Digest("a")));
  ASSERT_TRUE(auth.ok()) << auth.status();
  auto fleet = (*auth)->Authenticate(CallWith("Bearer w").context());
  ASSERT_TRUE(fleet.ok()) << fleet.status();
  EXPECT_EQ(fleet->identity, "fleet");
  EXPECT_EQ(fleet->worker_names, (std::vector<std::string>{"gpu-*"}));
  EXPECT_EQ((*auth)->Authenticate(CallWith("Bearer nope").context()).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ((*auth)->Authenticate(CallWith("Basic a").context()).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ((*auth)->Authenticate(CallWith("").context()).status().code(),
            absl::StatusCode::kUnauthenticated);
}

TEST(TokenAuthenticatorTest, ReloadReplacesEveryPrincipalOrNone) {
  testing::TempDir dir;
  const std::string path = dir.Join("tokens");
  ASSERT_TRUE(WriteFileAtomic(path, absl::StrCat("worker old ", Digest("old"), "\n")).ok());
  auto auth = TokenAuthenticator::Load(path);
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_TRUE((*auth)->Authenticate(CallWith("Bearer old").context()).ok());
  // Rotated: the new token works, the old one no longer does.
  ASSERT_TRUE(WriteFileAtomic(path, absl::StrCat("worker new ", Digest("new"), "\n")).ok());
  ASSERT_TRUE((*auth)->Reload().ok());
  EXPECT_TRUE((*auth)->Authenticate(CallWith("Bearer new").context()).ok());
  EXPECT_FALSE((*auth)->Authenticate(CallWith("Bearer old").context()).ok());
  // A broken file changes nothing and says where it is broken.
  ASSERT_TRUE(WriteFileAtomic(path, absl::StrCat("worker a ", Digest("a"), "\nbad line\n")).ok());
  const absl::Status broken = (*auth)->Reload();
  EXPECT_EQ(broken.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(broken.message()), HasSubstr("line 2"));
  EXPECT_TRUE((*auth)->Authenticate(CallWith("Bearer new").context()).ok());
  EXPECT_FALSE((*auth)->Authenticate(CallWith("Bearer a").context()).ok());
  // Certificate principals need a server that verifies client certificates.
  ASSERT_TRUE(WriteFileAtomic(path, "worker node-1 x509:node-1\n").ok());
  auto security = LoadServerSecurity(TlsConfig{"c.pem", "k.pem", ""}, false, path);
  EXPECT_EQ(security.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(security.status().message()), HasSubstr("--tls_client_ca"));
  // ... also when they arrive by a reload: refused, and the principals stay.
  const absl::Status unverified = (*auth)->Reload();
  EXPECT_EQ(unverified.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(unverified.message()), HasSubstr("--tls_client_ca"));
  EXPECT_TRUE((*auth)->Authenticate(CallWith("Bearer new").context()).ok());
  (*auth)->set_client_certificates_verified(true);
  EXPECT_TRUE((*auth)->Reload().ok());
}

TEST(TokenAuthenticatorTest, WithoutAnAuthenticatorEveryoneIsAnAnonymousAdmin) {
  auto who = Authorize(nullptr, nullptr, {Role::kWorker}, "Heartbeat");
  ASSERT_TRUE(who.ok());
  EXPECT_EQ(who->role, Role::kAdmin);
  EXPECT_EQ(std::string(RoleName(Role::kCoordinator)), "coordinator");
}

TEST(TransportTest, ServersNeedTlsOrAnExplicitPlaintext) {
  EXPECT_EQ(CheckTransportChoice(TlsConfig{}, false).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(CheckTransportChoice(TlsConfig{}, true).ok());
  EXPECT_TRUE(CheckTransportChoice(TlsConfig{"c.pem", "k.pem", ""}, false).ok());
  EXPECT_EQ(CheckTransportChoice(TlsConfig{"c.pem", "k.pem", ""}, true).code(),
            absl::StatusCode::kInvalidArgument);
  // Unreadable TLS files are named.
  auto server = StartGrpcServer("127.0.0.1:0", {}, TlsConfig{"/nonexistent.pem", "/k.pem", ""});
  EXPECT_EQ(server.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(server.status().message()), HasSubstr("/k.pem"));
}

}  // namespace
}  // namespace paft
