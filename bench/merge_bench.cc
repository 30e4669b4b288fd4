// Merge throughput and peak memory on a synthetic bf16 model (TinyLlama-1.1B shapes by default),
// with two fine-tuned inputs: a dense delta ("sft") and a sparse one ("dpo").
//
//   paft-merge-bench --dir=/tmp/paft-merge-bench [--layers=22] [--threads=2]
//                    [--methods=task_arithmetic,ties,dare_ties]   (--methods=: only the models)
//
// The model folders (config.json as transformers reads it) are also the inputs of
// bench/mergekit_bench.sh, which runs paft-merger and mergekit on the same YAML.
// Reports, side by side in one run: a plain sequential read() of the three models' files (the
// I/O ceiling on this machine; warm page cache, like the merges after it), then each merge in a
// child process: wall time, input GB/s (bytes of base + inputs read / time), and the child's peak
// resident memory (ru_maxrss).
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <random>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/dtype.h"
#include "common/file_util.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "merger/merger.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, dir, "/tmp/paft-merge-bench", "Working folder (models are cached here)");
ABSL_FLAG(int, layers, 22, "Decoder layers (22: TinyLlama-1.1B, 1.10e9 parameters)");
ABSL_FLAG(int, threads, 2, "Merge threads");
ABSL_FLAG(std::string, methods, "task_arithmetic,ties,dare_ties", "Methods to time");

namespace {

constexpr int64_t kVocab = 32000, kHidden = 2048, kInter = 5632, kHeads = 32, kKvHeads = 4;

// xorshift64* -> uniform in [-1, 1).
struct Rng {
  uint64_t s;
  float Next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return static_cast<float>((s * 0x2545F4914F6CDD1DULL) >> 40) * (2.0f / 16777216.0f) - 1.0f;
  }
};

std::vector<paft::TensorSpec> Specs(int layers) {
  const int64_t hd = kHidden / kHeads;
  std::vector<paft::TensorSpec> specs;
  auto add = [&](std::string name, std::vector<int64_t> shape) {
    specs.push_back({std::move(name), paft::DType::kBF16, std::move(shape)});
  };
  add("model.embed_tokens.weight", {kVocab, kHidden});
  for (int l = 0; l < layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    add(p + "input_layernorm.weight", {kHidden});
    add(p + "self_attn.q_proj.weight", {kHeads * hd, kHidden});
    add(p + "self_attn.k_proj.weight", {kKvHeads * hd, kHidden});
    add(p + "self_attn.v_proj.weight", {kKvHeads * hd, kHidden});
    add(p + "self_attn.o_proj.weight", {kHidden, kHeads * hd});
    add(p + "post_attention_layernorm.weight", {kHidden});
    add(p + "mlp.gate_proj.weight", {kInter, kHidden});
    add(p + "mlp.up_proj.weight", {kInter, kHidden});
    add(p + "mlp.down_proj.weight", {kHidden, kInter});
  }
  add("model.norm.weight", {kHidden});
  add("lm_head.weight", {kVocab, kHidden});
  return specs;
}

// kind 0: base; 1: base + dense delta; 2: base + delta on ~5% of entries.
absl::Status WriteModel(const std::string& dir, int layers, int kind) {
  PAFT_RETURN_IF_ERROR(paft::MakeDirs(dir));
  nlohmann::json config = {{"architectures", {"LlamaForCausalLM"}},
                           {"model_type", "llama"},       {"vocab_size", kVocab},
                           {"hidden_size", kHidden},      {"intermediate_size", kInter},
                           {"num_hidden_layers", layers}, {"num_attention_heads", kHeads},
                           {"num_key_value_heads", kKvHeads}, {"torch_dtype", "bfloat16"},
                           {"rms_norm_eps", 1e-5},        {"max_position_embeddings", 2048},
                           {"tie_word_embeddings", false}};
  PAFT_RETURN_IF_ERROR(paft::WriteFileAtomic(paft::JoinPath(dir, "config.json"), config.dump()));
  auto specs = Specs(layers);
  auto writer = paft::SafetensorsWriter::Create(paft::JoinPath(dir, "model.safetensors"), specs);
  if (!writer.ok()) return writer.status();
  for (size_t t = 0; t < specs.size(); ++t) {
    int64_t n = 1;
    for (int64_t d : specs[t].shape) n *= d;
    std::vector<uint16_t> values(static_cast<size_t>(n));
    Rng base{0x9E3779B97F4A7C15ULL * (t + 1)}, delta{0xD1B54A32D192ED03ULL * (t + 1) + kind};
    for (int64_t j = 0; j < n; ++j) {
      float v = 0.02f * base.Next();
      if (kind == 1) v += 1e-3f * delta.Next();
      if (kind == 2) {
        const float u = delta.Next();
        if (u > 0.9f) v += 1e-2f * (u - 0.95f) * 20.0f;  // 5% of entries
      }
      values[j] = paft::FloatToBf16(v);
    }
    PAFT_RETURN_IF_ERROR((*writer)->Append(absl::Span<const uint8_t>(
        reinterpret_cast<const uint8_t*>(values.data()), values.size() * 2)));
  }
  return (*writer)->Commit();
}

double SequentialReadGbps(const std::vector<std::string>& files, int64_t* bytes) {
  std::vector<char> buffer(8 << 20);
  *bytes = 0;
  const absl::Time start = absl::Now();
  for (const auto& f : files) {
    int fd = ::open(f.c_str(), O_RDONLY);
    ssize_t n;
    while ((n = ::read(fd, buffer.data(), buffer.size())) > 0) *bytes += n;
    ::close(fd);
  }
  return *bytes / 1e9 / absl::ToDoubleSeconds(absl::Now() - start);
}

// Writes `bytes` zeros in 8 MiB blocks and fsyncs: the floor for writing the merged model.
double SequentialWriteSeconds(const std::string& path, int64_t bytes) {
  std::vector<char> buffer(8 << 20, 0);
  const absl::Time start = absl::Now();
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  for (int64_t left = bytes; left > 0;) {
    const ssize_t n = ::write(fd, buffer.data(), std::min<int64_t>(left, buffer.size()));
    if (n <= 0) break;
    left -= n;
  }
  ::fsync(fd);
  ::close(fd);
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  ::unlink(path.c_str());
  return seconds;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string dir = absl::GetFlag(FLAGS_dir);
  const int layers = absl::GetFlag(FLAGS_layers);
  const std::vector<std::string> names = {"base", "sft", "dpo"};
  for (int kind = 0; kind < 3; ++kind) {
    const std::string model = paft::JoinPath(dir, absl::StrCat(names[kind], "-L", layers));
    if (paft::PathExists(paft::JoinPath(model, "model.safetensors"))) continue;
    std::cerr << "writing " << model << "\n";
    if (absl::Status s = WriteModel(model, layers, kind); !s.ok()) {
      std::cerr << s << "\n";
      return 1;
    }
  }
  std::vector<std::string> files;
  for (const auto& n : names) {
    files.push_back(paft::JoinPath(dir, absl::StrCat(n, "-L", layers, "/model.safetensors")));
  }
  int64_t bytes = 0;
  SequentialReadGbps(files, &bytes);  // warm the page cache
  const double read_gbps = SequentialReadGbps(files, &bytes);
  std::printf("model: %d layers, %.3f B parameters, bf16; inputs: dense delta, sparse delta\n",
              layers, bytes / 2.0 / 3 / 1e9);
  std::printf("| what | seconds | input GB/s | vs read | peak RSS MB |\n|---|---|---|---|---|\n");
  std::printf("| sequential read() of the 3 files (%.2f GB, page cache) | %.2f | %.2f | 1.00 | - |\n",
              bytes / 1e9, bytes / 1e9 / read_gbps, read_gbps);
  const double write_seconds = SequentialWriteSeconds(paft::JoinPath(dir, "write-test"), bytes / 3);
  std::printf("| sequential write + fsync of one model (%.2f GB) | %.2f | - | - | - |\n",
              bytes / 3 / 1e9, write_seconds);
  for (const auto& method : absl::StrSplit(absl::GetFlag(FLAGS_methods), ',', absl::SkipEmpty())) {
    const std::string out = paft::JoinPath(dir, absl::StrCat("out-", method));
    (void)paft::RemoveAll(out);
    int fds[2];
    if (::pipe(fds) != 0) return 1;
    const absl::Time start = absl::Now();
    pid_t pid = ::fork();
    if (pid == 0) {
      paft::v1::MergeRequest request;
      request.set_merge_id("bench");
      request.set_base_model(paft::JoinPath(dir, absl::StrCat("base-L", layers)));
      for (const char* in : {"sft", "dpo"}) {
        auto* input = request.add_inputs();
        input->set_path(paft::JoinPath(dir, absl::StrCat(in, "-L", layers)));
        input->mutable_params()->set_weight(1.0);
        input->mutable_params()->set_density(0.5);
      }
      request.mutable_spec()->set_method(std::string(method));
      request.set_output_dir(out);
      request.set_threads(absl::GetFlag(FLAGS_threads));
      paft::merger::MergeProgress progress;
      absl::Status s = paft::merger::RunMerge(request, &progress);
      int64_t read = s.ok() ? progress.bytes_read.load() : -1;
      (void)!::write(fds[1], &read, sizeof(read));
      ::_exit(s.ok() ? 0 : 1);
    }
    ::close(fds[1]);
    int64_t merged_bytes = -1;
    (void)!::read(fds[0], &merged_bytes, sizeof(merged_bytes));
    ::close(fds[0]);
    int status = 0;
    struct rusage usage;
    ::wait4(pid, &status, 0, &usage);
    const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    if (merged_bytes < 0) {
      std::printf("| %s | failed | | | |\n", std::string(method).c_str());
      continue;
    }
    const double gbps = merged_bytes / 1e9 / seconds;
    std::printf("| merge %s, %d threads | %.2f | %.2f | %.2f | %.0f |\n",
                std::string(method).c_str(), absl::GetFlag(FLAGS_threads), seconds, gbps,
                gbps / read_gbps, usage.ru_maxrss / 1024.0);
    (void)paft::RemoveAll(out);
  }
  return 0;
}
