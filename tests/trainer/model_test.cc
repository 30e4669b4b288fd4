// The Llama model against naive formulas written here independently (loops in double), plus
// checkpoint, LoRA and generation properties.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/file_util.h"
#include "common/safetensors.h"
#include "tests/testing/full_logits.h"
#include "tests/testing/temp_dir.h"
#include "trainer/llama.h"
#include "trainer/losses.h"
#include "trainer/model_io.h"

namespace paft::trainer {
namespace {

ModelConfig TinyConfig(bool tied = false, bool bias = false) {
  auto c = ParseModelConfig(R"({"model_type": "llama", "vocab_size": 11, "hidden_size": 8,
    "intermediate_size": 12, "num_hidden_layers": 2, "num_attention_heads": 2,
    "num_key_value_heads": 1, "rms_norm_eps": 1e-5, "rope_theta": 500.0})");
  EXPECT_TRUE(c.ok()) << c.status();
  c->tie_word_embeddings = tied;
  c->raw["tie_word_embeddings"] = tied;
  c->attention_bias = bias;
  return *c;
}

// Randomises every parameter (so norms and biases are not trivially 1 / 0).
void Randomize(torch::nn::Module& m, uint64_t seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard no_grad;
  for (auto& p : m.parameters()) p.copy_(torch::randn_like(p) * 0.3);
}

using Mat = std::vector<std::vector<double>>;  // [rows][cols]

Mat ToMat(const torch::Tensor& t) {  // 2-D
  auto c = t.to(torch::kDouble).contiguous();
  Mat m(c.size(0), std::vector<double>(c.size(1)));
  for (int64_t i = 0; i < c.size(0); ++i)
    for (int64_t j = 0; j < c.size(1); ++j) m[i][j] = c[i][j].item<double>();
  return m;
}

// y[t] = W x[t] (+ b)
Mat Linear(const Mat& x, const torch::Tensor& w, const torch::Tensor& b = {}) {
  Mat W = ToMat(w);
  Mat y(x.size(), std::vector<double>(W.size(), 0));
  for (size_t t = 0; t < x.size(); ++t)
    for (size_t o = 0; o < W.size(); ++o) {
      double acc = b.defined() ? b[o].item<double>() : 0;
      for (size_t i = 0; i < x[t].size(); ++i) acc += W[o][i] * x[t][i];
      y[t][o] = acc;
    }
  return y;
}

Mat RmsNorm(const Mat& x, const torch::Tensor& w, double eps) {
  Mat y = x;
  for (auto& row : y) {
    double ms = 0;
    for (double v : row) ms += v * v;
    ms /= row.size();
    for (size_t i = 0; i < row.size(); ++i) row[i] = row[i] / std::sqrt(ms + eps) * w[i].item<double>();
  }
  return y;
}

// Rotates head `h` (columns h*hd .. h*hd+hd) of every row t at position t.
void Rope(Mat& x, int64_t heads, int64_t hd, double theta) {
  for (size_t t = 0; t < x.size(); ++t)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < hd / 2; ++i) {
        const double angle = t * std::pow(theta, -2.0 * i / hd);
        double& a = x[t][h * hd + i];
        double& b = x[t][h * hd + i + hd / 2];
        const double a0 = a, b0 = b;
        a = a0 * std::cos(angle) - b0 * std::sin(angle);
        b = b0 * std::cos(angle) + a0 * std::sin(angle);
      }
}

Mat NaiveAttention(const Mat& x, AttentionImpl& attn, const ModelConfig& c) {
  const int64_t nh = c.num_attention_heads, nkv = c.num_key_value_heads, hd = c.head_dim;
  Mat q = Linear(x, attn.q_proj->weight, attn.q_proj->bias);
  Mat k = Linear(x, attn.k_proj->weight, attn.k_proj->bias);
  Mat v = Linear(x, attn.v_proj->weight, attn.v_proj->bias);
  Rope(q, nh, hd, c.rope_theta);
  Rope(k, nkv, hd, c.rope_theta);
  const size_t T = x.size();
  Mat out(T, std::vector<double>(nh * hd, 0));
  for (int64_t h = 0; h < nh; ++h) {
    const int64_t kvh = h / (nh / nkv);
    for (size_t t = 0; t < T; ++t) {
      std::vector<double> s(t + 1);
      double mx = -1e300;
      for (size_t u = 0; u <= t; ++u) {
        double dot = 0;
        for (int64_t i = 0; i < hd; ++i) dot += q[t][h * hd + i] * k[u][kvh * hd + i];
        s[u] = dot / std::sqrt(double(hd));
        mx = std::max(mx, s[u]);
      }
      double z = 0;
      for (double& e : s) z += (e = std::exp(e - mx));
      for (size_t u = 0; u <= t; ++u)
        for (int64_t i = 0; i < hd; ++i) out[t][h * hd + i] += s[u] / z * v[u][kvh * hd + i];
    }
  }
  return Linear(out, attn.o_proj->weight);
}

Mat NaiveForward(LlamaForCausalLMImpl& m, const std::vector<int64_t>& ids) {
  const ModelConfig& c = m.config();
  Mat E = ToMat(m.model->embed_tokens->weight);
  Mat h;
  for (int64_t id : ids) h.push_back(E[id]);
  for (size_t l = 0; l < m.model->layers->size(); ++l) {
    auto* layer = m.model->layers[l]->as<DecoderLayerImpl>();
    Mat a = NaiveAttention(RmsNorm(h, layer->input_layernorm->weight, c.rms_norm_eps),
                           *layer->self_attn, c);
    for (size_t t = 0; t < h.size(); ++t)
      for (size_t i = 0; i < h[t].size(); ++i) h[t][i] += a[t][i];
    Mat n = RmsNorm(h, layer->post_attention_layernorm->weight, c.rms_norm_eps);
    Mat g = Linear(n, layer->mlp->gate_proj->weight), u = Linear(n, layer->mlp->up_proj->weight);
    for (size_t t = 0; t < g.size(); ++t)
      for (size_t i = 0; i < g[t].size(); ++i) g[t][i] = g[t][i] / (1 + std::exp(-g[t][i])) * u[t][i];
    Mat d = Linear(g, layer->mlp->down_proj->weight);
    for (size_t t = 0; t < h.size(); ++t)
      for (size_t i = 0; i < h[t].size(); ++i) h[t][i] += d[t][i];
  }
  h = RmsNorm(h, m.model->norm->weight, c.rms_norm_eps);
  return Linear(h, m.lm_head.is_empty() ? m.model->embed_tokens->weight : m.lm_head->weight);
}

void ExpectNear(const torch::Tensor& got, const Mat& want, double tol) {
  ASSERT_EQ(got.size(0), static_cast<int64_t>(want.size()));
  for (size_t t = 0; t < want.size(); ++t)
    for (size_t i = 0; i < want[t].size(); ++i)
      ASSERT_NEAR(got[t][i].item<double>(), want[t][i], tol) << "[" << t << "][" << i << "]";
}

TEST(LlamaTest, RmsNormAndRopeMatchTheirFormulas) {
  torch::manual_seed(1);
  RMSNorm norm(8, 1e-5);
  Randomize(*norm, 2);
  torch::Tensor x = torch::randn({3, 8});
  ExpectNear(norm(x), RmsNorm(ToMat(x), norm->weight, 1e-5), 1e-5);

  torch::Tensor q = torch::randn({1, 2, 5, 6});  // (B, heads, T, hd)
  const torch::Tensor inv_freq =
      (1.0 / torch::pow(10000.0, torch::arange(0, 6, 2, torch::kDouble) / 6.0)).to(torch::kFloat);
  auto [cos, sin] = RotaryTables(torch::arange(5).unsqueeze(0), inv_freq);
  torch::Tensor rotated = ApplyRotary(q, cos, sin);
  Mat rows(5, std::vector<double>(12));
  for (int t = 0; t < 5; ++t)
    for (int h = 0; h < 2; ++h)
      for (int i = 0; i < 6; ++i) rows[t][h * 6 + i] = q[0][h][t][i].item<double>();
  Rope(rows, 2, 6, 10000.0);
  for (int t = 0; t < 5; ++t)
    for (int h = 0; h < 2; ++h)
      for (int i = 0; i < 6; ++i) ASSERT_NEAR(rotated[0][h][t][i].item<double>(), rows[t][h * 6 + i], 1e-5);
}

TEST(LlamaTest, ForwardMatchesNaiveReference) {
  for (bool tied : {false, true}) {
    for (bool bias : {false, true}) {
      LlamaForCausalLM model(TinyConfig(tied, bias));
      Randomize(*model, 3);
      const std::vector<int64_t> ids = {1, 5, 2, 9, 0, 7};
      torch::Tensor logits = model->forward(torch::tensor(ids).unsqueeze(0));
      ExpectNear(logits[0], NaiveForward(*model, ids), 2e-4);
    }
  }
}

TEST(LlamaTest, KvCacheAndPaddingGiveTheSameLogits) {
  LlamaForCausalLM model(TinyConfig());
  Randomize(*model, 4);
  torch::NoGradGuard no_grad;
  torch::Tensor ids = torch::tensor({3, 1, 4, 1, 5}).unsqueeze(0);
  torch::Tensor full = model->forward(ids);
  KVCache cache;
  torch::Tensor first = model->forward(ids.narrow(1, 0, 3), {}, &cache);
  torch::Tensor rest = model->forward(ids.narrow(1, 3, 2), {}, &cache);
  EXPECT_TRUE(torch::allclose(torch::cat({first, rest}, 1), full, 1e-5, 1e-5));
  // Right padding: the padded row's real positions equal the unpadded row.
  torch::Tensor batch = torch::tensor({3, 1, 4, 1, 5, 0, 0}).unsqueeze(0);
  torch::Tensor mask = torch::tensor({1, 1, 1, 1, 1, 0, 0}).unsqueeze(0);
  torch::Tensor padded = model->forward(batch, mask);
  EXPECT_TRUE(torch::allclose(padded.narrow(1, 0, 5), full, 1e-5, 1e-5));
  // Left padding too (positions count real tokens only).
  torch::Tensor left = model->forward(torch::tensor({0, 0, 3, 1, 4, 1, 5}).unsqueeze(0),
                                      torch::tensor({0, 0, 1, 1, 1, 1, 1}).unsqueeze(0));
  EXPECT_TRUE(torch::allclose(left.narrow(1, 2, 5), full, 1e-5, 1e-5));
}

TEST(LlamaTest, GreedyGenerationFollowsArgmax) {
  LlamaForCausalLM model(TinyConfig());
  Randomize(*model, 5);
  std::vector<int64_t> seq = {2, 7, 1};
  GenerationOptions options;
  options.max_new_tokens = 6;
  auto generated = model->Generate(seq, options);
  ASSERT_EQ(generated.size(), 6u);
  torch::NoGradGuard no_grad;
  for (int64_t token : generated) {
    torch::Tensor logits = model->forward(torch::tensor(seq).unsqueeze(0));
    EXPECT_EQ(logits[0][-1].argmax().item<int64_t>(), token);
    seq.push_back(token);
  }
  // Sampling is reproducible with a seed and stays in the vocabulary.
  options.temperature = 0.8;
  options.top_p = 0.9;
  options.seed = 7;
  auto a = model->Generate({2, 7, 1}, options), b = model->Generate({2, 7, 1}, options);
  EXPECT_EQ(a, b);
  for (int64_t t : a) EXPECT_TRUE(t >= 0 && t < 11);
}

TEST(LlamaTest, GenerationStopsAtAnyEosAndAppliesTheRepetitionPenalty) {
  LlamaForCausalLM model(TinyConfig());
  Randomize(*model, 5);
  GenerationOptions options;
  options.max_new_tokens = 8;
  const auto free_run = model->Generate({2, 7, 1}, options);
  ASSERT_EQ(free_run.size(), 8u);
  // Stop tokens: the second token generated, among others not generated before it.
  options.eos_token_ids = {-5, free_run[1], 10000};
  auto stopped = model->Generate({2, 7, 1}, options);
  const size_t first = std::find(free_run.begin(), free_run.end(), free_run[1]) - free_run.begin();
  EXPECT_EQ(stopped, std::vector<int64_t>(free_run.begin(), free_run.begin() + first + 1));

  // Repetition penalty, against the rule written out here: each step's argmax of the logits in
  // which every token already in the sequence has its logit divided by the penalty when positive
  // and multiplied by it when negative.
  options.eos_token_ids.clear();
  options.repetition_penalty = 3.0;
  const auto penalized = model->Generate({2, 7, 1}, options);
  std::vector<int64_t> seq = {2, 7, 1};
  torch::NoGradGuard no_grad;
  for (int64_t token : penalized) {
    torch::Tensor logits = model->forward(torch::tensor(seq).unsqueeze(0))[0][-1];
    std::vector<double> row(logits.size(0));
    for (int64_t v = 0; v < logits.size(0); ++v) row[v] = logits[v].item<double>();
    for (int64_t v = 0; v < logits.size(0); ++v) {
      if (std::find(seq.begin(), seq.end(), v) == seq.end()) continue;
      row[v] = row[v] > 0 ? row[v] / 3.0 : row[v] * 3.0;
    }
    EXPECT_EQ(std::max_element(row.begin(), row.end()) - row.begin(), token);
    seq.push_back(token);
  }
}

TEST(LlamaTest, CheckpointRoundTripIsBitIdentical) {
  testing::TempDir dir;
  LlamaForCausalLM model(TinyConfig());
  Randomize(*model, 6);
  // A bf16 checkpoint on disk.
  std::map<std::string, DType> bf16;
  for (auto& [name, t] : model->HfStateDict()) bf16[name] = DType::kBF16;
  ASSERT_TRUE(SavePretrained(model, dir.Join("a"), bf16).ok());
  std::map<std::string, DType> stored;
  auto loaded = LoadPretrained(dir.Join("a"), torch::kFloat, &stored);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(stored.size(), bf16.size());
  ASSERT_TRUE(SavePretrained(*loaded, dir.Join("b"), stored).ok());
  auto a = SafetensorsModel::Open(dir.Join("a")), b = SafetensorsModel::Open(dir.Join("b"));
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ((*a)->names(), (*b)->names());
  for (const auto& name : (*a)->names()) {
    auto x = (*a)->Find(name), y = (*b)->Find(name);
    auto dx = x->first->Data(*x->second), dy = y->first->Data(*y->second);
    ASSERT_EQ(x->second->dtype, DType::kBF16);
    ASSERT_EQ(dx.size(), dy.size());
    EXPECT_EQ(std::memcmp(dx.data(), dy.data(), dx.size()), 0) << name;
  }
  // A missing tensor is named.
  ASSERT_TRUE(WriteSafetensors(dir.Join("a/model.safetensors"), {}).ok());
  auto broken = LoadPretrained(dir.Join("a"), torch::kFloat);
  ASSERT_FALSE(broken.ok());
  EXPECT_NE(broken.status().message().find("model.embed_tokens.weight"), absl::string_view::npos);
}

TEST(LoraTest, ZeroBEqualsBaseAndMergedExportEqualsAdapter) {
  testing::TempDir dir;
  LlamaForCausalLM model(TinyConfig());
  Randomize(*model, 7);
  torch::Tensor ids = torch::tensor({4, 2, 8, 6}).unsqueeze(0);
  torch::Tensor base = model->forward(ids).detach();
  LoraOptions lora;
  lora.r = 2;
  lora.alpha = 4;
  lora.target_modules = {"q_proj", "v_proj", "down_proj"};
  model->AddLora(lora);
  EXPECT_TRUE(torch::equal(model->forward(ids), base));  // B = 0: exactly the base
  // Only the LoRA matrices train: 2 per targeted module per layer.
  EXPECT_EQ(model->TrainableParameters().size(), 2u * 3 * 2);
  {
    torch::NoGradGuard no_grad;
    for (auto& [name, p] : model->TrainableParameters()) p.copy_(torch::randn_like(p) * 0.2);
  }
  torch::Tensor adapted = model->forward(ids).detach();
  EXPECT_FALSE(torch::allclose(adapted, base));
  model->SetLoraEnabled(false);  // the reference model: adapters off
  EXPECT_TRUE(torch::equal(model->forward(ids), base));
  model->SetLoraEnabled(true);

  ASSERT_TRUE(SavePretrained(model, dir.Join("merged")).ok());
  auto merged = LoadPretrained(dir.Join("merged"), torch::kFloat);
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_TRUE(torch::allclose((*merged)->forward(ids), adapted, 1e-5, 1e-5));

  // PEFT layout round trip.
  ASSERT_TRUE(SaveAdapter(model, dir.Join("adapter"), "base").ok());
  EXPECT_TRUE(IsRegularFile(dir.Join("adapter/adapter_config.json")));
  auto file = SafetensorsFile::Open(dir.Join("adapter/adapter_model.safetensors"));
  ASSERT_TRUE(file.ok());
  const TensorInfo* a = (*file)->Find("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 8}));
  LlamaForCausalLM fresh(TinyConfig());
  {
    torch::NoGradGuard no_grad;
    auto src = model->HfStateDict(), dst = fresh->HfStateDict();
    for (size_t i = 0; i < src.size(); ++i) dst[i].second.copy_(src[i].second);
  }
  ASSERT_TRUE(LoadAdapter(fresh, dir.Join("adapter")).ok());
  EXPECT_TRUE(torch::allclose(fresh->forward(ids), adapted, 1e-6, 1e-6));
}

TEST(GradientTest, BackwardMatchesFiniteDifferences) {
  LlamaForCausalLM model(TinyConfig());
  Randomize(*model, 8);
  model->to(torch::kDouble);
  LoraOptions lora;
  lora.r = 2;
  model->AddLora(lora);
  {
    torch::NoGradGuard no_grad;
    for (auto& [name, p] : model->TrainableParameters()) p.copy_(torch::randn_like(p) * 0.3);
  }
  torch::Tensor ids = torch::tensor({1, 3, 5, 7, 9}).unsqueeze(0);
  torch::Tensor mask = torch::tensor({0, 0, 1, 1, 1}).unsqueeze(0);
  auto loss_of = [&] {
    return testing::SftLoss(model->forward(ids), ids, mask).to(torch::kDouble);
  };
  for (auto& [name, p] : model->TrainableParameters()) {
    p.mutable_grad() = torch::Tensor();
  }
  loss_of().backward();
  int checked = 0;
  for (auto& [name, p] : model->TrainableParameters()) {
    if (checked >= 4) break;
    torch::NoGradGuard no_grad;
    auto flat = p.view(-1);
    for (int64_t idx : {int64_t{0}, flat.numel() - 1}) {
      const double saved = flat[idx].item<double>(), h = 1e-4;
      flat[idx] = saved + h;
      const double up = loss_of().item<double>();
      flat[idx] = saved - h;
      const double down = loss_of().item<double>();
      flat[idx] = saved;
      const double numeric = (up - down) / (2 * h);
      const double analytic = p.grad().view(-1)[idx].item<double>();
      EXPECT_NEAR(analytic, numeric, 1e-6 * std::max(1.0, std::fabs(numeric))) << name << "[" << idx << "]";
    }
    ++checked;
  }
}

TEST(GradientTest, ActivationCheckpointingGivesTheSameGradients) {
  for (bool lora : {false, true}) {
    std::vector<torch::Tensor> grads[2];
    for (int checkpointing = 0; checkpointing < 2; ++checkpointing) {
      LlamaForCausalLM model(TinyConfig());
      Randomize(*model, 9);
      if (lora) {
        LoraOptions options;
        options.r = 2;
        model->AddLora(options);
        torch::NoGradGuard no_grad;
        for (auto& [name, p] : model->TrainableParameters()) p.copy_(torch::randn_like(p) * 0.3);
      }
      model->train();
      model->set_activation_checkpointing(checkpointing == 1);
      torch::Tensor ids = torch::tensor({1, 3, 5, 7, 9, 2}).unsqueeze(0);
      testing::SftLoss(model->forward(ids), ids, torch::ones_like(ids)).backward();
      for (auto& [name, p] : model->TrainableParameters()) grads[checkpointing].push_back(p.grad().clone());
    }
    ASSERT_EQ(grads[0].size(), grads[1].size());
    for (size_t i = 0; i < grads[0].size(); ++i) {
      EXPECT_TRUE(torch::allclose(grads[0][i], grads[1][i], 1e-5, 1e-6)) << "lora " << lora << " #" << i;
    }
  }
}

}  // namespace
}  // namespace paft::trainer
