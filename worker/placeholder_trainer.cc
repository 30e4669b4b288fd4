// paft-placeholder-trainer: a stand-in for the real trainer (issues "training engine" and
// "data-parallel training"), speaking the same protocol (worker/trainer_protocol.h).
//
// It does NOT train. It checks its inputs, walks through the steps reporting a made-up loss,
// and rank 0 writes real checkpoint folders: the base model's tensors plus a small deterministic
// perturbation (a stand-in delta), in safetensors, with config and tokenizer files, committed
// atomically (temp folder, fsync, manifest last, rename).
#include <csignal>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <random>

#include <google/protobuf/util/json_util.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/dtype.h"
#include "common/failure.h"
#include "common/file_util.h"
#include "common/hf_config.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "paft/v1/worker.pb.h"
#include "worker/trainer_protocol.h"

ABSL_FLAG(std::string, task_file, "", "The paft.v1.Task as JSON (written by the agent)");
ABSL_FLAG(int, step_ms, -1, "Sleep per step (default: PAFT_PLACEHOLDER_STEP_MS or 50)");

namespace {

using paft::worker::FormatEvent;
volatile std::sig_atomic_t g_terminate = 0;

void Emit(const nlohmann::json& event) {
  std::cout << FormatEvent(event) << std::flush;
}

[[noreturn]] void Fail(int code, const std::string& message) {
  Emit({{"type", "error"}, {"message", message}});
  std::cerr << "placeholder-trainer: " << message << std::endl;
  std::exit(code);
}

// Writes checkpoint-STEP/ under `dir`: base tensors + scale * u, u ~ N(0,1) seeded per tensor.
absl::StatusOr<int64_t> WriteCheckpoint(const paft::v1::Task& task, int64_t step,
                                        int64_t total_steps) {
  PAFT_ASSIGN_OR_RETURN(auto base, paft::SafetensorsModel::Open(task.base_model()));
  PAFT_RETURN_IF_ERROR(paft::MakeDirs(task.checkpoint_dir()));
  const std::string final_dir =
      paft::JoinPath(task.checkpoint_dir(), absl::StrCat("checkpoint-", step));
  if (paft::PathExists(final_dir)) return int64_t{0};  // already committed (resumed run)
  PAFT_ASSIGN_OR_RETURN(std::string tmp, paft::MakeTempDirBeside(final_dir));
  auto body = [&]() -> absl::StatusOr<int64_t> {
    std::vector<paft::TensorSpec> specs;
    for (const auto& name : base->names()) {
      PAFT_ASSIGN_OR_RETURN(auto found, base->Find(name));
      specs.push_back({name, found.second->dtype, found.second->shape});
    }
    PAFT_ASSIGN_OR_RETURN(auto writer, paft::SafetensorsWriter::Create(
                                           paft::JoinPath(tmp, "model.safetensors"), specs,
                                           {{"format", "pt"}, {"paft_placeholder", "true"}}));
    const double progress = static_cast<double>(step) / static_cast<double>(total_steps);
    const double scale = 1e-3 * progress * (task.branch() == paft::v1::BRANCH_KIND_SFT ? 1.0 : 0.5);
    for (size_t t = 0; t < specs.size(); ++t) {
      PAFT_ASSIGN_OR_RETURN(auto found, base->Find(specs[t].name));
      auto data = found.first->Data(*found.second);
      std::vector<uint8_t> bytes(data.begin(), data.end());
      if (paft::IsFloatingPoint(specs[t].dtype) && specs[t].dtype != paft::DType::kF8E4M3 &&
          specs[t].dtype != paft::DType::kF8E5M2) {
        std::mt19937 rng(static_cast<uint32_t>(task.spec().seed() * 7919 + t * 104729 +
                                               static_cast<int>(task.branch())));
        std::normal_distribution<float> normal(0.0f, 1.0f);
        for (int64_t i = 0; i < found.second->numel(); ++i) {
          float v = paft::LoadAsFloat(specs[t].dtype, bytes.data(), i);
          paft::StoreFromFloat(specs[t].dtype, bytes.data(), i,
                               v + static_cast<float>(scale) * normal(rng));
        }
      }
      PAFT_RETURN_IF_ERROR(writer->Append(bytes));
    }
    PAFT_RETURN_IF_ERROR(writer->Commit());
    int64_t size = static_cast<int64_t>(writer->bytes_written());
    PAFT_RETURN_IF_ERROR(paft::CopyFileDurably(paft::JoinPath(task.base_model(), "config.json"),
                                               paft::JoinPath(tmp, "config.json")));
    PAFT_RETURN_IF_ERROR(paft::CopyModelSideFiles(task.base_model(), tmp));
    nlohmann::json manifest = {{"step", step},
                               {"total_steps", total_steps},
                               {"placeholder", true},
                               {"files", {{"model.safetensors", size}}}};
    PAFT_RETURN_IF_ERROR(
        paft::WriteFileAtomic(paft::JoinPath(tmp, "paft_checkpoint.json"), manifest.dump(2)));
    PAFT_RETURN_IF_ERROR(paft::FsyncPath(tmp));
    PAFT_RETURN_IF_ERROR(paft::RenameDurably(tmp, final_dir));
    return size;
  };
  auto result = body();
  if (!result.ok()) (void)paft::RemoveAll(tmp);
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::signal(SIGTERM, [](int) { g_terminate = 1; });
  auto text = paft::ReadFileToString(absl::GetFlag(FLAGS_task_file));
  if (!text.ok()) Fail(paft::ExitCodeOf(paft::Failure::kUserError), std::string(text.status().message()));
  paft::v1::Task task;
  google::protobuf::util::JsonParseOptions options;
  if (!google::protobuf::util::JsonStringToMessage(*text, &task, options).ok()) {
    Fail(paft::ExitCodeOf(paft::Failure::kUserError), "task file does not parse");
  }
  if (!paft::IsRegularFile(task.spec().dataset().path())) {
    Fail(paft::ExitCodeOf(paft::Failure::kUserError),
         absl::StrCat("dataset '", task.spec().dataset().path(), "' is not a file"));
  }
  auto config = paft::LoadModelConfig(task.base_model());
  if (!config.ok()) Fail(paft::ExitCodeOf(paft::Failure::kUserError), std::string(config.status().message()));

  // PAFT_PLACEHOLDER_HOSTILE=1: first print what a broken or hostile trainer might, which the
  // agent must survive (and count) while the job goes on.
  if (const char* hostile = std::getenv("PAFT_PLACEHOLDER_HOSTILE"); hostile && hostile[0] == '1') {
    std::cout << paft::worker::kEventPrefix << R"({"type":"checkpoint","step":"x","path":5})" << "\n"
              << paft::worker::kEventPrefix << R"({"type":"progress","step":-3,"loss":"low"})" << "\n"
              << paft::worker::kEventPrefix << R"({"type":"reboot"})" << "\n"
              << paft::worker::kEventPrefix << "{not json\n"
              << paft::worker::kEventPrefix << R"({"type":"error","message":")"
              << std::string(200000, 'x') << "\"}\n"
              << "\xff\xfe binary \x01 noise\n"
              << std::flush;
  }
  int step_ms = absl::GetFlag(FLAGS_step_ms);
  if (step_ms < 0) {
    const char* env = std::getenv("PAFT_PLACEHOLDER_STEP_MS");
    step_ms = env ? std::atoi(env) : 50;
  }
  const int64_t total_steps =
      task.spec().max_steps() > 0
          ? task.spec().max_steps()
          : std::max<int64_t>(1, static_cast<int64_t>(std::ceil(task.spec().epochs() * 10)));
  const int64_t every = task.spec().checkpoint().every_steps();
  int64_t start = 0;
  if (!task.resume_from().empty()) {
    auto manifest_text =
        paft::ReadFileToString(paft::JoinPath(task.resume_from(), "paft_checkpoint.json"));
    if (manifest_text.ok()) {
      auto manifest = nlohmann::json::parse(*manifest_text, nullptr, false);
      if (!manifest.is_discarded()) start = manifest.value("step", int64_t{0});
    }
  }
  std::cerr << "placeholder-trainer: " << task.task_id() << " rank " << task.rank() << "/"
            << task.world_size() << ", steps " << start << ".." << total_steps
            << " (NOT training: placeholder until the training engine lands)" << std::endl;
  for (int64_t step = start + 1; step <= total_steps; ++step) {
    if (g_terminate) {
      std::cerr << "placeholder-trainer: SIGTERM at step " << step << std::endl;
      return 128 + SIGTERM;
    }
    absl::SleepFor(absl::Milliseconds(step_ms));
    const double loss = 2.0 * std::exp(-2.0 * static_cast<double>(step) / total_steps) + 0.1;
    Emit({{"type", "progress"},
          {"step", step},
          {"total_steps", total_steps},
          {"loss", loss},
          {"tokens_per_second", step_ms > 0 ? 512.0 * 1000.0 / step_ms : 0.0}});
    const bool final = step == total_steps;
    if (task.rank() == 0 && (final || (every > 0 && step % every == 0))) {
      auto size = WriteCheckpoint(task, step, total_steps);
      if (!size.ok()) {
        Fail(paft::ExitCodeOf(paft::FailureOf(size.status())),
             absl::StrCat("checkpoint at step ", step, ": ", size.status().message()));
      }
      Emit({{"type", "checkpoint"},
            {"step", step},
            {"path", paft::JoinPath(task.checkpoint_dir(), absl::StrCat("checkpoint-", step))},
            {"size_bytes", *size},
            {"final", final}});
    }
  }
  return 0;
}
