// The training run of one rank: set-up, then the loop of optimizer steps. The pieces live
// beside it: batching.h (data order and micro-batches), objectives.h (losses and their global
// normalisation), precision.h (bf16 autocast), checkpoint_io.h (checkpoints on disk),
// reference_cache.h (precomputed DPO reference), distributed.h (c10d).
#include "trainer/trainer.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "common/failure.h"
#include "common/file_util.h"
#include "common/job_spec.h"
#include "common/sha256.h"
#include "common/status.h"
#include "common/token_dataset.h"
#include "trainer/batching.h"
#include "trainer/checkpoint_io.h"
#include "trainer/checkpoint_retention.h"
#include "trainer/cpu_runtime.h"
#include "trainer/distributed.h"
#include "trainer/fused_adamw.h"
#include "trainer/llama.h"
#include "trainer/model_io.h"
#include "trainer/objectives.h"
#include "trainer/precision.h"
#include "trainer/reference_cache.h"

namespace paft::trainer {
namespace {

using json = nlohmann::json;

// The rank's device: CUDA device LOCAL_RANK when LibTorch has CUDA and a device is present.
torch::Device RankDevice(int local_rank) {
  if (torch::cuda::is_available() && torch::cuda::device_count() > 0) {
    return torch::Device(torch::kCUDA,
                         static_cast<c10::DeviceIndex>(local_rank % torch::cuda::device_count()));
  }
  return torch::Device(torch::kCPU);
}

std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(const paft::v1::OptimizerSpec& opt,
                                                       std::vector<torch::Tensor> params,
                                                       double lr) {
  if (opt.name() == "sgd") {
    return std::make_unique<torch::optim::SGD>(
        params, torch::optim::SGDOptions(lr).weight_decay(opt.weight_decay()));
  }
  return std::make_unique<FusedAdamW>(
      params, torch::optim::AdamWOptions(lr)
                  .betas({opt.beta1(), opt.beta2()})
                  .eps(opt.epsilon())
                  .weight_decay(opt.weight_decay()));
}

// The task's branch with every default applied (common/job_spec.h, the one place defaults are
// decided): a no-op for the coordinator's and the CLI's tasks, which are resolved already.
paft::v1::BranchSpec ResolvedSpec(const paft::v1::Task& task) {
  paft::v1::BranchSpec spec = task.spec();
  ApplyBranchDefaults(&spec, task.branch() == paft::v1::BRANCH_KIND_SFT);
  return spec;
}

class BranchTrainer {
 public:
  explicit BranchTrainer(const TrainOptions& options)
      : options_(options), spec_(ResolvedSpec(options.task)),
        world_(std::max(1, options.task.world_size())), rank_(options.task.rank()) {}

  absl::Status Run() {
    PAFT_RETURN_IF_ERROR(SetUp());
    const int64_t total = TotalSteps();
    if (start_step_ >= total && rank_ == 0 && !resume_dir_.empty()) {
      // Resumed from the final checkpoint (its exit report was lost, say): report it again.
      Emit({{"type", "checkpoint"}, {"step", start_step_}, {"path", resume_dir_}, {"final", true}});
    }
    const int64_t every = spec_.checkpoint().every_steps();
    model_->train();
    for (int64_t step = start_step_; step < total; ++step) {
      // A stop asked of any rank (SIGTERM) is agreed on through the step's all-reduce.
      bool stop_requested = options_.stop_requested && options_.stop_requested();
      PAFT_RETURN_IF_ERROR(Step(step, total, &stop_requested));
      const bool final = step + 1 == total;
      const bool scheduled = final || (every > 0 && (step + 1) % every == 0);
      // Asked to stop: keep the work done so far (a checkpoint of this step, unless the policy
      // just wrote one) and end; the restarted branch resumes here.
      if (rank_ == 0 && (scheduled || (stop_requested && !final))) {
        PAFT_RETURN_IF_ERROR(SaveCheckpoint(step + 1, total, final));
      }
      if (stop_requested && !final) {
        return absl::AbortedError(absl::StrCat("stopped on request after step ", step + 1, " of ",
                                               total, rank_ == 0 ? ", checkpointed" : ""));
      }
    }
    return absl::OkStatus();
  }

 private:
  void Emit(const json& event) {
    if (options_.emit) options_.emit(event);
  }

  // Model, data, objective, resume point, process group and optimizer, in that order.
  absl::Status SetUp() {
    // LibTorch's intra-op pool defaults to 1 thread here: use the cores unless told otherwise;
    // keep the allocator from returning each step's buffers to the OS.
    ConfigureCpuRuntime(options_.threads);
    torch::manual_seed(spec_.seed());
    device_ = RankDevice(options_.task.local_rank());
    PAFT_ASSIGN_OR_RETURN(precision_, ResolvePrecision(spec_.precision(), device_));
    PAFT_ASSIGN_OR_RETURN(data_, TokenDataset::Open(options_.dataset));
    PAFT_ASSIGN_OR_RETURN(auto objective, BranchObjective::FromSpec(spec_));
    objective_ = std::make_unique<BranchObjective>(std::move(objective));
    const bool preference_data = data_->kind() == DatasetKind::kPreference;
    if (objective_->is_sft() == preference_data) {
      return absl::InvalidArgumentError(absl::StrCat(
          "dataset ", options_.dataset, " holds ", preference_data ? "preference" : "SFT",
          " examples but the branch's objective needs ", objective_->is_sft() ? "SFT" : "preference",
          " data"));
    }
    PAFT_RETURN_IF_ERROR(LoadModel());
    if (data_->header().contains("vocab_size") &&
        data_->header()["vocab_size"].get<int64_t>() > model_->config().vocab_size) {
      return absl::InvalidArgumentError("the dataset's tokenizer has a larger vocabulary than the model");
    }
    PAFT_RETURN_IF_ERROR(CheckTokenIds(*data_, model_->config().vocab_size, options_.dataset));
    PAFT_ASSIGN_OR_RETURN(resume_dir_, FindResumePoint(options_.task.checkpoint_dir(),
                                                       options_.task.resume_from()));
    if (!resume_dir_.empty()) PAFT_RETURN_IF_ERROR(ResumeWeights());
    model_->to(device_);  // after LoRA was added and weights resumed
    if (world_ > 1) PAFT_RETURN_IF_ERROR(ConnectGroup());
    if (spec_.has_dpo() && spec_.dpo().precompute_ref_log_probs()) {
      PAFT_ASSIGN_OR_RETURN(auto cache, PrecomputeReferenceLogProbs(
                                            *objective_, model_, *data_, options_.dataset,
                                            options_.task.base_model(), device_, precision_));
      objective_->set_reference_cache(std::move(cache));
      if (objective_->l1_lambda() <= 0) objective_->set_reference_model(LlamaForCausalLM(nullptr));
    }
    for (auto& [name, p] : model_->TrainableParameters()) trainable_.push_back(p);
    if (group_ != nullptr) {
      sync_ = std::make_unique<GradientSynchronizer>(group_.get(), trainable_, 25 << 20,
                                                     GradientSynchronizer::Reduction::kSum);
    }
    optimizer_ = MakeOptimizer(spec_.optimizer(), trainable_, PeakLearningRate());
    if (!resume_dir_.empty()) PAFT_RETURN_IF_ERROR(LoadTrainingState(*optimizer_, resume_dir_));
    const int64_t batch = spec_.batch().per_device_batch_size();
    const int64_t accum = spec_.batch().gradient_accumulation_steps();
    schedule_ = std::make_unique<DataSchedule>(data_.get(), spec_.seed(), batch, accum, world_);
    std::cerr << "training " << (model_->has_lora() ? "LoRA" : "all weights") << " in "
              << PrecisionName(precision_) << " on " << device_ << std::endl;
    return absl::OkStatus();
  }

  // The base model, with LoRA added or every weight trainable. Full fine-tuning keeps fp32
  // weights (the master copy); with LoRA the frozen base stays in its checkpoint's dtype and,
  // in bf16 precision, its matmul weights are held in bf16 (what autocast would cast them to).
  absl::Status LoadModel() {
    PAFT_ASSIGN_OR_RETURN(const AttentionKernel kernel,
                          ParseAttentionKernel(spec_.attn_implementation()));
    const bool lora = !spec_.has_full();
    const torch::ScalarType dtype =
        lora && precision_ == Precision::kBf16 ? torch::kBFloat16 : torch::kFloat;
    PAFT_ASSIGN_OR_RETURN(model_, LoadPretrained(options_.task.base_model(), dtype,
                                                 /*stored_dtypes=*/nullptr, /*exact=*/true));
    if (!lora) {
      for (auto& p : model_->parameters()) p.set_requires_grad(true);
      if (objective_->l1_lambda() > 0 || objective_->needs_reference()) {
        PAFT_ASSIGN_OR_RETURN(auto reference, LoadPretrained(options_.task.base_model(), torch::kFloat));
        reference->to(device_);
        reference->eval();
        reference->set_attention_kernel(kernel);  // attention computed as the policy's
        for (auto& p : reference->parameters()) p.set_requires_grad(false);
        objective_->set_reference_model(reference);
      }
    } else {
      LoraOptions options;
      options.r = spec_.lora().r();
      options.alpha = spec_.lora().alpha();
      options.dropout = spec_.lora().dropout();
      options.use_rslora = spec_.lora().use_rslora();
      options.target_modules = {spec_.lora().target_modules().begin(),
                                spec_.lora().target_modules().end()};
      model_->AddLora(options);
      if (precision_ == Precision::kBf16) model_->CastFrozenLinears(torch::kBFloat16);
    }
    model_->set_activation_checkpointing(spec_.activation_checkpointing());
    model_->set_attention_kernel(kernel);
    return absl::OkStatus();
  }

  // Restores the weights and step of resume_dir_ (the optimizer and RNG follow once the
  // optimizer exists).
  absl::Status ResumeWeights() {
    const std::string& from = resume_dir_;
    PAFT_ASSIGN_OR_RETURN(std::string state_text, ReadFileToString(JoinPath(from, "trainer_state.json")));
    json state = json::parse(state_text, nullptr, false);
    if (state.is_discarded() || !state.contains("step")) {
      return absl::DataLossError(absl::StrCat(from, "/trainer_state.json is unreadable"));
    }
    if (state.value("dataset_fingerprint", "") != data_->fingerprint()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "checkpoint ", from, " was trained on dataset ", state.value("dataset_fingerprint", "?"),
          ", not ", data_->fingerprint(), ": refusing to resume on changed data"));
    }
    PAFT_ASSIGN_OR_RETURN(std::string config_digest, ModelConfigDigest());
    if (state.value("model_config_sha256", config_digest) != config_digest) {
      return absl::FailedPreconditionError(absl::StrCat(
          "checkpoint ", from, " belongs to a model with another config.json than ",
          options_.task.base_model(), ": refusing to resume"));
    }
    PAFT_RETURN_IF_ERROR(RestoreWeights(model_, from));
    start_step_ = state["step"].get<int64_t>();
    std::cerr << "resuming from " << from << " at step " << start_step_ << std::endl;
    return absl::OkStatus();
  }

  absl::Status ConnectGroup() {
    RendezvousOptions rendezvous;
    rendezvous.rank = rank_;
    rendezvous.world_size = world_;
    rendezvous.master_addr = options_.task.master_addr().empty() ? "127.0.0.1" : options_.task.master_addr();
    rendezvous.master_port = options_.task.master_port() > 0 ? options_.task.master_port() : 29500;
    rendezvous.timeout = std::chrono::seconds(options_.collective_timeout_seconds);
    rendezvous.cuda = device_.is_cuda();
    rendezvous.store_prefix = absl::StrCat("paft/", options_.task.job_id(), "/",
                                           options_.task.branch(), "/", options_.task.attempt());
    PAFT_ASSIGN_OR_RETURN(group_, ProcessGroupHandle::Connect(rendezvous));
    // Every rank starts from rank-identical weights (same seed); averaging makes it certain.
    torch::NoGradGuard no_grad;
    for (auto& [name, p] : model_->TrainableParameters()) {
      group_->AllReduce(p.data());
      p.data().div_(world_);
    }
    return absl::OkStatus();
  }

  double PeakLearningRate() const { return spec_.optimizer().learning_rate(); }

  int64_t TotalSteps() const {
    if (spec_.max_steps() > 0) return spec_.max_steps();
    const int64_t per_epoch = std::max<int64_t>(1, data_->size() / schedule_->examples_per_step());
    return std::max<int64_t>(1, static_cast<int64_t>(std::ceil(spec_.epochs() * per_epoch)));
  }

  // One optimizer step: every micro-batch's loss share backward (gradients summed across ranks
  // on the last one), the L1 penalty's gradient, clipping, the update and its progress event.
  absl::Status Step(int64_t step, int64_t total, bool* stop_requested) {
    const auto started = std::chrono::steady_clock::now();
    const auto& opt = spec_.optimizer();
    const double lr = PeakLearningRate() *
                      LearningRateFactor(step, total, opt.warmup_steps(),
                                         opt.lr_schedule());
    for (auto& group : optimizer_->param_groups()) group.options().set_lr(lr);
    optimizer_->zero_grad();
    const int64_t accum = spec_.batch().gradient_accumulation_steps();
    const StepCounts counts = schedule_->Counts(step);
    const int64_t pad_id = PadId(model_->config());
    StepMetrics metrics;
    for (int64_t micro = 0; micro < accum; ++micro) {
      Batch b = ToDevice(MakeBatch(*data_, schedule_->MicroBatch(step, micro, rank_), pad_id,
                                   spec_.batch().padding_free()),
                         device_);
      if (sync_) sync_->Prepare(/*sync=*/micro == accum - 1);
      torch::Tensor loss;
      {
        AutocastScope autocast(precision_, device_);
        loss = objective_->MicroBatchLoss(model_, b, counts, &metrics);
      }
      loss.backward();
      if (sync_) sync_->Finish();
      metrics.tokens += b.tokens;
    }
    // The same on every rank: after the all-reduce, added once.
    const double penalty = objective_->BackwardPenalty(model_);
    if (group_ != nullptr) {
      // Global figures: loss shares and token counts summed, per-micro-batch means averaged.
      torch::Tensor m = torch::tensor({metrics.loss, metrics.chosen_reward, metrics.rejected_reward,
                                       metrics.accuracy, metrics.margin,
                                       static_cast<double>(metrics.tokens),
                                       *stop_requested ? 1.0 : 0.0},
                                      torch::kDouble);
      group_->AllReduce(m);
      *stop_requested = m[6].item<double>() > 0;  // every rank stops after the same step
      metrics.loss = m[0].item<double>();
      metrics.chosen_reward = m[1].item<double>() / world_;
      metrics.rejected_reward = m[2].item<double>() / world_;
      metrics.accuracy = m[3].item<double>() / world_;
      metrics.margin = m[4].item<double>() / world_;
      metrics.tokens = static_cast<int64_t>(m[5].item<double>());
    }
    if (opt.max_grad_norm() > 0) torch::nn::utils::clip_grad_norm_(trainable_, opt.max_grad_norm());
    optimizer_->step();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    json event = {{"type", "progress"},
                  {"step", step + 1},
                  {"total_steps", total},
                  {"loss", metrics.loss},
                  {"learning_rate", lr},
                  {"tokens_per_second", seconds > 0 ? metrics.tokens / seconds : 0.0}};
    if (objective_->l1_lambda() > 0) event["l1_penalty"] = penalty;
    if (!objective_->is_sft()) {
      event["rewards_chosen"] = metrics.chosen_reward / accum;
      event["rewards_rejected"] = metrics.rejected_reward / accum;
      event["reward_accuracy"] = metrics.accuracy / accum;
      event["reward_margin"] = metrics.margin / accum;
    }
    Emit(event);
    return absl::OkStatus();
  }

  // sha256 of the base model's config.json: a checkpoint of another model is refused.
  absl::StatusOr<std::string> ModelConfigDigest() const {
    return Sha256File(JoinPath(options_.task.base_model(), "config.json"));
  }

  // Bytes a checkpoint needs: weights in fp32, the optimizer's two moments, 10% and 16 MB slack.
  int64_t CheckpointBytes() const {
    int64_t weights = 0, trainable = 0;
    for (const auto& [name, t] : model_->has_lora() ? model_->PeftStateDict() : model_->HfStateDict()) {
      weights += t.numel() * 4;
    }
    for (const auto& p : trainable_) trainable += p.numel() * p.element_size();
    return static_cast<int64_t>((weights + 2 * trainable) * 1.1) + (16 << 20);
  }

  absl::Status SaveCheckpoint(int64_t step, int64_t total, bool final) {
    const std::string& root = options_.task.checkpoint_dir();
    PAFT_RETURN_IF_ERROR(MakeDirs(root));
    PAFT_RETURN_IF_ERROR(
        EnsureCheckpointSpace(root, CheckpointBytes(), spec_.checkpoint().keep_last()));
    const std::string dir = JoinPath(root, absl::StrCat("checkpoint-", step));
    if (PathExists(dir)) PAFT_RETURN_IF_ERROR(RemoveAll(dir));  // a rerun of the same step
    const std::string staging = dir + ".staging";
    (void)RemoveAll(staging);
    if (model_->has_lora()) {
      PAFT_RETURN_IF_ERROR(SaveAdapter(model_, staging, options_.task.base_model()));
    } else {
      // fp32, the training precision: resuming must continue from exactly these weights.
      PAFT_RETURN_IF_ERROR(SavePretrained(model_, staging, {}, options_.task.base_model()));
    }
    PAFT_RETURN_IF_ERROR(SaveTrainingState(*optimizer_, staging));
    PAFT_ASSIGN_OR_RETURN(std::string config_digest, ModelConfigDigest());
    const int64_t examples = step * schedule_->examples_per_step();
    json state = {{"step", step},
                  {"total_steps", total},
                  {"epoch", examples / std::max<int64_t>(1, data_->size())},
                  {"data_cursor", examples},
                  {"seed", spec_.seed()},
                  {"world_size", options_.task.world_size()},
                  {"precision", PrecisionName(precision_)},
                  {"dataset_fingerprint", data_->fingerprint()},
                  {"model_config_sha256", config_digest},
                  {"branch", paft::v1::BranchKind_Name(options_.task.branch())},
                  {"final", final}};
    PAFT_RETURN_IF_ERROR(WriteFileAtomic(JoinPath(staging, "trainer_state.json"), state.dump(2)));
    PAFT_ASSIGN_OR_RETURN(CommittedCheckpoint committed, CommitCheckpoint(staging, dir, step));
    Emit({{"type", "checkpoint"}, {"step", step}, {"path", dir}, {"size_bytes", committed.size_bytes},
          {"digest", committed.digest}, {"final", final}});
    return ApplyRetention(root, spec_.checkpoint().keep_last(), dir);
  }

  const TrainOptions& options_;
  const paft::v1::BranchSpec spec_;  // the task's, resolved (ResolvedSpec)
  const int world_, rank_;
  torch::Device device_{torch::kCPU};
  Precision precision_ = Precision::kFp32;
  LlamaForCausalLM model_{nullptr};
  std::unique_ptr<TokenDataset> data_;
  std::unique_ptr<BranchObjective> objective_;
  std::unique_ptr<DataSchedule> schedule_;
  std::unique_ptr<ProcessGroupHandle> group_;  // world_size > 1
  std::unique_ptr<GradientSynchronizer> sync_;
  std::vector<torch::Tensor> trainable_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::string resume_dir_;  // the checkpoint resumed from, if any
  int64_t start_step_ = 0;
};

}  // namespace

absl::Status Train(const TrainOptions& options) {
  const bool distributed = options.task.world_size() > 1;
  try {
    return BranchTrainer(options).Run();
  } catch (const c10::Error& e) {
    // The one seam where LibTorch exceptions become a Status.
    const std::string what = e.what_without_backtrace();
    if (what.find("out of memory") != std::string::npos) {
      return MarkFailure(absl::ResourceExhaustedError(what), Failure::kOutOfMemory);
    }
    if (what.find("No space left on device") != std::string::npos) {
      return MarkFailure(absl::ResourceExhaustedError(what), Failure::kDiskFull);
    }
    if (distributed) {
      return MarkFailure(absl::UnavailableError(absl::StrCat(
                             "collective failed (a peer rank died or timed out): ", what)),
                         Failure::kPeerLost);
    }
    return absl::InternalError(absl::StrCat("LibTorch: ", what));
  } catch (const std::exception& e) {
    if (distributed) {
      return MarkFailure(absl::UnavailableError(absl::StrCat(
                             "collective failed (a peer rank died or timed out): ", e.what())),
                         Failure::kPeerLost);
    }
    return absl::InternalError(e.what());
  }
}

}  // namespace paft::trainer
