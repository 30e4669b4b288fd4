// Runs the README's demo (examples/run_local_demo.sh) reduced to a few steps and two seeds, from
// the committed base as users run it: a PAFT job per seed through paftctl on a local cluster of
// real processes (each choosing its merge by its merge search), the sequential baselines, the
// test-split evaluations and the mean ± sd table.
// Then the script that made the committed base, briefly.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/file_util.h"
#include "nlohmann/json.hpp"
#include "tests/testing/process.h"
#include "tests/testing/temp_dir.h"

namespace paft {
namespace {

using ::testing::HasSubstr;

std::string LastCheckpoint(const std::string& branch_dir) {
  std::string last;
  int64_t best = -1;
  for (const auto& e : std::filesystem::directory_iterator(branch_dir + "/checkpoints")) {
    const std::string name = e.path().filename().string();
    if (name.rfind("checkpoint-", 0) != 0) continue;
    const int64_t step = std::stoll(name.substr(11));
    if (step > best) {
      best = step;
      last = e.path().string();
    }
  }
  return last;
}

nlohmann::json Eval(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {std::string(PAFT_BUILD_DIR) + "/worker/paft-worker", "eval",
                                   "--threads=2", "--max_new_tokens=0"};
  argv.insert(argv.end(), args.begin(), args.end());
  std::string out;
  EXPECT_EQ(testing::RunCommand(argv, &out), 0) << out;
  return nlohmann::json::parse(out.substr(out.find('{')));
}

// The job's merge search (examples/paft-job.yaml's merge.search): its table, the merge it chose,
// and the merged model the job wrote, checked from outside.
void CheckMergeSearch(const std::string& job_dir, const std::string& run) {
  auto text = ReadFileToString(job_dir + "/merge-search/table.json");
  ASSERT_TRUE(text.ok()) << text.status();
  const auto table = nlohmann::json::parse(*text);
  ASSERT_EQ(table["candidates"].size(), 10u);  // ties, dare_ties x 2 densities, task_arithmetic; x 2 weights
  ASSERT_EQ(table["references"].size(), 3u);
  const int chosen = table.value("chosen", 0);
  const auto& best = table["candidates"][chosen];
  // The chosen merge scores at least as well on validation as every candidate in the table...
  for (const auto& c : table["candidates"]) {
    EXPECT_GE(best["score"].get<double>(), c["score"].get<double>()) << c["label"];
  }
  // ... and its score is the worse of the two shares of each branch's improvement kept, from the
  // rows' metrics (rule min).
  std::map<std::string, nlohmann::json> refs;
  for (const auto& r : table["references"]) refs[r["label"]] = r["metrics"];
  const double base_nll = refs["base"]["sft_answer_nll"], sft_nll = refs["sft"]["sft_answer_nll"];
  const double base_acc = refs["base"].value("alignment_reward_accuracy", 0.0);
  const double dpo_acc = refs["alignment"]["alignment_reward_accuracy"];
  const double kept_sft = (base_nll - best["metrics"]["sft_answer_nll"].get<double>()) / (base_nll - sft_nll);
  const double kept_dpo =
      (best["metrics"].value("alignment_reward_accuracy", 0.0) - base_acc) / (dpo_acc - base_acc);
  EXPECT_NEAR(best["score"].get<double>(), std::min(kept_sft, kept_dpo), 1e-9);

  // The job's merged model is the chosen candidate: evaluated again here, it gives the row's
  // numbers...
  const std::string merged = job_dir + "/merged";
  const std::string base = std::string(PAFT_SOURCE_DIR) + "/examples/demo-base";
  const auto sft = Eval({"--base=" + merged, "--dataset=" + run + "/data/sft_val.jsonl",
                         "--cache_dir=" + run + "/eval/cache"});
  EXPECT_NEAR(sft["loss"].get<double>(), best["metrics"]["sft_answer_nll"].get<double>(), 1e-5);
  const auto pref = Eval({"--base=" + merged, "--reference=" + base, "--beta=0.5",
                          "--dataset=" + run + "/data/pref_val.jsonl",
                          "--cache_dir=" + run + "/eval/cache"});
  EXPECT_NEAR(pref["reward_accuracy"].get<double>(),
              best["metrics"].value("alignment_reward_accuracy", 0.0), 1e-12);
  // ... and it is, byte for byte, the fixed merge of that candidate (a mergekit config run by
  // paft-merger on the branches' final checkpoints): a search that chose X equals merging X.
  const auto& m = best["merge"];
  const std::string config = absl::StrCat(
      "merge_method: ", m["method"].get<std::string>(), "\nbase_model: ", base, "\nmodels:\n",
      "  - model: ", LastCheckpoint(job_dir + "/sft"), "\n    parameters: {weight: ",
      m["sft"]["weight"].get<double>(), ", density: ", m["sft"]["density"].get<double>(), "}\n",
      "  - model: ", LastCheckpoint(job_dir + "/alignment"), "\n    parameters: {weight: ",
      m["alignment"]["weight"].get<double>(), ", density: ", m["alignment"]["density"].get<double>(),
      "}\n");
  ASSERT_TRUE(WriteFileAtomic(run + "/fixed-merge.yaml", config).ok());
  std::string out;
  ASSERT_EQ(testing::RunCommand({std::string(PAFT_BUILD_DIR) + "/merger/paft-merger", "merge",
                                 run + "/fixed-merge.yaml", run + "/fixed-merge"},
                                &out),
            0)
      << out;
  EXPECT_EQ(*ReadFileToString(run + "/fixed-merge/model.safetensors"),
            *ReadFileToString(merged + "/model.safetensors"));
}

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
      {"PAFT_DEMO_ROOT=" + dir.path(), "PAFT_DEMO_SEEDS=1 2", "PAFT_DEMO_JOB=" + dir.Join("job.yaml")});
  ASSERT_EQ(code, 0) << output;
  EXPECT_THAT(output, HasSubstr("the committed base model examples/demo-base"));
  EXPECT_THAT(output, HasSubstr("demo: machine: "));
  EXPECT_THAT(output, HasSubstr("job SUCCEEDED"));
  EXPECT_THAT(output, HasSubstr("| PAFT: SFT with L1 ∥ DPO merged | 2 |"));
  EXPECT_THAT(output, HasSubstr("exact_match sequential vs sft"));

  std::string run;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    if (entry.path().filename().string().rfind("run-", 0) == 0) run = entry.path().string();
  }
  ASSERT_FALSE(run.empty());
  // `paftctl local down` stopped the local cluster (its record is gone, its logs stay).
  EXPECT_FALSE(PathExists(run + "/cluster/cluster.json"));
  EXPECT_TRUE(IsRegularFile(run + "/cluster/logs/coordinator.log"));
  // One job per seed; each merged model is a loadable HF folder, evaluated by generating.
  for (const char* seed : {"seed-1", "seed-2"}) {
    EXPECT_TRUE(IsRegularFile(run + "/jobs/" + seed + "/merged/config.json")) << seed;
    EXPECT_TRUE(IsRegularFile(run + "/jobs/" + seed + "/merged/model.safetensors")) << seed;
    EXPECT_TRUE(IsRegularFile(run + "/jobs/" + seed + "/merged/tokenizer.model")) << seed;
  }

  CheckMergeSearch(run + "/jobs/seed-1", run);

  auto text = ReadFileToString(run + "/eval/results.json");
  ASSERT_TRUE(text.ok()) << output;
  auto results = nlohmann::json::parse(*text);
  EXPECT_EQ(results["sft_examples"], 100);  // the test splits
  EXPECT_EQ(results["preference_examples"], 120);
  ASSERT_EQ(results["rows"].size(), 7u);
  std::map<std::string, nlohmann::json> rows;
  for (const auto& row : results["rows"]) rows[row["model"]] = row;
  for (const char* name : {"base", "sft", "sft_l1", "dpo", "sequential", "parallel", "paft"}) {
    ASSERT_TRUE(rows.count(name)) << name;
    const auto& metrics = rows[name]["metrics"];
    EXPECT_EQ(rows[name]["n"], std::string(name) == "base" ? 1 : 2) << name;
    for (const char* key : {"exact_match", "reward_accuracy", "prefers_chosen"}) {
      const double v = metrics[key]["mean"].get<double>();
      EXPECT_GE(v, 0.0) << name << " " << key;
      EXPECT_LE(v, 1.0) << name << " " << key;
    }
    if (std::string(name) != "base") {
      EXPECT_GT(metrics["delta_density"]["mean"].get<double>(), 0.0) << name;
      EXPECT_EQ(metrics["exact_match"]["values"].size(), 2u) << name;
    }
  }
  EXPECT_TRUE(rows["sft"]["metrics"].contains("factor_density"));  // an adapter
  EXPECT_EQ(results["differences"].size(), 8u);
  // Real outcomes, even this short: SFT lowers the test SFT loss, DPO makes the policy reward
  // the chosen greetings above the base (whose own rewards are all zero).
  EXPECT_EQ(rows["base"]["metrics"]["reward_accuracy"]["mean"], 0.0);
  EXPECT_LT(rows["sft"]["metrics"]["sft_nll"]["mean"].get<double>(),
            rows["base"]["metrics"]["sft_nll"]["mean"].get<double>());
  EXPECT_GT(rows["dpo"]["metrics"]["reward_accuracy"]["mean"].get<double>(), 0.5);
}

// examples/make_demo_base.sh, which made examples/demo-base, makes a model folder of the same
// architecture and tokenizer kind (a few steps here; its weights depend on the CPU's kernels).
TEST(DemoTest, TheBaseScriptMakesAModelOfTheCommittedShape) {
  testing::TempDir dir;
  std::string output;
  const int code = testing::RunCommand(
      {"/bin/bash", std::string(PAFT_SOURCE_DIR) + "/examples/make_demo_base.sh",
       dir.Join("base"), PAFT_BUILD_DIR},
      &output, {"PAFT_DEMO_PRETRAIN_STEPS=10"});
  ASSERT_EQ(code, 0) << output;
  EXPECT_THAT(output, HasSubstr("pre-training step 10/10"));
  const std::string committed = std::string(PAFT_SOURCE_DIR) + "/examples/demo-base/";
  EXPECT_EQ(*ReadFileToString(dir.Join("base/config.json")),
            *ReadFileToString(committed + "config.json"));
  // The same tensors (names, shapes, fp32), other values.
  EXPECT_EQ(std::filesystem::file_size(dir.Join("base/model.safetensors")),
            std::filesystem::file_size(committed + "model.safetensors"));
  EXPECT_GT(std::filesystem::file_size(dir.Join("base/tokenizer.model")), 0u);
  EXPECT_FALSE(PathExists(dir.Join("base.work")));
}

}  // namespace
}  // namespace paft
