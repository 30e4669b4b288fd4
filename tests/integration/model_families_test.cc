// Real model families through the real binary: a Llama-3.1-style checkpoint (llama3 RoPE scaling,
// eos token lists, its generation_config.json) evaluated by `paft-worker eval` on pre-tokenized
// JSONL gives per-example log-probs equal to an independent fp64 implementation
// (tests/testing/reference_decoder) within 1e-4; configs that paft does not compute exactly are
// refused by `paft-worker eval` and `paft-worker train` as user errors (exit 2) that name the key
// and write nothing.
#include <gmock/gmock.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/safetensors.h"
#include "nlohmann/json.hpp"
#include "paft/v1/worker.pb.h"
#include "tests/testing/process.h"
#include "tests/testing/reference_decoder.h"
#include "tests/testing/temp_dir.h"

namespace paft {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

// meta-llama/Llama-3.1-8B-Instruct's config.json with the sizes (and token ids) scaled down.
json Llama31Config() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "bos_token_id": 1, "eos_token_id": [2, 5, 6], "hidden_act": "silu", "hidden_size": 32,
    "initializer_range": 0.02, "intermediate_size": 56, "max_position_embeddings": 131072,
    "mlp_bias": false, "model_type": "llama", "num_attention_heads": 4, "num_hidden_layers": 2,
    "num_key_value_heads": 2, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "float32",
    "transformers_version": "4.42.3", "use_cache": true, "vocab_size": 64})");
}

// Writes config.json and an fp32 model.safetensors of random weights in Hugging Face's names.
void WriteRandomModel(const std::string& folder, const json& config, uint32_t seed) {
  ASSERT_TRUE(MakeDirs(folder).ok());
  const int64_t V = config["vocab_size"], H = config["hidden_size"],
                I = config["intermediate_size"], L = config["num_hidden_layers"],
                nh = config["num_attention_heads"], nkv = config["num_key_value_heads"],
                hd = H / nh;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<TensorData> tensors;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float scale, float offset) {
    TensorData t;
    t.spec = {name, DType::kF32, shape};
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    t.bytes.resize(4 * n);
    for (int64_t i = 0; i < n; ++i) {
      const float v = offset + scale * normal(rng);
      std::memcpy(&t.bytes[4 * i], &v, 4);
    }
    tensors.push_back(std::move(t));
  };
  add("model.embed_tokens.weight", {V, H}, 1.0f, 0);
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    add(p + "input_layernorm.weight", {H}, 0.1f, 1);
    add(p + "post_attention_layernorm.weight", {H}, 0.1f, 1);
    add(p + "self_attn.q_proj.weight", {nh * hd, H}, 0.5f, 0);
    add(p + "self_attn.k_proj.weight", {nkv * hd, H}, 0.5f, 0);
    add(p + "self_attn.v_proj.weight", {nkv * hd, H}, 0.2f, 0);
    add(p + "self_attn.o_proj.weight", {H, nh * hd}, 0.2f, 0);
    add(p + "mlp.gate_proj.weight", {I, H}, 0.2f, 0);
    add(p + "mlp.up_proj.weight", {I, H}, 0.2f, 0);
    add(p + "mlp.down_proj.weight", {H, I}, 0.2f, 0);
  }
  add("model.norm.weight", {H}, 0.1f, 1);
  add("lm_head.weight", {V, H}, 0.3f, 0);
  ASSERT_TRUE(WriteSafetensors(JoinPath(folder, "model.safetensors"), tensors).ok());
  ASSERT_TRUE(WriteFileAtomic(JoinPath(folder, "config.json"), config.dump(2)).ok());
}

// The JSON report `paft-worker eval` printed (the output's last top-level object).
json Report(const std::string& output) {
  const size_t start = output.rfind("\n{\n");
  return json::parse(start == std::string::npos ? output : output.substr(start + 1), nullptr,
                     false);
}

class ModelFamiliesEvalTest : public ::testing::Test {
 protected:
  std::string Prepare() { return std::string("--prepare=") + PAFT_PREPARE; }
  testing::TempDir dir_;
};

TEST_F(ModelFamiliesEvalTest, Llama31EvalLogProbsMatchAnIndependentImplementation) {
  const std::string model = dir_.Join("llama31");
  WriteRandomModel(model, Llama31Config(), 7);
  // Its generation_config.json (ids scaled): stop tokens and sampling settings.
  ASSERT_TRUE(WriteFileAtomic(JoinPath(model, "generation_config.json"),
                              R"({"bos_token_id": 1, "do_sample": true, "eos_token_id": [2, 5, 6],
                                  "temperature": 0.6, "top_p": 0.9,
                                  "transformers_version": "4.42.3"})")
                  .ok());
  // Pre-tokenized examples, long enough (up to 60 positions) for the scaled frequencies to matter.
  std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>> examples;
  std::mt19937 rng(3);
  std::string jsonl;
  for (int e = 0; e < 4; ++e) {
    std::vector<int64_t> prompt, completion;
    for (int i = 0; i < 20 + 8 * e; ++i) prompt.push_back(8 + rng() % 56);
    for (int i = 0; i < 12 + 4 * e; ++i) completion.push_back(8 + rng() % 56);
    jsonl += json{{"prompt_ids", prompt}, {"completion_ids", completion}}.dump() + "\n";
    examples.emplace_back(prompt, completion);
  }
  ASSERT_TRUE(WriteFileAtomic(dir_.Join("test.jsonl"), jsonl).ok());

  std::string out;
  ASSERT_EQ(testing::RunCommand({PAFT_WORKER, "eval", "--threads=1", Prepare(),
                                 "--base=" + model, "--dataset=" + dir_.Join("test.jsonl"),
                                 "--max_new_tokens=4"},
                                &out),
            0)
      << out;
  const json report = Report(out);
  ASSERT_FALSE(report.is_discarded()) << out;
  ASSERT_EQ(report["per_example"].size(), examples.size()) << report.dump();
  EXPECT_EQ(report["generation"]["eos_token_ids"], json({2, 5, 6}));
  EXPECT_EQ(report["generation"]["sampling_settings_not_applied"]["temperature"], 0.6);

  auto weights = testing::ReadReferenceWeights(model);
  ASSERT_TRUE(weights.ok()) << weights.status();
  json unscaled = Llama31Config();
  unscaled.erase("rope_scaling");
  double worst = 0, scaling_effect = 0;
  for (size_t e = 0; e < examples.size(); ++e) {
    std::vector<int64_t> ids = examples[e].first;
    ids.insert(ids.end(), examples[e].second.begin(), examples[e].second.end());
    const int64_t prompt_length = examples[e].first.size();
    const double want =
        testing::ReferenceCompletionLogProb(Llama31Config(), *weights, ids, prompt_length);
    const double got = report["per_example"][e]["log_prob"].get<double>();
    EXPECT_EQ(report["per_example"][e]["tokens"], examples[e].second.size());
    worst = std::max(worst, std::abs(got - want));
    scaling_effect = std::max(
        scaling_effect,
        std::abs(testing::ReferenceCompletionLogProb(unscaled, *weights, ids, prompt_length) - want));
  }
  EXPECT_LT(worst, 1e-4) << "paft vs the reference, nats";
  // Without rope_scaling the log-probs differ by far more: the comparison can see it.
  EXPECT_GT(scaling_effect, 1e-2);
  std::cout << "max |log-prob - reference| = " << worst
            << " nats; the llama3 scaling moves them by up to " << scaling_effect << "\n";
}

TEST_F(ModelFamiliesEvalTest, UnsupportedConfigsAreUserErrorsThatWriteNothing) {
  ASSERT_TRUE(WriteFileAtomic(dir_.Join("data.jsonl"),
                              R"({"prompt_ids": [3, 4], "completion_ids": [5, 2]})"
                              "\n")
                  .ok());
  struct Case {
    std::string name;
    json patch;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"granite", {{"model_type", "granite"}, {"embedding_multiplier", 12.0}},
       "'model_type' 'granite' is not supported"},
      {"softcap", {{"attn_logit_softcapping", 50.0}}, "'attn_logit_softcapping'"},
      {"longrope", {{"rope_scaling", {{"rope_type", "longrope"}, {"factor", 4.0}}}},
       "'rope_scaling.rope_type' 'longrope' is not supported"}};
  for (const Case& c : cases) {
    json config = Llama31Config();
    config.merge_patch(c.patch);
    const std::string model = dir_.Join(c.name);
    WriteRandomModel(model, config, 1);

    std::string out;
    EXPECT_EQ(testing::RunCommand({PAFT_WORKER, "eval", Prepare(), "--base=" + model,
                                   "--dataset=" + dir_.Join("data.jsonl"),
                                   "--cache_dir=" + dir_.Join(c.name + "-eval-cache")},
                                  &out),
              2)
        << out;
    EXPECT_THAT(out, HasSubstr(c.message));
    EXPECT_FALSE(PathExists(dir_.Join(c.name + "-eval-cache")));

    v1::Task task;
    task.set_task_id(c.name);
    task.set_world_size(1);
    task.set_base_model(model);
    task.set_branch(v1::BRANCH_KIND_SFT);
    task.set_checkpoint_dir(dir_.Join(c.name + "-run/checkpoints"));
    task.mutable_spec()->mutable_dataset()->set_path(dir_.Join("data.jsonl"));
    task.mutable_spec()->set_max_steps(1);
    std::string task_json;
    (void)google::protobuf::util::MessageToJsonString(task, &task_json);
    ASSERT_TRUE(WriteFileAtomic(dir_.Join(c.name + ".task.json"), task_json).ok());
    EXPECT_EQ(testing::RunCommand({PAFT_WORKER, "train", Prepare(),
                                   "--task_file=" + dir_.Join(c.name + ".task.json")},
                                  &out),
              2)
        << out;
    EXPECT_THAT(out, HasSubstr(c.message));
    EXPECT_FALSE(PathExists(dir_.Join(c.name + "-run"))) << "a refused config wrote files";
  }
}

}  // namespace
}  // namespace paft
