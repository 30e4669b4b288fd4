// A Llama-family decoder (Llama, Mistral, Qwen2) in LibTorch, single-device, with Hugging Face
// parameter names, LoRA adapters in PEFT's layout, and KV-cached generation.
//
// Numerics follow transformers: RMSNorm in fp32 (then cast back and scaled by the weight), RoPE
// with the rotate-half convention, SwiGLU MLP; attention by SDPA (or the eager path: softmax in
// fp32, grouped-query attention by repeating key/value heads).
#ifndef PAFT_TRAINER_LLAMA_H_
#define PAFT_TRAINER_LLAMA_H_

#include <torch/torch.h>

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "common/hf_config.h"

namespace paft::trainer {

struct LoraOptions {
  int64_t r = 8;
  double alpha = 16;
  double dropout = 0.0;
  bool use_rslora = false;
  // Module names as PEFT's target_modules: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj,
  // down_proj.
  std::set<std::string> target_modules = {"q_proj", "k_proj", "v_proj", "o_proj"};
  double scaling() const;
};

// y = x W^T + b, plus an optional LoRA branch: + scaling * dropout(x) A^T B^T.
// With LoRA the base weight and bias are frozen; A starts Kaiming-uniform, B at zero (as PEFT).
class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias,
             torch::ScalarType dtype = torch::kFloat);
  torch::Tensor forward(const torch::Tensor& x);

  void AddLora(const LoraOptions& options);
  bool has_lora() const { return lora_A.defined(); }
  void set_lora_enabled(bool enabled) { lora_enabled_ = enabled; }
  // W + scaling * B A (the merged weight), detached.
  torch::Tensor MergedWeight() const;

  torch::Tensor weight;  // (out, in)
  torch::Tensor bias;    // (out) or undefined
  torch::Tensor lora_A;  // (r, in) or undefined
  torch::Tensor lora_B;  // (out, r) or undefined
  double scaling = 0.0;
  double dropout = 0.0;

 private:
  bool lora_enabled_ = true;
};
TORCH_MODULE(Linear);

// RMSNorm computed in fp32: weight * (x / sqrt(mean(x^2) + eps)) cast back to x's dtype.
class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t size, double eps, torch::ScalarType dtype = torch::kFloat);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;
  double eps;
};
TORCH_MODULE(RMSNorm);

// Cached keys and values of one layer: (B, kv_heads, S, head_dim).
struct LayerCache {
  torch::Tensor k, v;
};
struct KVCache {
  std::vector<LayerCache> layers;
  int64_t length() const { return layers.empty() || !layers[0].k.defined() ? 0 : layers[0].k.size(2); }
};

// The config's RoPE inverse frequencies (rope_theta and rope_scaling) as an fp32 (head_dim / 2)
// tensor; `sequence_length` is the forward's largest position + 1 (read by dynamic NTK only).
torch::Tensor RotaryInverseFrequencies(const ModelConfig& config, int64_t sequence_length);
// Rotary embedding tables for given positions: cos, sin of shape (B, T, head_dim), fp32, both
// multiplied by `attention_factor` (YaRN's; 1 otherwise), as transformers' rotary embedding.
std::pair<torch::Tensor, torch::Tensor> RotaryTables(const torch::Tensor& position_ids,
                                                     const torch::Tensor& inv_freq,
                                                     double attention_factor = 1.0);
// x * cos + rotate_half(x) * sin, x: (B, heads, T, head_dim); rotate_half(x) = [-x2, x1].
torch::Tensor ApplyRotary(const torch::Tensor& x, const torch::Tensor& cos,
                          const torch::Tensor& sin);

// How attention is computed, as transformers' `attn_implementation`: "sdpa" (default) calls
// at::scaled_dot_product_attention (flash attention on CPU; flash, memory-efficient or cuDNN on
// CUDA), which never holds the (T x S) scores for backward and reads grouped key/value heads
// without copying them per query head; "eager" is the explicit softmax(q k^T / sqrt(d) + mask) v,
// kept as the reference the fused path is tested against.
enum class AttentionKernel { kSdpa, kEager };
// "sdpa" or "eager"; anything else is InvalidArgument naming the value.
absl::StatusOr<AttentionKernel> ParseAttentionKernel(const std::string& name);

// How the tokens of one forward pass attend to each other: padded rows, or packed sequences
// (TRL's padding-free batches): one row holding sequences of `lengths` one after the other, each
// attending causally within itself and computed span by span, so neither pad tokens nor other
// sequences cost any attention work.
// `mask` is only built where plain causal attention would not give the same numbers: always for
// the eager kernel; for sdpa, left padding, a sliding window shorter than the keys, or several new
// queries behind a KV cache. Undefined: causal when queries and keys have the same length, else
// (one new query behind a cache) every key visible. Right padding needs no mask: a real token
// sees no later position, so its pads are never visible to it.
struct AttentionLayout {
  torch::Tensor mask;            // padded: (B, 1, T, S) additive, fp32; or undefined (see above)
  std::vector<int64_t> lengths;  // packed: sequence lengths (sum T, B = 1)
  torch::Tensor causal;          // packed: (1, 1, L, L) additive causal mask, L = max length; or undefined
  AttentionKernel kernel = AttentionKernel::kSdpa;
  bool packed() const { return !lengths.empty(); }
};

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const ModelConfig& config, torch::ScalarType dtype);
  // x: (B, T, H); returns (B, T, H). A cache needs a padded layout.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const AttentionLayout& layout, LayerCache* cache);
  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  int64_t heads_, kv_heads_, head_dim_;
};
TORCH_MODULE(Attention);

class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(const ModelConfig& config, torch::ScalarType dtype);
  torch::Tensor forward(const torch::Tensor& x);  // down(silu(gate(x)) * up(x))
  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(Mlp);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const ModelConfig& config, torch::ScalarType dtype);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const AttentionLayout& layout, LayerCache* cache);
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  Attention self_attn{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(DecoderLayer);

// The decoder stack ("model." in HF names).
class LlamaBackboneImpl : public torch::nn::Module {
 public:
  LlamaBackboneImpl(const ModelConfig& config, torch::ScalarType dtype);
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers;
  RMSNorm norm{nullptr};
};
TORCH_MODULE(LlamaBackbone);

struct GenerationOptions {
  int64_t max_new_tokens = 32;
  double temperature = 0.0;  // 0: greedy
  double top_p = 1.0;
  std::vector<int64_t> eos_token_ids;  // stop when any is generated (empty: never)
  // transformers' repetition penalty: the logit of every token already in the sequence (prompt
  // included) is divided by it when positive, multiplied when negative. 1: none.
  double repetition_penalty = 1.0;
  uint64_t seed = 0;
};

class LlamaForCausalLMImpl : public torch::nn::Module {
 public:
  // Parameters are created in `dtype` (randomly initialised as HF/PEFT do).
  explicit LlamaForCausalLMImpl(const ModelConfig& config, torch::ScalarType dtype = torch::kFloat);

  // input_ids: (B, T) int64. attention_mask: (B, T) 1 for tokens, 0 for padding (optional).
  // With a cache, input_ids continue the cached sequence. Returns logits (B, T, V) in the model's
  // dtype.
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask = {},
                        KVCache* cache = nullptr);
  // Packed sequences: input_ids (1, T) holds sequences of `lengths` one after the other; each
  // one's positions start at 0 and it attends only to itself. Its logits equal those of the
  // same sequence in a padded batch.
  torch::Tensor ForwardPacked(const torch::Tensor& input_ids, const std::vector<int64_t>& lengths);
  // The final (normed) hidden states those two compute before the head: (B, T, hidden_size).
  // The losses apply the head to them chunk by chunk (trainer/target_log_probs.h).
  torch::Tensor HiddenStates(const torch::Tensor& input_ids,
                             const torch::Tensor& attention_mask = {}, KVCache* cache = nullptr);
  torch::Tensor HiddenStatesPacked(const torch::Tensor& input_ids,
                                   const std::vector<int64_t>& lengths);
  // The LM head's weight (V, hidden_size): lm_head's, or the embeddings' when tied. The head
  // has no bias and no adapter (LoRA never targets it).
  const torch::Tensor& HeadWeight() const;

  // Greedy or nucleus sampling from one prompt with a KV cache; returns the new tokens.
  std::vector<int64_t> Generate(const std::vector<int64_t>& prompt, const GenerationOptions& options);

  // Adds LoRA to every targeted linear layer and freezes everything else.
  void AddLora(const LoraOptions& options);
  void SetLoraEnabled(bool enabled);
  // Holds every frozen linear weight and bias in `dtype` (bf16 for bf16 autocast: the dtype
  // autocast would cast them to at every use, so the numbers are the same).
  void CastFrozenLinears(torch::ScalarType dtype);
  // Activation checkpointing per decoder layer (training only; no effect with a KV cache).
  void set_activation_checkpointing(bool enabled) { activation_checkpointing_ = enabled; }
  void set_attention_kernel(AttentionKernel kernel) { attention_kernel_ = kernel; }
  AttentionKernel attention_kernel() const { return attention_kernel_; }
  bool has_lora() const { return lora_.has_value(); }
  const std::optional<LoraOptions>& lora() const { return lora_; }

  // Parameters under Hugging Face names (lm_head.weight absent when tied); LoRA matrices
  // excluded.
  std::vector<std::pair<std::string, torch::Tensor>> HfStateDict() const;
  // LoRA matrices under PEFT names (base_model.model.<module>.lora_{A,B}.weight).
  std::vector<std::pair<std::string, torch::Tensor>> PeftStateDict() const;
  // The linear layers that carry LoRA, by module path (model.layers.N.self_attn.q_proj, ...).
  std::vector<std::pair<std::string, Linear>> LoraLinears() const;
  // Every trainable parameter, by its module path.
  std::vector<std::pair<std::string, torch::Tensor>> TrainableParameters() const;

  const ModelConfig& config() const { return config_; }
  LlamaBackbone model{nullptr};
  Linear lm_head{nullptr};  // null when embeddings are tied

 private:
  std::vector<std::pair<std::string, Linear>> Linears() const;
  // Whether causal attention over `keys` keys needs an explicit mask whatever the padding: always
  // for the eager kernel, and where a sliding window is shorter than the keys.
  bool NeedsCausalMask(int64_t keys) const;
  // Embeddings, decoder layers and final norm.
  torch::Tensor RunLayers(const torch::Tensor& input_ids, const torch::Tensor& position_ids,
                          AttentionLayout layout, KVCache* cache);

  ModelConfig config_;
  torch::Tensor inv_freq_;  // RoPE inverse frequencies at lengths within max_position_embeddings
  std::optional<LoraOptions> lora_;
  bool activation_checkpointing_ = false;
  AttentionKernel attention_kernel_ = AttentionKernel::kSdpa;
};
TORCH_MODULE(LlamaForCausalLM);

}  // namespace paft::trainer

#endif  // PAFT_TRAINER_LLAMA_H_
