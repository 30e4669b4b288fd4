#include "worker/train_command.h"

#include <google/protobuf/util/json_util.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "common/failure.h"
#include "common/file_util.h"
#include "common/job_layout.h"
#include "common/job_spec.h"
#include "common/status.h"
#include "trainer/trainer.h"
#include "worker/merge_search_run.h"
#include "worker/trainer_protocol.h"

namespace paft::worker {
namespace {

// The exit code of a failed run: its failure class (common/failure.h); a class the trainer does
// not exit with itself (stopped, signal) counts as infrastructure.
int ExitCodeFor(const absl::Status& status) {
  const int code = ExitCodeOf(FailureOf(status));
  return code >= 0 ? code : ExitCodeOf(Failure::kInfrastructure);
}

absl::StatusOr<paft::v1::Task> TaskFromSpec(const std::string& spec_file, const std::string& branch) {
  PAFT_ASSIGN_OR_RETURN(paft::v1::JobSpec spec, LoadJobSpecFile(spec_file));
  std::error_code ec;
  ResolveRelativePaths(&spec, std::filesystem::absolute(spec_file, ec).parent_path().string());
  ApplyJobSpecDefaults(&spec);
  PAFT_RETURN_IF_ERROR(ValidateJobSpec(spec));
  const std::optional<paft::v1::BranchKind> kind = BranchKindNamed(branch);
  if (!kind || *kind == paft::v1::BRANCH_KIND_MERGE_SEARCH) {
    return absl::InvalidArgumentError("--branch must be sft or alignment");
  }
  const JobLayout layout(spec.output_dir());
  paft::v1::Task task;
  task.set_task_id(absl::StrCat("standalone.", BranchName(*kind)));
  task.set_branch(*kind);
  task.set_attempt(1);
  task.set_world_size(1);
  task.set_base_model(spec.base_model());
  *task.mutable_spec() = *kind == paft::v1::BRANCH_KIND_SFT ? spec.sft() : spec.alignment();
  task.set_checkpoint_dir(layout.CheckpointDir(*kind));
  task.set_log_dir(layout.LogDir(*kind, 1));
  return task;
}

}  // namespace

std::string FindSiblingBinary(const std::string& self, const std::string& name,
                              const std::string& build_folder) {
  const std::filesystem::path dir = std::filesystem::path(self).parent_path();
  for (const auto& candidate : {dir / name, dir / ".." / build_folder / name}) {
    if (::access(candidate.c_str(), X_OK) == 0) return candidate.lexically_normal().string();
  }
  return name;
}

int RunTrainCommand(const TrainCommandOptions& options) {
  auto fail = [](const absl::Status& status) {
    std::cout << FormatEvent({{"type", "error"}, {"message", std::string(status.message())}})
              << std::flush;
    std::cerr << "paft-worker train: " << status << std::endl;
    return ExitCodeFor(status);
  };
  paft::v1::Task task;
  if (!options.task_file.empty()) {
    auto text = ReadFileToString(options.task_file);
    if (!text.ok()) return fail(text.status());
    auto parsed = google::protobuf::util::JsonStringToMessage(*text, &task);
    if (!parsed.ok()) {
      return fail(absl::InvalidArgumentError(
          absl::StrCat("task file ", options.task_file, ": ", parsed.message().as_string())));
    }
  } else if (!options.spec_file.empty()) {
    auto made = TaskFromSpec(options.spec_file, options.branch);
    if (!made.ok()) return fail(made.status());
    task = *made;
    // Launched by torchrun or alike: its environment says which rank this is.
    auto env_int = [](const char* name, int fallback) {
      const char* v = std::getenv(name);
      return v != nullptr ? std::atoi(v) : fallback;
    };
    task.set_world_size(env_int("WORLD_SIZE", 1));
    // Without a launcher, one process runs the branch's whole global batch: its world_size ranks
    // become gradient accumulation, so the optimizer steps are the job's (the loss is normalised
    // over the global batch either way).
    if (std::getenv("WORLD_SIZE") == nullptr && task.spec().world_size() > 1) {
      auto* batch = task.mutable_spec()->mutable_batch();
      batch->set_gradient_accumulation_steps(batch->gradient_accumulation_steps() *
                                             task.spec().world_size());
      std::cerr << "paft-worker train: world_size " << task.spec().world_size()
                << " on one process: gradient_accumulation_steps "
                << batch->gradient_accumulation_steps() << std::endl;
    }
    task.set_rank(env_int("RANK", 0));
    task.set_local_rank(env_int("LOCAL_RANK", 0));
    if (const char* addr = std::getenv("MASTER_ADDR")) task.set_master_addr(addr);
    task.set_master_port(env_int("MASTER_PORT", 29500));
  } else {
    return fail(absl::InvalidArgumentError("give --task_file, or a job spec and --branch"));
  }
  static std::atomic<bool> terminate_requested{false};
  if (task.branch() == paft::v1::BRANCH_KIND_MERGE_SEARCH) {
    // The job's merge search (worker/merge_search_run.h), run by the agent like a branch's rank.
    MergeSearchRunOptions search;
    search.prepare_binary = options.prepare_binary;
    search.merger_binary = options.merger_binary;
    search.threads = options.threads;
    search.emit = [](const nlohmann::json& event) { std::cout << FormatEvent(event) << std::flush; };
    std::signal(SIGTERM, [](int) { terminate_requested.store(true); });
    search.stop_requested = [] { return terminate_requested.load(); };
    std::cerr << "paft-worker train: " << task.task_id() << ", merge search rank " << task.rank()
              << "/" << task.world_size() << std::endl;
    absl::Status status = RunMergeSearch(task, search);
    if (!status.ok()) return fail(status);
    return ExitCodeOf(Failure::kNone);
  }
  // Resolved once, here: the dataset's preparation and the trainer read its fields as set (a
  // spec file's and the coordinator's tasks are resolved already; a hand-written task file may
  // not be).
  ApplyBranchDefaults(task.mutable_spec(), task.branch() == paft::v1::BRANCH_KIND_SFT);
  const std::string cache = JobLayout::DataDirOfCheckpointDir(task.checkpoint_dir());
  auto dataset = trainer::PrepareDataset(task.spec().dataset().path(), task.base_model(),
                                         task.spec(), cache, options.prepare_binary);
  if (!dataset.ok()) return fail(dataset.status());
  trainer::TrainOptions train;
  train.task = task;
  train.dataset = *dataset;
  train.threads = options.threads;
  train.collective_timeout_seconds = options.collective_timeout_seconds;
  train.emit = [](const nlohmann::json& event) { std::cout << FormatEvent(event) << std::flush; };
  // SIGTERM (the agent stopping the rank, or the pod going away): finish the step, checkpoint,
  // exit 3 (retryable).
  std::signal(SIGTERM, [](int) { terminate_requested.store(true); });
  train.stop_requested = [] { return terminate_requested.load(); };
  std::cerr << "paft-worker train: " << task.task_id() << ", rank " << task.rank() << "/"
            << task.world_size() << ", dataset " << *dataset << std::endl;
  absl::Status status = trainer::Train(train);
  if (!status.ok()) return fail(status);
  return ExitCodeOf(Failure::kNone);
}

int RunEvalCommand(const EvalCommandOptions& options) {
  // The dataset's defaults (format auto, the model's template, max_length 1024): only the dataset
  // and batch fields of this spec are read.
  paft::v1::BranchSpec spec;
  ApplyBranchDefaults(&spec, /*is_sft=*/true);
  const std::string cache =
      options.cache_dir.empty()
          ? std::filesystem::absolute(options.dataset).parent_path().string()
          : options.cache_dir;
  auto dataset = trainer::PrepareDataset(options.dataset, options.base_model, spec, cache,
                                         options.prepare_binary);
  if (!dataset.ok()) {
    std::cerr << "error: " << dataset.status() << "\n";
    return ExitCodeFor(dataset.status());
  }
  auto report = trainer::Evaluate(options.base_model, options.adapter, *dataset, options.beta,
                                  options.max_new_tokens, options.reference);
  if (!report.ok()) {
    std::cerr << "error: " << report.status() << "\n";
    return ExitCodeFor(report.status());
  }
  std::cout << report->dump(2) << "\n";
  return 0;
}

}  // namespace paft::worker
