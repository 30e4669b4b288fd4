#include "common/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>

#include "common/file_util.h"
#include "nlohmann/json.hpp"
#include "tests/testing/temp_dir.h"

namespace paft {
namespace {

using ::testing::HasSubstr;

// Builds a safetensors image by hand (independent of the writer under test).
std::string Image(const std::string& header_json, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header_json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header_json + data;
}

TensorData Make(const std::string& name, DType dtype, std::vector<int64_t> shape) {
  TensorData t;
  t.spec = {name, dtype, shape};
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  t.bytes.resize(static_cast<size_t>(n) * DTypeSize(dtype));
  for (size_t i = 0; i < t.bytes.size(); ++i) t.bytes[i] = static_cast<uint8_t>(i * 7 + name.size());
  return t;
}

TEST(SafetensorsTest, RoundTripsEveryDType) {
  testing::TempDir dir;
  std::vector<TensorData> tensors;
  const std::vector<DType> dtypes = {DType::kBool, DType::kU8,  DType::kI8,    DType::kF8E4M3,
                                     DType::kF8E5M2, DType::kI16, DType::kU16, DType::kF16,
                                     DType::kBF16, DType::kI32, DType::kU32,  DType::kF32,
                                     DType::kF64,  DType::kI64, DType::kU64};
  for (size_t i = 0; i < dtypes.size(); ++i) {
    tensors.push_back(Make("t" + std::to_string(i), dtypes[i], {2, static_cast<int64_t>(i + 1)}));
  }
  tensors.push_back(Make("scalar", DType::kF32, {}));
  tensors.push_back(Make("empty", DType::kF32, {0, 3}));
  const std::string path = dir.Join("m.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, tensors, {{"format", "pt"}}).ok());

  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  ASSERT_EQ((*file)->tensors().size(), tensors.size());
  for (const TensorData& t : tensors) {
    const TensorInfo* info = (*file)->Find(t.spec.name);
    ASSERT_NE(info, nullptr) << t.spec.name;
    EXPECT_EQ(info->dtype, t.spec.dtype);
    EXPECT_EQ(info->shape, t.spec.shape);
    auto data = (*file)->Data(*info);
    ASSERT_EQ(data.size(), t.bytes.size());
    EXPECT_EQ(std::memcmp(data.data(), t.bytes.data(), data.size()), 0) << t.spec.name;
  }
  // The data section starts 8-byte aligned, as the reference writer does.
  auto bytes = ReadFileToString(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>((*bytes)[i]);
  EXPECT_EQ((8 + n) % 8, 0u);
}

TEST(SafetensorsTest, ParsesAHandBuiltFile) {
  // Two F32 values and one BF16 value 1.0 (0x3f80), written by hand.
  float a[2] = {1.5f, -2.0f};
  std::string data(reinterpret_cast<const char*>(a), 8);
  data += std::string("\x80\x3f", 2);
  auto header = ParseSafetensors(Image(
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"BF16","shape":[1,1],"data_offsets":[8,10]},"__metadata__":{"k":"v"}})",
      data));
  ASSERT_TRUE(header.ok()) << header.status();
  ASSERT_EQ(header->tensors.size(), 2u);
  EXPECT_EQ(header->tensors[1].name, "b");
  EXPECT_EQ(header->metadata.at("k"), "v");
  EXPECT_FLOAT_EQ(Bf16ToFloat(0x3f80), 1.0f);
}

struct MalformedCase {
  const char* name;
  std::string bytes;
  absl::StatusCode code;
  const char* message;
};

class MalformedTest : public ::testing::TestWithParam<MalformedCase> {};

TEST_P(MalformedTest, IsRejectedWithAClearError) {
  const MalformedCase& c = GetParam();
  auto header = ParseSafetensors(c.bytes);
  ASSERT_FALSE(header.ok()) << c.name;
  EXPECT_EQ(header.status().code(), c.code) << header.status();
  EXPECT_THAT(std::string(header.status().message()), HasSubstr(c.message));
}

const std::string kTwoF32 = std::string(8, '\0');

INSTANTIATE_TEST_SUITE_P(
    Cases, MalformedTest,
    ::testing::Values(
        MalformedCase{"shorter than 8 bytes", "abc", absl::StatusCode::kDataLoss,
                      "shorter than the 8-byte header length"},
        MalformedCase{"header length past end", std::string("\xff\x00\x00\x00\x00\x00\x00\x00", 8) + "{}",
                      absl::StatusCode::kDataLoss, "runs past the end of the file"},
        MalformedCase{"huge header length", std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8),
                      absl::StatusCode::kInvalidArgument, "exceeds the limit"},
        MalformedCase{"bad JSON", Image("{\"a\":", ""), absl::StatusCode::kInvalidArgument,
                      "not valid JSON"},
        MalformedCase{"not an object", Image("[1,2]", ""), absl::StatusCode::kInvalidArgument,
                      "does not start with '{'"},
        MalformedCase{"unknown dtype",
                      Image(R"({"w":{"dtype":"F7","shape":[2],"data_offsets":[0,8]}})", kTwoF32),
                      absl::StatusCode::kInvalidArgument, "tensor 'w': unknown dtype 'F7'"},
        MalformedCase{"size does not match shape",
                      Image(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", kTwoF32),
                      absl::StatusCode::kInvalidArgument, "tensor 'w': holds 8 bytes but shape [3]"},
        MalformedCase{"offsets out of range",
                      Image(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", kTwoF32),
                      absl::StatusCode::kDataLoss, "tensor 'w' ends at byte 16 past the end"},
        MalformedCase{"offsets overlapping",
                      Image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                            R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                            kTwoF32),
                      absl::StatusCode::kInvalidArgument, "tensor 'b' overlaps"},
        MalformedCase{"hole between tensors",
                      Image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                            R"("b":{"dtype":"U8","shape":[2],"data_offsets":[6,8]}})",
                            kTwoF32),
                      absl::StatusCode::kInvalidArgument, "hole in the data section before tensor 'b'"},
        MalformedCase{"trailing bytes",
                      Image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", kTwoF32),
                      absl::StatusCode::kInvalidArgument, "4 trailing bytes"},
        MalformedCase{"end before begin",
                      Image(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", kTwoF32),
                      absl::StatusCode::kInvalidArgument, "tensor 'a': data_offsets end 0 < begin 8"},
        MalformedCase{"negative shape",
                      Image(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", kTwoF32),
                      absl::StatusCode::kInvalidArgument, "tensor 'a': shape entries"},
        MalformedCase{"missing offsets",
                      Image(R"({"a":{"dtype":"F32","shape":[2]}})", kTwoF32),
                      absl::StatusCode::kInvalidArgument, "tensor 'a': 'data_offsets'"},
        MalformedCase{"shape overflow",
                      Image(R"({"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})",
                            kTwoF32),
                      absl::StatusCode::kInvalidArgument, "tensor 'a': shape overflows"},
        MalformedCase{"duplicate tensor",
                      Image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                            R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                            kTwoF32),
                      absl::StatusCode::kInvalidArgument, "tensor 'a' appears twice"},
        MalformedCase{"metadata not strings",
                      Image(R"({"__metadata__":{"k":1}})", ""), absl::StatusCode::kInvalidArgument,
                      "__metadata__ value of 'k'"}),
    [](const ::testing::TestParamInfo<MalformedCase>& info) {
      std::string name;
      for (char c : std::string(info.param.name)) name += std::isalnum(c) ? c : '_';
      return name;
    });

TEST(SafetensorsTest, TruncatedFileIsRejectedOnOpen) {
  testing::TempDir dir;
  const std::string path = dir.Join("m.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {Make("w", DType::kF32, {64})}).ok());
  auto bytes = ReadFileToString(path);
  ASSERT_TRUE(WriteFileAtomic(path, bytes->substr(0, bytes->size() - 10)).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(file.status().message()), HasSubstr(path));
  EXPECT_THAT(std::string(file.status().message()), HasSubstr("tensor 'w'"));
}

TEST(SafetensorsTest, EveryTruncationOfAValidFileFailsCleanly) {
  testing::TempDir dir;
  const std::string path = dir.Join("m.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {Make("a", DType::kBF16, {3}), Make("b", DType::kI64, {2})}).ok());
  auto bytes = ReadFileToString(path);
  for (size_t n = 0; n < bytes->size(); ++n) {
    EXPECT_FALSE(ParseSafetensors(bytes->substr(0, n)).ok()) << "prefix of " << n << " bytes";
  }
  EXPECT_TRUE(ParseSafetensors(*bytes).ok());
}

TEST(SafetensorsTest, WriterIsAtomicAndChecksSizes) {
  testing::TempDir dir;
  const std::string path = dir.Join("m.safetensors");
  {
    auto writer = SafetensorsWriter::Create(path, {{"a", DType::kF32, {2}}, {"b", DType::kF32, {1}}});
    ASSERT_TRUE(writer.ok());
    std::vector<uint8_t> wrong(4);
    EXPECT_EQ((*writer)->Append(wrong).code(), absl::StatusCode::kInvalidArgument);
    std::vector<uint8_t> right(8);
    ASSERT_TRUE((*writer)->Append(right).ok());
    EXPECT_EQ((*writer)->Commit().code(), absl::StatusCode::kFailedPrecondition);
    // Destroyed uncommitted: nothing appears at the path, no temp file is left.
  }
  EXPECT_FALSE(PathExists(path));
  auto names = ListDir(dir.path());
  ASSERT_TRUE(names.ok());
  EXPECT_TRUE(names->empty()) << (*names)[0];
  EXPECT_EQ(SafetensorsWriter::Create(path, {{"a", DType::kF32, {1}}, {"a", DType::kF32, {1}}})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SafetensorsModelTest, OpensShardedFolders) {
  testing::TempDir dir;
  ASSERT_TRUE(WriteSafetensors(dir.Join("model-00001-of-00002.safetensors"),
                               {Make("x", DType::kF32, {2})}).ok());
  ASSERT_TRUE(WriteSafetensors(dir.Join("model-00002-of-00002.safetensors"),
                               {Make("y", DType::kBF16, {3}), Make("z", DType::kF16, {1})}).ok());
  nlohmann::json index = {{"metadata", {{"total_size", 16}}},
                          {"weight_map",
                           {{"x", "model-00001-of-00002.safetensors"},
                            {"y", "model-00002-of-00002.safetensors"},
                            {"z", "model-00002-of-00002.safetensors"}}}};
  ASSERT_TRUE(WriteFileAtomic(dir.Join("model.safetensors.index.json"), index.dump()).ok());
  auto model = SafetensorsModel::Open(dir.path());
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->names(), (std::vector<std::string>{"x", "y", "z"}));
  EXPECT_EQ((*model)->files().size(), 2u);
  auto y = (*model)->Find("y");
  ASSERT_TRUE(y.ok());
  EXPECT_EQ(y->second->dtype, DType::kBF16);
  EXPECT_EQ((*model)->total_bytes(), 8u + 6u + 2u);
  auto missing = (*model)->Find("nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("tensor 'nope'"));

  // An index naming a tensor its shard lacks is refused, naming the tensor.
  index["weight_map"]["w"] = "model-00001-of-00002.safetensors";
  ASSERT_TRUE(WriteFileAtomic(dir.Join("model.safetensors.index.json"), index.dump()).ok());
  auto bad = SafetensorsModel::Open(dir.path());
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("tensor 'w'"));
  // A shard path escaping the folder is refused.
  index["weight_map"]["w"] = "../evil.safetensors";
  ASSERT_TRUE(WriteFileAtomic(dir.Join("model.safetensors.index.json"), index.dump()).ok());
  EXPECT_EQ(SafetensorsModel::Open(dir.path()).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SafetensorsModelTest, MissingWeightsAreNotFound) {
  testing::TempDir dir;
  auto model = SafetensorsModel::Open(dir.path());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace paft
