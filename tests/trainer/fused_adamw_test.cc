// FusedAdamW against AdamW's update written out by hand in double precision, against LibTorch's
// own AdamW, and with its state saved and loaded by LibTorch's AdamW.
#include "trainer/fused_adamw.h"

#include <gtest/gtest.h>

#include <cmath>

#include "tests/testing/temp_dir.h"

namespace paft::trainer {
namespace {

constexpr double kLr = 0.05, kB1 = 0.9, kB2 = 0.99, kEps = 1e-6, kWd = 0.1;

torch::optim::AdamWOptions Options() {
  return torch::optim::AdamWOptions(kLr).betas({kB1, kB2}).eps(kEps).weight_decay(kWd);
}

// Gradient of step `step` for element i: varied signs and sizes, some exactly zero.
float Gradient(int step, int64_t i) {
  return static_cast<float>(((i * 7 + step * 3) % 11 - 5) * 0.1 * std::pow(1.5, step % 3));
}

TEST(FusedAdamWTest, MatchesTheUpdateByHandAndLibTorchsAdamW) {
  const int64_t n = 100000;  // several parallel chunks
  torch::Tensor p = torch::linspace(-1, 1, n).requires_grad_(true);
  torch::Tensor q = p.detach().clone().requires_grad_(true);
  FusedAdamW fused({p}, Options());
  torch::optim::AdamW reference({q}, Options());
  std::vector<double> x(n), m(n, 0.0), v(n, 0.0);
  for (int64_t i = 0; i < n; ++i) x[i] = p[i].item<double>();
  double worst_hand = 0, worst_torch = 0;
  for (int step = 1; step <= 5; ++step) {
    torch::Tensor g = torch::empty({n});
    for (int64_t i = 0; i < n; ++i) g[i] = Gradient(step, i);
    p.mutable_grad() = g.clone();
    q.mutable_grad() = g.clone();
    fused.step();
    reference.step();
    auto got = p.detach();
    for (int64_t i = 0; i < n; i += 997) {
      const double gi = Gradient(step, i);
      x[i] *= 1 - kLr * kWd;
      m[i] = kB1 * m[i] + (1 - kB1) * gi;
      v[i] = kB2 * v[i] + (1 - kB2) * gi * gi;
      const double m_hat = m[i] / (1 - std::pow(kB1, step)),
                   v_hat = v[i] / (1 - std::pow(kB2, step));
      x[i] -= kLr * m_hat / (std::sqrt(v_hat) + kEps);
      worst_hand = std::max(worst_hand, std::fabs(got[i].item<double>() - x[i]));
    }
    worst_torch = std::max(worst_torch, (p - q).abs().max().item<double>());
  }
  EXPECT_LT(worst_hand, 2e-6);   // fp32 rounding of a fp64 computation
  EXPECT_LT(worst_torch, 2e-6);  // the same update as LibTorch's AdamW, up to fp32 rounding
}

TEST(FusedAdamWTest, StateIsLibTorchsAdamWState) {
  testing::TempDir dir;
  torch::Tensor p = torch::linspace(0, 1, 1000).requires_grad_(true);
  FusedAdamW fused({p}, Options());
  for (int step = 1; step <= 3; ++step) {
    p.mutable_grad() = torch::full({1000}, 0.1f * step);
    fused.step();
  }
  torch::serialize::OutputArchive out;
  fused.save(out);
  out.save_to(dir.Join("optimizer.pt"));
  // LibTorch's AdamW continues from the saved state exactly as the fused one does.
  torch::Tensor q = p.detach().clone().requires_grad_(true);
  torch::optim::AdamW reference({q}, Options());
  torch::serialize::InputArchive in;
  in.load_from(dir.Join("optimizer.pt"));
  reference.load(in);
  p.mutable_grad() = torch::full({1000}, 0.4f);
  q.mutable_grad() = torch::full({1000}, 0.4f);
  fused.step();
  reference.step();
  EXPECT_LT((p - q).abs().max().item<double>(), 1e-6);
  // Parameters it cannot fuse (fp64) take AdamW's own path.
  torch::Tensor d = torch::ones({3}, torch::kDouble).requires_grad_(true);
  FusedAdamW mixed({d}, Options());
  d.mutable_grad() = torch::ones({3}, torch::kDouble);
  mixed.step();
  EXPECT_NEAR(d[0].item<double>(), (1 - kLr * kWd) - kLr * 1.0 / (1.0 + kEps), 1e-9);
}

}  // namespace
}  // namespace paft::trainer
