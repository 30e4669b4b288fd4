// Mixed precision: the names a spec may use, autocast's effect (fp32 untouched, bf16 within bf16
// rounding of fp32), and a LoRA base held in bf16 computing exactly what autocast computes from
// fp32 weights.
#include "trainer/precision.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "tests/testing/full_logits.h"
#include "tests/testing/temp_dir.h"
#include "trainer/llama.h"
#include "trainer/losses.h"
#include "trainer/model_io.h"

namespace paft::trainer {
namespace {

ModelConfig SmallConfig() {
  auto c = ParseModelConfig(R"({"model_type": "llama", "vocab_size": 40, "hidden_size": 32,
    "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "tie_word_embeddings": false})");
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

LlamaForCausalLM RandomModel(uint64_t seed) {
  torch::manual_seed(seed);
  LlamaForCausalLM model(SmallConfig());
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.copy_(torch::randn_like(p) * 0.3);
  return model;
}

const torch::Tensor kIds =
    torch::tensor({{1, 5, 9, 13, 17, 21, 25, 29}, {2, 4, 8, 16, 32, 3, 6, 12}});

TEST(PrecisionTest, NamesResolveAndUnknownOnesAreRefusedByName) {
  const torch::Device cpu(torch::kCPU), cuda(torch::kCUDA, 0);
  EXPECT_EQ(*ResolvePrecision("fp32", cpu), Precision::kFp32);
  EXPECT_EQ(*ResolvePrecision("bf16", cpu), Precision::kBf16);
  EXPECT_EQ(*ResolvePrecision("auto", cuda), Precision::kBf16);
  // auto on this CPU: bf16 exactly when /proc/cpuinfo lists avx512_bf16 or amx_bf16.
  std::ifstream in("/proc/cpuinfo");
  std::stringstream text;
  text << in.rdbuf();
  const bool native = text.str().find(" avx512_bf16") != std::string::npos ||
                      text.str().find(" amx_bf16") != std::string::npos;
  EXPECT_EQ(*ResolvePrecision("auto", cpu), native ? Precision::kBf16 : Precision::kFp32);
  EXPECT_EQ(*ResolvePrecision("", cpu), *ResolvePrecision("auto", cpu));
  auto bad = ResolvePrecision("fp16", cpu);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("'fp16'"), absl::string_view::npos) << bad.status();
}

TEST(PrecisionTest, Fp32ScopeChangesNothingAndBf16StaysWithinBf16Rounding) {
  LlamaForCausalLM model = RandomModel(1);
  model->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor plain = model->forward(kIds);
  torch::Tensor fp32, bf16;
  {
    AutocastScope scope(Precision::kFp32, torch::Device(torch::kCPU));
    fp32 = model->forward(kIds);
  }
  {
    AutocastScope scope(Precision::kBf16, torch::Device(torch::kCPU));
    EXPECT_TRUE(AutocastActive(torch::Device(torch::kCPU)));
    bf16 = model->forward(kIds);
  }
  EXPECT_FALSE(AutocastActive(torch::Device(torch::kCPU)));  // restored
  EXPECT_TRUE(torch::equal(plain, fp32));
  EXPECT_EQ(bf16.scalar_type(), torch::kBFloat16);  // the head's matmul ran in bf16
  // Log-probs (computed in fp32 from the bf16 logits) within bf16's rounding of the fp32 ones:
  // 8 mantissa bits, a few roundings deep.
  const torch::Tensor a = testing::TokenLogProbs(plain, kIds),
                      b = testing::TokenLogProbs(bf16, kIds);
  EXPECT_EQ(b.scalar_type(), torch::kFloat);
  const double diff = (a - b).abs().max().item<double>();
  EXPECT_GT(diff, 0.0);  // autocast took effect
  EXPECT_LT(diff, 0.1 * a.abs().max().item<double>() + 0.05) << diff;
}

// A LoRA base held in bf16 (LoadPretrained of a bf16 checkpoint, then frozen linears in bf16)
// gives the same logits and adapter gradients under autocast as the same values held in fp32:
// autocast casts fp32 weights to exactly those bf16 values.
TEST(PrecisionTest, Bf16HeldBaseEqualsFp32BaseUnderAutocast) {
  testing::TempDir dir;
  {
    LlamaForCausalLM model = RandomModel(2);
    std::map<std::string, DType> bf16;
    for (const auto& [name, t] : model->HfStateDict()) bf16[name] = DType::kBF16;
    ASSERT_TRUE(SavePretrained(model, dir.Join("bf16"), bf16).ok());
    ASSERT_TRUE(SavePretrained(model, dir.Join("fp32")).ok());
  }
  LoraOptions lora;
  lora.r = 4;
  lora.target_modules = {"q_proj", "v_proj", "down_proj"};
  std::vector<torch::Tensor> logits, grads;
  for (const bool held_in_bf16 : {false, true}) {
    auto loaded = LoadPretrained(dir.Join("bf16"), held_in_bf16 ? torch::kBFloat16 : torch::kFloat,
                                 nullptr, /*exact=*/true);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    LlamaForCausalLM model = *loaded;
    torch::manual_seed(7);
    model->AddLora(lora);
    {
      torch::NoGradGuard no_grad;
      for (auto& [name, p] : model->TrainableParameters()) p.copy_(torch::randn_like(p) * 0.1);
    }
    if (held_in_bf16) {
      model->CastFrozenLinears(torch::kBFloat16);
      EXPECT_EQ(model->model->embed_tokens->weight.scalar_type(), torch::kBFloat16);
      EXPECT_EQ(model->lm_head->weight.scalar_type(), torch::kBFloat16);
    }
    for (auto& [name, p] : model->TrainableParameters()) {
      EXPECT_EQ(p.scalar_type(), torch::kFloat) << name;  // trainable stays fp32
    }
    model->train();
    AutocastScope scope(Precision::kBf16, torch::Device(torch::kCPU));
    torch::Tensor out = model->forward(kIds);
    testing::SftLoss(out, kIds, torch::ones_like(kIds)).backward();
    logits.push_back(out.detach());
    torch::Tensor flat;
    for (auto& [name, p] : model->TrainableParameters()) {
      flat = flat.defined() ? torch::cat({flat, p.grad().view(-1)}) : p.grad().view(-1);
    }
    grads.push_back(flat);
  }
  EXPECT_TRUE(torch::equal(logits[0], logits[1]));
  EXPECT_TRUE(torch::allclose(grads[0], grads[1], 1e-5, 1e-7));
}

// An fp32 checkpoint is not rounded: `exact` keeps fp32 where the stored dtype is fp32.
TEST(PrecisionTest, ExactLoadKeepsFp32Checkpoints) {
  testing::TempDir dir;
  LlamaForCausalLM original = RandomModel(3);
  ASSERT_TRUE(SavePretrained(original, dir.Join("fp32")).ok());
  auto loaded = LoadPretrained(dir.Join("fp32"), torch::kBFloat16, nullptr, /*exact=*/true);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto a = original->HfStateDict(), b = (*loaded)->HfStateDict();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(b[i].second.scalar_type(), torch::kFloat) << b[i].first;
    EXPECT_TRUE(torch::equal(a[i].second, b[i].second)) << b[i].first;
  }
}

// Activation checkpointing recomputes a layer in backward in the precision of its forward.
TEST(PrecisionTest, ActivationCheckpointingRecomputesInBf16) {
  std::vector<torch::Tensor> grads[2];
  for (int checkpointing = 0; checkpointing < 2; ++checkpointing) {
    LlamaForCausalLM model = RandomModel(4);
    LoraOptions lora;
    lora.r = 2;
    torch::manual_seed(5);
    model->AddLora(lora);
    {
      torch::NoGradGuard no_grad;
      for (auto& [name, p] : model->TrainableParameters()) p.copy_(torch::randn_like(p) * 0.3);
    }
    model->CastFrozenLinears(torch::kBFloat16);
    model->train();
    model->set_activation_checkpointing(checkpointing == 1);
    torch::Tensor loss;
    {
      AutocastScope scope(Precision::kBf16, torch::Device(torch::kCPU));
      loss = testing::SftLoss(model->forward(kIds), kIds, torch::ones_like(kIds));
    }
    loss.backward();
    for (auto& [name, p] : model->TrainableParameters())
      grads[checkpointing].push_back(p.grad().clone());
  }
  ASSERT_EQ(grads[0].size(), grads[1].size());
  for (size_t i = 0; i < grads[0].size(); ++i) {
    EXPECT_TRUE(torch::allclose(grads[0][i], grads[1][i], 1e-5, 1e-7)) << "#" << i;
  }
}

}  // namespace
}  // namespace paft::trainer
