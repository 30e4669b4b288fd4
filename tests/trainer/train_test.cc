// Training end to end on tiny synthetic tasks: SFT lowers held-out loss, DPO raises held-out
// reward accuracy; checkpoints are PEFT adapters with a manifest; resume refuses changed data.
#include <gmock/gmock.h>
#include <gtest/gtest.h>


#include "common/file_util.h"
#include "common/safetensors.h"
#include "common/token_dataset.h"
#include "tests/testing/adapters.h"
#include "tests/testing/temp_dir.h"
#include "trainer/llama.h"
#include "trainer/model_io.h"
#include "trainer/trainer.h"

namespace paft::trainer {
namespace {

using ::testing::HasSubstr;

// A tiny random model folder.
std::string MakeBase(const testing::TempDir& dir) {
  auto config = ParseModelConfig(R"({"model_type": "llama", "vocab_size": 24, "hidden_size": 32,
    "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "eos_token_id": 1, "tie_word_embeddings": true})");
  EXPECT_TRUE(config.ok());
  torch::manual_seed(0);
  LlamaForCausalLM model(*config);
  {
    // Unit-scale embeddings: with the tied head, logits can then be confident (the default
    // 0.02 init bounds them to about +-0.6, which no adapter on a frozen base can overcome).
    torch::NoGradGuard no_grad;
    model->model->embed_tokens->weight.normal_(0.0, 1.0);
  }
  EXPECT_TRUE(SavePretrained(model, dir.Join("base")).ok());
  return dir.Join("base");
}

// SFT task: prompt [2+a, 2+b], completion [12+b]: a rule on the last prompt token, so what is
// learnt on the training combinations carries over to the held-out ones.
void WriteSft(const std::string& path, int from, int to) {
  std::vector<TokenExample> ex;
  for (int a = 0; a < 10; ++a)
    for (int b = 0; b < 10; ++b) {
      // Two of every ten combinations per b are held out; every b and every a is trained on.
      if ((a + 2 * b) % 5 == 0 ? (from == 0) : (from == 1)) {
        ex.push_back({{uint32_t(2 + a), uint32_t(2 + b)}, {uint32_t(12 + b), 1}, {}, {}});
      }
    }
  (void)to;
  ASSERT_TRUE(WriteTokenDataset(path, DatasetKind::kSft, ex).ok());
}

// Preference task: prefer the token 14 + (p % 5) over 19 + (p % 5) after prompt p.
void WritePreference(const std::string& path, int first, int last) {
  std::vector<TokenExample> ex;
  for (int p = first; p < last; ++p) {
    ex.push_back({{uint32_t(2 + p % 12)}, {uint32_t(14 + p % 5), 1}, {uint32_t(19 + p % 5), 1}, {}});
  }
  ASSERT_TRUE(WriteTokenDataset(path, DatasetKind::kPreference, ex).ok());
}

paft::v1::Task MakeTask(const std::string& base, const std::string& dir, bool sft) {
  paft::v1::Task task;
  task.set_task_id("t");
  task.set_base_model(base);
  task.set_world_size(1);
  task.set_checkpoint_dir(dir);
  task.set_branch(sft ? paft::v1::BRANCH_KIND_SFT : paft::v1::BRANCH_KIND_ALIGNMENT);
  auto* spec = task.mutable_spec();
  if (sft) {
    spec->mutable_sft()->set_l1_lambda(1e-5);
  } else {
    spec->mutable_dpo()->set_beta(0.5);
    spec->mutable_dpo()->set_loss_type("sigmoid");
  }
  spec->mutable_lora()->set_r(8);
  spec->mutable_lora()->set_alpha(16);
  for (const char* m : {"q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}) {
    spec->mutable_lora()->add_target_modules(m);
  }
  spec->mutable_optimizer()->set_learning_rate(3e-3);
  spec->mutable_optimizer()->set_warmup_steps(5);
  spec->mutable_optimizer()->set_lr_schedule("cosine");
  spec->mutable_optimizer()->set_max_grad_norm(1.0);
  spec->mutable_batch()->set_per_device_batch_size(8);
  spec->set_max_steps(sft ? 200 : 60);
  spec->mutable_checkpoint()->set_every_steps(sft ? 100 : 0);
  spec->mutable_checkpoint()->set_keep_last(5);
  spec->set_seed(3);
  spec->set_precision("fp32");
  return task;
}

// Runs Train (which must succeed) and returns each step's loss.
std::vector<double> TrainLosses(TrainOptions options) {
  std::vector<double> losses;
  options.emit = [&](const nlohmann::json& e) {
    if (e["type"] == "progress") losses.push_back(e["loss"]);
  };
  absl::Status status = Train(options);
  EXPECT_TRUE(status.ok()) << status;
  return losses;
}

TEST(TrainTest, SftLowersHeldOutLoss) {
  testing::TempDir dir;
  const std::string base = MakeBase(dir);
  WriteSft(dir.Join("train.paftds"), 1, 0);
  WriteSft(dir.Join("test.paftds"), 0, 0);
  auto before = Evaluate(base, "", dir.Join("test.paftds"), 0.1, 3);
  ASSERT_TRUE(before.ok()) << before.status();

  TrainOptions options;
  options.task = MakeTask(base, dir.Join("ckpt"), true);
  options.task.mutable_spec()->mutable_full();  // full fine-tuning (L1 on theta - theta_pre)
  options.task.mutable_spec()->set_max_steps(300);
  options.task.mutable_spec()->mutable_checkpoint()->set_every_steps(150);
  options.dataset = dir.Join("train.paftds");
  std::vector<nlohmann::json> events;
  options.emit = [&](const nlohmann::json& e) { events.push_back(e); };
  absl::Status status = Train(options);
  ASSERT_TRUE(status.ok()) << status;

  const std::string final = dir.Join("ckpt/checkpoint-300");
  EXPECT_TRUE(IsRegularFile(final + "/config.json"));  // a full HF folder
  EXPECT_TRUE(IsRegularFile(final + "/paft_checkpoint.json"));
  EXPECT_TRUE(IsRegularFile(dir.Join("ckpt/checkpoint-150/model.safetensors")));
  int checkpoints = 0;
  for (const auto& e : events) checkpoints += e["type"] == "checkpoint" ? 1 : 0;
  EXPECT_EQ(checkpoints, 2);
  EXPECT_EQ(events.back()["final"], true);

  auto after = Evaluate(final, "", dir.Join("test.paftds"), 0.1, 3);
  ASSERT_TRUE(after.ok()) << after.status();
  const double loss_before = (*before)["loss"], loss_after = (*after)["loss"];
  std::cerr << "held-out: before " << before->dump() << "\nafter " << after->dump() << "\n";
  // Better than knowing nothing (uniform over the vocabulary), not only better than the start.
  EXPECT_LT(loss_after, 0.5 * std::log(24.0));
  EXPECT_GE((*after)["exact_match"].get<double>(), 0.8);
  EXPECT_LT(loss_after, 0.7 * loss_before) << "before " << loss_before << ", after " << loss_after;
  // Training loss went down too.
  EXPECT_LT(events[290]["loss"].get<double>(), events[0]["loss"].get<double>());
  // Greedy generation reproduces the training answers.
  auto train = Evaluate(final, "", dir.Join("train.paftds"), 0.1, 3);
  ASSERT_TRUE(train.ok());
  EXPECT_GE((*train)["exact_match"].get<double>(), 0.5) << train->dump();
  std::cerr << "train: " << train->dump() << "\n";
}

TEST(TrainTest, DpoRaisesHeldOutRewardAccuracy) {
  testing::TempDir dir;
  const std::string base = MakeBase(dir);
  WritePreference(dir.Join("train.paftds"), 0, 60);
  WritePreference(dir.Join("test.paftds"), 60, 90);
  TrainOptions options;
  options.task = MakeTask(base, dir.Join("ckpt"), false);
  options.dataset = dir.Join("train.paftds");
  double last_accuracy = 0;
  options.emit = [&](const nlohmann::json& e) {
    if (e["type"] == "progress") last_accuracy = e["reward_accuracy"];
  };
  absl::Status status = Train(options);
  ASSERT_TRUE(status.ok()) << status;
  auto report = Evaluate(base, dir.Join("ckpt/checkpoint-60"), dir.Join("test.paftds"), 0.5, 0);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_GE((*report)["reward_accuracy"].get<double>(), 0.9) << report->dump();
  EXPECT_GT((*report)["reward_margin"].get<double>(), 0.0);
  EXPECT_GE(last_accuracy, 0.9);
}

TEST(TrainTest, PrecomputedReferenceMatchesOnTheFly) {
  testing::TempDir dir;
  const std::string base = MakeBase(dir);
  WritePreference(dir.Join("train.paftds"), 0, 24);
  std::vector<double> losses[2];
  for (int precompute = 0; precompute < 2; ++precompute) {
    TrainOptions options;
    options.task = MakeTask(base, dir.Join(precompute ? "b" : "a"), false);
    options.task.mutable_spec()->set_max_steps(4);
    options.task.mutable_spec()->mutable_dpo()->set_precompute_ref_log_probs(precompute == 1);
    options.dataset = dir.Join("train.paftds");
    losses[precompute] = TrainLosses(options);
  }
  ASSERT_EQ(losses[0].size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(losses[0][i], losses[1][i], 1e-4) << "step " << i;
  // The cache sits beside the dataset and is reused.
  bool cached = false;
  auto names = ListDir(dir.path());
  ASSERT_TRUE(names.ok());
  for (const auto& name : *names) cached |= name.find("train.paftds.ref-") == 0;
  EXPECT_TRUE(cached);
  // A base rewritten in place (same path, same size, other weights) gets its own cache: the
  // key is the weights' content.
  const std::string weights = base + "/model.safetensors";
  auto bytes = ReadFileToString(weights);
  ASSERT_TRUE(bytes.ok());
  bytes->back() = static_cast<char>(bytes->back() ^ 0x01);
  ASSERT_TRUE(WriteFileAtomic(weights, *bytes).ok());
  TrainOptions options;
  options.task = MakeTask(base, dir.Join("c"), false);
  options.task.mutable_spec()->set_max_steps(1);
  options.task.mutable_spec()->mutable_dpo()->set_precompute_ref_log_probs(true);
  options.dataset = dir.Join("train.paftds");
  TrainLosses(options);
  int caches = 0;
  names = ListDir(dir.path());
  ASSERT_TRUE(names.ok());
  for (const auto& name : *names) caches += name.find("train.paftds.ref-") == 0 ? 1 : 0;
  EXPECT_EQ(caches, 2);
}

// bf16 mixed precision with LoRA: the frozen base in bf16, the adapter trained and saved in
// fp32, the task learnt as in fp32; an unknown precision is refused by name.
TEST(TrainTest, Bf16LoraTrainingLearnsAndSavesAnFp32Adapter) {
  testing::TempDir dir;
  const std::string base = MakeBase(dir);
  WriteSft(dir.Join("train.paftds"), 1, 0);
  WriteSft(dir.Join("test.paftds"), 0, 0);
  TrainOptions options;
  options.task = MakeTask(base, dir.Join("ckpt"), true);
  options.task.mutable_spec()->set_precision("bf16");
  options.task.mutable_spec()->set_max_steps(200);
  options.task.mutable_spec()->mutable_checkpoint()->set_every_steps(0);
  options.dataset = dir.Join("train.paftds");
  const std::vector<double> losses = TrainLosses(options);
  ASSERT_EQ(losses.size(), 200u);
  const std::string final = dir.Join("ckpt/checkpoint-200");
  auto adapter = SafetensorsFile::Open(final + "/adapter_model.safetensors");
  ASSERT_TRUE(adapter.ok());
  for (const auto& t : (*adapter)->tensors()) EXPECT_EQ(t.dtype, DType::kF32) << t.name;
  auto state = ReadFileToString(final + "/trainer_state.json");
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(nlohmann::json::parse(*state)["precision"], "bf16");
  EXPECT_LT(losses.back(), 0.5 * losses.front());
  auto report = Evaluate(base, final, dir.Join("test.paftds"), 0.1, 3);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_LT((*report)["loss"].get<double>(), 0.5 * std::log(24.0)) << report->dump();

  options.task.mutable_spec()->set_precision("fp16");
  absl::Status refused = Train(options);
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.message()), HasSubstr("'fp16'"));
}

// lora.use_rslora: the adapter is trained and saved with scaling alpha / sqrt(r), as PEFT's
// use_rslora, and loads back with it.
TEST(TrainTest, RsLoraScalingFromTheSpec) {
  testing::TempDir dir;
  const std::string base = MakeBase(dir);
  WriteSft(dir.Join("train.paftds"), 1, 0);
  TrainOptions options;
  options.task = MakeTask(base, dir.Join("ckpt"), true);
  options.task.mutable_spec()->mutable_lora()->set_use_rslora(true);
  options.task.mutable_spec()->set_max_steps(2);
  options.task.mutable_spec()->mutable_checkpoint()->set_every_steps(0);
  options.dataset = dir.Join("train.paftds");
  ASSERT_EQ(TrainLosses(options).size(), 2u);
  const std::string final = dir.Join("ckpt/checkpoint-2");
  auto config = ReadFileToString(final + "/adapter_config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  const auto j = nlohmann::json::parse(*config);
  EXPECT_EQ(j["use_rslora"], true);
  EXPECT_EQ(j["r"], 8);
  EXPECT_EQ(j["lora_alpha"], 16);
  auto model = LoadPretrained(base, torch::kFloat);
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_TRUE(LoadAdapter(*model, final).ok());
  auto* layer = (*model)->model->layers[0]->as<DecoderLayerImpl>();
  EXPECT_NEAR(layer->self_attn->q_proj->scaling, 16 / std::sqrt(8.0), 1e-12);
}

// padding_free packs each micro-batch into one row: training ends at the weights padded batches
// reach (fp32), on examples of different lengths.
TEST(TrainTest, PaddingFreeTrainsTheSameWeightsAsPaddedBatches) {
  testing::TempDir dir;
  const std::string base = MakeBase(dir);
  std::vector<TokenExample> examples;
  for (uint32_t i = 0; i < 16; ++i) {
    std::vector<uint32_t> prompt, completion;
    for (uint32_t k = 0; k < 1 + i % 4; ++k) prompt.push_back(2 + (i + k) % 10);
    for (uint32_t k = 0; k < 1 + (i * 3) % 5; ++k) completion.push_back(12 + (i + k) % 10);
    examples.push_back({prompt, completion, {}, {}});
  }
  ASSERT_TRUE(WriteTokenDataset(dir.Join("ragged.paftds"), DatasetKind::kSft, examples).ok());
  std::vector<double> losses[2];
  for (int packed = 0; packed < 2; ++packed) {
    TrainOptions options;
    options.task = MakeTask(base, dir.Join(packed ? "packed" : "padded"), true);
    options.task.mutable_spec()->set_max_steps(6);
    options.task.mutable_spec()->mutable_checkpoint()->set_every_steps(0);
    options.task.mutable_spec()->mutable_batch()->set_per_device_batch_size(4);
    options.task.mutable_spec()->mutable_batch()->set_padding_free(packed == 1);
    options.dataset = dir.Join("ragged.paftds");
    losses[packed] = TrainLosses(options);
  }
  ASSERT_EQ(losses[0].size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_NEAR(losses[0][i], losses[1][i], 1e-6 * std::max(1.0, losses[0][i])) << "step " << i;
  }
  EXPECT_LT(testing::MaxAdapterDifference(dir.Join("padded/checkpoint-6"),
                                          dir.Join("packed/checkpoint-6")),
            1e-6);
}

// A prepared dataset with a token id past the model's vocabulary is refused by name before it
// can index past the embedding table, in training and in evaluation.
TEST(TrainTest, TokenIdsOutsideTheVocabularyAreRefused) {
  testing::TempDir dir;
  const std::string base = MakeBase(dir);  // vocabulary 24
  std::vector<TokenExample> examples = {{{2, 3}, {12, 1}, {}, {}}, {{2, 3}, {24, 1}, {}, {}}};
  ASSERT_TRUE(WriteTokenDataset(dir.Join("bad.paftds"), DatasetKind::kSft, examples).ok());
  TrainOptions options;
  options.task = MakeTask(base, dir.Join("ckpt"), true);
  options.dataset = dir.Join("bad.paftds");
  absl::Status status = Train(options);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("example 1 holds token id 24"));
  auto report = Evaluate(base, "", dir.Join("bad.paftds"), 0.1, 1);
  ASSERT_FALSE(report.ok());
  EXPECT_THAT(std::string(report.status().message()), HasSubstr("outside the model's vocabulary of 24"));
}

TEST(TrainTest, WrongDataAndChangedDataAreRefused) {
  testing::TempDir dir;
  const std::string base = MakeBase(dir);
  WritePreference(dir.Join("pref.paftds"), 0, 10);
  WriteSft(dir.Join("sft.paftds"), 1, 0);
  TrainOptions options;
  options.task = MakeTask(base, dir.Join("ckpt"), true);
  options.task.mutable_spec()->set_max_steps(2);
  options.task.mutable_spec()->mutable_checkpoint()->set_every_steps(1);
  options.dataset = dir.Join("pref.paftds");
  absl::Status status = Train(options);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("needs SFT data"));

  options.dataset = dir.Join("sft.paftds");
  ASSERT_TRUE(Train(options).ok());
  // Resuming from step 1 on other data is refused.
  WriteSft(dir.Join("other.paftds"), 0, 0);
  options.task.set_resume_from(dir.Join("ckpt/checkpoint-1"));
  options.dataset = dir.Join("other.paftds");
  status = Train(options);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(status.message()), HasSubstr("refusing to resume"));
  // On the same data it continues from step 1 to 2.
  options.dataset = dir.Join("sft.paftds");
  std::vector<int64_t> steps;
  options.emit = [&](const nlohmann::json& e) {
    if (e["type"] == "progress") steps.push_back(e["step"]);
  };
  ASSERT_TRUE(Train(options).ok());
  EXPECT_EQ(steps, (std::vector<int64_t>{2}));
}

}  // namespace
}  // namespace paft::trainer
