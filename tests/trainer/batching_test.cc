// The data schedule (which examples each rank and micro-step see) and the global normalisation
// of loss shares: the shares of a step's micro-batches add up to the loss of the whole global
// batch computed in one piece by the plain loss functions.
#include "common/job_spec.h"
#include "trainer/batching.h"

#include <gtest/gtest.h>

#include <set>

#include "tests/testing/full_logits.h"
#include "tests/testing/temp_dir.h"
#include "trainer/llama.h"
#include "trainer/losses.h"
#include "trainer/objectives.h"

namespace paft::trainer {
namespace {

// Examples of lengths that differ from one to the next; `preference` adds rejected sides.
std::unique_ptr<TokenDataset> RaggedDataset(const testing::TempDir& dir, bool preference, int n) {
  std::vector<TokenExample> examples;
  for (uint32_t i = 0; i < static_cast<uint32_t>(n); ++i) {
    TokenExample e;
    for (uint32_t k = 0; k < 1 + i % 3; ++k) e.prompt.push_back(3 + (i + k) % 7);
    for (uint32_t k = 0; k < 1 + (i * 5) % 7; ++k) e.completion.push_back(10 + (i + 2 * k) % 9);
    if (preference) {
      for (uint32_t k = 0; k < 2 + i % 4; ++k) e.rejected.push_back(20 + (i + k) % 9);
    }
    examples.push_back(e);
  }
  const std::string path = dir.Join(preference ? "pref.paftds" : "sft.paftds");
  EXPECT_TRUE(
      WriteTokenDataset(path, preference ? DatasetKind::kPreference : DatasetKind::kSft, examples)
          .ok());
  auto data = TokenDataset::Open(path);
  EXPECT_TRUE(data.ok()) << data.status();
  return std::move(*data);
}

TEST(DataScheduleTest, RanksAndMicroStepsPartitionTheGlobalBatch) {
  testing::TempDir dir;
  auto data = RaggedDataset(dir, false, 10);
  DataSchedule two_ranks(data.get(), 7, /*batch=*/2, /*accumulation=*/2, /*world=*/2);
  DataSchedule one_rank(data.get(), 7, /*batch=*/8, /*accumulation=*/1, /*world=*/1);
  for (int64_t step = 0; step < 4; ++step) {  // crosses epoch boundaries (10 examples, 8 a step)
    std::vector<int64_t> split;
    for (int64_t micro = 0; micro < 2; ++micro) {
      for (int rank = 0; rank < 2; ++rank) {
        for (int64_t i : two_ranks.MicroBatch(step, micro, rank)) split.push_back(i);
      }
    }
    EXPECT_EQ(split, one_rank.MicroBatch(step, 0, 0)) << "step " << step;
    // Counts by hand: completion tokens with a token before them.
    StepCounts counts = two_ranks.Counts(step);
    int64_t targets = 0;
    for (int64_t i : split) targets += data->completion(i).size();  // every prompt is non-empty
    EXPECT_EQ(counts.targets, targets);
    EXPECT_EQ(counts.sequences, 8);
  }
  // Every epoch is a permutation.
  std::set<int64_t> epoch;
  DataSchedule whole(data.get(), 7, 10, 1, 1);
  for (int64_t i : whole.MicroBatch(1, 0, 0)) epoch.insert(i);
  EXPECT_EQ(epoch.size(), 10u);
}

// Loss runs (every assistant turn trained): the untrained completion tokens are neither masked in
// nor counted, padded or packed.
TEST(BatchingTest, LossRunsMaskTheUntrainedTurns) {
  testing::TempDir dir;
  TokenExample e;
  e.prompt = {1, 2};
  e.completion = {3, 4, 5, 6, 7};
  e.loss_runs = {2, 2, 1};
  ASSERT_TRUE(WriteTokenDataset(dir.Join("runs.paftds"), DatasetKind::kSft, {e}).ok());
  auto data = TokenDataset::Open(dir.Join("runs.paftds"));
  ASSERT_TRUE(data.ok()) << data.status();
  const std::vector<int64_t> want = {0, 0, 1, 1, 0, 0, 1};
  for (bool packed : {false, true}) {
    Batch b = MakeBatch(**data, {0}, /*pad_id=*/0, packed);
    std::vector<int64_t> mask(b.completion_mask.data_ptr<int64_t>(),
                              b.completion_mask.data_ptr<int64_t>() + 7);
    EXPECT_EQ(mask, want) << (packed ? "packed" : "padded");
  }
  EXPECT_EQ(TargetTokens((*data)->prompt(0), (*data)->completion(0), (*data)->loss_runs(0)), 3);
  DataSchedule schedule(data->get(), 1, 1, 1, 1);
  EXPECT_EQ(schedule.Counts(0).targets, 3);
}

TEST(DataScheduleTest, TargetTokensSkipAFirstTokenCompletion) {
  const std::vector<uint32_t> none, two = {1, 2}, three = {3, 4, 5};
  EXPECT_EQ(TargetTokens(two, three), 3);
  EXPECT_EQ(TargetTokens(none, three), 2);
  EXPECT_EQ(TargetTokens(none, none), 0);
}

LlamaForCausalLM SmallModel() {
  auto c = ParseModelConfig(R"({"model_type": "llama", "vocab_size": 32, "hidden_size": 16,
    "intermediate_size": 24, "num_hidden_layers": 1, "num_attention_heads": 2,
    "num_key_value_heads": 1, "eos_token_id": 0})");
  EXPECT_TRUE(c.ok());
  torch::manual_seed(3);
  LlamaForCausalLM model(*c);
  model->to(torch::kDouble);
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.copy_(torch::randn_like(p) * 0.5);
  return model;
}

// Sum of the shares of the micro-batches of one step (4 ranks x 1 or 1 rank x 4 alike).
double SumOfShares(BranchObjective& objective, LlamaForCausalLM& model, const TokenDataset& data,
                   DataSchedule& schedule, int world, int64_t accumulation) {
  const StepCounts counts = schedule.Counts(0);
  StepMetrics metrics;
  double total = 0;
  for (int rank = 0; rank < world; ++rank) {
    for (int64_t micro = 0; micro < accumulation; ++micro) {
      Batch b = MakeBatch(data, schedule.MicroBatch(0, micro, rank), 0);
      total += objective.MicroBatchLoss(model, b, counts, &metrics).item<double>();
    }
  }
  EXPECT_NEAR(metrics.loss, total, 1e-9);
  return total;
}

TEST(GlobalNormalisationTest, SftSharesAddUpToTheTokenMeanOfTheGlobalBatch) {
  testing::TempDir dir;
  auto data = RaggedDataset(dir, false, 8);
  LlamaForCausalLM model = SmallModel();
  torch::NoGradGuard no_grad;
  paft::v1::BranchSpec spec;
  spec.mutable_sft();
  ApplyBranchDefaults(&spec, /*is_sft=*/true);  // as every spec the trainer reads
  auto objective = BranchObjective::FromSpec(spec);
  ASSERT_TRUE(objective.ok());
  DataSchedule whole(data.get(), 1, 8, 1, 1);
  Batch all = MakeBatch(*data, whole.MicroBatch(0, 0, 0), 0);
  const double expected = testing::SftLoss(model->forward(all.input_ids, all.attention_mask),
                                           all.input_ids, all.completion_mask)
                              .item<double>();
  DataSchedule ranks(data.get(), 1, 2, 1, 4), accumulated(data.get(), 1, 2, 4, 1);
  EXPECT_NEAR(SumOfShares(*objective, model, *data, ranks, 4, 1), expected, 1e-12);
  EXPECT_NEAR(SumOfShares(*objective, model, *data, accumulated, 1, 4), expected, 1e-12);
  // The per-micro-batch token mean averaged over micro-batches is a different number here.
  double mean_of_means = 0;
  for (int64_t micro = 0; micro < 4; ++micro) {
    Batch b = MakeBatch(*data, accumulated.MicroBatch(0, micro, 0), 0);
    mean_of_means += testing::SftLoss(model->forward(b.input_ids, b.attention_mask), b.input_ids,
                                      b.completion_mask)
                         .item<double>() /
                     4;
  }
  EXPECT_GT(std::abs(mean_of_means - expected), 1e-4);
}

TEST(GlobalNormalisationTest, PreferenceSharesAddUpToTheGlobalBatchLoss) {
  testing::TempDir dir;
  auto data = RaggedDataset(dir, true, 8);
  LlamaForCausalLM model = SmallModel();
  torch::NoGradGuard no_grad;
  DataSchedule whole(data.get(), 1, 8, 1, 1), ranks(data.get(), 1, 2, 1, 4);
  Batch all = MakeBatch(*data, whole.MicroBatch(0, 0, 0), 0);
  torch::Tensor logits = model->forward(all.input_ids, all.attention_mask);
  auto [chosen, rejected] =
      SplitPairs(testing::CompletionLogProbs(logits, all.input_ids, all.completion_mask), 8);
  for (const std::string kind : {"orpo", "orpo with prompt loss", "simpo"}) {
    paft::v1::BranchSpec spec;
    PreferenceParams params;
    torch::Tensor chosen_nll = torch::zeros({}, torch::kDouble);
    if (kind != "simpo") {
      const bool prompt_loss = kind == "orpo with prompt loss";
      spec.mutable_orpo()->set_beta(0.3);
      spec.mutable_orpo()->set_prompt_loss(prompt_loss);
      params.kind = PreferenceKind::kOrpo;
      params.beta = 0.3;
      // ORPO's NLL, from the full logits: token mean over every chosen completion of the global
      // batch, or (TRL's and the ORPO authors') over every token of every chosen sequence, prompt
      // included, that has a token before it.
      const torch::Tensor& targets = prompt_loss ? all.attention_mask : all.completion_mask;
      chosen_nll = testing::SftLoss(logits.narrow(0, 0, 8), all.input_ids.narrow(0, 0, 8),
                                    targets.narrow(0, 0, 8));
    } else {
      spec.mutable_simpo()->set_beta(2.0);
      spec.mutable_simpo()->set_gamma(0.4);
      params.kind = PreferenceKind::kSimpo;
      params.beta = 2.0;
      params.gamma = 0.4;
    }
    auto objective = BranchObjective::FromSpec(spec);
    ASSERT_TRUE(objective.ok());
    const double expected =
        PreferenceLoss(params, {chosen, {}}, {rejected, {}}, chosen_nll).loss.item<double>();
    EXPECT_NEAR(SumOfShares(*objective, model, *data, ranks, 4, 1), expected, 1e-10) << kind;
    DataSchedule accumulated(data.get(), 1, 2, 4, 1);
    EXPECT_NEAR(SumOfShares(*objective, model, *data, accumulated, 1, 4), expected, 1e-10) << kind;
  }
}

}  // namespace
}  // namespace paft::trainer

namespace paft::trainer {
namespace {

// Padding-free batches compute what padded ones do: the same per-sequence log-probs, loss and
// gradients, with and without activation checkpointing, and no pad token in the row.
TEST(PackedBatchTest, SameLossAndGradientsAsThePaddedBatch) {
  testing::TempDir dir;
  for (const bool preference : {false, true}) {
    auto data = RaggedDataset(dir, preference, 6);
    std::vector<int64_t> indices = {0, 1, 2, 3, 4, 5};
    Batch padded = MakeBatch(*data, indices, 0), packed = MakeBatch(*data, indices, 0, true);
    ASSERT_TRUE(packed.packed());
    EXPECT_EQ(packed.input_ids.size(0), 1);
    EXPECT_EQ(packed.input_ids.size(1), padded.attention_mask.sum().item<int64_t>());  // no pads
    EXPECT_EQ(packed.sequences(), padded.input_ids.size(0));
    for (const bool checkpointing : {false, true}) {
      std::vector<torch::Tensor> grads[2];
      SequenceLogProbs lp[2];
      torch::Tensor prompt[2];  // preference: ORPO's prompt sums of the 3 chosen sequences
      for (int layout = 0; layout < 2; ++layout) {
        LlamaForCausalLM model = SmallModel();
        LoraOptions lora;
        lora.r = 2;
        lora.target_modules = {"q_proj", "v_proj", "up_proj"};
        torch::manual_seed(9);
        model->AddLora(lora);
        {
          torch::NoGradGuard no_grad;
          for (auto& [name, p] : model->TrainableParameters()) p.copy_(torch::randn_like(p) * 0.2);
        }
        model->train();
        model->set_activation_checkpointing(checkpointing);
        const Batch& b = layout == 0 ? padded : packed;
        lp[layout] = BatchLogProbs(model, b, preference ? 3 : 0, preference ? &prompt[layout] : nullptr);
        torch::Tensor loss = -lp[layout].sum.sum() / lp[layout].tokens.sum();
        if (preference) loss = loss - prompt[layout].sum() / 50;
        loss.backward();
        for (auto& [name, p] : model->TrainableParameters())
          grads[layout].push_back(p.grad().clone());
      }
      EXPECT_TRUE(torch::allclose(lp[0].sum, lp[1].sum, 0, 1e-10)) << lp[0].sum << lp[1].sum;
      EXPECT_TRUE(torch::equal(lp[0].tokens, lp[1].tokens)) << lp[0].tokens << lp[1].tokens;
      if (preference) {
        EXPECT_TRUE(torch::allclose(prompt[0], prompt[1], 0, 1e-10)) << prompt[0] << prompt[1];
        EXPECT_TRUE(torch::equal(prompt[0].narrow(0, 3, 3), torch::zeros({3}, prompt[0].options())));
        // Examples 1 and 2 have prompts of 2 and 3 tokens (example 0's one token predicts nothing).
        EXPECT_TRUE(prompt[0].narrow(0, 1, 2).lt(0).all().item<bool>()) << prompt[0];
      }
      ASSERT_EQ(grads[0].size(), grads[1].size());
      for (size_t i = 0; i < grads[0].size(); ++i) {
        EXPECT_TRUE(torch::allclose(grads[0][i], grads[1][i], 0, 1e-10))
            << "preference " << preference << " checkpointing " << checkpointing << " #" << i;
      }
    }
  }
}

// A completion that starts a packed sequence (empty prompt) does not take the previous
// sequence's last token as context: its first token is no target.
TEST(PackedBatchTest, ASequenceStartIsNeverATarget) {
  testing::TempDir dir;
  std::vector<TokenExample> examples = {{{}, {5, 6, 7}, {}, {}}, {{}, {8, 9}, {}, {}}};
  ASSERT_TRUE(WriteTokenDataset(dir.Join("d.paftds"), DatasetKind::kSft, examples).ok());
  auto data = TokenDataset::Open(dir.Join("d.paftds"));
  ASSERT_TRUE(data.ok());
  Batch packed = MakeBatch(**data, {0, 1}, 0, true);
  EXPECT_TRUE(torch::equal(packed.completion_mask, torch::tensor({{0, 1, 1, 0, 1}})));
  EXPECT_EQ(packed.lengths, (std::vector<int64_t>{3, 2}));
  EXPECT_TRUE(torch::equal(packed.sequence_ids, torch::tensor({0, 0, 0, 1, 1})));
}

}  // namespace
}  // namespace paft::trainer
