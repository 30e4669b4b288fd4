// Fused attention (at::scaled_dot_product_attention, the default) against the explicit eager
// path on the same weights: every layout (right and left padding, packed sequences, a sliding
// window shorter than the sequence, KV-cached decoding), grouped-query attention, activation
// checkpointing, log-probs and gradients, fp32 and bf16. The eager path itself is checked against
// formulas written out in double in model_test.cc; the default path is what those tests run too.
#include <ATen/ops/_fused_sdp_choice.h>
#include <gtest/gtest.h>

#include "tests/testing/full_logits.h"
#include "trainer/llama.h"
#include "trainer/losses.h"
#include "trainer/precision.h"

namespace paft::trainer {
namespace {

// 4 query heads over 2 key/value heads (GQA), head_dim 16.
ModelConfig Config(int64_t sliding_window = 0) {
  auto c = ParseModelConfig(R"({"model_type": "llama", "vocab_size": 50, "hidden_size": 64,
    "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000.0})");
  EXPECT_TRUE(c.ok()) << c.status();
  c->sliding_window = sliding_window;
  return *c;
}

LlamaForCausalLM Model(const ModelConfig& config, uint64_t seed = 3) {
  torch::manual_seed(seed);
  LlamaForCausalLM model(config);
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.copy_(torch::randn_like(p) * 0.2);
  return model;
}

// Forward with `kernel`, as log-probs of each next token (B, T-1).
torch::Tensor LogProbs(LlamaForCausalLM& model, AttentionKernel kernel, const torch::Tensor& ids,
                       const torch::Tensor& mask = {}) {
  model->set_attention_kernel(kernel);
  return testing::TokenLogProbs(model->forward(ids, mask), ids);
}

double MaxDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

TEST(AttentionTest, ParsesTransformersNames) {
  EXPECT_EQ(*ParseAttentionKernel("sdpa"), AttentionKernel::kSdpa);
  EXPECT_EQ(*ParseAttentionKernel(""), AttentionKernel::kSdpa);
  EXPECT_EQ(*ParseAttentionKernel("eager"), AttentionKernel::kEager);
  auto bad = ParseAttentionKernel("flash_attention_2");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("flash_attention_2"), std::string::npos);
}

TEST(AttentionTest, FlashIsTheCpuBackendForTheModelsShapes) {
  // What SDPA dispatches to for a causal GQA call and a masked one, fp32 and bf16.
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    torch::Tensor q = torch::randn({2, 4, 33, 16}).to(dtype);
    torch::Tensor kv = torch::randn({2, 2, 33, 16}).to(dtype);
    torch::Tensor mask = torch::zeros({2, 1, 33, 33}).to(dtype);
    EXPECT_EQ(at::_fused_sdp_choice(q, kv, kv, {}, 0.0, true, std::nullopt, true),
              static_cast<int64_t>(at::SDPBackend::flash_attention));
    EXPECT_EQ(at::_fused_sdp_choice(q, kv, kv, mask, 0.0, false, std::nullopt, true),
              static_cast<int64_t>(at::SDPBackend::flash_attention));
  }
}

TEST(AttentionTest, SdpaEqualsEagerOnPaddedBatches) {
  auto model = Model(Config());
  torch::NoGradGuard no_grad;
  torch::manual_seed(1);
  torch::Tensor ids = torch::randint(0, 50, {3, 40});
  // Unpadded, right-padded (rows of 40, 31 and 7 tokens: no mask is built) and left-padded.
  torch::Tensor right = torch::ones({3, 40}, torch::kLong);
  right[1].narrow(0, 31, 9).zero_();
  right[2].narrow(0, 7, 33).zero_();
  torch::Tensor left = right.flip({1});
  for (const torch::Tensor& mask : {torch::Tensor(), right, left}) {
    torch::Tensor fused = LogProbs(model, AttentionKernel::kSdpa, ids, mask);
    torch::Tensor eager = LogProbs(model, AttentionKernel::kEager, ids, mask);
    // Only real tokens' predictions of real tokens count (pads are never targets).
    torch::Tensor real = mask.defined() ? (mask.narrow(1, 0, 39) * mask.narrow(1, 1, 39)).to(torch::kBool)
                                        : torch::ones({3, 39}, torch::kBool);
    EXPECT_LT(MaxDiff(fused.masked_select(real), eager.masked_select(real)), 1e-5);
  }
}

TEST(AttentionTest, SdpaEqualsEagerOnPackedSequencesAndASlidingWindow) {
  for (int64_t window : {0, 9}) {
    auto model = Model(Config(window));
    torch::NoGradGuard no_grad;
    torch::manual_seed(2);
    torch::Tensor ids = torch::randint(0, 50, {1, 45});
    const std::vector<int64_t> lengths = {20, 5, 20};
    model->set_attention_kernel(AttentionKernel::kSdpa);
    torch::Tensor fused = model->ForwardPacked(ids, lengths);
    torch::Tensor padded_fused = model->forward(ids);
    model->set_attention_kernel(AttentionKernel::kEager);
    torch::Tensor eager = model->ForwardPacked(ids, lengths);
    torch::Tensor padded_eager = model->forward(ids);
    EXPECT_LT(MaxDiff(torch::log_softmax(fused, -1), torch::log_softmax(eager, -1)), 1e-5)
        << "window " << window;
    EXPECT_LT(MaxDiff(torch::log_softmax(padded_fused, -1), torch::log_softmax(padded_eager, -1)),
              1e-5)
        << "window " << window;
  }
}

TEST(AttentionTest, SdpaEqualsEagerBehindAKvCache) {
  for (int64_t window : {0, 6}) {
    auto model = Model(Config(window));
    torch::NoGradGuard no_grad;
    torch::Tensor ids = torch::randint(0, 50, {1, 16});
    for (auto kernel : {AttentionKernel::kSdpa, AttentionKernel::kEager}) {
      model->set_attention_kernel(kernel);
      torch::Tensor full = model->forward(ids);
      // A 10-token prompt, then 3 tokens at once (a mask behind the cache), then one at a time.
      KVCache cache;
      std::vector<torch::Tensor> parts = {model->forward(ids.narrow(1, 0, 10), {}, &cache),
                                          model->forward(ids.narrow(1, 10, 3), {}, &cache)};
      for (int64_t t = 13; t < 16; ++t) parts.push_back(model->forward(ids.narrow(1, t, 1), {}, &cache));
      EXPECT_LT(MaxDiff(torch::cat(parts, 1), full), 1e-5) << "window " << window;
    }
  }
}

// Gradients through SDPA equal eager's: without a mask (right padding, packed), with one (left
// padding, a sliding window shorter than the sequence), with and without checkpointing.
TEST(AttentionTest, SdpaGradientsEqualEagerWithAndWithoutCheckpointing) {
  torch::manual_seed(5);
  torch::Tensor ids = torch::randint(0, 50, {2, 24});
  torch::Tensor right = torch::ones({2, 24}, torch::kLong);
  right[1].narrow(0, 17, 7).zero_();
  enum Layout { kRight, kLeft, kWindow, kPacked };
  auto gradients = [&](AttentionKernel kernel, bool checkpointing, Layout layout) {
    auto model = Model(Config(layout == kWindow ? 7 : 0));
    model->set_attention_kernel(kernel);
    model->set_activation_checkpointing(checkpointing);
    model->train();
    torch::Tensor loss;
    if (layout == kPacked) {
      // The same rows' 24 + 17 real tokens in one row.
      const torch::Tensor row = ids.view({1, 48}).narrow(1, 0, 41);
      loss = testing::TokenLogProbs(model->ForwardPacked(row, {24, 17}), row).sum();
    } else {
      const torch::Tensor mask = layout == kLeft ? right.flip({1}) : right;
      const torch::Tensor targets = (mask.narrow(1, 0, 23) * mask.narrow(1, 1, 23)).to(torch::kFloat);
      loss = (testing::TokenLogProbs(model->forward(ids, mask), ids) * targets).sum();
    }
    loss.backward();
    std::vector<torch::Tensor> grads;
    for (auto& p : model->parameters()) grads.push_back(p.grad().clone());
    return grads;
  };
  for (Layout layout : {kRight, kLeft, kWindow, kPacked}) {
    auto eager = gradients(AttentionKernel::kEager, false, layout);
    for (bool checkpointing : {false, true}) {
      auto fused = gradients(AttentionKernel::kSdpa, checkpointing, layout);
      ASSERT_EQ(fused.size(), eager.size());
      for (size_t i = 0; i < fused.size(); ++i) {
        const double scale = std::max(1.0, eager[i].abs().max().item<double>());
        EXPECT_LT(MaxDiff(fused[i], eager[i]) / scale, 1e-5)
            << "parameter " << i << " layout " << layout << " checkpointing " << checkpointing;
      }
    }
  }
}

TEST(AttentionTest, Bf16SdpaIsWithinBf16RoundingOfEager) {
  // Unmasked, and with a mask (left padding) that SDPA then takes in bf16.
  auto model = Model(Config());
  torch::NoGradGuard no_grad;
  torch::Tensor ids = torch::randint(0, 50, {2, 48});
  torch::Tensor left = torch::ones({2, 48}, torch::kLong);
  left[1].narrow(0, 0, 11).zero_();
  for (const torch::Tensor& mask : {torch::Tensor(), left}) {
    torch::Tensor real = mask.defined() ? (mask.narrow(1, 0, 47) * mask.narrow(1, 1, 47)).to(torch::kBool)
                                        : torch::ones({2, 47}, torch::kBool);
    torch::Tensor fp32 = LogProbs(model, AttentionKernel::kEager, ids, mask).masked_select(real);
    torch::Tensor fused, eager;
    {
      AutocastScope autocast(Precision::kBf16, torch::Device(torch::kCPU));
      fused = LogProbs(model, AttentionKernel::kSdpa, ids, mask).masked_select(real);
      eager = LogProbs(model, AttentionKernel::kEager, ids, mask).masked_select(real);
    }
    // Both bf16 paths are as far from each other as each is from fp32: bf16's rounding (8 bits
    // of mantissa, ~0.4% per value), nothing more.
    const double eager_error = MaxDiff(eager, fp32), fused_error = MaxDiff(fused, fp32);
    EXPECT_GT(eager_error, 0.0);
    EXPECT_LT(fused_error, 2 * eager_error + 1e-3) << (mask.defined() ? "masked" : "causal");
    EXPECT_LT(MaxDiff(fused, eager), 2 * eager_error + 1e-3);
    EXPECT_LT(fused_error, 0.1);
  }
}

}  // namespace
}  // namespace paft::trainer
