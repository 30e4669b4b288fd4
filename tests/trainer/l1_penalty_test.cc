// PAFT's L1 penalty on the LoRA factors (|A| + |B|) and on the adapted weights' deltas
// (|s B A|): values against plain loops over the matrices, gradients against central finite
// differences of those loops.
#include <gtest/gtest.h>

#include <cmath>

#include "common/hf_config.h"
#include "common/job_spec.h"
#include "trainer/llama.h"
#include "trainer/objectives.h"

namespace paft::trainer {
namespace {

LlamaForCausalLM LoraModel() {
  auto c = ParseModelConfig(R"({"model_type": "llama", "vocab_size": 16, "hidden_size": 8,
    "intermediate_size": 12, "num_hidden_layers": 2, "num_attention_heads": 2,
    "num_key_value_heads": 1, "eos_token_id": 0})");
  EXPECT_TRUE(c.ok());
  torch::manual_seed(5);
  LlamaForCausalLM model(*c);
  model->to(torch::kDouble);
  LoraOptions lora;
  lora.r = 2;
  lora.alpha = 3;
  lora.target_modules = {"q_proj", "v_proj", "down_proj"};
  model->AddLora(lora);
  model->to(torch::kDouble);
  torch::NoGradGuard no_grad;
  for (auto& [name, p] : model->TrainableParameters()) p.copy_(torch::randn_like(p));
  return model;
}

// sum over modules of sum_ij |s (B A)_ij|, or of sum |A| + sum |B|, by loops.
double LoopPenalty(const LlamaForCausalLM& model, bool delta) {
  double total = 0;
  for (auto& [name, linear] : model->LoraLinears()) {
    auto a = linear->lora_A.accessor<double, 2>();
    auto b = linear->lora_B.accessor<double, 2>();
    const int64_t r = linear->lora_A.size(0), in = linear->lora_A.size(1);
    const int64_t out = linear->lora_B.size(0);
    if (!delta) {
      for (int64_t k = 0; k < r; ++k) {
        for (int64_t i = 0; i < in; ++i) total += std::fabs(a[k][i]);
        for (int64_t o = 0; o < out; ++o) total += std::fabs(b[o][k]);
      }
      continue;
    }
    for (int64_t o = 0; o < out; ++o) {
      for (int64_t i = 0; i < in; ++i) {
        double sum = 0;
        for (int64_t k = 0; k < r; ++k) sum += b[o][k] * a[k][i];
        total += std::fabs(linear->scaling * sum);
      }
    }
  }
  return total;
}

void CheckTarget(const std::string& target, bool delta) {
  LlamaForCausalLM model = LoraModel();
  paft::v1::BranchSpec spec;
  spec.mutable_sft()->set_l1_lambda(0.25);
  spec.mutable_sft()->set_l1_target(target);
  auto objective = BranchObjective::FromSpec(spec);
  ASSERT_TRUE(objective.ok()) << objective.status();
  for (auto& [name, p] : model->TrainableParameters()) p.mutable_grad() = torch::zeros_like(p);
  const double value = objective->BackwardPenalty(model);
  EXPECT_NEAR(value, 0.25 * LoopPenalty(model, delta), 1e-6 * value);  // computed in fp32
  // Finite differences on a few entries of each factor of each module.
  constexpr double h = 1e-6;
  int checked = 0;
  for (auto& [name, p] : model->TrainableParameters()) {
    auto flat = p.data().view({-1});
    for (int64_t j : {int64_t{0}, flat.numel() / 2, flat.numel() - 1}) {
      const double x = flat[j].item<double>();
      flat[j] = x + h;
      const double up = LoopPenalty(model, delta);
      flat[j] = x - h;
      const double down = LoopPenalty(model, delta);
      flat[j] = x;
      const double numeric = 0.25 * (up - down) / (2 * h);
      EXPECT_NEAR(p.grad().view({-1})[j].item<double>(), numeric, 1e-5) << name << "[" << j << "]";
      ++checked;
    }
  }
  EXPECT_EQ(checked, 2 * 3 * 2 * 3);  // layers x modules x factors x entries
}

TEST(L1PenaltyTest, AdapterTargetPenalisesTheFactors) { CheckTarget("adapter", false); }

TEST(L1PenaltyTest, DeltaTargetPenalisesTheProductScaledByS) { CheckTarget("delta", true); }

TEST(L1PenaltyTest, ZeroLambdaIsNoPenaltyAndAnUnknownTargetIsRefused) {
  LlamaForCausalLM model = LoraModel();
  paft::v1::BranchSpec spec;
  spec.mutable_sft()->set_l1_lambda(0);
  ApplyBranchDefaults(&spec, /*is_sft=*/true);  // as every spec the trainer reads
  auto objective = BranchObjective::FromSpec(spec);
  ASSERT_TRUE(objective.ok());
  EXPECT_EQ(objective->BackwardPenalty(model), 0);
  spec.mutable_sft()->set_l1_target("weights");
  EXPECT_FALSE(BranchObjective::FromSpec(spec).ok());
}

}  // namespace
}  // namespace paft::trainer
