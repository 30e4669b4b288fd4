#include "common/auth.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "common/grpc_server.h"
#include "common/sha256.h"

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
  check("admin ops\n", "line 1: expected ROLE IDENTITY SHA256");
  check(absl::StrCat("root ops ", Digest("a")), "role 'root'");
  check("client alice not-a-digest", "64 hex digits");
  check(absl::StrCat("client a ", Digest("x"), "\nadmin b ", Digest("x")), "line 2: duplicate");
  check("# only comments\n", "no principals");
  EXPECT_EQ(TokenAuthenticator::Load("/nonexistent/tokens").status().code(),
            absl::StatusCode::kFailedPrecondition);
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
