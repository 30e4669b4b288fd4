// paft-make-toy-model: writes a tiny randomly initialised Llama-architecture model folder in the
// Hugging Face layout (config.json + model.safetensors with HF parameter names), for tests and
// the walking-skeleton demo. The real demo model is pre-trained by the "main job" issue.
#include <cmath>
#include <filesystem>
#include <iostream>
#include <random>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "common/dtype.h"
#include "common/file_util.h"
#include "common/safetensors.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, out, "", "Output model folder (must not exist)");
ABSL_FLAG(int, vocab_size, 256, "Vocabulary size");
ABSL_FLAG(int, hidden_size, 64, "Hidden size");
ABSL_FLAG(int, intermediate_size, 128, "MLP size");
ABSL_FLAG(int, layers, 2, "Decoder layers");
ABSL_FLAG(int, heads, 4, "Attention heads");
ABSL_FLAG(int, kv_heads, 2, "Key/value heads");
ABSL_FLAG(bool, tie_embeddings, true, "Tie lm_head to the embeddings");
ABSL_FLAG(std::string, dtype, "bfloat16", "float32 or bfloat16");
ABSL_FLAG(uint32_t, seed, 1234, "Initialisation seed");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) {
    std::cerr << "--out is required\n";
    return 2;
  }
  if (paft::PathExists(out)) {
    std::cerr << out << " already exists\n";
    return 2;
  }
  const int64_t V = absl::GetFlag(FLAGS_vocab_size), H = absl::GetFlag(FLAGS_hidden_size),
                I = absl::GetFlag(FLAGS_intermediate_size), L = absl::GetFlag(FLAGS_layers),
                nh = absl::GetFlag(FLAGS_heads), nkv = absl::GetFlag(FLAGS_kv_heads);
  if (V <= 0 || H <= 0 || I <= 0 || L <= 0 || nh <= 0 || nkv <= 0 || H % nh || nh % nkv) {
    std::cerr << "invalid dimensions\n";
    return 2;
  }
  const int64_t hd = H / nh;
  const bool tie = absl::GetFlag(FLAGS_tie_embeddings);
  const std::string dtype_name = absl::GetFlag(FLAGS_dtype);
  if (dtype_name != "float32" && dtype_name != "bfloat16") {
    std::cerr << "--dtype must be float32 or bfloat16\n";
    return 2;
  }
  const paft::DType dtype = dtype_name == "float32" ? paft::DType::kF32 : paft::DType::kBF16;

  nlohmann::json config = {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"vocab_size", V},
      {"hidden_size", H},
      {"intermediate_size", I},
      {"num_hidden_layers", L},
      {"num_attention_heads", nh},
      {"num_key_value_heads", nkv},
      {"max_position_embeddings", 512},
      {"rms_norm_eps", 1e-5},
      {"rope_theta", 10000.0},
      {"hidden_act", "silu"},
      {"tie_word_embeddings", tie},
      {"attention_bias", false},
      {"torch_dtype", dtype_name},
      {"bos_token_id", 1},
      {"eos_token_id", 2},
  };

  std::mt19937 rng(absl::GetFlag(FLAGS_seed));
  std::vector<paft::TensorData> tensors;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float stddev, bool ones) {
    paft::TensorData t;
    t.spec = {name, dtype, shape};
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    t.bytes.resize(static_cast<size_t>(n) * paft::DTypeSize(dtype));
    std::normal_distribution<float> normal(0.0f, stddev);
    for (int64_t i = 0; i < n; ++i) {
      paft::StoreFromFloat(dtype, t.bytes.data(), i, ones ? 1.0f : normal(rng));
    }
    tensors.push_back(std::move(t));
  };
  const float s = 0.02f;
  add("model.embed_tokens.weight", {V, H}, s, false);
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    add(p + "input_layernorm.weight", {H}, 0, true);
    add(p + "self_attn.q_proj.weight", {nh * hd, H}, s, false);
    add(p + "self_attn.k_proj.weight", {nkv * hd, H}, s, false);
    add(p + "self_attn.v_proj.weight", {nkv * hd, H}, s, false);
    add(p + "self_attn.o_proj.weight", {H, nh * hd}, s, false);
    add(p + "post_attention_layernorm.weight", {H}, 0, true);
    add(p + "mlp.gate_proj.weight", {I, H}, s, false);
    add(p + "mlp.up_proj.weight", {I, H}, s, false);
    add(p + "mlp.down_proj.weight", {H, I}, s, false);
  }
  add("model.norm.weight", {H}, 0, true);
  if (!tie) add("lm_head.weight", {V, H}, s, false);

  const auto parent = std::filesystem::path(out).parent_path().string();
  if (!parent.empty()) {
    if (absl::Status s = paft::MakeDirs(parent); !s.ok()) {
      std::cerr << "error: " << s << "\n";
      return 1;
    }
  }
  auto tmp = paft::MakeTempDirBeside(out);
  absl::Status status = tmp.status();
  if (status.ok()) status = paft::WriteFileAtomic(paft::JoinPath(*tmp, "config.json"), config.dump(2));
  if (status.ok()) {
    status = paft::WriteSafetensors(paft::JoinPath(*tmp, "model.safetensors"), tensors,
                                    {{"format", "pt"}});
  }
  if (status.ok()) status = paft::RenameDurably(*tmp, out);
  if (!status.ok()) {
    if (tmp.ok()) (void)paft::RemoveAll(*tmp);
    std::cerr << "error: " << status << "\n";
    return 1;
  }
  std::cout << "wrote " << out << "\n";
  return 0;
}
