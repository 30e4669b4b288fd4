#include "trainer/target_log_probs.h"

#include <algorithm>

#include "trainer/cpu_runtime.h"
#include "trainer/precision.h"

namespace paft::trainer {
namespace {

constexpr int64_t kCudaChunkLogitBytes = int64_t{256} << 20;

// The dtypes of the full path: the head's matmul (F::linear, autocast's lower precision under
// autocast) and the log-softmax over its result (fp32 at least).
struct HeadDtypes {
  torch::ScalarType matmul;
  torch::ScalarType softmax;
};

HeadDtypes DtypesOf(const torch::Tensor& weight) {
  const torch::ScalarType matmul = MatmulResultDtype(weight);
  return {matmul, at::promote_types(matmul, torch::kFloat)};
}

torch::Tensor ChunkLogits(const torch::Tensor& h, const torch::Tensor& w,
                          const HeadDtypes& dtypes) {
  return torch::matmul(h, w.t()).to(dtypes.softmax);
}

// d log p(target) / d logits per row: onehot(target) - softmax(logits).
torch::Tensor LogProbGradient(const torch::Tensor& logits, const torch::Tensor& lse,
                              const torch::Tensor& targets) {
  torch::Tensor d = (logits - lse.unsqueeze(1)).exp_().neg_();
  return d.scatter_add_(1, targets.unsqueeze(1), torch::ones({targets.size(0), 1}, d.options()));
}

// What the forward pass keeps for backward, each made while a chunk's logits exist (null: not
// wanted): each row's log-sum-exp; d log p / d logits (N × V: only when N fits one chunk);
// d log p / d hidden (N × H).
struct Kept {
  torch::Tensor* lse = nullptr;
  torch::Tensor* logit_grad = nullptr;
  torch::Tensor* unit = nullptr;
};

// The log-probs, chunk by chunk.
torch::Tensor ForwardChunks(const torch::Tensor& hidden, const torch::Tensor& weight,
                            const torch::Tensor& targets, int64_t chunk_rows,
                            const HeadDtypes& dtypes, Kept kept) {
  const int64_t n = hidden.size(0);
  const torch::Tensor h = hidden.to(dtypes.matmul), w = weight.to(dtypes.matmul);
  torch::Tensor out = torch::empty({n}, hidden.options().dtype(dtypes.softmax));
  if (kept.lse != nullptr) *kept.lse = torch::empty({n}, out.options());
  if (kept.logit_grad != nullptr) *kept.logit_grad = torch::empty({n, w.size(0)}, out.options());
  if (kept.unit != nullptr) *kept.unit = torch::empty_like(hidden);
  for (int64_t s = 0; s < n; s += chunk_rows) {
    const int64_t m = std::min(chunk_rows, n - s);
    const torch::Tensor t = targets.narrow(0, s, m);
    const torch::Tensor logits = ChunkLogits(h.narrow(0, s, m), w, dtypes);
    const torch::Tensor chunk_lse = torch::logsumexp(logits, 1);
    out.narrow(0, s, m).copy_(logits.gather(1, t.unsqueeze(1)).squeeze(1) - chunk_lse);
    if (kept.lse != nullptr) kept.lse->narrow(0, s, m).copy_(chunk_lse);
    if (kept.logit_grad == nullptr && kept.unit == nullptr) continue;
    const torch::Tensor logit_grad = LogProbGradient(logits, chunk_lse, t);
    if (kept.logit_grad != nullptr) kept.logit_grad->narrow(0, s, m).copy_(logit_grad);
    if (kept.unit != nullptr) {
      kept.unit->narrow(0, s, m).copy_(torch::matmul(logit_grad.to(dtypes.matmul), w));
    }
  }
  return out;
}

// Frozen head: forward keeps only each row's d log p / d hidden (N × H), and backward scales it
// by the incoming gradient. Trainable head: forward keeps each row's log-sum-exp, and backward
// recomputes the logits a chunk at a time for both gradients; when all the rows fit in one
// chunk, forward keeps that chunk's d log p / d logits instead (no larger than a chunk), and
// backward repeats no matmul.
struct TargetLogProbsFunction : public torch::autograd::Function<TargetLogProbsFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor hidden,
                               torch::Tensor weight, torch::Tensor targets, int64_t chunk_rows) {
    const HeadDtypes dtypes = DtypesOf(weight);
    const bool head_trains = weight.requires_grad();
    ctx->saved_data["head_trains"] = head_trains;
    ctx->saved_data["hidden_trains"] = hidden.requires_grad();
    ctx->saved_data["chunk_rows"] = chunk_rows;
    ctx->saved_data["matmul"] = static_cast<int64_t>(dtypes.matmul);
    const bool one_chunk = hidden.size(0) <= chunk_rows;
    ctx->saved_data["one_chunk"] = one_chunk;
    torch::Tensor lse, logit_grad, unit;
    Kept kept;
    if (!head_trains) {
      kept.unit = &unit;
    } else if (one_chunk) {
      kept.logit_grad = &logit_grad;
    } else {
      kept.lse = &lse;
    }
    torch::Tensor out = ForwardChunks(hidden, weight, targets, chunk_rows, dtypes, kept);
    if (!head_trains) {
      ctx->save_for_backward({unit});
    } else {
      ctx->save_for_backward({hidden, weight, targets, one_chunk ? logit_grad : lse});
    }
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    if (!ctx->saved_data["head_trains"].toBool()) {
      const torch::Tensor& unit = saved[0];
      return {(unit * grad_out[0].unsqueeze(1)).to(unit.scalar_type()), {}, {}, {}};
    }
    const torch::Tensor &hidden = saved[0], &weight = saved[1], &targets = saved[2];
    const bool one_chunk = ctx->saved_data["one_chunk"].toBool();
    const torch::Tensor& lse_or_logit_grad = saved[3];
    const HeadDtypes dtypes{static_cast<torch::ScalarType>(ctx->saved_data["matmul"].toInt()),
                            lse_or_logit_grad.scalar_type()};
    const int64_t n = hidden.size(0), chunk_rows = ctx->saved_data["chunk_rows"].toInt();
    const bool hidden_trains = ctx->saved_data["hidden_trains"].toBool();
    const torch::Tensor h = hidden.to(dtypes.matmul), w = weight.to(dtypes.matmul);
    const torch::Tensor g = grad_out[0].to(dtypes.softmax);
    torch::Tensor grad_hidden = hidden_trains ? torch::empty_like(hidden) : torch::Tensor();
    // Accumulated over chunks in the softmax dtype; each chunk's product is rounded once, to
    // the matmul's dtype, as the full path's one product is.
    torch::Tensor grad_weight =
        torch::zeros(weight.sizes(), weight.options().dtype(dtypes.softmax));
    for (int64_t s = 0; s < n; s += chunk_rows) {
      const int64_t m = std::min(chunk_rows, n - s);
      const torch::Tensor hc = h.narrow(0, s, m);
      const torch::Tensor logit_grad =
          one_chunk ? lse_or_logit_grad
                    : LogProbGradient(ChunkLogits(hc, w, dtypes), lse_or_logit_grad.narrow(0, s, m),
                                      targets.narrow(0, s, m));
      const torch::Tensor d = (logit_grad * g.narrow(0, s, m).unsqueeze(1)).to(dtypes.matmul);
      if (hidden_trains) grad_hidden.narrow(0, s, m).copy_(torch::matmul(d, w));
      if (dtypes.matmul == dtypes.softmax) {
        grad_weight.addmm_(d.t(), hc);
      } else {
        grad_weight.add_(torch::matmul(d.t(), hc));
      }
    }
    return {grad_hidden, grad_weight.to(weight.scalar_type()), {}, {}};
  }
};

}  // namespace

int64_t TargetLogProbChunkRows(int64_t vocab, const torch::Device& device) {
  // CPU: 1 MiB under the limit leaves room for the allocator's headers and a row's rounding.
  const int64_t budget = device.is_cuda() ? kCudaChunkLogitBytes : kCpuHeapBlockBytes - (1 << 20);
  return std::max<int64_t>(1, budget / (std::max<int64_t>(1, vocab) * 4));
}

torch::Tensor TargetLogProbs(const torch::Tensor& hidden, const torch::Tensor& weight,
                             const torch::Tensor& targets, int64_t chunk_rows) {
  TORCH_CHECK(hidden.dim() == 2 && weight.dim() == 2 && hidden.size(1) == weight.size(1),
              "TargetLogProbs: hidden (N, H) and weight (V, H)");
  TORCH_CHECK(targets.dim() == 1 && targets.size(0) == hidden.size(0),
              "TargetLogProbs: one target per row");
  const int64_t rows =
      chunk_rows > 0 ? chunk_rows : TargetLogProbChunkRows(weight.size(0), weight.device());
  if (torch::GradMode::is_enabled() && (hidden.requires_grad() || weight.requires_grad())) {
    return TargetLogProbsFunction::apply(hidden, weight, targets, rows);
  }
  torch::NoGradGuard no_grad;
  return ForwardChunks(hidden, weight, targets, rows, DtypesOf(weight), Kept{});
}

}  // namespace paft::trainer
