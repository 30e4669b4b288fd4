// Runs the README's demo (examples/run_local_demo.sh) reduced to a few steps: pre-training of the
// base, the PAFT job through paftctl on a local cluster of real processes, the sequential
// baseline, the held-out evaluations and the results table.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "absl/strings/str_replace.h"
#include "common/file_util.h"
#include "nlohmann/json.hpp"
#include "tests/testing/process.h"
#include "tests/testing/temp_dir.h"

namespace paft {
namespace {

using ::testing::HasSubstr;

TEST(DemoTest, ReducedDemoSucceedsAndReportsEveryModel) {
  testing::TempDir dir;
  auto job = ReadFileToString(std::string(PAFT_SOURCE_DIR) + "/examples/paft-job.yaml");
  ASSERT_TRUE(job.ok());
  // The bundled job, shorter: 24 SFT steps instead of 80, 12 DPO steps instead of 60.
  const std::string reduced =
      absl::StrReplaceAll(*job, {{"max_steps: 80", "max_steps: 24"}, {"max_steps: 60", "max_steps: 12"}});
  ASSERT_NE(reduced, *job);
  ASSERT_TRUE(WriteFileAtomic(dir.Join("job.yaml"), reduced).ok());

  std::string output;
  const int code = testing::RunCommand(
      {"/bin/bash", std::string(PAFT_SOURCE_DIR) + "/examples/run_local_demo.sh", PAFT_BUILD_DIR},
      &output,
      {"PAFT_DEMO_ROOT=" + dir.path(), "PAFT_DEMO_PRETRAIN_STEPS=60",
       "PAFT_DEMO_JOB=" + dir.Join("job.yaml")});
  ASSERT_EQ(code, 0) << output;
  EXPECT_THAT(output, HasSubstr("job SUCCEEDED"));
  EXPECT_THAT(output, HasSubstr("| PAFT: SFT ∥ DPO, merged |"));

  std::string run;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    if (entry.path().filename().string().rfind("run-", 0) == 0) run = entry.path().string();
  }
  ASSERT_FALSE(run.empty());
  // `paftctl local down` stopped the local cluster (its record is gone, its logs stay).
  EXPECT_FALSE(PathExists(run + "/cluster/cluster.json"));
  EXPECT_TRUE(IsRegularFile(run + "/cluster/logs/coordinator.log"));
  // The merged model is a loadable HF folder; evaluating it generated greedy answers.
  EXPECT_TRUE(IsRegularFile(run + "/jobs/local-demo/merged/config.json"));
  EXPECT_TRUE(IsRegularFile(run + "/jobs/local-demo/merged/model.safetensors"));
  EXPECT_TRUE(IsRegularFile(run + "/jobs/local-demo/merged/tokenizer.model"));

  auto text = ReadFileToString(run + "/eval/results.json");
  ASSERT_TRUE(text.ok()) << output;
  auto results = nlohmann::json::parse(*text);
  ASSERT_EQ(results.size(), 5u);
  std::map<std::string, nlohmann::json> rows;
  for (const auto& row : results) rows[row["model"]] = row;
  for (const char* name : {"base", "sft", "dpo", "sequential", "paft"}) {
    ASSERT_TRUE(rows.count(name)) << name;
    const auto& row = rows[name];
    for (const char* key : {"sft_exact_match", "preference_reward_accuracy",
                            "preference_prefers_chosen"}) {
      const double v = row[key].get<double>();
      EXPECT_GE(v, 0.0) << name << " " << key;
      EXPECT_LE(v, 1.0) << name << " " << key;
    }
    EXPECT_EQ(row["sft_examples"], 9) << name;
    EXPECT_EQ(row["preference_examples"], 24) << name;
    if (std::string(name) != "base") {
      EXPECT_GT(row["delta_density"].get<double>(), 0.0) << name;
    }
  }
  // Real outcomes, even this short: SFT lowers the held-out SFT loss, DPO makes the policy
  // reward the chosen greetings above the base (whose own rewards are all zero).
  EXPECT_EQ(rows["base"]["preference_reward_accuracy"], 0.0);
  EXPECT_LT(rows["sft"]["sft_loss"].get<double>(), rows["base"]["sft_loss"].get<double>());
  EXPECT_GT(rows["dpo"]["preference_reward_accuracy"].get<double>(), 0.5);
}

}  // namespace
}  // namespace paft
