#include "trainer/llama.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "trainer/precision.h"

namespace paft::trainer {
namespace F = torch::nn::functional;

namespace {

// Additive mask value: large and finite, so fully masked rows give a uniform softmax, not NaN.
constexpr float kMaskValue = -1e9f;

// Additive (T, S) mask of queries at `query_pos` (T, 1) over keys at `key_pos` (1, S): a key is
// visible when it is not in the future and, with a sliding window, fewer than `window` positions
// back (transformers' Mistral mask).
torch::Tensor CausalMask(const torch::Tensor& query_pos, const torch::Tensor& key_pos,
                         int64_t window) {
  torch::Tensor visible = key_pos <= query_pos;
  if (window > 0) visible = visible & (query_pos - key_pos < window);
  return torch::zeros(visible.sizes(), torch::TensorOptions().dtype(torch::kFloat).device(visible.device()))
      .masked_fill(visible.logical_not(), kMaskValue);
}

// Whether every row of a (B, T) attention mask is its tokens followed by its pads (one
// device-to-host read).
bool RightPadded(const torch::Tensor& attention_mask) {
  const int64_t t = attention_mask.size(1);
  if (t < 2) return true;
  return (attention_mask.narrow(1, 1, t - 1) <= attention_mask.narrow(1, 0, t - 1)).all().item<bool>();
}

}  // namespace

absl::StatusOr<AttentionKernel> ParseAttentionKernel(const std::string& name) {
  if (name.empty() || name == "sdpa") return AttentionKernel::kSdpa;
  if (name == "eager") return AttentionKernel::kEager;
  return absl::InvalidArgumentError(
      absl::StrCat("attn_implementation '", name, "' is not one of sdpa, eager"));
}

double LoraOptions::scaling() const {
  return use_rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / static_cast<double>(r);
}

// ---------------------------------------------------------------------------------------------
// Linear with LoRA

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, bool with_bias,
                       torch::ScalarType dtype) {
  weight = register_parameter("weight", torch::empty({out_features, in_features}, dtype));
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (with_bias) {
    bias = register_parameter("bias", torch::zeros({out_features}, dtype));
  }
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  if (!has_lora() || !lora_enabled_) return F::linear(x, weight, bias);
  const torch::Tensor input = AutocastInput(x);  // cast once for both branches
  torch::Tensor y = F::linear(input, weight, bias);
  torch::Tensor h = input;
  if (dropout > 0 && is_training()) h = F::dropout(h, F::DropoutFuncOptions().p(dropout).training(true));
  // y + scaling * (h A^T) B^T with the scale and the sum inside one GEMM (alpha, beta = 1); never
  // the dense delta B A.
  const torch::Tensor down = F::linear(h, lora_A).reshape({-1, lora_A.size(0)});
  return torch::addmm(y.reshape({-1, y.size(-1)}), down, lora_B.t(), /*beta=*/1, /*alpha=*/scaling)
      .view(y.sizes());
}

void LinearImpl::AddLora(const LoraOptions& options) {
  const int64_t out = weight.size(0), in = weight.size(1);
  // Trainable: fp32 at least, whatever the frozen weight's dtype (fp64 stays fp64 for tests).
  auto options_fp32 = weight.options().dtype(at::promote_types(weight.scalar_type(), torch::kFloat));
  lora_A = register_parameter("lora_A", torch::empty({options.r, in}, options_fp32));
  torch::nn::init::kaiming_uniform_(lora_A, std::sqrt(5.0));
  lora_B = register_parameter("lora_B", torch::zeros({out, options.r}, options_fp32));
  scaling = options.scaling();
  dropout = options.dropout;
  weight.set_requires_grad(false);
  if (bias.defined()) bias.set_requires_grad(false);
}

torch::Tensor LinearImpl::MergedWeight() const {
  torch::NoGradGuard no_grad;
  if (!has_lora()) return weight.detach().clone();
  return (weight.to(torch::kFloat) +
          torch::matmul(lora_B.to(torch::kFloat), lora_A.to(torch::kFloat)) * scaling)
      .to(weight.scalar_type());
}

// ---------------------------------------------------------------------------------------------
// Blocks

RMSNormImpl::RMSNormImpl(int64_t size, double eps_value, torch::ScalarType dtype) : eps(eps_value) {
  weight = register_parameter("weight", torch::ones({size}, dtype));
}

// Low-precision inputs compute in fp32; fp32 and fp64 keep their own precision.
static torch::ScalarType AtLeastFloat(torch::ScalarType t) {
  return at::promote_types(t, torch::kFloat);
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  torch::Tensor xf = x.to(AtLeastFloat(x.scalar_type()));
  torch::Tensor variance = xf.pow(2).mean(-1, /*keepdim=*/true);
  xf = xf * torch::rsqrt(variance + eps);
  return weight * xf.to(x.scalar_type());
}

torch::Tensor RotaryInverseFrequencies(const ModelConfig& config, int64_t sequence_length) {
  const std::vector<double> inv_freq =
      RopeInverseFrequencies(config.rope_scaling, config.rope_theta, config.head_dim,
                             config.max_position_embeddings, sequence_length);
  return torch::tensor(inv_freq, torch::kDouble).to(torch::kFloat);
}

std::pair<torch::Tensor, torch::Tensor> RotaryTables(const torch::Tensor& position_ids,
                                                     const torch::Tensor& inv_freq,
                                                     double attention_factor) {
  // (B, T, hd/2) angles in fp32, as transformers computes them.
  torch::Tensor freqs = position_ids.to(torch::kFloat).unsqueeze(-1) * inv_freq;
  torch::Tensor emb = torch::cat({freqs, freqs}, -1);
  if (attention_factor == 1.0) return {emb.cos(), emb.sin()};
  return {emb.cos() * attention_factor, emb.sin() * attention_factor};
}

torch::Tensor ApplyRotary(const torch::Tensor& x, const torch::Tensor& cos,
                          const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  torch::Tensor x1 = x.narrow(-1, 0, half);
  torch::Tensor x2 = x.narrow(-1, half, half);
  torch::Tensor rotated = torch::cat({-x2, x1}, -1);
  torch::Tensor c = cos.unsqueeze(1).to(x.scalar_type());
  torch::Tensor s = sin.unsqueeze(1).to(x.scalar_type());
  return x * c + rotated * s;
}

AttentionImpl::AttentionImpl(const ModelConfig& config, torch::ScalarType dtype)
    : heads_(config.num_attention_heads),
      kv_heads_(config.num_key_value_heads),
      head_dim_(config.head_dim) {
  const int64_t h = config.hidden_size;
  q_proj = register_module("q_proj", Linear(h, heads_ * head_dim_, config.attention_bias, dtype));
  k_proj = register_module("k_proj", Linear(h, kv_heads_ * head_dim_, config.attention_bias, dtype));
  v_proj = register_module("v_proj", Linear(h, kv_heads_ * head_dim_, config.attention_bias, dtype));
  o_proj = register_module("o_proj", Linear(heads_ * head_dim_, h, config.output_bias, dtype));
}

// softmax(q k^T / sqrt(d) + mask) v for (B, heads, T, d) queries and (B, kv_heads, S, d) keys
// and values, by `kernel`. Without a mask: causal when T = S, else every key visible (one new
// query behind a cache).
static torch::Tensor Attend(const torch::Tensor& q, torch::Tensor k, torch::Tensor v,
                            const torch::Tensor& mask, AttentionKernel kernel) {
  const int64_t groups = q.size(1) / k.size(1);
  if (kernel == AttentionKernel::kSdpa) {
    // SDPA needs the additive mask in the queries' dtype: RunLayers converts it once for all
    // layers (kMaskValue is finite in bf16).
    std::optional<torch::Tensor> attn_mask;
    if (mask.defined()) attn_mask = mask.scalar_type() == q.scalar_type() ? mask : mask.to(q.scalar_type());
    return at::scaled_dot_product_attention(q, k, v, attn_mask, /*dropout_p=*/0.0,
                                            /*is_causal=*/!mask.defined() && q.size(2) == k.size(2),
                                            /*scale=*/std::nullopt, /*enable_gqa=*/groups > 1);
  }
  if (groups > 1) {
    k = k.repeat_interleave(groups, 1);
    v = v.repeat_interleave(groups, 1);
  }
  torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(double(q.size(-1)));
  torch::Tensor probs =
      torch::softmax(scores.to(AtLeastFloat(q.scalar_type())) + mask, -1).to(q.scalar_type());
  return torch::matmul(probs, v);
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                     const torch::Tensor& sin, const AttentionLayout& layout,
                                     LayerCache* cache) {
  const int64_t b = x.size(0), t = x.size(1);
  const torch::Tensor input = AutocastInput(x);
  torch::Tensor q = q_proj(input).view({b, t, heads_, head_dim_}).transpose(1, 2);
  torch::Tensor k = k_proj(input).view({b, t, kv_heads_, head_dim_}).transpose(1, 2);
  torch::Tensor v = v_proj(input).view({b, t, kv_heads_, head_dim_}).transpose(1, 2);
  q = ApplyRotary(q, cos, sin);
  k = ApplyRotary(k, cos, sin);
  if (cache != nullptr) {
    if (cache->k.defined()) {
      k = torch::cat({cache->k, k}, 2);
      v = torch::cat({cache->v, v}, 2);
    }
    cache->k = k;
    cache->v = v;
  }
  torch::Tensor attended;  // (B, heads, T, d)
  if (!layout.packed()) {
    attended = Attend(q, k, v, layout.mask, layout.kernel);
  } else {
    // One call per sequence: the public SDPA has no variable-length form (docs/trainer.md).
    std::vector<torch::Tensor> spans;
    int64_t start = 0;
    for (int64_t len : layout.lengths) {
      const torch::Tensor causal = layout.causal.defined()
                                       ? layout.causal.narrow(2, 0, len).narrow(3, 0, len)
                                       : torch::Tensor();
      spans.push_back(Attend(q.narrow(2, start, len), k.narrow(2, start, len),
                             v.narrow(2, start, len), causal, layout.kernel));
      start += len;
    }
    attended = torch::cat(spans, 2);
  }
  torch::Tensor out = attended.transpose(1, 2).contiguous().view({b, t, heads_ * head_dim_});
  return o_proj(out);
}

MlpImpl::MlpImpl(const ModelConfig& config, torch::ScalarType dtype) {
  const int64_t h = config.hidden_size, i = config.intermediate_size;
  gate_proj = register_module("gate_proj", Linear(h, i, config.mlp_bias, dtype));
  up_proj = register_module("up_proj", Linear(h, i, config.mlp_bias, dtype));
  down_proj = register_module("down_proj", Linear(i, h, config.mlp_bias, dtype));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  const torch::Tensor input = AutocastInput(x);
  return down_proj(F::silu(gate_proj(input)) * up_proj(input));
}

DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& config, torch::ScalarType dtype) {
  self_attn = register_module("self_attn", Attention(config, dtype));
  mlp = register_module("mlp", Mlp(config, dtype));
  input_layernorm =
      register_module("input_layernorm", RMSNorm(config.hidden_size, config.rms_norm_eps, dtype));
  post_attention_layernorm = register_module(
      "post_attention_layernorm", RMSNorm(config.hidden_size, config.rms_norm_eps, dtype));
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                        const torch::Tensor& sin, const AttentionLayout& layout,
                                        LayerCache* cache) {
  torch::Tensor h = x + self_attn(input_layernorm(x), cos, sin, layout, cache);
  return h + mlp(post_attention_layernorm(h));
}

LlamaBackboneImpl::LlamaBackboneImpl(const ModelConfig& config, torch::ScalarType dtype) {
  embed_tokens = register_module(
      "embed_tokens", torch::nn::Embedding(config.vocab_size, config.hidden_size));
  torch::nn::init::normal_(embed_tokens->weight, 0.0, 0.02);
  // Converted before the layers exist: the fp32 table is the only transient copy.
  if (dtype != torch::kFloat) embed_tokens->weight.set_data(embed_tokens->weight.to(dtype));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) layers->push_back(DecoderLayer(config, dtype));
  norm = register_module("norm", RMSNorm(config.hidden_size, config.rms_norm_eps, dtype));
}

// ---------------------------------------------------------------------------------------------
// Activation checkpointing: the layer runs without building a graph; backward recomputes it with
// grad enabled and differentiates the recomputation. Parameter gradients are accumulated into
// .grad directly (an autograd Function only returns gradients of its tensor inputs).

namespace {

struct CheckpointedLayer : public torch::autograd::Function<CheckpointedLayer> {
  // `anchor` is a scalar that requires grad: with LoRA (frozen embeddings) nothing else that
  // enters the layer does, and the output must still be part of the graph.
  // The layout's tensors and lengths are saved: the layout itself is gone by backward.
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x,
                               torch::Tensor cos, torch::Tensor sin, torch::Tensor mask,
                               torch::Tensor causal, torch::Tensor anchor, DecoderLayerImpl* layer,
                               std::vector<int64_t> lengths, AttentionKernel kernel) {
    ctx->save_for_backward({x, cos, sin, mask, causal});
    ctx->saved_data["layer"] = reinterpret_cast<int64_t>(layer);
    ctx->saved_data["lengths"] = lengths;
    ctx->saved_data["kernel"] = static_cast<int64_t>(kernel);
    // The recomputation in backward runs in the precision of this forward (backward is outside
    // the autocast scope).
    ctx->saved_data["autocast"] = AutocastActive(x.device());
    torch::NoGradGuard no_grad;
    return layer->forward(x, cos, sin, Layout(mask, lengths, causal, kernel), nullptr);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    auto* layer = reinterpret_cast<DecoderLayerImpl*>(ctx->saved_data["layer"].toInt());
    torch::Tensor x = saved[0].detach().requires_grad_(true);  // its grad is dropped if unused
    std::vector<torch::Tensor> params;
    for (auto& p : layer->parameters()) {
      if (p.requires_grad()) params.push_back(p);
    }
    torch::Tensor out;
    {
      AutocastScope autocast(ctx->saved_data["autocast"].toBool() ? Precision::kBf16 : Precision::kFp32,
                             x.device());
      torch::AutoGradMode enable(true);
      out = layer->forward(x, saved[1], saved[2],
                           Layout(saved[3], ctx->saved_data["lengths"].toIntVector(), saved[4],
                                  static_cast<AttentionKernel>(ctx->saved_data["kernel"].toInt())),
                           nullptr);
    }
    std::vector<torch::Tensor> inputs = {x};
    inputs.insert(inputs.end(), params.begin(), params.end());
    auto grads = torch::autograd::grad({out}, inputs, {grad_out[0]}, /*retain_graph=*/false,
                                       /*create_graph=*/false, /*allow_unused=*/true);
    for (size_t i = 0; i < params.size(); ++i) {
      if (!grads[i + 1].defined()) continue;
      if (params[i].grad().defined()) {
        params[i].mutable_grad().add_(grads[i + 1]);
      } else {
        params[i].mutable_grad() = grads[i + 1].clone();
      }
    }
    // One (undefined) gradient for each forward argument after x.
    torch::autograd::variable_list result(9);
    if (saved[0].requires_grad()) result[0] = grads[0];
    return result;
  }

  // The layout from its saved parts (an empty tensor stands for an undefined one).
  static AttentionLayout Layout(const torch::Tensor& mask, std::vector<int64_t> lengths,
                                const torch::Tensor& causal, AttentionKernel kernel) {
    return {mask.numel() > 0 ? mask : torch::Tensor(), std::move(lengths),
            causal.numel() > 0 ? causal : torch::Tensor(), kernel};
  }
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Causal LM

LlamaForCausalLMImpl::LlamaForCausalLMImpl(const ModelConfig& config, torch::ScalarType dtype)
    : config_(config), inv_freq_(RotaryInverseFrequencies(config, 0)) {
  model = register_module("model", LlamaBackbone(config, dtype));
  if (!config.tie_word_embeddings) {
    lm_head = register_module("lm_head", Linear(config.hidden_size, config.vocab_size, false, dtype));
  }
}

torch::Tensor LlamaForCausalLMImpl::forward(const torch::Tensor& input_ids,
                                            const torch::Tensor& attention_mask, KVCache* cache) {
  return F::linear(HiddenStates(input_ids, attention_mask, cache), HeadWeight());
}

torch::Tensor LlamaForCausalLMImpl::ForwardPacked(const torch::Tensor& input_ids,
                                                  const std::vector<int64_t>& lengths) {
  return F::linear(HiddenStatesPacked(input_ids, lengths), HeadWeight());
}

const torch::Tensor& LlamaForCausalLMImpl::HeadWeight() const {
  if (lm_head.is_empty()) return model->embed_tokens->weight;
  TORCH_CHECK(!lm_head->has_lora(), "the LM head carries no adapter");
  return lm_head->weight;
}

torch::Tensor LlamaForCausalLMImpl::HiddenStates(const torch::Tensor& input_ids,
                                                 const torch::Tensor& attention_mask,
                                                 KVCache* cache) {
  const int64_t b = input_ids.size(0), t = input_ids.size(1);
  const int64_t past = cache != nullptr ? cache->length() : 0;
  const int64_t s = past + t;
  auto long_options = torch::TensorOptions().dtype(torch::kLong).device(input_ids.device());
  torch::Tensor position_ids;
  if (attention_mask.defined() && past == 0) {
    // Left or right padding: positions count real tokens only (as transformers).
    position_ids = (attention_mask.to(torch::kLong).cumsum(-1) - 1).clamp_min(0);
  } else {
    position_ids = torch::arange(past, s, long_options).unsqueeze(0).expand({b, t});
  }
  // Additive mask (B, 1, T, S): causal, plus padded keys; only where it changes the numbers
  // (AttentionLayout).
  const bool behind_cache = past > 0 && t > 1;
  // Evaluated last: RightPadded reads the mask back from the device.
  const auto padding_seen = [&] {
    return attention_mask.defined() && (past > 0 || !RightPadded(attention_mask));
  };
  torch::Tensor mask;
  if (NeedsCausalMask(s) || behind_cache || padding_seen()) {
    auto float_options = torch::TensorOptions().dtype(torch::kFloat).device(input_ids.device());
    torch::Tensor query_pos = torch::arange(past, s, long_options).unsqueeze(1);  // (T, 1)
    torch::Tensor key_pos = torch::arange(0, s, long_options).unsqueeze(0);       // (1, S)
    mask = CausalMask(query_pos, key_pos, config_.sliding_window).view({1, 1, t, s});
    if (attention_mask.defined()) {
      torch::Tensor keys = attention_mask.to(torch::kFloat);
      if (keys.size(1) != s) keys = torch::cat({torch::ones({b, s - keys.size(1)}, float_options), keys}, 1);
      mask = mask + ((1.0 - keys) * kMaskValue).view({b, 1, 1, s});
    }
  }
  if (cache != nullptr && cache->layers.empty()) {
    cache->layers.resize(static_cast<size_t>(config_.num_hidden_layers));
  }
  return RunLayers(input_ids, position_ids, AttentionLayout{mask, {}, {}, attention_kernel_}, cache);
}

torch::Tensor LlamaForCausalLMImpl::HiddenStatesPacked(const torch::Tensor& input_ids,
                                                       const std::vector<int64_t>& lengths) {
  TORCH_CHECK(input_ids.size(0) == 1, "packed sequences are one row");
  int64_t total = 0, longest = 0;
  for (int64_t len : lengths) {
    total += len;
    longest = std::max(longest, len);
  }
  TORCH_CHECK(total == input_ids.size(1), "packed lengths must add up to the row's length");
  auto long_options = torch::TensorOptions().dtype(torch::kLong).device(input_ids.device());
  std::vector<torch::Tensor> positions;
  for (int64_t len : lengths) positions.push_back(torch::arange(0, len, long_options));
  const torch::Tensor position_ids = torch::cat(positions).unsqueeze(0);
  torch::Tensor causal;  // as in HiddenStates(): only where plain causal attention differs
  if (NeedsCausalMask(longest)) {
    const torch::Tensor span = torch::arange(0, longest, long_options);
    causal = CausalMask(span.unsqueeze(1), span.unsqueeze(0), config_.sliding_window)
                 .view({1, 1, longest, longest});
  }
  return RunLayers(input_ids, position_ids, AttentionLayout{{}, lengths, causal, attention_kernel_},
                   nullptr);
}

bool LlamaForCausalLMImpl::NeedsCausalMask(int64_t keys) const {
  return attention_kernel_ == AttentionKernel::kEager ||
         (config_.sliding_window > 0 && keys > config_.sliding_window);
}

torch::Tensor LlamaForCausalLMImpl::RunLayers(const torch::Tensor& input_ids,
                                              const torch::Tensor& position_ids,
                                              AttentionLayout layout, KVCache* cache) {
  if (layout.kernel == AttentionKernel::kSdpa && !model->layers->is_empty()) {
    // The masks in the dtype the queries will have, converted once rather than in every layer
    // (where each copy would also be kept for backward).
    const auto* first = model->layers[0]->as<DecoderLayerImpl>();
    const torch::ScalarType dtype = MatmulResultDtype(first->self_attn->q_proj->weight);
    if (layout.mask.defined()) layout.mask = layout.mask.to(dtype);
    if (layout.causal.defined()) layout.causal = layout.causal.to(dtype);
  }
  torch::Tensor inv_freq = inv_freq_;
  if (config_.rope_scaling.depends_on_length()) {
    inv_freq = RotaryInverseFrequencies(config_, position_ids.max().item<int64_t>() + 1);
  }
  auto [cos, sin] = RotaryTables(position_ids, inv_freq.to(position_ids.device()),
                                 config_.rope_scaling.attention_factor);
  torch::Tensor h = model->embed_tokens(input_ids);
  // Under autocast the residual stream is fp32 whatever the embeddings' dtype (exact: a bf16 or
  // fp16 value is an fp32 value); autocast lowers each matmul's inputs itself.
  if (h.scalar_type() != torch::kFloat && AutocastActive(h.device())) h = h.to(torch::kFloat);
  const bool checkpoint = activation_checkpointing_ && is_training() && cache == nullptr &&
                          torch::GradMode::is_enabled();
  torch::Tensor anchor = checkpoint ? torch::zeros({}, torch::requires_grad()) : torch::Tensor();
  for (size_t i = 0; i < model->layers->size(); ++i) {
    auto* layer = model->layers[i]->as<DecoderLayerImpl>();
    if (checkpoint) {
      // An autograd function's tensor arguments must be defined: an empty one stands for none.
      auto or_empty = [&](const torch::Tensor& t) { return t.defined() ? t : torch::empty({0}); };
      h = CheckpointedLayer::apply(h, cos, sin, or_empty(layout.mask), or_empty(layout.causal),
                                   anchor, layer, layout.lengths, layout.kernel);
    } else {
      h = layer->forward(h, cos, sin, layout, cache != nullptr ? &cache->layers[i] : nullptr);
    }
  }
  return model->norm(h);
}

std::vector<int64_t> LlamaForCausalLMImpl::Generate(const std::vector<int64_t>& prompt,
                                                    const GenerationOptions& options) {
  torch::NoGradGuard no_grad;
  const bool was_training = is_training();
  eval();
  auto device = model->embed_tokens->weight.device();
  auto generator = at::detail::createCPUGenerator(options.seed);
  KVCache cache;
  std::vector<int64_t> out;
  torch::Tensor input = torch::tensor(prompt, torch::kLong).unsqueeze(0).to(device);
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    torch::Tensor logits = forward(input, {}, &cache).select(1, -1).squeeze(0).to(torch::kFloat);
    if (options.repetition_penalty != 1.0) {
      std::vector<int64_t> seen(prompt);
      seen.insert(seen.end(), out.begin(), out.end());
      const torch::Tensor index = torch::tensor(seen, torch::kLong).to(logits.device());
      const torch::Tensor score = logits.gather(0, index);
      logits = logits.scatter(0, index,
                              torch::where(score < 0, score * options.repetition_penalty,
                                           score / options.repetition_penalty));
    }
    int64_t next;
    if (options.temperature <= 0) {
      next = logits.argmax().item<int64_t>();
    } else {
      torch::Tensor probs = torch::softmax(logits / options.temperature, -1);
      if (options.top_p < 1.0) {
        auto [sorted, index] = probs.sort(-1, /*descending=*/true);
        torch::Tensor cumulative = sorted.cumsum(-1);
        // Drop tokens once the mass before them reaches top_p (the first token always stays).
        torch::Tensor drop = (cumulative - sorted) >= options.top_p;
        sorted = sorted.masked_fill(drop, 0.0);
        probs = torch::zeros_like(probs).scatter(-1, index, sorted);
        probs = probs / probs.sum();
      }
      next = torch::multinomial(probs.cpu(), 1, false, generator).item<int64_t>();
    }
    out.push_back(next);
    if (std::find(options.eos_token_ids.begin(), options.eos_token_ids.end(), next) !=
        options.eos_token_ids.end()) {
      break;
    }
    input = torch::tensor({next}, torch::kLong).unsqueeze(0).to(device);
  }
  if (was_training) train();
  return out;
}

std::vector<std::pair<std::string, Linear>> LlamaForCausalLMImpl::Linears() const {
  std::vector<std::pair<std::string, Linear>> out;
  for (const auto& item : named_modules("", /*include_self=*/false)) {
    if (auto linear = std::dynamic_pointer_cast<LinearImpl>(item.value())) {
      out.emplace_back(item.key(), Linear(linear));
    }
  }
  return out;
}

void LlamaForCausalLMImpl::AddLora(const LoraOptions& options) {
  for (auto& p : parameters()) p.set_requires_grad(false);
  for (auto& [name, linear] : Linears()) {
    const std::string leaf = name.substr(name.find_last_of('.') + 1);
    if (options.target_modules.count(leaf)) linear->AddLora(options);
  }
  lora_ = options;
}

void LlamaForCausalLMImpl::CastFrozenLinears(torch::ScalarType dtype) {
  torch::NoGradGuard no_grad;
  for (auto& [name, linear] : Linears()) {
    if (!linear->weight.requires_grad()) linear->weight.set_data(linear->weight.to(dtype));
    if (linear->bias.defined() && !linear->bias.requires_grad()) {
      linear->bias.set_data(linear->bias.to(dtype));
    }
  }
}

void LlamaForCausalLMImpl::SetLoraEnabled(bool enabled) {
  for (auto& [name, linear] : Linears()) linear->set_lora_enabled(enabled);
}

std::vector<std::pair<std::string, torch::Tensor>> LlamaForCausalLMImpl::HfStateDict() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : named_parameters(/*recurse=*/true)) {
    if (absl::StrContains(item.key(), "lora_")) continue;
    out.emplace_back(item.key(), item.value());
  }
  return out;
}

std::vector<std::pair<std::string, torch::Tensor>> LlamaForCausalLMImpl::PeftStateDict() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& [name, linear] : Linears()) {
    if (!linear->has_lora()) continue;
    out.emplace_back(absl::StrCat("base_model.model.", name, ".lora_A.weight"), linear->lora_A);
    out.emplace_back(absl::StrCat("base_model.model.", name, ".lora_B.weight"), linear->lora_B);
  }
  return out;
}

std::vector<std::pair<std::string, Linear>> LlamaForCausalLMImpl::LoraLinears() const {
  std::vector<std::pair<std::string, Linear>> out;
  for (auto& [name, linear] : Linears()) {
    if (linear->has_lora()) out.emplace_back(name, linear);
  }
  return out;
}

std::vector<std::pair<std::string, torch::Tensor>> LlamaForCausalLMImpl::TrainableParameters()
    const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : named_parameters(/*recurse=*/true)) {
    if (item.value().requires_grad()) out.emplace_back(item.key(), item.value());
  }
  return out;
}

}  // namespace paft::trainer
