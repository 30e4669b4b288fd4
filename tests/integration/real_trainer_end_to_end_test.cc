// The end-to-end flow with the real trainer (paft-worker train) instead of the placeholder.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/integration/end_to_end_fixture.h"

namespace paft::e2e {
namespace {

class RealTrainerEndToEndTest : public EndToEndTest {
 protected:
  std::vector<std::string> TrainerFlags() override { return {"--threads=1"}; }
  void PrepareBase() override {
    std::string corpus;
    const char* words[] = {"1+1=", "2", "hi", "hello", "go", "away", "what", "is", "the", "cat"};
    for (int i = 0; i < 200; ++i) corpus += std::string(words[(i * 7) % 10]) + " " + words[(i * 3) % 10] + "\n";
    ASSERT_TRUE(WriteFileAtomic(root_ + "/corpus.txt", corpus).ok());
    std::string out;
    ASSERT_EQ(testing::RunCommand({"/usr/bin/spm_train", "--input=" + root_ + "/corpus.txt",
                                   "--model_prefix=" + root_ + "/models/base/tokenizer",
                                   "--vocab_size=40", "--model_type=bpe", "--bos_id=1",
                                   "--eos_id=2", "--unk_id=0"},
                                  &out),
              0)
        << out;
  }
};

TEST_F(RealTrainerEndToEndTest, LoraBranchesTrainAndMerge) {
  std::string output;
  const int code = testing::RunCommand(
      {PAFTCTL, "--coordinator=" + address_, "submit", WriteSpec("real", 2), "--watch"}, &output);
  ASSERT_EQ(code, 0) << output;
  EXPECT_THAT(output, HasSubstr("SUCCEEDED"));
  auto stub = v1::JobService::NewStub(MakeChannel(address_));
  grpc::ClientContext context;
  v1::ListJobsResponse jobs;
  ASSERT_TRUE(stub->ListJobs(&context, {}, &jobs).ok());
  const v1::Job& job = jobs.jobs(0);
  // Checkpoints are PEFT adapters; the merge produced a full model that differs from the base.
  EXPECT_TRUE(IsRegularFile(job.sft().checkpoint_path() + "/adapter_config.json"));
  EXPECT_TRUE(IsRegularFile(job.alignment().checkpoint_path() + "/adapter_model.safetensors"));
  auto base = SafetensorsModel::Open(root_ + "/models/base");
  auto merged = SafetensorsModel::Open(job.merged_model_path());
  ASSERT_TRUE(base.ok() && merged.ok());
  EXPECT_EQ((*merged)->names(), (*base)->names());
  EXPECT_NE(Floats(**merged, "model.layers.0.self_attn.q_proj.weight"),
            Floats(**base, "model.layers.0.self_attn.q_proj.weight"));
  EXPECT_EQ(Floats(**merged, "model.norm.weight"), Floats(**base, "model.norm.weight"));
  EXPECT_TRUE(IsRegularFile(job.merged_model_path() + "/tokenizer.model"));
  EXPECT_GT(job.sft().loss(), 0.0);
}

}  // namespace
}  // namespace paft::e2e
