#include <gtest/gtest.h>

#include "common/file_util.h"
#include "common/grpc_status.h"
#include "common/sha256.h"
#include "common/status.h"
#include "tests/testing/temp_dir.h"

namespace paft {
namespace {

TEST(StatusTest, EveryCodeConvertsBothWays) {
  for (int code = 0; code <= 16; ++code) {
    absl::Status status(static_cast<absl::StatusCode>(code), code == 0 ? "" : "why");
    grpc::Status g = ToGrpcStatus(status);
    EXPECT_EQ(static_cast<int>(g.error_code()), code);
    if (code != 0) {
      EXPECT_EQ(g.error_message(), "why");
    }
    EXPECT_EQ(FromGrpcStatus(g), status);
  }
  // Specific pairs the callers rely on.
  EXPECT_EQ(ToGrpcStatus(absl::NotFoundError("x")).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(ToGrpcStatus(absl::FailedPreconditionError("x")).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(ToGrpcStatus(absl::UnavailableError("x")).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST(StatusTest, OutOfRangeGrpcCodeBecomesUnknown) {
  grpc::Status weird(static_cast<grpc::StatusCode>(99), "odd");
  EXPECT_EQ(FromGrpcStatus(weird).code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(FromGrpcStatus(weird).message(), "odd");
}

absl::StatusOr<int> Half(int x) {
  if (x % 2) return absl::InvalidArgumentError("odd");
  return x / 2;
}

absl::StatusOr<int> Quarter(int x) {
  PAFT_ASSIGN_OR_RETURN(int half, Half(x));
  PAFT_ASSIGN_OR_RETURN(int quarter, Half(half));
  return quarter;
}

absl::Status CheckEven(int x) {
  PAFT_RETURN_IF_ERROR(Half(x).status());
  return absl::OkStatus();
}

TEST(StatusTest, Macros) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_EQ(Quarter(6).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(CheckEven(4).ok());
  EXPECT_FALSE(CheckEven(5).ok());
}

TEST(StatusTest, AnnotateKeepsCode) {
  absl::Status s = Annotate(absl::NotFoundError("gone"), "reading f");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "reading f: gone");
  EXPECT_TRUE(Annotate(absl::OkStatus(), "x").ok());
  EXPECT_EQ(ErrnoToStatus(ENOENT, "open").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ErrnoToStatus(ENOSPC, "write").code(), absl::StatusCode::kResourceExhausted);
}

// Sha256File streams 64 KiB at a time (checkpoint files can be tens of GB) and reports the size.
TEST(Sha256Test, FileIsStreamedWithItsSize) {
  testing::TempDir dir;
  ASSERT_TRUE(WriteFileAtomic(dir.Join("a"), std::string(1000000, 'a')).ok());
  int64_t size = 0;
  auto digest = Sha256File(dir.Join("a"), &size);
  ASSERT_TRUE(digest.ok()) << digest.status();
  EXPECT_EQ(*digest, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  EXPECT_EQ(size, 1000000);
  EXPECT_EQ(Sha256File(dir.Join("missing")).status().code(), absl::StatusCode::kNotFound);
}

TEST(Sha256Test, KnownVectors) {
  auto hex = [](absl::string_view s) {
    Sha256 sha;
    sha.Update(s);
    return sha.HexDigest();
  };
  EXPECT_EQ(hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  Sha256 million;  // one million 'a', fed in uneven pieces
  std::string chunk(997, 'a');
  size_t left = 1000000;
  while (left > 0) {
    const size_t n = std::min(left, chunk.size());
    million.Update(chunk.data(), n);
    left -= n;
  }
  EXPECT_EQ(million.HexDigest(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

}  // namespace
}  // namespace paft
