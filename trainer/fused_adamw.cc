#include "trainer/fused_adamw.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <sstream>
#include <type_traits>
#include <vector>

namespace paft::trainer {
namespace {

using torch::optim::AdamWOptions;
using torch::optim::AdamWParamState;

// The key torch::optim::Optimizer files a parameter's state under: the TensorImpl's address,
// printed (LibTorch 1.x) or as is (later versions).
template <typename Key>
Key StateKey(const torch::Tensor& p) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream out;
    out << p.unsafeGetTensorImpl();
    return out.str();
  } else {
    return static_cast<Key>(p.unsafeGetTensorImpl());
  }
}

bool Fusable(const torch::Tensor& p) {
  const torch::Tensor& g = p.grad();
  return p.device().is_cpu() && p.scalar_type() == torch::kFloat && p.is_contiguous() &&
         g.device().is_cpu() && g.scalar_type() == torch::kFloat && g.is_contiguous() &&
         !g.is_sparse();
}

}  // namespace

torch::Tensor FusedAdamW::step(LossClosure closure) {
  torch::NoGradGuard no_grad;
  torch::Tensor loss;
  if (closure) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  using Key = typename std::decay_t<decltype(state())>::key_type;
  std::vector<torch::Tensor> fused;  // stepped here
  bool all_fused = true;
  for (auto& group : param_groups()) {
    const auto& options = static_cast<const AdamWOptions&>(group.options());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      if (options.amsgrad() || !Fusable(p)) {
        all_fused = false;
        continue;
      }
      auto& slot = state()[StateKey<Key>(p)];
      if (!slot) {
        auto fresh = std::make_unique<AdamWParamState>();
        fresh->step(0);
        fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Contiguous));
        fresh->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Contiguous));
        slot = std::move(fresh);
      }
      fused.push_back(p);
      auto& s = static_cast<AdamWParamState&>(*slot);
      s.step(s.step() + 1);
      const auto [beta1, beta2] = options.betas();
      const double bias_correction1 = 1 - std::pow(beta1, s.step());
      const double bias_correction2_sqrt = std::sqrt(1 - std::pow(beta2, s.step()));
      const float decay = static_cast<float>(1 - options.lr() * options.weight_decay());
      const float step_size = static_cast<float>(options.lr() / bias_correction1);
      const float b1 = static_cast<float>(beta1), b2 = static_cast<float>(beta2);
      const float one_minus_b1 = static_cast<float>(1 - beta1),
                  one_minus_b2 = static_cast<float>(1 - beta2);
      const float inv_bc2_sqrt = static_cast<float>(1.0 / bias_correction2_sqrt);
      const float eps = static_cast<float>(options.eps());
      float* param = p.data_ptr<float>();
      const float* grad = p.grad().data_ptr<float>();
      float* m = s.exp_avg().data_ptr<float>();
      float* v = s.exp_avg_sq().data_ptr<float>();
      at::parallel_for(0, p.numel(), 1 << 14, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const float g = grad[i];
          const float mi = m[i] * b1 + one_minus_b1 * g;
          const float vi = v[i] * b2 + one_minus_b2 * g * g;
          m[i] = mi;
          v[i] = vi;
          const float denom = std::sqrt(vi) * inv_bc2_sqrt + eps;
          param[i] = param[i] * decay - step_size * mi / denom;
        }
      });
    }
  }
  if (!all_fused) {
    // The rest through AdamW itself; fused parameters must not be stepped twice, so their
    // gradients are hidden for that call.
    std::vector<torch::Tensor> hidden;
    for (auto& p : fused) {
      hidden.push_back(p.grad());
      p.mutable_grad() = torch::Tensor();
    }
    torch::optim::AdamW::step();
    for (size_t i = 0; i < fused.size(); ++i) fused[i].mutable_grad() = hidden[i];
  }
  return loss;
}

}  // namespace paft::trainer
