#include "merger/merger.h"

#include <gmock/gmock.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <tuple>

#include "common/dtype.h"
#include "common/file_util.h"
#include "common/safetensors.h"
#include "tests/testing/process.h"
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
  auto bad_density = Request(dir, "ties");
  bad_density.mutable_inputs(1)->mutable_params()->set_density(1.5);
  EXPECT_EQ(RunMerge(bad_density, &progress).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(MakeDirs(dir.Join("out/merged")).ok());
  EXPECT_EQ(RunMerge(Request(dir, "ties"), &progress).code(), absl::StatusCode::kAlreadyExists);
}

// A base with one attention projection, and helpers for LoRA adapters of it.
constexpr char kQ[] = "model.layers.0.self_attn.q_proj.weight";

void WriteFloatModel(const std::string& dir, const std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>>& tensors) {
  ASSERT_TRUE(MakeDirs(dir).ok());
  ASSERT_TRUE(WriteFileAtomic(JoinPath(dir, "config.json"), kConfig).ok());
  std::vector<TensorData> data;
  for (const auto& [name, t] : tensors) {
    TensorData d{{name, DType::kF32, t.first}, std::vector<uint8_t>(t.second.size() * 4)};
    std::memcpy(d.bytes.data(), t.second.data(), d.bytes.size());
    data.push_back(std::move(d));
  }
  ASSERT_TRUE(WriteSafetensors(JoinPath(dir, "model.safetensors"), data).ok());
}

std::vector<float> Ramp(int n, float scale, float offset) {
  std::vector<float> v(n);
  for (int i = 0; i < n; ++i) v[i] = offset + scale * std::sin(1.7f * i + offset);
  return v;
}

TEST(MergerTest, AdapterInputEqualsTheEquivalentFullModel) {
  testing::TempDir dir;
  const std::vector<float> q = Ramp(12, 0.5f, 0.1f), norm = Ramp(3, 0.2f, 1.0f);
  WriteFloatModel(dir.Join("base"), {{kQ, {{4, 3}, q}}, {"model.norm.weight", {{3}, norm}}});
  // LoRA r=2, alpha=4 -> scale 2; delta = 2 * B[4x2] @ A[2x3].
  const std::vector<float> a = Ramp(6, 0.3f, 0.7f), b = Ramp(8, 0.4f, -0.2f);
  ASSERT_TRUE(MakeDirs(dir.Join("adapter")).ok());
  ASSERT_TRUE(WriteFileAtomic(dir.Join("adapter/adapter_config.json"),
                              R"({"peft_type": "LORA", "r": 2, "lora_alpha": 4,
                                  "target_modules": ["q_proj"]})").ok());
  std::vector<TensorData> lora;
  for (const auto& [name, shape, values] :
       {std::tuple<std::string, std::vector<int64_t>, std::vector<float>>{
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", {2, 3}, a},
        {"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", {4, 2}, b}}) {
    TensorData d{{name, DType::kF32, shape}, std::vector<uint8_t>(values.size() * 4)};
    std::memcpy(d.bytes.data(), values.data(), d.bytes.size());
    lora.push_back(std::move(d));
  }
  ASSERT_TRUE(WriteSafetensors(dir.Join("adapter/adapter_model.safetensors"), lora).ok());
  // The equivalent full model, computed here by hand.
  std::vector<float> full_q(12);
  for (int o = 0; o < 4; ++o) {
    for (int i = 0; i < 3; ++i) {
      double acc = 0;
      for (int k = 0; k < 2; ++k) acc += b[o * 2 + k] * a[k * 3 + i];
      full_q[o * 3 + i] = static_cast<float>(q[o * 3 + i] + 2.0 * acc);
    }
  }
  WriteFloatModel(dir.Join("full"), {{kQ, {{4, 3}, full_q}}, {"model.norm.weight", {{3}, norm}}});
  WriteFloatModel(dir.Join("other"), {{kQ, {{4, 3}, Ramp(12, 0.6f, 0.3f)}},
                                      {"model.norm.weight", {{3}, Ramp(3, 0.1f, 0.9f)}}});
  for (const char* method : {"task_arithmetic", "ties", "linear"}) {
    std::vector<std::vector<float>> results;
    for (const char* first : {"adapter", "full"}) {
      paft::v1::MergeRequest r;
      r.set_base_model(dir.Join("base"));
      for (const std::string in : {first, "other"}) {
        auto* input = r.add_inputs();
        input->set_path(dir.Join(in));
        input->mutable_params()->set_weight(0.7);
        input->mutable_params()->set_density(0.5);
      }
      r.mutable_spec()->set_method(method);
      r.set_output_dir(dir.Join(std::string("out-") + method + "-" + first));
      MergeProgress progress;
      absl::Status status = RunMerge(r, &progress);
      ASSERT_TRUE(status.ok()) << status;
      results.push_back(Read(r.output_dir(), kQ));
      auto n = Read(r.output_dir(), "model.norm.weight");
      results.back().insert(results.back().end(), n.begin(), n.end());
    }
    ASSERT_EQ(results[0].size(), results[1].size());
    for (size_t j = 0; j < results[0].size(); ++j) {
      EXPECT_NEAR(results[0][j], results[1][j], 1e-5) << method << " [" << j << "]";
    }
  }
}

TEST(MergerTest, BadAdaptersAreRefusedNamingTheTensor) {
  testing::TempDir dir;
  WriteFloatModel(dir.Join("base"), {{kQ, {{4, 3}, Ramp(12, 1, 0)}}});
  WriteFloatModel(dir.Join("other"), {{kQ, {{4, 3}, Ramp(12, 1, 1)}}});
  ASSERT_TRUE(MakeDirs(dir.Join("adapter")).ok());
  ASSERT_TRUE(WriteFileAtomic(dir.Join("adapter/adapter_config.json"),
                              R"({"r": 2, "lora_alpha": 4})").ok());
  auto write = [&](const std::string& key_a, std::vector<int64_t> shape_a) {
    ASSERT_TRUE(WriteSafetensors(
        dir.Join("adapter/adapter_model.safetensors"),
        {TensorData{{key_a, DType::kF32, shape_a},
                    std::vector<uint8_t>(4 * shape_a[0] * shape_a[1])},
         TensorData{{"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
                     DType::kF32, {4, 2}}, std::vector<uint8_t>(32)}}).ok());
  };
  paft::v1::MergeRequest r;
  r.set_base_model(dir.Join("base"));
  r.add_inputs()->set_path(dir.Join("adapter"));
  r.mutable_inputs(0)->mutable_params()->set_weight(1);
  r.mutable_spec()->set_method("task_arithmetic");
  r.set_output_dir(dir.Join("out"));
  MergeProgress progress;
  write("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", {2, 5});
  absl::Status status = RunMerge(r, &progress);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr(kQ));
  write("base_model.model.model.layers.0.mlp.fc9.lora_A.weight", {2, 3});
  status = RunMerge(r, &progress);
  EXPECT_THAT(std::string(status.message()), HasSubstr("only one of lora_A / lora_B"));
  EXPECT_FALSE(PathExists(dir.Join("out")));
}

TEST(MergerTest, ShardedOutputAndThreadCountDoNotChangeTheResult) {
  testing::TempDir dir;
  std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>> base, x, y;
  for (int t = 0; t < 7; ++t) {
    const std::string name = "t" + std::to_string(t);
    base[name] = {{64}, Ramp(64, 1.0f, t * 0.1f)};
    x[name] = {{64}, Ramp(64, 1.1f, t * 0.1f + 0.05f)};
    y[name] = {{64}, Ramp(64, 0.9f, t * 0.1f - 0.05f)};
  }
  WriteFloatModel(dir.Join("base"), base);
  WriteFloatModel(dir.Join("x"), x);
  WriteFloatModel(dir.Join("y"), y);
  auto request = Request(dir, "dare_ties");
  request.mutable_spec()->set_seed(5);
  request.mutable_inputs(0)->mutable_params()->set_density(0.4);
  request.mutable_inputs(1)->mutable_params()->set_density(0.6);
  request.set_threads(1);
  request.set_output_dir(dir.Join("single"));
  MergeProgress p1;
  ASSERT_TRUE(RunMerge(request, &p1).ok());
  request.set_threads(4);
  request.set_max_shard_bytes(600);  // 2 tensors of 256 bytes a shard
  request.set_output_dir(dir.Join("sharded"));
  MergeProgress p2;
  ASSERT_TRUE(RunMerge(request, &p2).ok());
  EXPECT_TRUE(IsRegularFile(dir.Join("sharded/model.safetensors.index.json")));
  EXPECT_TRUE(IsRegularFile(dir.Join("sharded/model-00004-of-00004.safetensors")));
  EXPECT_FALSE(PathExists(dir.Join("sharded/model.safetensors")));
  for (int t = 0; t < 7; ++t) {
    const std::string name = "t" + std::to_string(t);
    EXPECT_EQ(Read(dir.Join("single"), name), Read(dir.Join("sharded"), name)) << name;
  }
  EXPECT_EQ(p2.tensors_done, 7);
  EXPECT_GT(p2.bytes_read, 3 * 7 * 256 - 1);
}

TEST(MergerTest, UnsupportedDtypesAreNamed) {
  testing::TempDir dir;
  for (const char* m : {"base", "x", "y"}) {
    ASSERT_TRUE(MakeDirs(dir.Join(m)).ok());
    ASSERT_TRUE(WriteFileAtomic(dir.Join(std::string(m) + "/config.json"), kConfig).ok());
    ASSERT_TRUE(WriteSafetensors(dir.Join(std::string(m) + "/model.safetensors"),
                                 {TensorData{{"scales", DType::kF8E4M3, {4}},
                                             std::vector<uint8_t>(4)}})
                    .ok());
  }
  MergeProgress progress;
  absl::Status status = RunMerge(Request(dir, "ties"), &progress);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(status.message()), HasSubstr("tensor 'scales': dtype F8_E4M3"));
  // A float tensor in one input where the base has integers cannot be merged either.
  ASSERT_TRUE(WriteSafetensors(dir.Join("base/model.safetensors"),
                               {TensorData{{"scales", DType::kI32, {4}}, std::vector<uint8_t>(16)}})
                  .ok());
  ASSERT_TRUE(WriteSafetensors(dir.Join("x/model.safetensors"),
                               {TensorData{{"scales", DType::kF32, {4}}, std::vector<uint8_t>(16)}})
                  .ok());
  status = RunMerge(Request(dir, "ties"), &progress);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("tensor 'scales': dtype F32"));
  EXPECT_FALSE(PathExists(dir.Join("out/merged")));
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

namespace paft::merger {
namespace {

// `paft-merger merge --request=FILE`: the request as JSON, run as the service runs it (what the
// merge search uses), equal to RunMerge's result; a bad file is refused naming it.
TEST(MergerCliTest, ARequestFileMergesAsTheServiceDoes) {
  testing::TempDir dir;
  WriteModel(dir.Join("base"), DType::kF32, {1, 2}, {0, 0});
  WriteModel(dir.Join("x"), DType::kF32, {1.5, 2}, {1, 0});
  WriteModel(dir.Join("y"), DType::kF32, {1, 1}, {0, -0.5});
  auto request = Request(dir, "ties");
  for (auto& input : *request.mutable_inputs()) input.mutable_params()->set_density(0.5);
  MergeProgress progress;
  ASSERT_TRUE(RunMerge(request, &progress).ok());
  request.set_output_dir(dir.Join("out/cli"));
  std::string json;
  ASSERT_TRUE(google::protobuf::util::MessageToJsonString(request, &json).ok());
  ASSERT_TRUE(WriteFileAtomic(dir.Join("request.json"), json).ok());
  std::string out;
  ASSERT_EQ(testing::RunCommand({PAFT_MERGER, "merge", "--request=" + dir.Join("request.json")}, &out),
            0)
      << out;
  EXPECT_THAT(out, HasSubstr("into " + dir.Join("out/cli")));
  EXPECT_EQ(*ReadFileToString(dir.Join("out/cli/model.safetensors")),
            *ReadFileToString(dir.Join("out/merged/model.safetensors")));

  ASSERT_TRUE(WriteFileAtomic(dir.Join("bad.json"), R"({"mergeId": "m", "colour": 1})").ok());
  EXPECT_EQ(testing::RunCommand({PAFT_MERGER, "merge", "--request=" + dir.Join("bad.json")}, &out), 2);
  EXPECT_THAT(out, HasSubstr(dir.Join("bad.json")));
  // A request file and CONFIG OUT are two forms, not one.
  EXPECT_EQ(testing::RunCommand({PAFT_MERGER, "merge", "--request=" + dir.Join("request.json"),
                                 "config.yaml", "out"},
                                &out),
            2);
}

}  // namespace
}  // namespace paft::merger
