#include "trainer/objectives.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "trainer/target_log_probs.h"

namespace paft::trainer {

std::pair<SequenceLogProbs, SequenceLogProbs> SplitPairs(const SequenceLogProbs& all, int64_t b) {
  return {{all.sum.narrow(0, 0, b), all.tokens.narrow(0, 0, b)},
          {all.sum.narrow(0, b, b), all.tokens.narrow(0, b, b)}};
}

namespace {

// 1 at each position of the flat (rows × t) grid whose next token is a completion target
// (`prompt` false) or a prompt token of the same sequence (`prompt` true).
torch::Tensor PredictsNext(const Batch& b, int64_t rows, int64_t t, bool prompt) {
  auto long_options = torch::TensorOptions().dtype(torch::kLong).device(b.input_ids.device());
  torch::Tensor next = b.completion_mask.narrow(1, 1, t - 1);
  if (prompt) {
    // Not a target, and still inside the sequence: a real token of the same row (padded), or of
    // the same sequence of the packed row (a sequence's first token is never a target).
    const torch::Tensor inside =
        b.packed() ? b.sequence_ids.narrow(0, 1, t - 1).eq(b.sequence_ids.narrow(0, 0, t - 1)).unsqueeze(0)
                   : b.attention_mask.narrow(1, 1, t - 1).eq(1);
    next = (inside & next.eq(0)).to(torch::kLong);
  }
  const torch::Tensor predicts = torch::zeros({rows, t}, long_options);
  predicts.narrow(1, 0, t - 1).copy_(next);
  return predicts.view(-1);
}

}  // namespace

SequenceLogProbs BatchLogProbs(LlamaForCausalLM& model, const Batch& b, int64_t prompt_sequences,
                               torch::Tensor* prompt_sums) {
  const torch::Tensor hidden = b.packed() ? model->HiddenStatesPacked(b.input_ids, b.lengths)
                                          : model->HiddenStates(b.input_ids, b.attention_mask);
  const int64_t rows = hidden.size(0), t = hidden.size(1);
  // Position p predicts the token at p + 1: the positions that matter are those followed by a
  // completion token (flat over the (rows, t) grid; a row's last position is never one).
  const auto owner_of = [&](const torch::Tensor& positions) {  // its row, or packed: its sequence
    return b.packed() ? b.sequence_ids.index_select(0, positions + 1) : positions.div(t, "floor");
  };
  const torch::Tensor positions = PredictsNext(b, rows, t, false).nonzero().squeeze(1);
  const int64_t completion_targets = positions.size(0);
  torch::Tensor scored = positions, prompt_owner;
  if (prompt_sums != nullptr) {  // also the prompt tokens of the first `prompt_sequences`
    torch::Tensor prompt_positions = PredictsNext(b, rows, t, true).nonzero().squeeze(1);
    prompt_owner = owner_of(prompt_positions);
    const torch::Tensor keep = prompt_owner.lt(prompt_sequences);
    prompt_positions = prompt_positions.masked_select(keep);
    prompt_owner = prompt_owner.masked_select(keep);
    scored = torch::cat({positions, prompt_positions});
  }
  const torch::Tensor targets = b.input_ids.reshape(-1).index_select(0, scored + 1);
  const torch::Tensor token =
      TargetLogProbs(hidden.reshape({rows * t, hidden.size(2)}).index_select(0, scored),
                     model->HeadWeight(), targets);
  const torch::Tensor completion = token.narrow(0, 0, completion_targets);
  const torch::Tensor owner = owner_of(positions);
  const torch::Tensor zeros = torch::zeros({b.sequences()}, token.options());
  if (prompt_sums != nullptr) {
    *prompt_sums = zeros.index_add(
        0, prompt_owner, token.narrow(0, completion_targets, token.size(0) - completion_targets));
  }
  return {zeros.index_add(0, owner, completion), zeros.index_add(0, owner, torch::ones_like(completion))};
}

torch::Tensor NextTokenLogProbs(LlamaForCausalLM& model, const torch::Tensor& input_ids,
                                int64_t chunk_rows) {
  const int64_t b = input_ids.size(0), t = input_ids.size(1);
  const torch::Tensor hidden = model->HiddenStates(input_ids).narrow(1, 0, t - 1);
  return TargetLogProbs(hidden.reshape({b * (t - 1), hidden.size(2)}), model->HeadWeight(),
                        input_ids.narrow(1, 1, t - 1).reshape(-1), chunk_rows)
      .view({b, t - 1});
}

absl::StatusOr<BranchObjective> BranchObjective::FromSpec(const paft::v1::BranchSpec& spec) {
  BranchObjective o;
  PreferenceParams& p = o.preference_;
  if (spec.has_sft()) {
    o.sft_ = true;
    o.l1_lambda_ = spec.sft().l1_lambda();
    const std::string& target = spec.sft().l1_target();
    if (target == "delta") {
      o.l1_target_ = L1Target::kDelta;
    } else if (target != "adapter") {
      return absl::InvalidArgumentError(
          absl::StrCat("sft.l1_target '", target, "' is not adapter or delta"));
    }
    return o;
  }
  if (spec.has_dpo()) {
    PAFT_ASSIGN_OR_RETURN(p.kind, DpoKind(spec.dpo().loss_type()));
    p.beta = spec.dpo().beta();
    p.label_smoothing = spec.dpo().label_smoothing();
  } else if (spec.has_orpo()) {
    p.kind = PreferenceKind::kOrpo;
    p.beta = spec.orpo().beta();
    p.prompt_loss = spec.orpo().prompt_loss();
  } else if (spec.has_simpo()) {
    p.kind = PreferenceKind::kSimpo;
    p.beta = spec.simpo().beta();
    p.gamma = spec.simpo().gamma();
  } else {
    return absl::InvalidArgumentError("the branch has no training objective");
  }
  if (p.beta <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("the preference beta must be > 0, got ", p.beta));
  }
  return o;
}

bool BranchObjective::needs_reference() const {
  return !sft_ && preference_.kind != PreferenceKind::kOrpo &&
         preference_.kind != PreferenceKind::kSimpo;
}

std::pair<SequenceLogProbs, SequenceLogProbs> BranchObjective::ReferenceLogProbsOf(
    LlamaForCausalLM& model, const Batch& b) {
  auto options = torch::TensorOptions().dtype(torch::kFloat).device(b.input_ids.device());
  if (!cache_.empty()) {
    std::vector<float> cs, ct, rs, rt;
    for (int64_t i : b.indices) {
      const auto& e = cache_[i];
      cs.push_back(static_cast<float>(e[0]));
      ct.push_back(static_cast<float>(e[1]));
      rs.push_back(static_cast<float>(e[2]));
      rt.push_back(static_cast<float>(e[3]));
    }
    return {{torch::tensor(cs).to(options), torch::tensor(ct).to(options)},
            {torch::tensor(rs).to(options), torch::tensor(rt).to(options)}};
  }
  torch::NoGradGuard no_grad;
  SequenceLogProbs all;
  if (reference_.is_empty()) {  // LoRA: the base with adapters off is the reference
    model->SetLoraEnabled(false);
    all = BatchLogProbs(model, b);
    model->SetLoraEnabled(true);
  } else {
    all = BatchLogProbs(reference_, b);
  }
  return SplitPairs(all, b.pairs);
}

torch::Tensor BranchObjective::MicroBatchLoss(LlamaForCausalLM& model, const Batch& b,
                                              const StepCounts& counts, StepMetrics* metrics) {
  const double targets = static_cast<double>(std::max<int64_t>(1, counts.targets));
  const bool orpo = preference_.kind == PreferenceKind::kOrpo;
  // ORPO's NLL with its prompt loss: the chosen sequences' prompt tokens are scored too.
  torch::Tensor prompt_sums;
  const SequenceLogProbs all = BatchLogProbs(model, b, b.pairs,
                                             orpo && preference_.prompt_loss ? &prompt_sums : nullptr);
  if (sft_) {
    torch::Tensor share = -all.sum.sum() / targets;
    metrics->loss += share.item<double>();
    return share;
  }
  const int64_t pairs = b.pairs;
  auto [chosen, rejected] = SplitPairs(all, pairs);
  SideLogProbs c{chosen, {}}, r{rejected, {}};
  if (needs_reference()) std::tie(c.reference, r.reference) = ReferenceLogProbsOf(model, b);
  PreferenceOutput out = PreferenceLoss(preference_, c, r, torch::zeros({}, chosen.sum.options()));
  torch::Tensor share =
      out.per_pair.sum() / static_cast<double>(std::max<int64_t>(1, counts.sequences));
  if (orpo && preference_.prompt_loss) {  // over every token of prompt + chosen after the first
    const double sequence_targets =
        static_cast<double>(std::max<int64_t>(1, counts.chosen_sequence_targets));
    share = share - (chosen.sum.sum() + prompt_sums.narrow(0, 0, pairs).sum()) / sequence_targets;
  } else if (orpo) {
    share = share - chosen.sum.sum() / targets;
  }
  metrics->loss += share.item<double>();
  metrics->chosen_reward += out.chosen_rewards.mean().item<double>();
  metrics->rejected_reward += out.rejected_rewards.mean().item<double>();
  metrics->accuracy += out.accuracy().item<double>();
  metrics->margin += out.margin().item<double>();
  return share;
}

double BranchObjective::BackwardPenalty(const LlamaForCausalLM& model) const {
  if (l1_lambda_ <= 0) return 0;
  if (model->has_lora() && l1_target_ == L1Target::kDelta) {
    double total = 0;
    for (auto& [name, linear] : model->LoraLinears()) {
      torch::Tensor delta = linear->scaling * torch::matmul(linear->lora_B.to(torch::kFloat),
                                                            linear->lora_A.to(torch::kFloat));
      torch::Tensor penalty = l1_lambda_ * delta.abs().sum();
      penalty.backward();
      total += penalty.item<double>();
    }
    return total;
  }
  // One parameter at a time: only one |p - p_pre| is alive at once (full fine-tuning).
  double total = 0;
  auto theirs = reference_.is_empty() ? torch::OrderedDict<std::string, torch::Tensor>()
                                      : reference_->named_parameters();
  for (auto& [name, p] : model->TrainableParameters()) {
    torch::Tensor penalty =
        l1_lambda_ * (reference_.is_empty() ? L1Penalty({p}) : L1Penalty({p}, {theirs[name]}));
    penalty.backward();
    total += penalty.item<double>();
  }
  return total;
}

}  // namespace paft::trainer
