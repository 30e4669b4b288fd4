// The chunked log-probs against the full-logits path (log_softmax over the whole (B, T, V)
// logits, tests/testing/full_logits.h) at Llama-3's vocabulary of 128,256 on a tiny model:
// log-probs, losses and gradients, with a frozen head (LoRA), a trainable one (full fine-tuning),
// tied embeddings, chunk boundaries that split the rows unevenly, and bf16 autocast.
#include "trainer/target_log_probs.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "common/hf_config.h"
#include "tests/testing/full_logits.h"
#include "trainer/batching.h"
#include "trainer/llama.h"
#include "trainer/objectives.h"
#include "trainer/precision.h"

namespace paft::trainer {
namespace {

constexpr int64_t kVocab = 128256;

LlamaForCausalLM TinyModel(bool tied, bool lora) {
  auto c = ParseModelConfig(absl::StrCat(R"({"model_type": "llama", "vocab_size": )", kVocab,
                                         R"(, "hidden_size": 16,
      "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
      "num_key_value_heads": 1, "tie_word_embeddings": )",
                                         tied ? "true" : "false", "}"));
  EXPECT_TRUE(c.ok()) << c.status();
  torch::manual_seed(11);
  LlamaForCausalLM model(*c);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.copy_(torch::randn_like(p) * 0.5);
  }
  if (lora) {
    LoraOptions options;
    options.r = 4;
    options.target_modules = {"q_proj", "v_proj", "down_proj"};
    model->AddLora(options);
    torch::NoGradGuard no_grad;
    for (auto& [name, p] : model->TrainableParameters()) p.copy_(torch::randn_like(p) * 0.2);
  }
  model->train();
  return model;
}

// Two right-padded rows of 150 and 120 tokens whose completions start at 40 and 70: 160 targets,
// more than one chunk at this vocabulary (TargetLogProbChunkRows).
Batch TwoRows() {
  torch::manual_seed(5);
  Batch b;
  b.input_ids = torch::randint(0, kVocab, {2, 150});
  b.attention_mask = torch::ones({2, 150}, torch::kLong);
  b.attention_mask[1].narrow(0, 120, 30).zero_();
  b.completion_mask = torch::zeros({2, 150}, torch::kLong);
  b.completion_mask[0].narrow(0, 40, 110).fill_(1);
  b.completion_mask[1].narrow(0, 70, 50).fill_(1);
  b.tokens = 270;
  return b;
}

struct Result {
  torch::Tensor sums, tokens;
  std::vector<torch::Tensor> grads;
};

// The SFT loss (token mean) of the batch and the trainable parameters' gradients, by the
// trainer's chunked path or by the full logits.
Result SftRun(LlamaForCausalLM& model, const Batch& b, bool full) {
  for (auto& p : model->parameters()) p.mutable_grad() = torch::Tensor();
  Result r;
  if (full) {
    auto seq = testing::CompletionLogProbs(model->forward(b.input_ids, b.attention_mask),
                                           b.input_ids, b.completion_mask);
    r.sums = seq.sum;
    r.tokens = seq.tokens;
  } else {
    auto seq = BatchLogProbs(model, b);
    r.sums = seq.sum;
    r.tokens = seq.tokens;
  }
  (-r.sums.sum() / r.tokens.sum()).backward();
  for (auto& [name, p] : model->TrainableParameters()) r.grads.push_back(p.grad().clone());
  r.sums = r.sums.detach();
  return r;
}

void ExpectSame(const Result& chunked, const Result& full, double rtol_sums, double rtol_grads) {
  EXPECT_TRUE(torch::equal(chunked.tokens, full.tokens)) << chunked.tokens << full.tokens;
  EXPECT_TRUE(torch::allclose(chunked.sums, full.sums, rtol_sums, 0)) << chunked.sums - full.sums;
  ASSERT_EQ(chunked.grads.size(), full.grads.size());
  double worst = 0;
  for (size_t i = 0; i < full.grads.size(); ++i) {
    const double scale = full.grads[i].abs().max().item<double>();
    const double diff = (chunked.grads[i] - full.grads[i]).abs().max().item<double>();
    EXPECT_LE(diff, rtol_grads * scale) << "gradient #" << i << ": " << diff << " of " << scale;
    worst = std::max(worst, diff / scale);
  }
  const double sums = ((chunked.sums - full.sums).abs() / full.sums.abs()).max().item<double>();
  std::printf("worst relative difference: log-prob sums %.3g, gradients %.3g\n", sums, worst);
}

TEST(TargetLogProbsTest, FrozenHeadLoraEqualsTheFullLogits) {
  LlamaForCausalLM model = TinyModel(/*tied=*/false, /*lora=*/true);
  const Batch b = TwoRows();
  ASSERT_GT(160, TargetLogProbChunkRows(kVocab, torch::kCPU));
  const Result chunked = SftRun(model, b, false), full = SftRun(model, b, true);
  EXPECT_EQ(full.tokens[0].item<double>(), 110);  // tokens 40..149, predicted from 39..148
  ExpectSame(chunked, full, 1e-6, 1e-5);
}

TEST(TargetLogProbsTest, TrainableHeadAndTiedEmbeddingsEqualTheFullLogits) {
  for (bool tied : {false, true}) {
    LlamaForCausalLM model = TinyModel(tied, /*lora=*/false);
    const Batch b = TwoRows();
    const Result chunked = SftRun(model, b, false), full = SftRun(model, b, true);
    ExpectSame(chunked, full, 1e-6, 1e-5);
  }
}

TEST(TargetLogProbsTest, ChunkBoundariesDoNotChangeTheNumbers) {
  torch::manual_seed(2);
  const torch::Tensor hidden = torch::randn({23, 8}, torch::kDouble);
  const torch::Tensor weight = torch::randn({50, 8}, torch::kDouble);
  const torch::Tensor targets = torch::randint(0, 50, {23});
  const torch::Tensor upstream = torch::randn({23}, torch::kDouble);  // any per-row weighting
  auto full_path = [&](const torch::Tensor& h, const torch::Tensor& w) {
    return torch::log_softmax(torch::matmul(h, w.t()), 1)
        .gather(1, targets.unsqueeze(1))
        .squeeze(1);
  };
  const torch::Tensor full = full_path(hidden, weight);
  torch::Tensor h = hidden.clone().requires_grad_(true), w = weight.clone().requires_grad_(true);
  full_path(h, w).mul(upstream).sum().backward();
  const torch::Tensor grad_h = h.grad().clone(), grad_w = w.grad().clone();
  for (int64_t rows : {1, 5, 23, 100}) {
    for (bool head_trains : {true, false}) {
      torch::Tensor hc = hidden.clone().requires_grad_(true);
      torch::Tensor wc = weight.clone().requires_grad_(head_trains);
      const torch::Tensor lp = TargetLogProbs(hc, wc, targets, rows);
      EXPECT_EQ(lp.scalar_type(), torch::kDouble);
      EXPECT_TRUE(torch::allclose(lp, full, 1e-12, 1e-12)) << rows;
      lp.mul(upstream).sum().backward();
      EXPECT_TRUE(torch::allclose(hc.grad(), grad_h, 1e-10, 1e-12)) << rows;
      if (head_trains) {
        EXPECT_TRUE(torch::allclose(wc.grad(), grad_w, 1e-10, 1e-12)) << rows;
      }
    }
  }
  // No grad mode: the same numbers, no graph.
  torch::NoGradGuard no_grad;
  const torch::Tensor lp = TargetLogProbs(hidden.clone().requires_grad_(true), weight, targets, 4);
  EXPECT_FALSE(lp.requires_grad());
  EXPECT_TRUE(torch::allclose(lp, full, 1e-12, 1e-12));
}

TEST(TargetLogProbsTest, ABatchWithoutTargetsHasZeroLogProbsAndGradients) {
  LlamaForCausalLM model = TinyModel(/*tied=*/false, /*lora=*/true);
  Batch b = TwoRows();
  b.completion_mask.zero_();
  auto seq = BatchLogProbs(model, b);
  EXPECT_EQ(seq.sum.abs().sum().item<double>(), 0.0);
  EXPECT_EQ(seq.tokens.sum().item<double>(), 0.0);
  seq.sum.sum().backward();
  for (auto& [name, p] : model->TrainableParameters()) {
    if (p.grad().defined()) {
      EXPECT_EQ(p.grad().abs().sum().item<double>(), 0.0) << name;
    }
  }
}

// Under bf16 autocast the head's matmul runs in bf16 on both paths, the log-softmax in fp32: the
// log-probs agree to fp32 summation order, the gradients within bf16's rounding.
TEST(TargetLogProbsTest, Bf16AutocastMatchesTheFullLogitsUnderAutocast) {
  for (bool lora : {true, false}) {
    LlamaForCausalLM model = TinyModel(/*tied=*/false, lora);
    if (lora) model->CastFrozenLinears(torch::kBFloat16);
    const Batch b = TwoRows();
    Result chunked, full;
    {
      AutocastScope autocast(Precision::kBf16, torch::Device(torch::kCPU));
      chunked = SftRun(model, b, false);
    }
    {
      AutocastScope autocast(Precision::kBf16, torch::Device(torch::kCPU));
      full = SftRun(model, b, true);
    }
    EXPECT_EQ(chunked.sums.scalar_type(), torch::kFloat);
    ExpectSame(chunked, full, 1e-5, 2e-2);
  }
}

}  // namespace
}  // namespace paft::trainer
