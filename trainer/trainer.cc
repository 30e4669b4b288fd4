#include "trainer/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <sys/statvfs.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <iostream>
#include <mutex>
#include <cmath>
#include <random>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/file_util.h"
#include "common/process_util.h"
#include "common/sha256.h"
#include "common/status.h"
#include "common/token_dataset.h"
#include "trainer/distributed.h"
#include "trainer/llama.h"
#include "trainer/losses.h"
#include "trainer/torch_io.h"

namespace paft::trainer {
namespace {

using json = nlohmann::json;

// One batch: SFT rows, or preference rows [chosen_0..chosen_{B-1}, rejected_0..rejected_{B-1}].
struct Batch {
  torch::Tensor input_ids;        // (R, T) int64
  torch::Tensor attention_mask;   // (R, T) 1 for tokens
  torch::Tensor completion_mask;  // (R, T) 1 for completion tokens
  int64_t tokens = 0;             // real tokens
  int64_t pairs = 0;              // preference: B
  std::vector<int64_t> indices;   // dataset examples, in row order
};

Batch MakeBatch(const TokenDataset& data, const std::vector<int64_t>& indices, int64_t pad_id) {
  const bool preference = data.kind() == DatasetKind::kPreference;
  std::vector<std::pair<absl::Span<const uint32_t>, absl::Span<const uint32_t>>> rows;
  for (int64_t i : indices) rows.emplace_back(data.prompt(i), data.completion(i));
  if (preference) {
    for (int64_t i : indices) rows.emplace_back(data.prompt(i), data.rejected(i));
  }
  int64_t t = 0;
  for (const auto& [p, c] : rows) t = std::max<int64_t>(t, p.size() + c.size());
  const int64_t r = static_cast<int64_t>(rows.size());
  Batch b;
  b.input_ids = torch::full({r, t}, pad_id, torch::kLong);
  b.attention_mask = torch::zeros({r, t}, torch::kLong);
  b.completion_mask = torch::zeros({r, t}, torch::kLong);
  auto ids = b.input_ids.accessor<int64_t, 2>();
  auto am = b.attention_mask.accessor<int64_t, 2>();
  auto cm = b.completion_mask.accessor<int64_t, 2>();
  for (int64_t row = 0; row < r; ++row) {
    const auto& [prompt, completion] = rows[row];
    int64_t pos = 0;
    for (uint32_t tok : prompt) {
      ids[row][pos] = tok;
      am[row][pos++] = 1;
    }
    for (uint32_t tok : completion) {
      ids[row][pos] = tok;
      am[row][pos] = 1;
      cm[row][pos++] = 1;
    }
    b.tokens += pos;
  }
  b.pairs = preference ? static_cast<int64_t>(indices.size()) : 0;
  b.indices = indices;
  return b;
}

// Data-order of one epoch: a permutation seeded by (seed, epoch).
std::vector<int64_t> EpochOrder(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  std::mt19937_64 rng(seed * 1000003ULL + static_cast<uint64_t>(epoch));
  std::shuffle(order.begin(), order.end(), rng);
  return order;
}

absl::StatusOr<PreferenceParams> PreferenceParamsOf(const paft::v1::BranchSpec& spec) {
  PreferenceParams p;
  if (spec.has_dpo()) {
    PAFT_ASSIGN_OR_RETURN(p.kind, DpoKind(spec.dpo().loss_type()));
    p.beta = spec.dpo().beta();
    p.label_smoothing = spec.dpo().label_smoothing();
  } else if (spec.has_orpo()) {
    p.kind = PreferenceKind::kOrpo;
    p.beta = spec.orpo().beta();
  } else if (spec.has_simpo()) {
    p.kind = PreferenceKind::kSimpo;
    p.beta = spec.simpo().beta();
    p.gamma = spec.simpo().gamma();
  } else {
    return absl::InvalidArgumentError("the branch has no preference objective");
  }
  if (p.beta <= 0) p.beta = 0.1;
  return p;
}

bool NeedsReference(const PreferenceParams& p) {
  return p.kind != PreferenceKind::kOrpo && p.kind != PreferenceKind::kSimpo;
}

// Splits log-probs of 2B rows into chosen (first B) and rejected.
std::pair<SequenceLogProbs, SequenceLogProbs> Split(const SequenceLogProbs& all, int64_t b) {
  return {{all.sum.narrow(0, 0, b), all.tokens.narrow(0, 0, b)},
          {all.sum.narrow(0, b, b), all.tokens.narrow(0, b, b)}};
}

// bf16 autocast for CUDA devices (fp32 master weights and optimizer state stay as they are).
class CudaAutocast {
 public:
  explicit CudaAutocast(bool enabled) : enabled_(enabled) {
    if (!enabled_) return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
#else
    at::autocast::set_enabled(true);
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
#endif
  }
  ~CudaAutocast() {
    if (!enabled_) return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    at::autocast::set_autocast_enabled(at::kCUDA, false);
#else
    at::autocast::set_enabled(false);
#endif
    at::autocast::clear_cache();
  }

 private:
  bool enabled_;
};

// The rank's device: CUDA device LOCAL_RANK when LibTorch has CUDA and a device is present.
torch::Device RankDevice(int local_rank) {
  if (torch::cuda::is_available() && torch::cuda::device_count() > 0) {
    return torch::Device(torch::kCUDA,
                         static_cast<c10::DeviceIndex>(local_rank % torch::cuda::device_count()));
  }
  return torch::Device(torch::kCPU);
}

Batch ToDevice(Batch b, const torch::Device& device) {
  if (device.is_cpu()) return b;
  b.input_ids = b.input_ids.to(device);
  b.attention_mask = b.attention_mask.to(device);
  b.completion_mask = b.completion_mask.to(device);
  return b;
}

struct StepMetrics {
  double loss = 0;
  double chosen_reward = 0, rejected_reward = 0, accuracy = 0, margin = 0;
  int64_t tokens = 0;
};

class BranchTrainer {
 public:
  explicit BranchTrainer(const TrainOptions& options) : options_(options), spec_(options.task.spec()) {}

  absl::Status Run() {
    // LibTorch's intra-op pool defaults to 1 thread here: use the cores unless told otherwise.
    at::set_num_threads(options_.threads > 0
                            ? options_.threads
                            : std::max(1, static_cast<int>(std::thread::hardware_concurrency())));
    torch::manual_seed(spec_.seed());
    PAFT_ASSIGN_OR_RETURN(model_, LoadPretrained(options_.task.base_model(), torch::kFloat, &stored_));
    device_ = RankDevice(options_.task.local_rank());
    PAFT_ASSIGN_OR_RETURN(data_, TokenDataset::Open(options_.dataset));
    const bool preference_data = data_->kind() == DatasetKind::kPreference;
    if (spec_.has_sft() == preference_data) {
      return absl::InvalidArgumentError(absl::StrCat(
          "dataset ", options_.dataset, " holds ", preference_data ? "preference" : "SFT",
          " examples but the branch's objective needs ", spec_.has_sft() ? "SFT" : "preference",
          " data"));
    }
    if (data_->header().contains("vocab_size") &&
        data_->header()["vocab_size"].get<int64_t>() > model_->config().vocab_size) {
      return absl::InvalidArgumentError("the dataset's tokenizer has a larger vocabulary than the model");
    }
    if (!spec_.has_sft()) {
      PAFT_ASSIGN_OR_RETURN(preference_, PreferenceParamsOf(spec_));
    }

    if (spec_.has_full()) {
      for (auto& p : model_->parameters()) p.set_requires_grad(true);
      const bool needs_copy = spec_.sft().l1_lambda() > 0 ||
                              (!spec_.has_sft() && NeedsReference(preference_));
      if (needs_copy) {
        PAFT_ASSIGN_OR_RETURN(reference_, LoadPretrained(options_.task.base_model(), torch::kFloat));
        reference_->to(device_);
        reference_->eval();
        for (auto& p : reference_->parameters()) p.set_requires_grad(false);
      }
    } else {
      LoraOptions lora;
      lora.r = spec_.lora().r() > 0 ? spec_.lora().r() : 8;
      lora.alpha = spec_.lora().alpha() > 0 ? spec_.lora().alpha() : 2.0 * lora.r;
      lora.dropout = spec_.lora().dropout();
      if (spec_.lora().target_modules_size() > 0) {
        lora.target_modules = {spec_.lora().target_modules().begin(),
                               spec_.lora().target_modules().end()};
      }
      model_->AddLora(lora);
    }
    model_->set_activation_checkpointing(spec_.activation_checkpointing());
    PAFT_RETURN_IF_ERROR(MaybeResume());
    model_->to(device_);  // after LoRA was added and weights resumed
    const int world = std::max(1, options_.task.world_size());
    const int rank = options_.task.rank();
    if (world > 1) {
      RendezvousOptions rendezvous;
      rendezvous.rank = rank;
      rendezvous.world_size = world;
      rendezvous.master_addr = options_.task.master_addr().empty() ? "127.0.0.1" : options_.task.master_addr();
      rendezvous.master_port = options_.task.master_port() > 0 ? options_.task.master_port() : 29500;
      rendezvous.timeout = std::chrono::seconds(options_.collective_timeout_seconds);
      rendezvous.cuda = device_.is_cuda();
      PAFT_ASSIGN_OR_RETURN(group_, ProcessGroupHandle::Connect(rendezvous));
      // Every rank starts from rank-identical weights (same seed); averaging makes it certain.
      torch::NoGradGuard no_grad;
      for (auto& [name, p] : model_->TrainableParameters()) {
        group_->AllReduce(p.data());
        p.data().div_(world);
      }
    }
    if (spec_.has_dpo() && spec_.dpo().precompute_ref_log_probs()) {
      PAFT_RETURN_IF_ERROR(PrecomputeReference());
    }

    std::vector<torch::Tensor> trainable;
    for (auto& [name, p] : model_->TrainableParameters()) trainable.push_back(p);
    std::unique_ptr<GradientSynchronizer> sync;
    if (group_ != nullptr) sync = std::make_unique<GradientSynchronizer>(group_.get(), trainable);
    const auto& opt = spec_.optimizer();
    const double peak_lr = opt.learning_rate() > 0 ? opt.learning_rate() : 2e-4;
    std::unique_ptr<torch::optim::Optimizer> optimizer;
    if (opt.name() == "sgd") {
      optimizer = std::make_unique<torch::optim::SGD>(
          trainable, torch::optim::SGDOptions(peak_lr).weight_decay(opt.weight_decay()));
    } else {
      optimizer = std::make_unique<torch::optim::AdamW>(
          trainable, torch::optim::AdamWOptions(peak_lr)
                         .betas({opt.beta1() > 0 ? opt.beta1() : 0.9,
                                 opt.beta2() > 0 ? opt.beta2() : 0.999})
                         .eps(opt.epsilon() > 0 ? opt.epsilon() : 1e-8)
                         .weight_decay(opt.weight_decay()));
    }

    PAFT_RETURN_IF_ERROR(RestoreOptimizerAndRng(*optimizer));
    int64_t trainable_bytes = 0;
    for (const auto& p : trainable) trainable_bytes += p.numel() * p.element_size();

    const int64_t batch = std::max(1, spec_.batch().per_device_batch_size());
    const int64_t accum = std::max(1, spec_.batch().gradient_accumulation_steps());
    const int64_t steps_per_epoch =
        std::max<int64_t>(1, data_->size() / (batch * accum * world));
    const int64_t total = spec_.max_steps() > 0
                              ? spec_.max_steps()
                              : std::max<int64_t>(1, static_cast<int64_t>(std::ceil(
                                                         spec_.epochs() * steps_per_epoch)));
    const int64_t every = spec_.checkpoint().every_steps();
    if (start_step_ >= total && rank == 0 && !resume_dir_.empty()) {
      // Resumed from the final checkpoint (its exit report was lost, say): report it again.
      Emit({{"type", "checkpoint"}, {"step", start_step_}, {"path", resume_dir_}, {"final", true}});
    }
    const int64_t pad_id = model_->config().eos_token_id >= 0 ? model_->config().eos_token_id : 0;
    model_->train();
    // Global cursor over the epoch orders: each micro-step consumes batch * world examples,
    // rank r taking the r-th contiguous slice (world 1 with batch B*W sees the same examples).
    int64_t cursor = start_step_ * batch * accum * world;
    for (int64_t step = start_step_; step < total; ++step) {
      const auto started = std::chrono::steady_clock::now();
      const double lr = peak_lr * LearningRateFactor(step, total, opt.warmup_steps(),
                                                     opt.lr_schedule().empty() ? "cosine"
                                                                               : opt.lr_schedule());
      for (auto& group : optimizer->param_groups()) group.options().set_lr(lr);
      optimizer->zero_grad();
      StepMetrics metrics;
      // A stop asked of any rank (SIGTERM) is agreed on through the step's all-reduce.
      bool stop_requested = options_.stop_requested && options_.stop_requested();
      for (int64_t micro = 0; micro < accum; ++micro) {
        std::vector<int64_t> indices;
        for (int64_t k = 0; k < batch; ++k) {
          const int64_t position = cursor + rank * batch + k;
          const int64_t epoch = position / data_->size();
          if (epoch != order_epoch_) {
            order_ = EpochOrder(data_->size(), spec_.seed(), epoch);
            order_epoch_ = epoch;
          }
          indices.push_back(order_[position % data_->size()]);
        }
        cursor += batch * world;
        if (sync) sync->Prepare(/*sync=*/micro == accum - 1);
        Batch b = ToDevice(MakeBatch(*data_, indices, pad_id), device_);
        torch::Tensor loss;
        {
          CudaAutocast autocast(device_.is_cuda());
          loss = Loss(b, &metrics) / static_cast<double>(accum);
        }
        loss.backward();
        if (sync) sync->Finish();
        metrics.tokens += b.tokens;
      }
      if (group_ != nullptr) {
        // Report the global mean: every rank's metrics averaged (token counts summed).
        torch::Tensor m = torch::tensor({metrics.loss, metrics.chosen_reward, metrics.rejected_reward,
                                         metrics.accuracy, metrics.margin,
                                         static_cast<double>(metrics.tokens),
                                         stop_requested ? 1.0 : 0.0},
                                        torch::kDouble);
        group_->AllReduce(m);
        stop_requested = m[6].item<double>() > 0;  // every rank stops after the same step
        metrics.loss = m[0].item<double>() / world;
        metrics.chosen_reward = m[1].item<double>() / world;
        metrics.rejected_reward = m[2].item<double>() / world;
        metrics.accuracy = m[3].item<double>() / world;
        metrics.margin = m[4].item<double>() / world;
        metrics.tokens = static_cast<int64_t>(m[5].item<double>());
      }
      if (opt.max_grad_norm() > 0) torch::nn::utils::clip_grad_norm_(trainable, opt.max_grad_norm());
      optimizer->step();
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      json event = {{"type", "progress"},
                    {"step", step + 1},
                    {"total_steps", total},
                    {"loss", metrics.loss / accum},
                    {"learning_rate", lr},
                    {"tokens_per_second", seconds > 0 ? metrics.tokens / seconds : 0.0}};
      if (!spec_.has_sft()) {
        event["rewards_chosen"] = metrics.chosen_reward / accum;
        event["rewards_rejected"] = metrics.rejected_reward / accum;
        event["reward_accuracy"] = metrics.accuracy / accum;
        event["reward_margin"] = metrics.margin / accum;
      }
      Emit(event);
      const bool final = step + 1 == total;
      const bool scheduled = final || (every > 0 && (step + 1) % every == 0);
      // Asked to stop: keep the work done so far (a checkpoint of this step, unless the policy
      // just wrote one) and end; the restarted branch resumes here.
      if (options_.task.rank() == 0 && (scheduled || (stop_requested && !final))) {
        PAFT_RETURN_IF_ERROR(SaveCheckpoint(step + 1, total, final, *optimizer, trainable_bytes));
      }
      if (stop_requested && !final) {
        return absl::AbortedError(
            absl::StrCat("stopped on request after step ", step + 1, " of ", total,
                         options_.task.rank() == 0 ? ", checkpointed" : ""));
      }
    }
    return absl::OkStatus();
  }

 private:
  void Emit(const json& event) {
    if (options_.emit) options_.emit(event);
  }

  // The loss of one micro-batch (not yet divided for accumulation); adds to `metrics`.
  torch::Tensor Loss(const Batch& b, StepMetrics* metrics) {
    torch::Tensor logits = model_->forward(b.input_ids, b.attention_mask);
    if (spec_.has_sft()) {
      torch::Tensor loss = SftLoss(logits, b.input_ids, b.completion_mask);
      metrics->loss += loss.item<double>();
      if (spec_.sft().l1_lambda() > 0) loss = loss + spec_.sft().l1_lambda() * L1();
      return loss;
    }
    const int64_t pairs = b.pairs;
    auto [chosen, rejected] = Split(CompletionLogProbs(logits, b.input_ids, b.completion_mask), pairs);
    SideLogProbs c{chosen, {}}, r{rejected, {}};
    if (NeedsReference(preference_) && !reference_cache_.empty()) {
      // Precomputed once before training: (chosen sum, chosen tokens, rejected sum, tokens).
      std::vector<double> cs, ct, rs, rt;
      for (int64_t i : b.indices) {
        const auto& e = reference_cache_[i];
        cs.push_back(e[0]);
        ct.push_back(e[1]);
        rs.push_back(e[2]);
        rt.push_back(e[3]);
      }
      auto options = chosen.sum.options();
      c.reference = {torch::tensor(cs).to(options), torch::tensor(ct).to(options)};
      r.reference = {torch::tensor(rs).to(options), torch::tensor(rt).to(options)};
    } else if (NeedsReference(preference_)) {
      torch::NoGradGuard no_grad;
      torch::Tensor ref_logits;
      if (reference_.is_empty()) {  // LoRA: the base with adapters off is the reference
        model_->SetLoraEnabled(false);
        ref_logits = model_->forward(b.input_ids, b.attention_mask);
        model_->SetLoraEnabled(true);
      } else {
        ref_logits = reference_->forward(b.input_ids, b.attention_mask);
      }
      auto [rc, rr] = Split(CompletionLogProbs(ref_logits, b.input_ids, b.completion_mask), pairs);
      c.reference = rc;
      r.reference = rr;
    }
    torch::Tensor chosen_nll;
    if (preference_.kind == PreferenceKind::kOrpo) {
      chosen_nll = SftLoss(logits.narrow(0, 0, pairs), b.input_ids.narrow(0, 0, pairs),
                           b.completion_mask.narrow(0, 0, pairs));
    }
    PreferenceOutput out = PreferenceLoss(preference_, c, r, chosen_nll);
    metrics->loss += out.loss.item<double>();
    metrics->chosen_reward += out.chosen_rewards.mean().item<double>();
    metrics->rejected_reward += out.rejected_rewards.mean().item<double>();
    metrics->accuracy += out.accuracy().item<double>();
    metrics->margin += out.margin().item<double>();
    return out.loss;
  }

  // PAFT's L1 penalty on the trainable delta: LoRA A/B, or theta - theta_pre.
  torch::Tensor L1() {
    std::vector<torch::Tensor> params, reference;
    for (auto& [name, p] : model_->TrainableParameters()) params.push_back(p);
    if (!reference_.is_empty()) {
      auto mine = model_->named_parameters();
      auto theirs = reference_->named_parameters();
      params.clear();
      for (auto& item : mine) {
        if (!item.value().requires_grad()) continue;
        params.push_back(item.value());
        reference.push_back(theirs[item.key()]);
      }
    }
    return L1Penalty(params, reference);
  }

  // DPO's `precompute_ref_log_probs`: one no-grad pass of the reference over the dataset,
  // cached beside it (keyed by the dataset's fingerprint and the base model's weights), so the
  // reference forward pass leaves the training loop and a full fine-tuning run can drop its copy.
  absl::Status PrecomputeReference() {
    PAFT_ASSIGN_OR_RETURN(std::string weights_header,
                          ReadFileToString(JoinPath(options_.task.base_model(), "config.json")));
    auto weights = SafetensorsModel::Open(options_.task.base_model());
    if (!weights.ok()) return weights.status();
    const std::string key_text = absl::StrCat(data_->fingerprint(), "|", weights_header, "|",
                                              (*weights)->total_bytes(), "|",
                                              options_.task.base_model());
    const std::string key = Fingerprint(absl::Span<const uint8_t>(
        reinterpret_cast<const uint8_t*>(key_text.data()), key_text.size()));
    const std::string path = absl::StrCat(options_.dataset, ".ref-", key, ".json");
    if (auto cached = ReadFileToString(path); cached.ok()) {
      json j = json::parse(*cached, nullptr, false);
      if (!j.is_discarded() && j.is_array() && static_cast<int64_t>(j.size()) == data_->size()) {
        for (const auto& e : j) {
          reference_cache_.push_back({e[0].get<double>(), e[1].get<double>(), e[2].get<double>(),
                                      e[3].get<double>()});
        }
        return absl::OkStatus();
      }
    }
    torch::NoGradGuard no_grad;
    const int64_t pad_id = model_->config().eos_token_id >= 0 ? model_->config().eos_token_id : 0;
    json out = json::array();
    CudaAutocast autocast(device_.is_cuda());
    for (int64_t i = 0; i < data_->size(); ++i) {
      Batch b = ToDevice(MakeBatch(*data_, {i}, pad_id), device_);
      torch::Tensor logits;
      if (reference_.is_empty()) {
        model_->SetLoraEnabled(false);
        logits = model_->forward(b.input_ids, b.attention_mask);
        model_->SetLoraEnabled(true);
      } else {
        logits = reference_->forward(b.input_ids, b.attention_mask);
      }
      auto [c, r] = Split(CompletionLogProbs(logits, b.input_ids, b.completion_mask), 1);
      reference_cache_.push_back({c.sum.item<double>(), c.tokens.item<double>(),
                                  r.sum.item<double>(), r.tokens.item<double>()});
      out.push_back(reference_cache_.back());
    }
    PAFT_RETURN_IF_ERROR(WriteFileAtomic(path, out.dump()));
    reference_ = LlamaForCausalLM(nullptr);  // no longer needed
    return absl::OkStatus();
  }

  // sha256 of the base model's config.json: a checkpoint of another model is refused.
  absl::StatusOr<std::string> ModelConfigDigest() const {
    return Sha256File(JoinPath(options_.task.base_model(), "config.json"));
  }

  // Finds the checkpoint to resume from: the task's resume_from (which must verify), else the
  // newest committed checkpoint in the checkpoint folder that verifies (torn ones are skipped).
  absl::StatusOr<std::string> ResumePoint() {
    if (!options_.task.resume_from().empty()) {
      PAFT_RETURN_IF_ERROR(VerifyCheckpoint(options_.task.resume_from()));
      return options_.task.resume_from();
    }
    std::vector<std::pair<int64_t, std::string>> found;
    if (auto names = ListDir(options_.task.checkpoint_dir()); names.ok()) {
      for (const auto& name : *names) {
        int64_t step;
        if (name.rfind("checkpoint-", 0) == 0 && absl::SimpleAtoi(name.substr(11), &step)) {
          found.emplace_back(step, JoinPath(options_.task.checkpoint_dir(), name));
        }
      }
    }
    std::sort(found.rbegin(), found.rend());
    for (const auto& [step, dir] : found) {
      absl::Status verified = VerifyCheckpoint(dir);
      if (verified.ok()) return dir;
      std::cerr << "skipping checkpoint " << dir << ": " << verified.message() << std::endl;
    }
    return std::string();
  }

  // A checkpoint exists only with its manifest, and every file must match its size and sha256.
  static absl::Status VerifyCheckpoint(const std::string& dir) {
    auto text = ReadFileToString(JoinPath(dir, "paft_checkpoint.json"));
    if (!text.ok()) {
      return absl::DataLossError(
          absl::StrCat("checkpoint ", dir, " has no manifest (an interrupted save)"));
    }
    json manifest = json::parse(*text, nullptr, false);
    if (manifest.is_discarded() || !manifest.contains("files") || !manifest["files"].is_object()) {
      return absl::DataLossError(absl::StrCat("checkpoint ", dir, ": unreadable manifest"));
    }
    for (const auto& item : manifest["files"].items()) {
      const std::string path = JoinPath(dir, item.key());
      auto bytes = ReadFileToString(path);
      if (!bytes.ok() || static_cast<int64_t>(bytes->size()) != item.value().value("size", int64_t{-1})) {
        return absl::DataLossError(
            absl::StrCat("checkpoint ", dir, ": file ", item.key(), " is missing or truncated"));
      }
      Sha256 sha;
      sha.Update(*bytes);
      if (sha.HexDigest() != item.value().value("sha256", "")) {
        return absl::DataLossError(
            absl::StrCat("checkpoint ", dir, ": file ", item.key(), " does not match its sha256"));
      }
    }
    return absl::OkStatus();
  }

  // Restores weights and the step (before the optimizer exists); the optimizer and RNG states
  // follow in RestoreOptimizerAndRng once it does.
  absl::Status MaybeResume() {
    PAFT_ASSIGN_OR_RETURN(resume_dir_, ResumePoint());
    if (resume_dir_.empty()) return absl::OkStatus();
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
    torch::NoGradGuard no_grad;
    if (model_->has_lora()) {
      PAFT_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(JoinPath(from, "adapter_model.safetensors")));
      for (auto& [name, param] : model_->PeftStateDict()) {
        const TensorInfo* info = file->Find(name);
        if (info == nullptr || info->shape != param.sizes().vec()) {
          return absl::FailedPreconditionError(
              absl::StrCat("checkpoint ", from, " does not match the model: '", name, "'"));
        }
        PAFT_ASSIGN_OR_RETURN(torch::Tensor value, ReadTensor(*file, *info));
        param.copy_(value);
      }
    } else {
      PAFT_ASSIGN_OR_RETURN(auto loaded, LoadPretrained(from, torch::kFloat));
      auto src = loaded->HfStateDict();
      auto dst = model_->HfStateDict();
      for (size_t i = 0; i < dst.size(); ++i) dst[i].second.copy_(src[i].second);
    }
    start_step_ = state["step"].get<int64_t>();
    std::cerr << "resuming from " << from << " at step " << start_step_ << std::endl;
    return absl::OkStatus();
  }

  absl::Status RestoreOptimizerAndRng(torch::optim::Optimizer& optimizer) {
    if (resume_dir_.empty()) return absl::OkStatus();
    const std::string optimizer_path = JoinPath(resume_dir_, "optimizer.pt");
    if (IsRegularFile(optimizer_path)) {
      torch::serialize::InputArchive archive;
      archive.load_from(optimizer_path);
      optimizer.load(archive);
    }
    const std::string rng_path = JoinPath(resume_dir_, "rng.pt");
    if (IsRegularFile(rng_path)) {
      torch::Tensor rng_state;
      torch::load(rng_state, rng_path);
      auto generator = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_state(rng_state);
    }
    return absl::OkStatus();
  }

  // Refuses to start a save that cannot fit: weights + optimizer moments + 10% and 16 MB slack.
  absl::Status CheckFreeSpace(const std::string& dir, int64_t trainable_bytes) {
    int64_t weights = 0;
    for (const auto& [name, t] : model_->has_lora() ? model_->PeftStateDict() : model_->HfStateDict()) {
      weights += t.numel() * 4;
    }
    const int64_t needed = static_cast<int64_t>((weights + 2 * trainable_bytes) * 1.1) + (16 << 20);
    struct statvfs fs;
    if (::statvfs(dir.c_str(), &fs) != 0) return absl::OkStatus();  // cannot tell: try
    const int64_t available = static_cast<int64_t>(fs.f_bavail) * static_cast<int64_t>(fs.f_frsize);
    if (available < needed) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "not enough free space for a checkpoint in ", dir, ": ", available, " bytes free, ",
          needed, " needed"));
    }
    return absl::OkStatus();
  }

  absl::Status SaveCheckpoint(int64_t step, int64_t total, bool final,
                              torch::optim::Optimizer& optimizer, int64_t trainable_bytes) {
    PAFT_RETURN_IF_ERROR(MakeDirs(options_.task.checkpoint_dir()));
    PAFT_RETURN_IF_ERROR(CheckFreeSpace(options_.task.checkpoint_dir(), trainable_bytes));
    const std::string dir =
        JoinPath(options_.task.checkpoint_dir(), absl::StrCat("checkpoint-", step));
    if (PathExists(dir)) PAFT_RETURN_IF_ERROR(RemoveAll(dir));  // a rerun of the same step
    const std::string staging = dir + ".staging";
    (void)RemoveAll(staging);
    if (model_->has_lora()) {
      PAFT_RETURN_IF_ERROR(SaveAdapter(model_, staging, options_.task.base_model()));
    } else {
      // fp32, the training precision: resuming must continue from exactly these weights.
      PAFT_RETURN_IF_ERROR(SavePretrained(model_, staging, {}, options_.task.base_model()));
    }
    {
      torch::serialize::OutputArchive archive;
      optimizer.save(archive);
      archive.save_to(JoinPath(staging, "optimizer.pt"));
      auto generator = at::detail::getDefaultCPUGenerator();
      torch::Tensor rng_state;
      {
        std::lock_guard<std::mutex> lock(generator.mutex());
        rng_state = generator.get_state();
      }
      torch::save(rng_state, JoinPath(staging, "rng.pt"));
    }
    PAFT_ASSIGN_OR_RETURN(std::string config_digest, ModelConfigDigest());
    const int64_t examples_per_step = std::max(1, spec_.batch().per_device_batch_size()) *
                                      std::max(1, spec_.batch().gradient_accumulation_steps()) *
                                      std::max(1, options_.task.world_size());
    json state = {{"step", step},
                  {"total_steps", total},
                  {"epoch", step * examples_per_step / std::max<int64_t>(1, data_->size())},
                  {"data_cursor", step * examples_per_step},
                  {"seed", spec_.seed()},
                  {"world_size", options_.task.world_size()},
                  {"dataset_fingerprint", data_->fingerprint()},
                  {"model_config_sha256", config_digest},
                  {"branch", paft::v1::BranchKind_Name(options_.task.branch())},
                  {"final", final}};
    PAFT_RETURN_IF_ERROR(WriteFileAtomic(JoinPath(staging, "trainer_state.json"), state.dump(2)));
    // Every file is fsynced (WriteFileAtomic, the safetensors writer; torch's archives here);
    // the manifest with sizes and sha256 is written last: a folder without it is not a
    // checkpoint.
    json manifest = {{"step", step}, {"files", json::object()}};
    int64_t size = 0;
    PAFT_ASSIGN_OR_RETURN(auto names, ListDir(staging));
    for (const auto& name : names) {
      const std::string path = JoinPath(staging, name);
      PAFT_RETURN_IF_ERROR(FsyncPath(path));
      auto bytes = ReadFileToString(path);
      if (!bytes.ok()) return bytes.status();
      Sha256 sha;
      sha.Update(*bytes);
      manifest["files"][name] = {{"size", bytes->size()}, {"sha256", sha.HexDigest()}};
      size += static_cast<int64_t>(bytes->size());
    }
    const std::string manifest_text = manifest.dump(2);
    PAFT_RETURN_IF_ERROR(WriteFileAtomic(JoinPath(staging, "paft_checkpoint.json"), manifest_text));
    PAFT_RETURN_IF_ERROR(FsyncPath(staging));
    PAFT_RETURN_IF_ERROR(RenameDurably(staging, dir));
    Sha256 digest;
    digest.Update(manifest_text);
    Emit({{"type", "checkpoint"}, {"step", step}, {"path", dir}, {"size_bytes", size},
          {"digest", digest.HexDigest()}, {"final", final}});
    return ApplyRetention(dir);
  }

  // Keeps the newest keep_last committed checkpoints (the one just written always among them).
  absl::Status ApplyRetention(const std::string& newest) {
    const int keep = std::max(1, spec_.checkpoint().keep_last());
    PAFT_ASSIGN_OR_RETURN(auto names, ListDir(options_.task.checkpoint_dir()));
    std::vector<std::pair<int64_t, std::string>> committed;
    for (const auto& name : names) {
      int64_t step;
      const std::string dir = JoinPath(options_.task.checkpoint_dir(), name);
      if (name.rfind("checkpoint-", 0) == 0 && absl::SimpleAtoi(name.substr(11), &step) &&
          IsRegularFile(JoinPath(dir, "paft_checkpoint.json"))) {
        committed.emplace_back(step, dir);
      }
    }
    std::sort(committed.rbegin(), committed.rend());
    for (size_t i = static_cast<size_t>(keep); i < committed.size(); ++i) {
      if (committed[i].second == newest) continue;
      PAFT_RETURN_IF_ERROR(RemoveAll(committed[i].second));
    }
    return absl::OkStatus();
  }

  const TrainOptions& options_;
  const paft::v1::BranchSpec& spec_;
  LlamaForCausalLM model_{nullptr};
  LlamaForCausalLM reference_{nullptr};  // full fine-tuning only
  torch::Device device_{torch::kCPU};
  std::unique_ptr<ProcessGroupHandle> group_;  // world_size > 1
  std::string resume_dir_;  // the checkpoint resumed from, if any
  std::map<std::string, DType> stored_;
  std::unique_ptr<TokenDataset> data_;
  PreferenceParams preference_;
  std::vector<int64_t> order_;
  int64_t order_epoch_ = -1;
  int64_t start_step_ = 0;
  // Per example: reference log-prob sums and token counts of chosen and rejected.
  std::vector<std::array<double, 4>> reference_cache_;
};

}  // namespace

absl::Status Train(const TrainOptions& options) {
  const bool distributed = options.task.world_size() > 1;
  try {
    return BranchTrainer(options).Run();
  } catch (const c10::Error& e) {
    // The one seam where LibTorch exceptions become a Status.
    const std::string what = e.what_without_backtrace();
    if (what.find("out of memory") != std::string::npos) return absl::ResourceExhaustedError(what);
    if (distributed) {
      return absl::UnavailableError(absl::StrCat(
          "collective failed (a peer rank died or timed out): ", what));
    }
    return absl::InternalError(absl::StrCat("LibTorch: ", what));
  } catch (const std::exception& e) {
    if (distributed) {
      return absl::UnavailableError(
          absl::StrCat("collective failed (a peer rank died or timed out): ", e.what()));
    }
    return absl::InternalError(e.what());
  }
}

absl::StatusOr<std::string> PrepareDataset(const std::string& input, const std::string& base_model,
                                           const paft::v1::BranchSpec& spec,
                                           const std::string& cache_dir,
                                           const std::string& prepare_binary) {
  if (input.size() > 7 && input.substr(input.size() - 7) == ".paftds") return input;
  const std::string tokenizer = JoinPath(base_model, "tokenizer.model");
  if (!IsRegularFile(tokenizer)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "dataset ", input, " is JSONL but the base model has no tokenizer.model to tokenize it"));
  }
  PAFT_ASSIGN_OR_RETURN(std::string data, ReadFileToString(input));
  PAFT_ASSIGN_OR_RETURN(std::string tok, ReadFileToString(tokenizer));
  const std::string settings =
      absl::StrCat(spec.dataset().format(), "|", spec.dataset().chat_template(), "|",
                   spec.batch().max_seq_len());
  const std::string key = Fingerprint(absl::Span<const uint8_t>(
      reinterpret_cast<const uint8_t*>((data + tok + settings).data()), data.size() + tok.size() + settings.size()));
  const std::string name = input.substr(input.find_last_of('/') + 1);
  const std::string out = JoinPath(cache_dir, absl::StrCat(name, ".", key, ".paftds"));
  if (IsRegularFile(out)) return out;
  PAFT_RETURN_IF_ERROR(MakeDirs(cache_dir));
  std::vector<std::string> argv = {prepare_binary, "--tokenizer=" + tokenizer, "--input=" + input,
                                   "--output=" + out,
                                   absl::StrCat("--max_seq_len=", spec.batch().max_seq_len() > 0 ? spec.batch().max_seq_len() : 512)};
  if (!spec.dataset().format().empty()) argv.push_back("--format=" + spec.dataset().format());
  if (!spec.dataset().chat_template().empty()) {
    argv.push_back("--chat_template=" + spec.dataset().chat_template());
  }
  PAFT_ASSIGN_OR_RETURN(auto result, RunProcess(argv));
  if (result.first != 0) {
    std::string message = result.second;
    while (!message.empty() && message.back() == '\n') message.pop_back();
    if (result.first == 2) return absl::InvalidArgumentError(message);
    return absl::InternalError(absl::StrCat("paft-prepare failed (exit ", result.first, "): ", message));
  }
  return out;
}

absl::StatusOr<json> Evaluate(const std::string& base_model, const std::string& adapter,
                              const std::string& dataset, double beta, int64_t max_new_tokens,
                              const std::string& reference_model) {
  try {
    PAFT_ASSIGN_OR_RETURN(auto model, LoadPretrained(base_model, torch::kFloat));
    if (!adapter.empty()) PAFT_RETURN_IF_ERROR(LoadAdapter(model, adapter));
    LlamaForCausalLM reference_net{nullptr};
    if (!reference_model.empty()) {
      PAFT_ASSIGN_OR_RETURN(reference_net, LoadPretrained(reference_model, torch::kFloat));
      reference_net->eval();
      if (reference_net->config().vocab_size != model->config().vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat(
            "reference model ", reference_model, " has another vocabulary size (",
            reference_net->config().vocab_size, " vs ", model->config().vocab_size, ")"));
      }
    }
    PAFT_ASSIGN_OR_RETURN(auto data, TokenDataset::Open(dataset));
    model->eval();
    torch::NoGradGuard no_grad;
    const int64_t pad_id = model->config().eos_token_id >= 0 ? model->config().eos_token_id : 0;
    json report = {{"examples", data->size()}, {"dataset", dataset}};
    if (data->kind() == DatasetKind::kSft) {
      double nll = 0, tokens = 0;
      int64_t exact = 0;
      for (int64_t i = 0; i < data->size(); ++i) {
        Batch b = MakeBatch(*data, {i}, pad_id);
        auto seq = CompletionLogProbs(model->forward(b.input_ids), b.input_ids, b.completion_mask);
        nll -= seq.sum.item<double>();
        tokens += seq.tokens.item<double>();
        // Greedy generation from the prompt must reproduce the completion exactly.
        std::vector<int64_t> prompt(data->prompt(i).begin(), data->prompt(i).end());
        auto reference = data->completion(i);
        GenerationOptions g;
        g.max_new_tokens = std::min<int64_t>(max_new_tokens, reference.size());
        auto generated = model->Generate(prompt, g);
        exact += std::equal(generated.begin(), generated.end(), reference.begin(),
                            reference.begin() + generated.size()) &&
                         generated.size() == reference.size()
                     ? 1
                     : 0;
      }
      report["loss"] = nll / std::max(1.0, tokens);
      report["perplexity"] = std::exp(nll / std::max(1.0, tokens));
      report["exact_match"] = static_cast<double>(exact) / data->size();
    } else {
      json per_example = json::array();
      int64_t correct = 0;
      double margin = 0;
      for (int64_t i = 0; i < data->size(); ++i) {
        Batch b = MakeBatch(*data, {i}, pad_id);
        auto policy = Split(CompletionLogProbs(model->forward(b.input_ids, b.attention_mask),
                                               b.input_ids, b.completion_mask), 1);
        LlamaForCausalLM& ref = reference_net ? reference_net : model;
        if (!reference_net) model->SetLoraEnabled(false);
        auto reference = Split(CompletionLogProbs(ref->forward(b.input_ids, b.attention_mask),
                                                  b.input_ids, b.completion_mask), 1);
        model->SetLoraEnabled(true);
        const double pc = policy.first.sum.item<double>(), pr = policy.second.sum.item<double>();
        const double rc = reference.first.sum.item<double>(), rr = reference.second.sum.item<double>();
        const double chosen_reward = beta * (pc - rc), rejected_reward = beta * (pr - rr);
        correct += chosen_reward > rejected_reward ? 1 : 0;
        margin += chosen_reward - rejected_reward;
        per_example.push_back({{"policy_chosen", pc}, {"policy_rejected", pr},
                               {"reference_chosen", rc}, {"reference_rejected", rr}});
        // Without an adapter rewards are 0: report the policy's own preference too.
      }
      int64_t prefers = 0;
      for (const auto& e : per_example) {
        prefers += e["policy_chosen"].get<double>() > e["policy_rejected"].get<double>() ? 1 : 0;
      }
      report["reward_accuracy"] = static_cast<double>(correct) / data->size();
      report["reward_margin"] = margin / data->size();
      report["policy_prefers_chosen"] = static_cast<double>(prefers) / data->size();
      report["per_example"] = per_example;
    }
    return report;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("LibTorch: ", e.what_without_backtrace()));
  }
}

}  // namespace paft::trainer
