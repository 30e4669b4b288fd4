// The loss's memory and time at real vocabularies: the trainer's chunked log-probs
// (trainer/target_log_probs.h) beside the full-logits path users run with transformers
// (log_softmax over the whole (B, T, V) logits in fp32, tests/testing/full_logits.h), one path
// per process, on the same tiny model (the head's cost is what is measured), fp32 or bf16.
//
//   paft-loss-bench --path=chunked|full [--vocab=128256] [--seq=1024] [--batch=1] [--hidden=64]
//                   [--layers=2] [--mode=lora|full] [--precision=fp32|bf16] [--steps=4]
//                   [--chunk_rows=0] [--threads=0] [--device=cpu|cuda]
//
// Every position is a target (the most the loss can cost). The process first runs one step
// whose loss needs no head (the mean square of the hidden states); the loss's extra memory is the
// peak memory of the real steps above that step's: resident memory on CPU, the CUDA caching
// allocator's peak allocation on a GPU. Prints one JSON line: the median step time (forward, loss,
// backward) of the steps after the first, the peaks, and the loss.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "common/hf_config.h"
#include "nlohmann/json.hpp"
#include "tests/testing/full_logits.h"
#include "trainer/cpu_runtime.h"
#include "trainer/devices.h"
#include "trainer/llama.h"
#include "trainer/objectives.h"
#include "trainer/precision.h"
#include "trainer/target_log_probs.h"

ABSL_FLAG(std::string, path, "chunked", "chunked (the trainer's) or full (the whole logits)");
ABSL_FLAG(int, vocab, 128256, "Vocabulary size");
ABSL_FLAG(int, seq, 1024, "Tokens per sequence");
ABSL_FLAG(int, batch, 1, "Sequences per step");
ABSL_FLAG(int, hidden, 64, "Hidden size");
ABSL_FLAG(int, layers, 2, "Decoder layers");
ABSL_FLAG(std::string, mode, "lora", "lora (frozen head) or full (trainable head)");
ABSL_FLAG(std::string, precision, "fp32", "fp32 or bf16");
ABSL_FLAG(int, steps, 4, "Steps (the first is a warm-up)");
ABSL_FLAG(int, chunk_rows, 0, "Rows per chunk (0: the trainer's default)");
ABSL_FLAG(int, threads, 0, "Intra-op threads (0: all cores)");
ABSL_FLAG(std::string, device, "cpu", "cpu or cuda (the first GPU)");

namespace {

double PeakMib(const torch::Device& device) {
  if (device.is_cuda()) return paft::trainer::CudaPeakAllocatedBytes(0) / 1048576.0;
  struct rusage usage;
  ::getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  namespace trainer = paft::trainer;
  const int threads = trainer::ConfigureCpuRuntime(absl::GetFlag(FLAGS_threads));
  const std::string path = absl::GetFlag(FLAGS_path), mode = absl::GetFlag(FLAGS_mode);
  const std::string device_name = absl::GetFlag(FLAGS_device);
  if ((path != "chunked" && path != "full") || (mode != "lora" && mode != "full") ||
      (device_name != "cpu" && device_name != "cuda")) {
    std::fprintf(stderr, "--path is chunked or full, --mode lora or full, --device cpu or cuda\n");
    return 2;
  }
  const torch::Device device = device_name == "cuda" ? torch::Device(torch::kCUDA, 0)
                                                     : torch::Device(torch::kCPU);
  const int hidden = absl::GetFlag(FLAGS_hidden), vocab = absl::GetFlag(FLAGS_vocab);
  auto config = paft::ParseModelConfig(
      absl::StrCat(R"({"model_type": "llama", "vocab_size": )", vocab, R"(, "hidden_size": )",
                   hidden, R"(, "intermediate_size": )", 4 * hidden, R"(, "num_hidden_layers": )",
                   absl::GetFlag(FLAGS_layers), R"(, "num_attention_heads": )",
                   std::max(1, hidden / 16), R"(, "tie_word_embeddings": false})"));
  auto precision = trainer::ResolvePrecision(absl::GetFlag(FLAGS_precision), device);
  if (!config.ok() || !precision.ok()) {
    std::fprintf(
        stderr, "%s\n",
        std::string((config.ok() ? precision.status() : config.status()).message()).c_str());
    return 2;
  }
  torch::manual_seed(0);
  trainer::LlamaForCausalLM model(*config);
  model->to(device);
  if (mode == "lora") {
    trainer::LoraOptions lora;
    lora.r = 16;
    lora.target_modules = {"q_proj", "k_proj", "v_proj", "o_proj"};
    model->AddLora(lora);
    if (*precision == trainer::Precision::kBf16) model->CastFrozenLinears(torch::kBFloat16);
  }
  model->train();
  const int64_t b = absl::GetFlag(FLAGS_batch), t = absl::GetFlag(FLAGS_seq);
  const torch::Tensor ids = torch::randint(0, vocab, {b, t}).to(device);
  const torch::Tensor all = torch::ones({b, t}, ids.options());
  auto zero_grads = [&] {
    for (auto& p : model->parameters()) p.mutable_grad() = torch::Tensor();
  };
  trainer::AutocastScope autocast(*precision, device);
  model->HiddenStates(ids).square().mean().backward();  // the step without the head
  zero_grads();
  const double baseline = PeakMib(device);

  std::vector<double> seconds;
  double loss_value = 0;
  for (int step = 0; step < absl::GetFlag(FLAGS_steps); ++step) {
    const auto start = std::chrono::steady_clock::now();
    torch::Tensor loss;
    if (path == "full") {
      loss = paft::testing::SftLoss(model->forward(ids), ids, all);
    } else {
      loss = -trainer::NextTokenLogProbs(model, ids, absl::GetFlag(FLAGS_chunk_rows)).mean();
    }
    loss.backward();
    loss_value = loss.item<double>();  // waits for the GPU
    zero_grads();
    seconds.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::vector<double> timed(seconds.begin() + (seconds.size() > 1 ? 1 : 0), seconds.end());
  std::sort(timed.begin(), timed.end());
  const double peak = PeakMib(device);
  nlohmann::json out = {
      {"path", path},
      {"vocab", vocab},
      {"seq", t},
      {"batch", b},
      {"hidden", hidden},
      {"mode", mode},
      {"precision", trainer::PrecisionName(*precision)},
      {"threads", threads},
      {"chunk_rows", path == "chunked" ? (absl::GetFlag(FLAGS_chunk_rows) > 0
                                              ? absl::GetFlag(FLAGS_chunk_rows)
                                              : trainer::TargetLogProbChunkRows(vocab, device))
                                       : 0},
      {"step_s", timed[timed.size() / 2]},
      {"baseline_peak_mib", baseline},
      {"peak_mib", peak},
      {"loss_extra_mib", peak - baseline},
      {"loss", loss_value}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
