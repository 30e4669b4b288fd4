#include "merger/merger.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/dtype.h"
#include "common/file_util.h"
#include "common/safetensors.h"
#include "tests/testing/temp_dir.h"

namespace paft::merger {
namespace {

using ::testing::HasSubstr;

constexpr char kConfig[] = R"({"model_type": "llama", "vocab_size": 4, "hidden_size": 2,
  "intermediate_size": 4, "num_hidden_layers": 1, "num_attention_heads": 1})";

// A model folder with tensors "a" [2] and "b" [1,2] in `dtype`, plus an integer buffer.
void WriteModel(const std::string& dir, DType dtype, std::vector<float> a, std::vector<float> b,
                std::vector<int64_t> b_shape = {1, 2}) {
  ASSERT_TRUE(MakeDirs(dir).ok());
  ASSERT_TRUE(WriteFileAtomic(JoinPath(dir, "config.json"), kConfig).ok());
  auto tensor = [&](const std::string& name, const std::vector<float>& v,
                    std::vector<int64_t> shape) {
    TensorData t{{name, dtype, shape}, std::vector<uint8_t>(v.size() * DTypeSize(dtype))};
    for (size_t i = 0; i < v.size(); ++i) StoreFromFloat(dtype, t.bytes.data(), i, v[i]);
    return t;
  };
  TensorData ids{{"ids", DType::kI64, {2}}, std::vector<uint8_t>(16, 7)};
  ASSERT_TRUE(WriteSafetensors(JoinPath(dir, "model.safetensors"),
                               {tensor("a", a, {2}), tensor("b", b, b_shape), ids})
                  .ok());
}

std::vector<float> Read(const std::string& dir, const std::string& name) {
  auto model = SafetensorsModel::Open(dir);
  EXPECT_TRUE(model.ok()) << model.status();
  auto found = (*model)->Find(name);
  std::vector<float> out(found->second->numel());
  auto data = found->first->Data(*found->second);
  for (size_t i = 0; i < out.size(); ++i) out[i] = LoadAsFloat(found->second->dtype, data.data(), i);
  return out;
}

paft::v1::MergeRequest Request(const testing::TempDir& dir, const std::string& method) {
  paft::v1::MergeRequest r;
  r.set_merge_id("m");
  r.set_base_model(dir.Join("base"));
  for (const char* in : {"x", "y"}) {
    auto* input = r.add_inputs();
    input->set_path(dir.Join(in));
    input->mutable_params()->set_weight(1.0);
  }
  r.mutable_spec()->set_method(method);
  r.set_output_dir(dir.Join("out/merged"));
  return r;
}

TEST(MergerTest, TaskArithmeticOverBf16Files) {
  testing::TempDir dir;
  WriteModel(dir.Join("base"), DType::kBF16, {1, 2}, {0, 0});
  WriteModel(dir.Join("x"), DType::kBF16, {1.5, 2}, {1, 0});
  WriteModel(dir.Join("y"), DType::kBF16, {1, 1}, {0, -0.5});
  MergeProgress progress;
  absl::Status status = RunMerge(Request(dir, "task_arithmetic"), &progress);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(Read(dir.Join("out/merged"), "a"), (std::vector<float>{1.5, 1}));
  EXPECT_EQ(Read(dir.Join("out/merged"), "b"), (std::vector<float>{1, -0.5}));
  EXPECT_TRUE(IsRegularFile(dir.Join("out/merged/config.json")));
  EXPECT_EQ(progress.tensors_done, 3);
  EXPECT_EQ(progress.tensors_total, 3);
  // Integer buffers are copied from the base.
  auto model = SafetensorsModel::Open(dir.Join("out/merged"));
  auto ids = (*model)->Find("ids");
  EXPECT_EQ(ids->first->Data(*ids->second)[0], 7);
}

TEST(MergerTest, OutputDtypeConversion) {
  testing::TempDir dir;
  WriteModel(dir.Join("base"), DType::kF32, {1, 2}, {0, 0});
  WriteModel(dir.Join("x"), DType::kF32, {1, 2}, {0, 0});
  WriteModel(dir.Join("y"), DType::kF32, {1, 2}, {0, 0});
  auto request = Request(dir, "linear");
  request.mutable_spec()->set_normalize(true);
  request.mutable_spec()->set_dtype("float16");
  MergeProgress progress;
  ASSERT_TRUE(RunMerge(request, &progress).ok());
  auto model = SafetensorsModel::Open(dir.Join("out/merged"));
  EXPECT_EQ((*model)->Find("a")->second->dtype, DType::kF16);
  EXPECT_EQ(Read(dir.Join("out/merged"), "a"), (std::vector<float>{1, 2}));
}

TEST(MergerTest, MismatchedShapesFailNamingTheTensorAndLeaveNothing) {
  testing::TempDir dir;
  WriteModel(dir.Join("base"), DType::kF32, {1, 2}, {0, 0});
  WriteModel(dir.Join("x"), DType::kF32, {1, 2}, {0, 0});
  WriteModel(dir.Join("y"), DType::kF32, {1, 2}, {0, 0}, {2, 1});
  MergeProgress progress;
  absl::Status status = RunMerge(Request(dir, "ties"), &progress);
  ASSERT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("tensor 'b'"));
  EXPECT_FALSE(PathExists(dir.Join("out/merged")));
  auto left = ListDir(dir.Join("out"));
  ASSERT_TRUE(left.ok());
  EXPECT_TRUE(left->empty());  // no temp folder either
}

TEST(MergerTest, RefusesExistingOutputAndUnknownMethods) {
  testing::TempDir dir;
  WriteModel(dir.Join("base"), DType::kF32, {1, 2}, {0, 0});
  WriteModel(dir.Join("x"), DType::kF32, {1, 2}, {0, 0});
  WriteModel(dir.Join("y"), DType::kF32, {1, 2}, {0, 0});
  MergeProgress progress;
  EXPECT_EQ(RunMerge(Request(dir, "nope"), &progress).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(MakeDirs(dir.Join("out/merged")).ok());
  EXPECT_EQ(RunMerge(Request(dir, "ties"), &progress).code(), absl::StatusCode::kAlreadyExists);
}

TEST(MergerTest, MissingTensorIsNamed) {
  testing::TempDir dir;
  WriteModel(dir.Join("base"), DType::kF32, {1, 2}, {0, 0});
  WriteModel(dir.Join("x"), DType::kF32, {1, 2}, {0, 0});
  ASSERT_TRUE(MakeDirs(dir.Join("y")).ok());
  ASSERT_TRUE(WriteFileAtomic(dir.Join("y/config.json"), kConfig).ok());
  ASSERT_TRUE(WriteSafetensors(dir.Join("y/model.safetensors"),
                               {TensorData{{"a", DType::kF32, {2}}, std::vector<uint8_t>(8)}})
                  .ok());
  MergeProgress progress;
  absl::Status status = RunMerge(Request(dir, "linear"), &progress);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("missing: [b, ids]"));
}

}  // namespace
}  // namespace paft::merger
