// The in-process parts of the GPU check (bench/gpu_check.sh runs it, then the training steps):
//
//   paft-gpu-check matmul      bf16 matmul TFLOP/s on cuda:0 (8192^3, after warm-up)
//   paft-gpu-check logprobs    a tiny model's per-token log-probs on cuda:0 against the CPU's,
//                              fp32 and bf16 autocast, SDPA and eager attention
//   paft-gpu-check allreduce N NCCL all-reduce bus bandwidth over N local GPUs (one forked
//                              process per GPU; N < 2: nothing to measure)
//
// Each prints JSON lines ({"check": ..., ...}); the exit code is 0 when the check passed, 1 when
// it failed, 77 when there is no CUDA device.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "nlohmann/json.hpp"
#include "trainer/devices.h"
#include "trainer/distributed.h"
#include "trainer/llama.h"
#include "trainer/objectives.h"
#include "trainer/precision.h"

namespace {

using Clock = std::chrono::steady_clock;
using paft::trainer::AttentionKernel;

void Print(const nlohmann::json& line) { std::printf("%s\n", line.dump().c_str()); }

double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

int Matmul() {
  const torch::Device gpu(torch::kCUDA, 0);
  const int64_t n = 8192;
  auto options = torch::TensorOptions().dtype(torch::kBFloat16).device(gpu);
  torch::Tensor a = torch::randn({n, n}, options), b = torch::randn({n, n}, options);
  for (int i = 0; i < 5; ++i) (void)torch::matmul(a, b);
  torch::cuda::synchronize();
  const int reps = 50;
  const auto start = Clock::now();
  for (int i = 0; i < reps; ++i) (void)torch::matmul(a, b);
  torch::cuda::synchronize();
  const double seconds = Since(start) / reps;
  Print({{"check", "matmul"}, {"n", n}, {"tflops", 2.0 * n * n * n / seconds / 1e12}});
  return 0;
}

// fp32 on the GPU (TF32 off, PyTorch's default for matmul) equals the CPU to 1e-4; bf16
// autocast on either device is within bf16's rounding of fp32 (8 mantissa bits: a few 1e-2 on
// log-probs of a 3-layer model).
int LogProbs() {
  auto config = paft::ParseModelConfig(R"({"model_type": "llama", "vocab_size": 1000,
    "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 3,
    "num_attention_heads": 8, "num_key_value_heads": 2, "rope_theta": 10000.0})");
  if (!config.ok()) return 1;
  torch::manual_seed(0);
  paft::trainer::LlamaForCausalLM model(*config);
  model->eval();
  torch::NoGradGuard no_grad;
  torch::Tensor ids = torch::randint(0, 1000, {2, 256});
  const torch::Device cpu(torch::kCPU), gpu(torch::kCUDA, 0);
  auto run = [&](const torch::Device& device, paft::trainer::Precision precision,
                 AttentionKernel kernel) {
    model->to(device);
    model->set_attention_kernel(kernel);
    paft::trainer::AutocastScope autocast(precision, device);
    return paft::trainer::NextTokenLogProbs(model, ids.to(device)).cpu();
  };
  const torch::Tensor reference = run(cpu, paft::trainer::Precision::kFp32, AttentionKernel::kEager);
  bool ok = true;
  for (auto kernel : {AttentionKernel::kSdpa, AttentionKernel::kEager}) {
    for (auto precision : {paft::trainer::Precision::kFp32, paft::trainer::Precision::kBf16}) {
      const double gpu_diff = (run(gpu, precision, kernel) - reference).abs().max().item<double>();
      const double cpu_diff = (run(cpu, precision, kernel) - reference).abs().max().item<double>();
      const double tolerance = precision == paft::trainer::Precision::kFp32 ? 1e-4 : 0.1;
      const bool passed = gpu_diff <= tolerance;
      ok = ok && passed;
      Print({{"check", "logprobs"},
             {"attention", kernel == AttentionKernel::kSdpa ? "sdpa" : "eager"},
             {"precision", paft::trainer::PrecisionName(precision)},
             {"gpu_max_abs_diff", gpu_diff},
             {"cpu_max_abs_diff", cpu_diff},
             {"tolerance", tolerance},
             {"passed", passed}});
    }
  }
  return ok ? 0 : 1;
}

int AllReduceRank(int rank, int world) {
  paft::trainer::RendezvousOptions options;
  options.rank = rank;
  options.world_size = world;
  options.master_port = 29877;
  options.cuda = true;
  torch::Device device(torch::kCUDA, static_cast<c10::DeviceIndex>(rank));
  auto group = paft::trainer::ProcessGroupHandle::Connect(options);
  if (!group.ok()) {
    std::fprintf(stderr, "rank %d: %s\n", rank, std::string(group.status().message()).c_str());
    return 1;
  }
  for (int64_t mib : {16, 256, 1024}) {
    torch::Tensor t =
        torch::ones({mib * (1 << 20) / 2}, torch::TensorOptions().dtype(torch::kBFloat16).device(device));
    (*group)->AllReduce(t);
    torch::cuda::synchronize();
    const int reps = 20;
    const auto start = Clock::now();
    for (int i = 0; i < reps; ++i) (*group)->AllReduce(t);
    torch::cuda::synchronize();
    const double seconds = Since(start) / reps;
    const double gb = mib / 1024.0 * 1.073741824;  // GB (1e9 bytes), as nccl-tests reports
    if (rank == 0) {
      Print({{"check", "allreduce"}, {"gpus", world}, {"mib", mib}, {"ms", seconds * 1e3},
             {"busbw_gbps", gb / seconds * 2.0 * (world - 1) / world}});
    }
  }
  return 0;
}

int AllReduce(int world) {
  if (world < 2) {
    Print({{"check", "allreduce"}, {"gpus", world}, {"skipped", "one GPU: nothing to reduce across"}});
    return 0;
  }
  std::vector<pid_t> children;
  for (int rank = 0; rank < world; ++rank) {
    pid_t pid = ::fork();
    if (pid == 0) ::_exit(AllReduceRank(rank, world));
    children.push_back(pid);
  }
  int failed = 0;
  for (pid_t pid : children) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failed;
  }
  return failed == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string command = argc >= 2 ? argv[1] : "";
  // Before any CUDA call (the GPU count comes from the caller): forked ranks must not inherit an
  // initialised CUDA runtime.
  if (command == "allreduce") return AllReduce(argc >= 3 ? std::atoi(argv[2]) : 0);
  if (paft::trainer::CudaDevices().empty()) {
    std::fprintf(stderr, "paft-gpu-check: no CUDA device visible\n");
    return 77;
  }
  if (command == "matmul") return Matmul();
  if (command == "logprobs") return LogProbs();
  std::fprintf(stderr, "usage: paft-gpu-check matmul|logprobs|allreduce\n");
  return 2;
}
