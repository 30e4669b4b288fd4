// Training throughput of the LibTorch engine on this machine, side by side with the measured peak
// of a large fp32 matmul (the ceiling for model FLOPs utilisation, MFU).
//
//   paft-train-bench [--hidden=512] [--layers=6] [--vocab=8192] [--seq=256] [--batch=8]
//                    [--steps=6] [--threads=0]
//
// FLOPs per token: 6 N (forward + backward of every weight matmul, N including the LM head)
// + 12 L H T (attention scores and values), as in the PaLM / Chinchilla accounting.
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "trainer/llama.h"
#include "trainer/losses.h"

ABSL_FLAG(int, hidden, 512, "Hidden size");
ABSL_FLAG(int, layers, 6, "Decoder layers");
ABSL_FLAG(int, vocab, 8192, "Vocabulary");
ABSL_FLAG(int, seq, 256, "Tokens per sequence");
ABSL_FLAG(int, batch, 8, "Sequences per step");
ABSL_FLAG(int, steps, 6, "Timed steps (after one warm-up step)");
ABSL_FLAG(int, threads, 0, "Intra-op threads (0: all cores)");

namespace {

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double MatmulPeakGflops(int64_t n) {
  torch::Tensor a = torch::randn({n, n}), b = torch::randn({n, n});
  torch::matmul(a, b);  // warm-up
  const int reps = 5;
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) torch::matmul(a, b);
  return 2.0 * n * n * n * reps / Seconds(start) / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int threads = absl::GetFlag(FLAGS_threads) > 0
                          ? absl::GetFlag(FLAGS_threads)
                          : static_cast<int>(std::thread::hardware_concurrency());
  at::set_num_threads(threads);
  std::printf("LibTorch %s, %d intra-op threads\n%s\n", TORCH_VERSION, at::get_num_threads(),
              at::get_parallel_info().c_str());
  const double peak = MatmulPeakGflops(2048);
  std::printf("fp32 matmul 2048^3: %.1f GFLOP/s (the peak used for MFU)\n", peak);

  const int64_t h = absl::GetFlag(FLAGS_hidden), layers = absl::GetFlag(FLAGS_layers);
  const int64_t vocab = absl::GetFlag(FLAGS_vocab), seq = absl::GetFlag(FLAGS_seq);
  const int64_t batch = absl::GetFlag(FLAGS_batch);
  paft::ModelConfig config;
  config.model_type = "llama";
  config.vocab_size = vocab;
  config.hidden_size = h;
  config.intermediate_size = (8 * h / 3 + 63) / 64 * 64;
  config.num_hidden_layers = layers;
  config.num_attention_heads = h / 64;
  config.num_key_value_heads = h / 64;
  config.head_dim = 64;
  config.tie_word_embeddings = true;
  const int64_t params = config.ParameterCount();
  // Matmul weights: every layer's projections plus the (tied) LM head.
  const int64_t matmul_params = params - vocab * h - (2 * layers + 1) * h + vocab * h;
  const double flops_per_token = 6.0 * matmul_params + 12.0 * layers * h * seq;
  std::printf("model: %.1fM parameters (hidden %ld, %ld layers, vocab %ld), batch %ld x %ld tokens\n",
              params / 1e6, h, layers, vocab, batch, seq);
  std::printf("| mode | step s | tokens/s | model TFLOP/s | MFU |\n|---|---|---|---|---|\n");

  for (const bool lora : {false, true}) {
    torch::manual_seed(0);
    paft::trainer::LlamaForCausalLM model(config);
    if (lora) {
      paft::trainer::LoraOptions options;
      options.r = 16;
      options.target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                "down_proj"};
      model->AddLora(options);
    }
    std::vector<torch::Tensor> trainable;
    for (auto& [name, p] : model->TrainableParameters()) trainable.push_back(p);
    torch::optim::AdamW optimizer(trainable, torch::optim::AdamWOptions(1e-4));
    torch::Tensor ids = torch::randint(0, vocab, {batch, seq}, torch::kLong);
    torch::Tensor mask = torch::ones({batch, seq}, torch::kLong);
    double total = 0;
    for (int step = 0; step <= absl::GetFlag(FLAGS_steps); ++step) {
      auto start = std::chrono::steady_clock::now();
      optimizer.zero_grad();
      torch::Tensor loss = paft::trainer::SftLoss(model->forward(ids), ids, mask);
      loss.backward();
      optimizer.step();
      if (step > 0) total += Seconds(start);
    }
    const double step_seconds = total / absl::GetFlag(FLAGS_steps);
    const double tokens_per_second = batch * seq / step_seconds;
    // LoRA skips the weight-gradient matmuls of the frozen weights: ~4N instead of 6N.
    const double flops = lora ? flops_per_token * 4.0 / 6.0 : flops_per_token;
    const double tflops = tokens_per_second * flops / 1e12;
    std::printf("| %s | %.3f | %.0f | %.3f | %.0f%% |\n", lora ? "LoRA r=16, all linears" : "full fine-tuning",
                step_seconds, tokens_per_second, tflops, 100.0 * tflops * 1e3 / peak);
  }
  return 0;
}
