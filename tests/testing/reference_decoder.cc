#include "tests/testing/reference_decoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "absl/strings/str_cat.h"
#include "common/dtype.h"
#include "common/file_util.h"
#include "common/safetensors.h"

namespace paft::testing {
namespace {

using json = nlohmann::json;
constexpr double kPi = 3.14159265358979323846;

int64_t IntKey(const json& c, const char* key, int64_t fallback) {
  return c.contains(key) && !c[key].is_null() ? c[key].get<int64_t>() : fallback;
}
double NumberKey(const json& c, const char* key, double fallback) {
  return c.contains(key) && !c[key].is_null() ? c[key].get<double>() : fallback;
}

const RefTensor& Weight(const RefWeights& w, const std::string& name) {
  auto it = w.find(name);
  if (it == w.end()) throw std::runtime_error("reference: missing tensor " + name);
  return it->second;
}

// y[t] = W x[t] + b for W (out, in).
RefMatrix Project(const RefMatrix& x, const RefTensor& w, const RefTensor* b) {
  const int64_t out = w.shape[0], in = w.shape[1];
  RefMatrix y(x.size(), std::vector<double>(out));
  for (size_t t = 0; t < x.size(); ++t) {
    for (int64_t o = 0; o < out; ++o) {
      double sum = b != nullptr ? b->data[o] : 0.0;
      const double* row = &w.data[o * in];
      for (int64_t i = 0; i < in; ++i) sum += row[i] * x[t][i];
      y[t][o] = sum;
    }
  }
  return y;
}

RefMatrix Norm(const RefMatrix& x, const RefTensor& w, double eps) {
  RefMatrix y = x;
  for (auto& row : y) {
    double mean_square = 0;
    for (double v : row) mean_square += v * v;
    mean_square /= static_cast<double>(row.size());
    const double scale = 1.0 / std::sqrt(mean_square + eps);
    for (size_t i = 0; i < row.size(); ++i) row[i] = w.data[i] * (row[i] * scale);
  }
  return y;
}

// Rotates each head's pairs (i, i + hd/2) of row t by the angle t * inv_freq[i], and scales by
// the attention factor (transformers multiplies cos and sin by it).
void Rotate(RefMatrix& x, int64_t heads, int64_t hd, const RefRope& rope) {
  for (size_t t = 0; t < x.size(); ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < hd / 2; ++i) {
        const double angle = static_cast<double>(t) * rope.inv_freq[i];
        const double c = std::cos(angle) * rope.attention_factor;
        const double s = std::sin(angle) * rope.attention_factor;
        double& first = x[t][h * hd + i];
        double& second = x[t][h * hd + hd / 2 + i];
        const double a = first, b = second;
        first = a * c - b * s;
        second = b * c + a * s;
      }
    }
  }
}

const RefTensor* Optional(const RefWeights& w, const std::string& name, bool present) {
  return present ? &Weight(w, name) : nullptr;
}

}  // namespace

absl::StatusOr<RefWeights> ReadReferenceWeights(const std::string& folder) {
  auto file = SafetensorsFile::Open(JoinPath(folder, "model.safetensors"));
  if (!file.ok()) return file.status();
  RefWeights out;
  for (const TensorInfo& info : (*file)->tensors()) {
    RefTensor t;
    t.shape = info.shape;
    const uint8_t* data = (*file)->Data(info).data();
    t.data.resize(info.numel());
    for (int64_t i = 0; i < info.numel(); ++i) {
      if (info.dtype == DType::kF64) {
        std::memcpy(&t.data[i], data + 8 * i, 8);
      } else {
        t.data[i] = LoadAsFloat(info.dtype, data, i);
      }
    }
    out[info.name] = std::move(t);
  }
  return out;
}

RefRope ReferenceRope(const json& c, int64_t sequence_length) {
  const int64_t hidden = c["hidden_size"].get<int64_t>();
  const int64_t heads = c["num_attention_heads"].get<int64_t>();
  const int64_t hd = IntKey(c, "head_dim", hidden / heads);
  const double theta = NumberKey(c, "rope_theta", 10000.0);
  const double max_pos = static_cast<double>(IntKey(c, "max_position_embeddings", 2048));
  auto unscaled = [&](double base) {
    std::vector<double> f;
    for (int64_t i = 0; i < hd; i += 2) f.push_back(std::pow(base, -static_cast<double>(i) / hd));
    return f;
  };
  RefRope rope;
  const json scaling = c.contains("rope_scaling") ? c["rope_scaling"] : json();
  std::string type = "default";
  if (scaling.is_object()) {
    type = scaling.contains("rope_type") ? scaling["rope_type"].get<std::string>()
                                         : scaling["type"].get<std::string>();
  }
  if (type == "default") {
    rope.inv_freq = unscaled(theta);
  } else if (type == "linear") {
    rope.inv_freq = unscaled(theta);
    for (double& f : rope.inv_freq) f = f / scaling["factor"].get<double>();
  } else if (type == "dynamic") {
    const double factor = scaling["factor"].get<double>();
    const double length = std::max(static_cast<double>(sequence_length), max_pos);
    const double stretch = std::pow(factor * length / max_pos - (factor - 1), hd / (hd - 2.0));
    rope.inv_freq = unscaled(theta * stretch);
  } else if (type == "llama3") {
    const double factor = scaling["factor"].get<double>();
    const double low = scaling["low_freq_factor"].get<double>();
    const double high = scaling["high_freq_factor"].get<double>();
    const double context = scaling["original_max_position_embeddings"].get<double>();
    for (double f : unscaled(theta)) {
      const double wavelength = 2 * kPi / f;
      if (wavelength < context / high) {
        rope.inv_freq.push_back(f);  // high frequency: kept
      } else if (wavelength > context / low) {
        rope.inv_freq.push_back(f / factor);  // low frequency: interpolated
      } else {
        const double blend = (context / wavelength - low) / (high - low);
        rope.inv_freq.push_back(blend * f + (1 - blend) * f / factor);
      }
    }
  } else if (type == "yarn") {
    const double factor = scaling["factor"].get<double>();
    rope.attention_factor = NumberKey(scaling, "attention_factor", 1.0 + 0.1 * std::log(factor));
    double fast = NumberKey(scaling, "beta_fast", 32), slow = NumberKey(scaling, "beta_slow", 1);
    if (fast == 0) fast = 32;
    if (slow == 0) slow = 1;
    // The pair index at which a wavelength makes `rotations` turns over the context.
    auto pair_at = [&](double rotations) {
      return hd * std::log(max_pos / (rotations * 2 * kPi)) / (2 * std::log(theta));
    };
    const double first = std::max(0.0, std::floor(pair_at(fast)));
    double last = std::min(static_cast<double>(hd - 1), std::ceil(pair_at(slow)));
    if (last == first) last += 0.001;
    const std::vector<double> base = unscaled(theta);
    for (size_t i = 0; i < base.size(); ++i) {
      const double interpolated = std::min(1.0, std::max(0.0, (i - first) / (last - first)));
      rope.inv_freq.push_back(interpolated * base[i] / factor + (1 - interpolated) * base[i]);
    }
  } else {
    throw std::runtime_error("reference: rope type " + type);
  }
  return rope;
}

RefMatrix ReferenceLogits(const json& c, const RefWeights& w, const std::vector<int64_t>& ids) {
  const std::string type = c["model_type"].get<std::string>();
  const int64_t hidden = c["hidden_size"].get<int64_t>();
  const int64_t heads = c["num_attention_heads"].get<int64_t>();
  const int64_t kv_heads = IntKey(c, "num_key_value_heads", heads);
  const int64_t hd = IntKey(c, "head_dim", hidden / heads);
  const int64_t layers = c["num_hidden_layers"].get<int64_t>();
  const double eps = NumberKey(c, "rms_norm_eps", 1e-6);
  const bool qkv_bias = type == "qwen2" || (type == "llama" && c.value("attention_bias", false));
  const bool o_bias = type == "llama" && c.value("attention_bias", false);
  const bool mlp_bias = type == "llama" && c.value("mlp_bias", false);
  const int64_t window = type == "mistral" ? IntKey(c, "sliding_window", 0) : 0;
  const bool tied = c.value("tie_word_embeddings", false);
  const int64_t T = static_cast<int64_t>(ids.size());
  const RefRope rope = ReferenceRope(c, T);

  const RefTensor& embed = Weight(w, "model.embed_tokens.weight");
  RefMatrix h;
  for (int64_t id : ids) {
    h.emplace_back(embed.data.begin() + id * hidden, embed.data.begin() + (id + 1) * hidden);
  }
  for (int64_t l = 0; l < layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    RefMatrix x = Norm(h, Weight(w, p + "input_layernorm.weight"), eps);
    auto proj = [&](const std::string& name, bool bias) {
      return Project(x, Weight(w, p + "self_attn." + name + ".weight"),
                     Optional(w, p + "self_attn." + name + ".bias", bias));
    };
    RefMatrix q = proj("q_proj", qkv_bias), k = proj("k_proj", qkv_bias), v = proj("v_proj", qkv_bias);
    Rotate(q, heads, hd, rope);
    Rotate(k, kv_heads, hd, rope);
    RefMatrix attended(T, std::vector<double>(heads * hd, 0.0));
    for (int64_t head = 0; head < heads; ++head) {
      const int64_t kv = head / (heads / kv_heads);
      for (int64_t t = 0; t < T; ++t) {
        const int64_t from = window > 0 ? std::max<int64_t>(0, t - window + 1) : 0;
        std::vector<double> score;
        for (int64_t u = from; u <= t; ++u) {
          double dot = 0;
          for (int64_t i = 0; i < hd; ++i) dot += q[t][head * hd + i] * k[u][kv * hd + i];
          score.push_back(dot / std::sqrt(static_cast<double>(hd)));
        }
        const double top = *std::max_element(score.begin(), score.end());
        double total = 0;
        for (double& s : score) total += (s = std::exp(s - top));
        for (int64_t u = from; u <= t; ++u) {
          for (int64_t i = 0; i < hd; ++i) {
            attended[t][head * hd + i] += score[u - from] / total * v[u][kv * hd + i];
          }
        }
      }
    }
    RefMatrix o = Project(attended, Weight(w, p + "self_attn.o_proj.weight"),
                          Optional(w, p + "self_attn.o_proj.bias", o_bias));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < hidden; ++i) h[t][i] += o[t][i];
    x = Norm(h, Weight(w, p + "post_attention_layernorm.weight"), eps);
    auto mlp = [&](const RefMatrix& in, const std::string& name) {
      return Project(in, Weight(w, p + "mlp." + name + ".weight"),
                     Optional(w, p + "mlp." + name + ".bias", mlp_bias));
    };
    RefMatrix gate = mlp(x, "gate_proj"), up = mlp(x, "up_proj");
    for (size_t t = 0; t < gate.size(); ++t) {
      for (size_t i = 0; i < gate[t].size(); ++i) {
        const double g = gate[t][i];
        gate[t][i] = g / (1.0 + std::exp(-g)) * up[t][i];  // silu(gate) * up
      }
    }
    RefMatrix down = mlp(gate, "down_proj");
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < hidden; ++i) h[t][i] += down[t][i];
  }
  h = Norm(h, Weight(w, "model.norm.weight"), eps);
  return Project(h, Weight(w, tied ? "model.embed_tokens.weight" : "lm_head.weight"), nullptr);
}

double ReferenceCompletionLogProb(const json& c, const RefWeights& w,
                                  const std::vector<int64_t>& ids, int64_t prompt_length) {
  const RefMatrix logits = ReferenceLogits(c, w, ids);
  double total = 0;
  for (size_t t = std::max<int64_t>(prompt_length, 1); t < ids.size(); ++t) {
    const std::vector<double>& row = logits[t - 1];
    const double top = *std::max_element(row.begin(), row.end());
    double z = 0;
    for (double v : row) z += std::exp(v - top);
    total += row[ids[t]] - top - std::log(z);
  }
  return total;
}

}  // namespace paft::testing
