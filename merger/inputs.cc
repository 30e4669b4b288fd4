#include "merger/inputs.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace paft::merger {
namespace {

bool IsFloat(DType d) {
  return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16 || d == DType::kF64;
}

class FullModel : public InputModel {
 public:
  FullModel(std::string path, std::unique_ptr<SafetensorsModel> model)
      : path_(std::move(path)), model_(std::move(model)) {}

  absl::Status Validate(const SafetensorsModel& base) const override {
    if (model_->names() != base.names()) {
      std::vector<std::string> missing, extra;
      for (const auto& n : base.names()) {
        if (!model_->Find(n).ok()) missing.push_back(n);
      }
      for (const auto& n : model_->names()) {
        if (!base.Find(n).ok()) extra.push_back(n);
      }
      return absl::InvalidArgumentError(absl::StrCat(
          "input ", path_, " does not have the base's tensors; missing: [",
          absl::StrJoin(missing, ", "), "], unexpected: [", absl::StrJoin(extra, ", "), "]"));
    }
    for (const std::string& name : base.names()) {
      const TensorInfo& b = *base.Find(name)->second;
      const TensorInfo& x = *model_->Find(name)->second;
      if (x.shape != b.shape) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor '", name, "': shape [", absl::StrJoin(x.shape, ","), "] in ",
                         path_, " differs from the base's [", absl::StrJoin(b.shape, ","), "]"));
      }
      if (IsFloat(b.dtype) != IsFloat(x.dtype) || (!IsFloat(b.dtype) && b.dtype != x.dtype)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor '", name, "': dtype ", DTypeName(x.dtype), " in ", path_,
            " cannot be merged with the base's ", DTypeName(b.dtype)));
      }
    }
    return absl::OkStatus();
  }

  int64_t TensorBytes(const std::string& name) const override {
    auto found = model_->Find(name);
    return found.ok() ? static_cast<int64_t>(found->second->nbytes()) : 0;
  }

  void Release(const std::string& name) const override {
    auto found = model_->Find(name);
    if (found.ok()) found->first->Release(*found->second);
  }

  absl::Status Delta(const std::string& name, const TensorInfo&, int64_t begin, int64_t count,
                     const float* base, float* delta) const override {
    PAFT_ASSIGN_OR_RETURN(auto found, model_->Find(name));
    ReadRangeAsFloat(*found.first, *found.second, begin, count, delta);
    for (int64_t j = 0; j < count; ++j) delta[j] -= base[j];
    return absl::OkStatus();
  }

 private:
  std::string path_;
  std::unique_ptr<SafetensorsModel> model_;
};

// A PEFT LoRA adapter: for each adapted module, delta(W) = scale * B @ A with A [r, in] and
// B [out, r]; every other tensor has a zero delta.
class Adapter : public InputModel {
 public:
  explicit Adapter(AdapterFile file) : a_(std::move(file)) {}

  absl::Status Validate(const SafetensorsModel& base) const override {
    for (const auto& [name, module] : a_.modules) {
      auto found = base.Find(name);
      if (!found.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "adapter ", a_.path, ": '", module.a_key, "' adapts '", name,
            "', which the base model does not have"));
      }
      const TensorInfo& w = *found->second;
      const auto& a = module.a->shape;
      const auto& b = module.b->shape;
      if (w.shape.size() != 2 || a[1] != w.shape[1] || b[0] != w.shape[0]) {
        return absl::InvalidArgumentError(absl::StrCat(
            "adapter ", a_.path, ": tensor '", name, "' [", absl::StrJoin(w.shape, ","),
            "] cannot take lora_A [", absl::StrJoin(a, ","), "] and lora_B [",
            absl::StrJoin(b, ","), "]"));
      }
    }
    return absl::OkStatus();
  }

  int64_t TensorBytes(const std::string& name) const override {
    auto it = a_.modules.find(name);
    if (it == a_.modules.end()) return 0;
    return static_cast<int64_t>(it->second.a->nbytes() + it->second.b->nbytes());
  }

  absl::Status Delta(const std::string& name, const TensorInfo&, int64_t begin, int64_t count,
                     const float*, float* delta) const override {
    std::fill(delta, delta + count, 0.0f);
    auto it = a_.modules.find(name);
    if (it == a_.modules.end()) return absl::OkStatus();
    const int64_t r = it->second.a->shape[0], in = it->second.a->shape[1];
    // Rows [first_row, last_row] of W cover the range; B's rows for them and all of A.
    const int64_t first_row = begin / in, last_row = (begin + count - 1) / in;
    std::vector<float> a(static_cast<size_t>(r * in));
    std::vector<float> b(static_cast<size_t>((last_row - first_row + 1) * r));
    ReadRangeAsFloat(*a_.file, *it->second.a, 0, r * in, a.data());
    ReadRangeAsFloat(*a_.file, *it->second.b, first_row * r, static_cast<int64_t>(b.size()),
                     b.data());
    const float scale = static_cast<float>(a_.config.scale());
    for (int64_t o = first_row; o <= last_row; ++o) {
      const int64_t i_begin = std::max<int64_t>(0, begin - o * in);
      const int64_t i_end = std::min<int64_t>(in, begin + count - o * in);
      float* row = delta + (o * in - begin);
      for (int64_t k = 0; k < r; ++k) {
        const float coefficient = scale * b[(o - first_row) * r + k];
        const float* a_row = a.data() + k * in;
        for (int64_t i = i_begin; i < i_end; ++i) row[i] += coefficient * a_row[i];
      }
    }
    return absl::OkStatus();
  }

 private:
  AdapterFile a_;
};

}  // namespace

double LoraConfig::scale() const {
  return use_rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / static_cast<double>(r);
}

absl::StatusOr<LoraConfig> ParseAdapterConfig(const std::string& json_text) {
  auto j = nlohmann::json::parse(json_text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("not a JSON object");
  }
  LoraConfig c;
  if (!j.contains("r") || !j["r"].is_number_integer() || j["r"].get<int64_t>() <= 0) {
    return absl::InvalidArgumentError("'r' must be a positive integer");
  }
  c.r = j["r"].get<int64_t>();
  if (!j.contains("lora_alpha") || !j["lora_alpha"].is_number()) {
    return absl::InvalidArgumentError("'lora_alpha' must be a number");
  }
  c.alpha = j["lora_alpha"].get<double>();
  if (j.contains("use_rslora") && j["use_rslora"].is_boolean()) c.use_rslora = j["use_rslora"];
  if (j.contains("fan_in_fan_out") && j["fan_in_fan_out"].is_boolean() &&
      j["fan_in_fan_out"].get<bool>()) {
    return absl::UnimplementedError("'fan_in_fan_out': true is not supported");
  }
  for (const char* key : {"rank_pattern", "alpha_pattern"}) {
    if (j.contains(key) && j[key].is_object() && !j[key].empty()) {
      return absl::UnimplementedError(absl::StrCat("'", key, "' is not supported"));
    }
  }
  if (j.contains("peft_type") && j["peft_type"].is_string() && j["peft_type"] != "LORA") {
    return absl::UnimplementedError(
        absl::StrCat("peft_type '", j["peft_type"].get<std::string>(), "' is not supported"));
  }
  return c;
}

namespace {
// Word types that may alias float storage, so the conversion loops below vectorise without
// breaking strict aliasing.
typedef uint32_t __attribute__((may_alias)) AliasU32;
typedef uint16_t __attribute__((may_alias, aligned(1))) AliasU16;
}  // namespace

void ReadRangeAsFloat(const SafetensorsFile& file, const TensorInfo& info, int64_t begin,
                      int64_t count, float* out) {
  const size_t item = DTypeSize(info.dtype);
  const uint8_t* data = file.Data(info).data() + begin * item;
  switch (info.dtype) {
    case DType::kF32:
      std::memcpy(out, data, static_cast<size_t>(count) * 4);
      break;
    case DType::kBF16: {
      const AliasU16* src = reinterpret_cast<const AliasU16*>(data);
      AliasU32* dst = reinterpret_cast<AliasU32*>(out);
      for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<uint32_t>(src[i]) << 16;
      break;
    }
    default:
      for (int64_t i = 0; i < count; ++i) out[i] = LoadAsFloat(info.dtype, data, i);
  }
}

void StoreFloats(DType dtype, const float* in, int64_t count, uint8_t* out) {
  switch (dtype) {
    case DType::kF32:
      std::memcpy(out, in, static_cast<size_t>(count) * 4);
      break;
    case DType::kBF16: {
      // Round to nearest even, NaN kept quiet: FloatToBf16 without branches.
      const AliasU32* src = reinterpret_cast<const AliasU32*>(in);
      AliasU16* dst = reinterpret_cast<AliasU16*>(out);
      for (int64_t i = 0; i < count; ++i) {
        const uint32_t bits = src[i];
        const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
        const uint32_t nan = (bits >> 16) | 0x40u;
        dst[i] = static_cast<uint16_t>((bits & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
      }
      break;
    }
    default:
      for (int64_t i = 0; i < count; ++i) StoreFromFloat(dtype, out, i, in[i]);
  }
}

absl::StatusOr<AdapterFile> OpenAdapterFile(const std::string& path) {
  AdapterFile adapter;
  adapter.path = path;
  PAFT_ASSIGN_OR_RETURN(std::string text,
                        ReadFileToString(JoinPath(path, "adapter_config.json")));
  auto config = ParseAdapterConfig(text);
  if (!config.ok()) return Annotate(config.status(), JoinPath(path, "adapter_config.json"));
  adapter.config = *config;
  PAFT_ASSIGN_OR_RETURN(adapter.file,
                        SafetensorsFile::Open(JoinPath(path, "adapter_model.safetensors")));
  constexpr absl::string_view kPrefix = "base_model.model.";
  for (const TensorInfo& t : adapter.file->tensors()) {
    absl::string_view key = t.name;
    const bool is_a = absl::EndsWith(key, ".lora_A.weight");
    const bool is_b = absl::EndsWith(key, ".lora_B.weight");
    if (!absl::StartsWith(key, kPrefix) || !(is_a || is_b)) {
      return absl::UnimplementedError(absl::StrCat(
          "adapter ", path, ": tensor '", t.name,
          "' is not a LoRA A/B matrix (only base_model.model.<module>.lora_{A,B}.weight are "
          "supported)"));
    }
    if (!IsFloat(t.dtype)) {
      return absl::InvalidArgumentError(
          absl::StrCat("adapter ", path, ": tensor '", t.name, "' has dtype ", DTypeName(t.dtype)));
    }
    key.remove_prefix(kPrefix.size());
    key.remove_suffix(std::string(".lora_A.weight").size());
    AdapterFile::Module& m = adapter.modules[absl::StrCat(key, ".weight")];
    (is_a ? m.a : m.b) = &t;
    (is_a ? m.a_key : m.b_key) = t.name;
  }
  if (adapter.modules.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("adapter ", path, ": adapts no module"));
  }
  for (const auto& [name, m] : adapter.modules) {
    if (m.a == nullptr || m.b == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("adapter ", path, ": '", name,
                                                     "' has only one of lora_A / lora_B"));
    }
    const auto& a = m.a->shape;
    const auto& b = m.b->shape;
    if (a.size() != 2 || b.size() != 2 || a[0] != b[1]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "adapter ", path, ": lora_A [", absl::StrJoin(a, ","), "] and lora_B [",
          absl::StrJoin(b, ","), "] of '", name, "' do not multiply"));
    }
    if (a[0] != adapter.config.r) {
      return absl::InvalidArgumentError(absl::StrCat("adapter ", path, ": '", m.a_key,
                                                     "' has rank ", a[0], " but r is ",
                                                     adapter.config.r));
    }
  }
  return adapter;
}

absl::StatusOr<DType> OutputDType(const std::string& dtype, DType base) {
  if (dtype.empty()) return base;
  if (dtype == "float32") return DType::kF32;
  if (dtype == "bfloat16") return DType::kBF16;
  if (dtype == "float16") return DType::kF16;
  return absl::InvalidArgumentError(absl::StrCat("unsupported output dtype '", dtype, "'"));
}

absl::StatusOr<std::unique_ptr<InputModel>> OpenInput(const std::string& path) {
  if (PathExists(JoinPath(path, "adapter_config.json"))) {
    PAFT_ASSIGN_OR_RETURN(AdapterFile adapter, OpenAdapterFile(path));
    return std::unique_ptr<InputModel>(new Adapter(std::move(adapter)));
  }
  PAFT_ASSIGN_OR_RETURN(auto model, SafetensorsModel::Open(path));
  return std::unique_ptr<InputModel>(new FullModel(path, std::move(model)));
}

}  // namespace paft::merger
