#include "trainer/losses.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace paft::trainer {

torch::Tensor Log1mExp(const torch::Tensor& x) {
  // log(1 - e^x) for x <= 0 (Mächler 2012): log(-expm1(x)) near 0, log1p(-exp(x)) below -ln 2.
  // Each branch gets inputs it is stable on, so neither feeds inf or NaN into the other's
  // gradient; x is kept below -1e-30 so that a completion whose average log-prob rounds to 0
  // still has a finite loss and gradient.
  constexpr double kLn2 = 0.693147180559945309417;
  const torch::Tensor v = x.clamp_max(-1e-30);
  const torch::Tensor near_zero = v > -kLn2;
  const torch::Tensor small = torch::log(-torch::expm1(v.clamp_min(-kLn2)));
  const torch::Tensor large = torch::log1p(-torch::exp(v.clamp_max(-kLn2)));
  return torch::where(near_zero, small, large);
}
namespace F = torch::nn::functional;

torch::Tensor L1Penalty(const std::vector<torch::Tensor>& params,
                        const std::vector<torch::Tensor>& reference) {
  torch::Tensor total = torch::zeros({}, torch::kFloat);
  for (size_t i = 0; i < params.size(); ++i) {
    torch::Tensor p = params[i].to(torch::kFloat);
    if (!reference.empty()) p = p - reference[i].to(torch::kFloat);
    total = total + p.abs().sum();
  }
  return total;
}

absl::StatusOr<PreferenceKind> DpoKind(const std::string& loss_type) {
  if (loss_type == "sigmoid" || loss_type.empty()) return PreferenceKind::kDpoSigmoid;
  if (loss_type == "ipo") return PreferenceKind::kDpoIpo;
  if (loss_type == "hinge") return PreferenceKind::kDpoHinge;
  if (loss_type == "robust") return PreferenceKind::kDpoRobust;
  return absl::InvalidArgumentError(absl::StrCat("unknown DPO loss_type '", loss_type, "'"));
}

PreferenceOutput PreferenceLoss(const PreferenceParams& params, const SideLogProbs& chosen,
                                const SideLogProbs& rejected, const torch::Tensor& chosen_nll) {
  const double beta = params.beta, eps = params.label_smoothing;
  PreferenceOutput out;
  switch (params.kind) {
    case PreferenceKind::kDpoSigmoid:
    case PreferenceKind::kDpoHinge:
    case PreferenceKind::kDpoRobust:
    case PreferenceKind::kDpoIpo: {
      const bool average = params.kind == PreferenceKind::kDpoIpo;
      auto pick = [&](const SequenceLogProbs& s) { return average ? s.mean() : s.sum; };
      torch::Tensor chosen_ratio = pick(chosen.policy) - pick(chosen.reference);
      torch::Tensor rejected_ratio = pick(rejected.policy) - pick(rejected.reference);
      torch::Tensor h = chosen_ratio - rejected_ratio;
      torch::Tensor losses;
      if (params.kind == PreferenceKind::kDpoSigmoid) {
        losses = -F::logsigmoid(beta * h) * (1 - eps) - F::logsigmoid(-beta * h) * eps;
      } else if (params.kind == PreferenceKind::kDpoHinge) {
        losses = torch::relu(1 - beta * h);
      } else if (params.kind == PreferenceKind::kDpoRobust) {
        losses = (-F::logsigmoid(beta * h) * (1 - eps) + F::logsigmoid(-beta * h) * eps) /
                 (1 - 2 * eps);
      } else {
        losses = (h - 1 / (2 * beta)).pow(2);
      }
      out.per_pair = losses;
      out.loss = losses.mean();
      out.chosen_rewards = (beta * chosen_ratio).detach();
      out.rejected_rewards = (beta * rejected_ratio).detach();
      break;
    }
    case PreferenceKind::kOrpo: {
      torch::Tensor c = chosen.policy.mean(), r = rejected.policy.mean();
      torch::Tensor log_odds = (c - r) - (Log1mExp(c) - Log1mExp(r));
      out.per_pair = -beta * F::logsigmoid(log_odds);
      out.loss = chosen_nll + out.per_pair.mean();
      out.chosen_rewards = (beta * c).detach();
      out.rejected_rewards = (beta * r).detach();
      break;
    }
    case PreferenceKind::kSimpo: {
      torch::Tensor c = chosen.policy.mean(), r = rejected.policy.mean();
      torch::Tensor logits = beta * (c - r) - params.gamma;
      out.per_pair = -F::logsigmoid(logits) * (1 - eps) - F::logsigmoid(-logits) * eps;
      out.loss = out.per_pair.mean();
      out.chosen_rewards = (beta * c).detach();
      out.rejected_rewards = (beta * r).detach();
      break;
    }
  }
  return out;
}

double LearningRateFactor(int64_t step, int64_t total_steps, int64_t warmup_steps,
                          const std::string& schedule) {
  if (step < warmup_steps) {
    return static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup_steps));
  }
  if (schedule == "constant") return 1.0;
  const double progress = static_cast<double>(step - warmup_steps) /
                          static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
  if (schedule == "linear") return std::max(0.0, 1.0 - progress);
  return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));  // cosine
}

}  // namespace paft::trainer
