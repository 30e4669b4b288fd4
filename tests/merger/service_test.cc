#include "merger/service.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>

#include "absl/time/clock.h"
#include "common/file_util.h"
#include "common/safetensors.h"
#include "prometheus/text_serializer.h"
#include "tests/testing/temp_dir.h"

namespace paft::merger {
namespace {

using ::testing::HasSubstr;

void WriteModel(const std::string& dir, float value) {
  ASSERT_TRUE(MakeDirs(dir).ok());
  ASSERT_TRUE(WriteFileAtomic(JoinPath(dir, "config.json"),
                              R"({"model_type": "llama", "vocab_size": 4, "hidden_size": 2, "intermediate_size": 4,
                                  "num_hidden_layers": 1, "num_attention_heads": 1})")
                  .ok());
  std::vector<float> v(6, value);
  TensorData t{{"w", DType::kF32, {2, 3}}, std::vector<uint8_t>(24)};
  std::memcpy(t.bytes.data(), v.data(), 24);
  ASSERT_TRUE(WriteSafetensors(JoinPath(dir, "model.safetensors"), {t}).ok());
}

paft::v1::MergeOperation WaitDone(MergerServiceImpl& service, const std::string& id) {
  paft::v1::GetMergeRequest get;
  get.set_merge_id(id);
  paft::v1::MergeOperation op;
  for (int i = 0; i < 500; ++i) {
    EXPECT_TRUE(service.GetMerge(nullptr, &get, &op).ok());
    if (op.state() != paft::v1::MERGE_STATE_RUNNING) break;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return op;
}

TEST(MergerServiceTest, MergesIdempotentlyAndReportsFailures) {
  testing::TempDir dir;
  WriteModel(dir.Join("base"), 1.0f);
  WriteModel(dir.Join("a"), 3.0f);
  prometheus::Registry registry;
  MergerServiceImpl service(registry);

  paft::v1::MergeRequest request;
  request.set_merge_id("m1");
  request.set_base_model(dir.Join("base"));
  auto* input = request.add_inputs();
  input->set_path(dir.Join("a"));
  input->mutable_params()->set_weight(0.5);
  request.mutable_spec()->set_method("task_arithmetic");
  request.set_output_dir(dir.Join("out"));
  paft::v1::MergeOperation op;
  ASSERT_TRUE(service.Merge(nullptr, &request, &op).ok());
  EXPECT_EQ(op.merge_id(), "m1");
  op = WaitDone(service, "m1");
  ASSERT_EQ(op.state(), paft::v1::MERGE_STATE_SUCCEEDED) << op.error();
  EXPECT_EQ(op.tensors_done(), 1);
  EXPECT_EQ(op.bytes_read(), 48);
  auto merged = SafetensorsModel::Open(dir.Join("out"));
  ASSERT_TRUE(merged.ok());
  float first;
  std::memcpy(&first, (*merged)->Find("w")->first->Data(*(*merged)->Find("w")->second).data(), 4);
  EXPECT_FLOAT_EQ(first, 2.0f);  // 1 + 0.5 * (3 - 1)

  // The same id again returns the finished operation; with another request it is refused.
  paft::v1::MergeOperation again;
  ASSERT_TRUE(service.Merge(nullptr, &request, &again).ok());
  EXPECT_EQ(again.state(), paft::v1::MERGE_STATE_SUCCEEDED);
  request.mutable_spec()->set_method("ties");
  EXPECT_EQ(service.Merge(nullptr, &request, &again).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);

  // A failing merge is reported with its error, and nothing appears at its output.
  request.set_merge_id("m2");
  request.mutable_inputs(0)->set_path(dir.Join("missing"));
  request.set_output_dir(dir.Join("out2"));
  ASSERT_TRUE(service.Merge(nullptr, &request, &op).ok());
  op = WaitDone(service, "m2");
  EXPECT_EQ(op.state(), paft::v1::MERGE_STATE_FAILED);
  EXPECT_THAT(op.error(), HasSubstr("missing"));
  EXPECT_FALSE(PathExists(dir.Join("out2")));

  paft::v1::GetMergeRequest unknown;
  unknown.set_merge_id("nope");
  EXPECT_EQ(service.GetMerge(nullptr, &unknown, &op).error_code(), grpc::StatusCode::NOT_FOUND);
  paft::v1::MergeRequest empty;
  EXPECT_EQ(service.Merge(nullptr, &empty, &op).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  const std::string text = prometheus::TextSerializer().Serialize(registry.Collect());
  EXPECT_THAT(text, HasSubstr("paft_merges_total{method=\"task_arithmetic\",result=\"ok\"} 1"));
  EXPECT_THAT(text, HasSubstr("paft_merges_total{method=\"ties\",result=\"error\"} 1"));
  EXPECT_THAT(text, HasSubstr("paft_merger_bytes_read_total 48"));
}

}  // namespace
}  // namespace paft::merger
