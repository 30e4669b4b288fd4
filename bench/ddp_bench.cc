// Data-parallel costs on this machine: Gloo all-reduce bandwidth between 2 processes on
// loopback, and the step time of 2 ranks against 1 rank for the same per-rank batch (the
// efficiency of DDP-style bucketed all-reduce overlapped with backward).
//
//   paft-ddp-bench [--hidden=256] [--layers=4] [--vocab=4096] [--seq=128] [--batch=4] [--steps=8]
//
// The binary forks its ranks itself (before LibTorch starts any thread); rank 0 prints.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "trainer/distributed.h"
#include "trainer/llama.h"
#include "trainer/objectives.h"

ABSL_FLAG(int, hidden, 256, "Hidden size");
ABSL_FLAG(int, layers, 4, "Decoder layers");
ABSL_FLAG(int, vocab, 4096, "Vocabulary");
ABSL_FLAG(int, seq, 128, "Tokens per sequence");
ABSL_FLAG(int, batch, 4, "Sequences per rank and step");
ABSL_FLAG(int, steps, 8, "Timed steps (after one warm-up)");
ABSL_FLAG(int, port, 29811, "Rendezvous port on 127.0.0.1");

namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

double StepSeconds(paft::trainer::ProcessGroupHandle* group, int rank) {
  paft::ModelConfig config;
  config.model_type = "llama";
  config.vocab_size = absl::GetFlag(FLAGS_vocab);
  config.hidden_size = absl::GetFlag(FLAGS_hidden);
  config.intermediate_size = config.hidden_size * 8 / 3 / 64 * 64;
  config.num_hidden_layers = absl::GetFlag(FLAGS_layers);
  config.num_attention_heads = config.hidden_size / 64;
  config.num_key_value_heads = config.num_attention_heads;
  config.head_dim = 64;
  config.tie_word_embeddings = true;
  torch::manual_seed(0);
  paft::trainer::LlamaForCausalLM model(config);
  std::vector<torch::Tensor> params;
  for (auto& [name, p] : model->TrainableParameters()) params.push_back(p);
  std::unique_ptr<paft::trainer::GradientSynchronizer> sync;
  if (group != nullptr) sync = std::make_unique<paft::trainer::GradientSynchronizer>(group, params);
  torch::optim::AdamW optimizer(params, torch::optim::AdamWOptions(1e-4));
  torch::manual_seed(rank + 1);
  torch::Tensor ids =
      torch::randint(0, config.vocab_size, {absl::GetFlag(FLAGS_batch), absl::GetFlag(FLAGS_seq)});
  double total = 0;
  for (int step = 0; step <= absl::GetFlag(FLAGS_steps); ++step) {
    auto start = Clock::now();
    optimizer.zero_grad();
    if (sync) sync->Prepare(true);
    (-paft::trainer::NextTokenLogProbs(model, ids).mean()).backward();
    if (sync) sync->Finish();
    optimizer.step();
    if (step > 0) total += Since(start);
  }
  return total / absl::GetFlag(FLAGS_steps);
}

int Rank(int rank, int world) {
  at::set_num_threads(1);  // one core per rank, as one device per rank
  std::unique_ptr<paft::trainer::ProcessGroupHandle> group;
  if (world > 1) {
    paft::trainer::RendezvousOptions options;
    options.rank = rank;
    options.world_size = world;
    options.master_port = absl::GetFlag(FLAGS_port) + world;
    auto connected = paft::trainer::ProcessGroupHandle::Connect(options);
    if (!connected.ok()) {
      std::fprintf(stderr, "rank %d: %s\n", rank, std::string(connected.status().message()).c_str());
      return 1;
    }
    group = std::move(connected).value();
    if (rank == 0) std::printf("\n| all-reduce (2 ranks, Gloo, loopback) | ms | algorithm GB/s | bus GB/s |\n|---|---|---|---|\n");
    for (int64_t mb : {1, 4, 16, 64}) {
      torch::Tensor t = torch::ones({mb * (1 << 20) / 4});
      group->AllReduce(t);
      const int reps = mb >= 16 ? 5 : 20;
      auto start = Clock::now();
      for (int i = 0; i < reps; ++i) group->AllReduce(t);
      const double seconds = Since(start) / reps;
      if (rank == 0) {
        const double gb = mb / 1024.0;
        std::printf("| %ld MiB | %.2f | %.2f | %.2f |\n", mb, seconds * 1e3, gb / seconds,
                    gb / seconds * 2.0 * (world - 1) / world);
      }
    }
  }
  const double step = StepSeconds(group.get(), rank);
  if (rank == 0) std::printf("STEP %d %.4f\n", world, step);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::setvbuf(stdout, nullptr, _IONBF, 0);
  std::printf("model: hidden %d, %d layers, vocab %d; %d x %d tokens per rank and step, full "
              "fine-tuning, 1 intra-op thread per rank\n",
              absl::GetFlag(FLAGS_hidden), absl::GetFlag(FLAGS_layers), absl::GetFlag(FLAGS_vocab),
              absl::GetFlag(FLAGS_batch), absl::GetFlag(FLAGS_seq));
  for (int world : {1, 2}) {
    std::vector<pid_t> children;
    for (int rank = 0; rank < world; ++rank) {
      pid_t pid = ::fork();
      if (pid == 0) ::_exit(Rank(rank, world));
      children.push_back(pid);
    }
    for (pid_t pid : children) {
      int status = 0;
      ::waitpid(pid, &status, 0);
    }
  }
  return 0;
}
