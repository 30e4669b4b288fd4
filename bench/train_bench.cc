// Training throughput and peak memory of the real trainer (trainer::Train, as `paft-worker
// train` runs it) on a model folder, for one configuration per process; bench/train_bench.sh
// runs it beside the PyTorch-Python peer (bench/train_peer.py) on the same shapes.
//
//   paft-train-bench --model=DIR --mode=full|lora --precision=fp32|bf16 [--seq=128] [--batch=4]
//                    [--steps=6] [--threads=0] [--lora_r=16] [--activation_checkpointing]
//                    [--ragged] [--padding_free] [--attn_implementation=sdpa|eager]
//                    [--rank=0 --world=1 --port=0]
//
// Prints one JSON line: the median step time of the steps after the first (warm-up), tokens
// (real ones, pads not counted) per second of this rank, and the process's peak resident memory.
#include <sys/resource.h>
#include <torch/csrc/autograd/profiler_legacy.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/hf_config.h"
#include "common/token_dataset.h"
#include "nlohmann/json.hpp"
#include "trainer/devices.h"
#include "trainer/trainer.h"

ABSL_FLAG(std::string, model, "", "Model folder (config.json + safetensors)");
ABSL_FLAG(std::string, mode, "lora", "full or lora");
ABSL_FLAG(std::string, precision, "fp32", "fp32 or bf16");
ABSL_FLAG(int, seq, 128, "Tokens per sequence");
ABSL_FLAG(int, batch, 4, "Sequences per step and rank");
ABSL_FLAG(int, steps, 6, "Timed steps (after one warm-up step)");
ABSL_FLAG(int, threads, 0, "Intra-op threads (0: all cores)");
ABSL_FLAG(int, lora_r, 16, "LoRA rank (all linear layers)");
ABSL_FLAG(bool, activation_checkpointing, false, "Recompute layer activations in backward");
ABSL_FLAG(bool, ragged, false, "Completions of random lengths in [seq/4, seq) instead of all seq");
ABSL_FLAG(bool, padding_free, false, "Pack each micro-batch into one row (batch.padding_free)");
ABSL_FLAG(std::string, attn_implementation, "sdpa", "Attention kernel: sdpa or eager");
ABSL_FLAG(int, rank, 0, "This process's rank");
ABSL_FLAG(int, world, 1, "Data-parallel ranks");
ABSL_FLAG(int, port, 0, "Rendezvous port (world > 1)");
ABSL_FLAG(std::string, profile, "", "Write a chrome://tracing profile of the run to this file");
ABSL_FLAG(std::string, workdir, "", "Scratch folder (default: a new one under /tmp)");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  using paft::v1::Task;
  const std::string model = absl::GetFlag(FLAGS_model);
  auto config = paft::LoadModelConfig(model);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  const int seq = absl::GetFlag(FLAGS_seq), batch = absl::GetFlag(FLAGS_batch);
  const int steps = absl::GetFlag(FLAGS_steps), world = absl::GetFlag(FLAGS_world);
  std::string work = absl::GetFlag(FLAGS_workdir);
  if (work.empty()) {
    char tmpl[] = "/tmp/paft-train-bench-XXXXXX";
    work = ::mkdtemp(tmpl);
  }
  // Random SFT examples: a one-token prompt and seq - 1 completion tokens.
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> token(0, static_cast<uint32_t>(config->vocab_size - 1));
  std::uniform_int_distribution<int> length(std::max(2, seq / 4), seq);
  std::vector<paft::TokenExample> examples(static_cast<size_t>((steps + 1) * batch * world));
  for (auto& e : examples) {
    e.prompt = {token(rng)};
    const int n = absl::GetFlag(FLAGS_ragged) ? length(rng) : seq;
    for (int i = 1; i < n; ++i) e.completion.push_back(token(rng));
  }
  const std::string data = absl::StrCat(work, "/data-", absl::GetFlag(FLAGS_rank), ".paftds");
  if (auto s = paft::WriteTokenDataset(data, paft::DatasetKind::kSft, examples); !s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    return 1;
  }

  paft::trainer::TrainOptions options;
  Task& task = options.task;
  task.set_task_id("bench");
  task.set_base_model(model);
  task.set_rank(absl::GetFlag(FLAGS_rank));
  task.set_local_rank(absl::GetFlag(FLAGS_rank));  // one GPU per rank where there are GPUs
  task.set_world_size(world);
  task.set_master_addr("127.0.0.1");
  task.set_master_port(absl::GetFlag(FLAGS_port));
  task.set_checkpoint_dir(absl::StrCat(work, "/checkpoints-", absl::GetFlag(FLAGS_rank)));
  task.set_branch(paft::v1::BRANCH_KIND_SFT);
  auto* spec = task.mutable_spec();
  spec->mutable_sft();
  spec->set_precision(absl::GetFlag(FLAGS_precision));
  if (absl::GetFlag(FLAGS_mode) == "full") {
    spec->mutable_full();
  } else {
    spec->mutable_lora()->set_r(absl::GetFlag(FLAGS_lora_r));
    spec->mutable_lora()->set_alpha(2.0 * absl::GetFlag(FLAGS_lora_r));
    for (const char* m :
         {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}) {
      spec->mutable_lora()->add_target_modules(m);
    }
  }
  spec->mutable_optimizer()->set_learning_rate(1e-5);
  spec->mutable_optimizer()->set_lr_schedule("constant");
  spec->mutable_batch()->set_per_device_batch_size(batch);
  spec->mutable_batch()->set_max_length(seq);
  spec->mutable_batch()->set_padding_free(absl::GetFlag(FLAGS_padding_free));
  spec->set_max_steps(steps + 1);
  spec->set_activation_checkpointing(absl::GetFlag(FLAGS_activation_checkpointing));
  spec->set_attn_implementation(absl::GetFlag(FLAGS_attn_implementation));
  spec->set_seed(1);
  options.dataset = data;
  options.threads = absl::GetFlag(FLAGS_threads);
  // Step time: between consecutive progress events (the first step, from set-up, is dropped).
  std::vector<double> step_seconds, rates;
  auto last = std::chrono::steady_clock::now();
  options.emit = [&](const nlohmann::json& e) {
    if (e["type"] != "progress") return;
    const auto now = std::chrono::steady_clock::now();
    step_seconds.push_back(std::chrono::duration<double>(now - last).count());
    last = now;
    rates.push_back(e["tokens_per_second"].get<double>() / world);  // the event counts every rank
  };
  absl::Status status;
  if (absl::GetFlag(FLAGS_profile).empty()) {
    status = paft::trainer::Train(options);
  } else {
    torch::autograd::profiler::RecordProfile profile(absl::GetFlag(FLAGS_profile));
    status = paft::trainer::Train(options);
  }
  (void)paft::RemoveAll(work);
  if (!status.ok()) {
    std::fprintf(stderr, "%s\n", std::string(status.message()).c_str());
    return 1;
  }
  auto median_after_first = [](std::vector<double> v) {
    v.erase(v.begin(), v.begin() + std::min<size_t>(1, v.size()));
    std::sort(v.begin(), v.end());
    if (v.empty()) return 0.0;
    const size_t n = v.size();
    return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  };
  const double median = median_after_first(step_seconds);
  struct rusage usage;
  ::getrusage(RUSAGE_SELF, &usage);
  nlohmann::json out = {{"impl", "paft"},
                        {"mode", absl::GetFlag(FLAGS_mode)},
                        {"precision", absl::GetFlag(FLAGS_precision)},
                        {"world", world},
                        {"step_s", median},
                        {"tokens_per_s", median_after_first(rates)},
                        {"padding_free", absl::GetFlag(FLAGS_padding_free)},
                        {"attn", absl::GetFlag(FLAGS_attn_implementation)},
                        {"seq", seq},
                        {"peak_rss_mib", usage.ru_maxrss / 1024.0}};
  // On a GPU, the rank's device memory at its peak.
  if (!paft::trainer::CudaDevices().empty()) {
    out["peak_gpu_mib"] =
        paft::trainer::CudaPeakAllocatedBytes(absl::GetFlag(FLAGS_rank)) / double(1 << 20);
  }
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
