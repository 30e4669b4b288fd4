// Objectives, schedules and AdamW against values computed by hand.
#include "trainer/losses.h"

#include <gtest/gtest.h>

#include <cmath>

#include "trainer/target_log_probs.h"

namespace paft::trainer {
namespace {

double LogSigmoid(double x) { return -std::log1p(std::exp(-x)); }

TEST(LossesTest, TargetLogProbsAreTheLogSoftmaxOfTheHeadAtTheTarget) {
  // With the identity as the head, the hidden states are the logits: rows [0, 1] and [2, 0] of a
  // vocabulary of 2, both predicting token 1; one row at a time (two chunks) and both at once.
  const torch::Tensor hidden = torch::tensor({{0.0, 1.0}, {2.0, 0.0}});
  const torch::Tensor targets = torch::tensor({1, 1});
  const double lp0 = 1.0 - std::log(1 + std::exp(1.0));   // log softmax([0,1])[1]
  const double lp1 = 0.0 - std::log(std::exp(2.0) + 1.0);  // log softmax([2,0])[1]
  for (int64_t rows : {1, 2}) {
    const torch::Tensor lp = TargetLogProbs(hidden, torch::eye(2), targets, rows);
    EXPECT_EQ(lp.scalar_type(), torch::kFloat);
    EXPECT_NEAR(lp[0].item<double>(), lp0, 1e-6);
    EXPECT_NEAR(lp[1].item<double>(), lp1, 1e-6);
  }
  // d log p / d logits = onehot(target) - softmax: row 0's is (-s, s) with s = softmax([0,1])[0].
  const torch::Tensor h = hidden.clone().requires_grad_(true);
  TargetLogProbs(h, torch::eye(2), targets, 1)[0].backward();
  const double s = 1 / (1 + std::exp(1.0));
  EXPECT_NEAR(h.grad()[0][0].item<double>(), -s, 1e-6);
  EXPECT_NEAR(h.grad()[0][1].item<double>(), s, 1e-6);
  EXPECT_EQ(h.grad()[1].abs().sum().item<double>(), 0.0);
}

TEST(LossesTest, L1Penalty) {
  EXPECT_FLOAT_EQ(L1Penalty({torch::tensor({1.0, -2.0}), torch::tensor({-0.5})}).item<float>(), 3.5f);
  EXPECT_FLOAT_EQ(L1Penalty({torch::tensor({1.0, -2.0})}, {torch::tensor({1.5, -1.0})}).item<float>(),
                  1.5f);
}

// Two pairs with policy/reference summed log-probs and token counts.
SequenceLogProbs Seq(std::vector<double> sum, std::vector<double> tokens) {
  return {torch::tensor(sum, torch::kDouble), torch::tensor(tokens, torch::kDouble)};
}

struct Pairs {
  SideLogProbs chosen{Seq({-4, -6}, {2, 3}), Seq({-5, -5}, {2, 3})};
  SideLogProbs rejected{Seq({-7, -3}, {4, 1}), Seq({-6, -4}, {4, 1})};
};

TEST(LossesTest, DpoVariants) {
  Pairs p;
  const double beta = 0.5, eps = 0.1;
  // h = (pi_c - ref_c) - (pi_r - ref_r): pair 0: (1) - (-1) = 2; pair 1: (-1) - (1) = -2.
  const double h[2] = {2, -2};
  auto mean = [](auto f) { return (f(0) + f(1)) / 2; };
  PreferenceParams params;
  params.beta = beta;
  params.label_smoothing = eps;
  auto out = PreferenceLoss(params, p.chosen, p.rejected);
  EXPECT_NEAR(out.loss.item<double>(), mean([&](int i) {
                return -(1 - eps) * LogSigmoid(beta * h[i]) - eps * LogSigmoid(-beta * h[i]);
              }), 1e-9);
  EXPECT_NEAR(out.chosen_rewards[0].item<double>(), beta * 1, 1e-9);
  EXPECT_NEAR(out.rejected_rewards[1].item<double>(), beta * 1, 1e-9);
  EXPECT_NEAR(out.accuracy().item<double>(), 0.5, 1e-9);
  EXPECT_NEAR(out.margin().item<double>(), (beta * 2 + beta * -2) / 2, 1e-9);

  params.kind = PreferenceKind::kDpoHinge;
  EXPECT_NEAR(PreferenceLoss(params, p.chosen, p.rejected).loss.item<double>(),
              mean([&](int i) { return std::max(0.0, 1 - beta * h[i]); }), 1e-9);
  params.kind = PreferenceKind::kDpoRobust;
  EXPECT_NEAR(PreferenceLoss(params, p.chosen, p.rejected).loss.item<double>(), mean([&](int i) {
                return (-(1 - eps) * LogSigmoid(beta * h[i]) + eps * LogSigmoid(-beta * h[i])) /
                       (1 - 2 * eps);
              }), 1e-9);
  // IPO on length-averaged log-probs: pair 0: (-4/2 - -5/2) - (-7/4 - -6/4) = 0.5 + 0.25 = 0.75.
  params.kind = PreferenceKind::kDpoIpo;
  const double ipo_h[2] = {0.75, (-6.0 / 3 + 5.0 / 3) - (-3.0 / 1 + 4.0 / 1)};
  EXPECT_NEAR(PreferenceLoss(params, p.chosen, p.rejected).loss.item<double>(),
              mean([&](int i) { return std::pow(ipo_h[i] - 1 / (2 * beta), 2); }), 1e-9);
  EXPECT_EQ(*DpoKind("ipo"), PreferenceKind::kDpoIpo);
  EXPECT_FALSE(DpoKind("kto").ok());
}

// log(1 - e^x) against long-double closed forms, its gradient, and finite values
// where the naive log1p(-exp(x)) is not (x rounding to 0 in fp32).
TEST(LossesTest, Log1mExpIsStableAndExact) {
  for (double x : {-1e-12, -1e-6, -0.1, -0.6931, -0.6932, -0.7, -5.0, -50.0}) {
    torch::Tensor t = torch::tensor(x, torch::TensorOptions().dtype(torch::kDouble).requires_grad(true));
    torch::Tensor y = Log1mExp(t);
    y.backward();
    const double want = static_cast<double>(std::log(-std::expm1(static_cast<long double>(x))));
    EXPECT_NEAR(y.item<double>(), want, 1e-12 * std::max(1.0, std::abs(want))) << x;
    // d/dx log(1 - e^x) = -e^x / (1 - e^x) = -1 / expm1(-x).
    const double slope = static_cast<double>(-1 / std::expm1(-static_cast<long double>(x)));
    EXPECT_NEAR(t.grad().item<double>(), slope, 1e-9 * std::max(1.0, std::abs(slope))) << x;
  }
  // fp32: an average log-prob of -1e-9 (p = 1 - 1e-9) or exactly 0.
  for (float x : {-1e-9f, 0.0f}) {
    torch::Tensor t = torch::tensor(x, torch::TensorOptions().requires_grad(true));
    torch::Tensor naive = torch::log1p(-torch::exp(t.detach()));
    EXPECT_TRUE(std::isinf(naive.item<float>())) << x;
    torch::Tensor y = Log1mExp(t);
    y.backward();
    EXPECT_TRUE(std::isfinite(y.item<float>())) << x;
    EXPECT_TRUE(std::isfinite(t.grad().item<float>())) << x;
  }
}

// ORPO with a near-certain chosen completion: finite loss and gradients.
TEST(LossesTest, OrpoNearCertainChosenIsFinite) {
  // Summed log-probs over one token: averages -1e-9 and -3.
  torch::Tensor chosen = torch::tensor({-1e-9f}, torch::requires_grad());
  torch::Tensor rejected = torch::tensor({-3.0f}, torch::requires_grad());
  PreferenceParams params;
  params.kind = PreferenceKind::kOrpo;
  params.beta = 0.1;
  SideLogProbs c, r;
  c.policy = {chosen, torch::ones({1})};
  r.policy = {rejected, torch::ones({1})};
  auto out = PreferenceLoss(params, c, r, torch::zeros({}));
  out.loss.backward();
  EXPECT_TRUE(std::isfinite(out.loss.item<float>()));
  EXPECT_TRUE(std::isfinite(chosen.grad().item<float>()));
  EXPECT_TRUE(std::isfinite(rejected.grad().item<float>()));
}

TEST(LossesTest, OrpoAndSimpo) {
  Pairs p;
  const double beta = 0.2;
  const double c[2] = {-2, -2}, r[2] = {-7.0 / 4, -3};  // average log-probs
  PreferenceParams params;
  params.kind = PreferenceKind::kOrpo;
  params.beta = beta;
  torch::Tensor nll = torch::tensor(1.5, torch::kDouble);
  auto orpo = PreferenceLoss(params, p.chosen, p.rejected, nll);
  double ratio = 0;
  for (int i = 0; i < 2; ++i) {
    const double log_odds =
        (c[i] - r[i]) - (std::log1p(-std::exp(c[i])) - std::log1p(-std::exp(r[i])));
    ratio += LogSigmoid(log_odds) / 2;
  }
  EXPECT_NEAR(orpo.loss.item<double>(), 1.5 - beta * ratio, 1e-9);
  EXPECT_NEAR(orpo.chosen_rewards[0].item<double>(), beta * c[0], 1e-9);

  params.kind = PreferenceKind::kSimpo;
  params.beta = 2.0;
  params.gamma = 0.5;
  double simpo = 0;
  for (int i = 0; i < 2; ++i) simpo += -LogSigmoid(2.0 * (c[i] - r[i]) - 0.5) / 2;
  EXPECT_NEAR(PreferenceLoss(params, p.chosen, p.rejected).loss.item<double>(), simpo, 1e-9);
}

TEST(LossesTest, LearningRateSchedules) {
  EXPECT_DOUBLE_EQ(LearningRateFactor(0, 100, 10, "cosine"), 0.0);
  EXPECT_DOUBLE_EQ(LearningRateFactor(5, 100, 10, "cosine"), 0.5);
  EXPECT_DOUBLE_EQ(LearningRateFactor(10, 100, 10, "cosine"), 1.0);
  EXPECT_NEAR(LearningRateFactor(55, 100, 10, "cosine"), 0.5, 1e-12);  // halfway: cos(pi/2)
  EXPECT_NEAR(LearningRateFactor(100, 100, 10, "cosine"), 0.0, 1e-12);
  EXPECT_DOUBLE_EQ(LearningRateFactor(55, 100, 10, "linear"), 0.5);
  EXPECT_DOUBLE_EQ(LearningRateFactor(80, 100, 0, "constant"), 1.0);
}

TEST(LossesTest, AdamWMatchesTheUpdateByHand) {
  torch::Tensor p = torch::tensor({1.0}, torch::kDouble).requires_grad_(true);
  const double lr = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01;
  torch::optim::AdamW opt({p}, torch::optim::AdamWOptions(lr).betas({b1, b2}).eps(eps).weight_decay(wd));
  double x = 1.0, m = 0, v = 0;
  for (int step = 1; step <= 3; ++step) {
    const double g = 0.5 * step;  // the gradient we feed
    opt.zero_grad();
    (p * g).sum().backward();
    opt.step();
    x *= 1 - lr * wd;  // decoupled weight decay
    m = b1 * m + (1 - b1) * g;
    v = b2 * v + (1 - b2) * g * g;
    const double m_hat = m / (1 - std::pow(b1, step)), v_hat = v / (1 - std::pow(b2, step));
    x -= lr * m_hat / (std::sqrt(v_hat) + eps);
    EXPECT_NEAR(p.item<double>(), x, 1e-12) << "step " << step;
  }
}

}  // namespace
}  // namespace paft::trainer
