#include "merger/adapter_merge.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/peft_adapter_config.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "merger/inputs.h"
#include "merger/merge_methods.h"
#include "merger/peft_combine.h"
#include "merger/svd.h"

namespace paft::merger {
namespace {

struct Input {
  AdapterFile adapter;
  double weight = 1.0;
  double density = 1.0;
};

std::vector<float> ReadAll(const SafetensorsFile& file, const TensorInfo& info) {
  std::vector<float> out(static_cast<size_t>(info.numel()));
  ReadRangeAsFloat(file, info, 0, info.numel(), out.data());
  return out;
}

// PEFT's svd_clamp: torch.quantile (linear interpolation) of all entries of both factors; both
// clamped to [-q, q].
void Clamp(std::vector<float>& a, std::vector<float>& b, double quantile) {
  std::vector<float> all(a);
  all.insert(all.end(), b.begin(), b.end());
  std::sort(all.begin(), all.end());
  const double pos = quantile * static_cast<double>(all.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos)), hi = static_cast<size_t>(std::ceil(pos));
  const float q = static_cast<float>(all[lo] + (all[hi] - all[lo]) * (pos - static_cast<double>(lo)));
  for (auto* v : {&a, &b}) {
    for (float& x : *v) x = std::min(std::max(x, -q), q);
  }
}

absl::Status CheckOptions(const paft::v1::MergeSpec& spec) {
  const std::string space = spec.merge_space();
  auto refuse = [&](const std::string& key) {
    return absl::InvalidArgumentError(absl::StrCat(
        key, ": not an option of PEFT's add_weighted_adapter (merge_space ", space, ")"));
  };
  if (spec.has_normalize()) return refuse("normalize");
  if (spec.has_rescale()) return refuse("rescale");
  if (spec.has_lambda() && spec.lambda() != 1.0) return refuse("lambda");
  if (space == "adapter" && spec.svd_rank() != 0) return refuse("svd_rank");
  if (space == "adapter" && spec.has_svd_clamp()) return refuse("svd_clamp");
  if (spec.has_svd_clamp() && !(spec.svd_clamp() >= 0 && spec.svd_clamp() <= 1)) {
    return absl::InvalidArgumentError("svd_clamp: must be in [0, 1]");
  }
  if (spec.svd_rank() < 0) return absl::InvalidArgumentError("svd_rank: must be >= 0");
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteMergedAdapter(const paft::v1::MergeRequest& request, const std::string& dir) {
  const auto& spec = request.spec();
  PAFT_RETURN_IF_ERROR(CheckOptions(spec));
  PAFT_ASSIGN_OR_RETURN(PeftMethod method, LookupPeftMethod(spec.method()));
  if (request.inputs().empty()) return absl::InvalidArgumentError("inputs: at least one needed");
  // PEFT's rule for one adapter: "linear" on the factors, whatever the type (SVD ones too).
  const bool svd = spec.merge_space() == "adapter_svd" && request.inputs_size() > 1;
  if (request.inputs_size() == 1) method = PeftMethod::kLinear;
  PAFT_ASSIGN_OR_RETURN(auto base, SafetensorsModel::Open(request.base_model()));

  std::vector<Input> inputs;
  std::set<std::string> modules, leaves;
  int64_t max_r = 0;
  for (int i = 0; i < request.inputs_size(); ++i) {
    const auto& in = request.inputs(i);
    if (in.params().has_gamma()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "inputs[", i, "].gamma: not an option of PEFT's add_weighted_adapter"));
    }
    if (!PathExists(JoinPath(in.path(), "adapter_config.json"))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "inputs[", i, "] (", in.path(), "): merge_space ", spec.merge_space(),
          " merges PEFT adapter folders; this is a full model (use merge_space delta)"));
    }
    Input input;
    PAFT_ASSIGN_OR_RETURN(input.adapter, OpenAdapterFile(in.path()));
    input.weight = in.params().has_weight() ? in.params().weight() : 1.0;
    input.density = in.params().has_density() ? in.params().density() : 1.0;
    if (!(input.density > 0 && input.density <= 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("inputs[", i, "] (", in.path(), "): density must be in (0, 1]"));
    }
    if (!svd && !inputs.empty() && input.adapter.config.r != inputs.front().adapter.config.r) {
      return absl::InvalidArgumentError(absl::StrCat(
          "merge_space adapter needs adapters of one rank (as PEFT): ", in.path(), " has r ",
          input.adapter.config.r, ", ", inputs.front().adapter.path, " r ",
          inputs.front().adapter.config.r, " (merge_space adapter_svd takes any ranks)"));
    }
    for (const auto& [name, m] : input.adapter.modules) {
      auto found = base->Find(name);
      if (!found.ok() || found->second->shape.size() != 2 ||
          found->second->shape[0] != m.b->shape[0] || found->second->shape[1] != m.a->shape[1]) {
        return absl::InvalidArgumentError(absl::StrCat("adapter ", in.path(), ": '", m.a_key,
                                                       "' does not fit a tensor of the base"));
      }
      modules.insert(name);
      const std::string module = name.substr(0, name.size() - std::string(".weight").size());
      leaves.insert(module.substr(module.find_last_of('.') + 1));
    }
    max_r = std::max(max_r, input.adapter.config.r);
    inputs.push_back(std::move(input));
  }
  const int64_t rank = svd ? (spec.svd_rank() > 0 ? spec.svd_rank() : max_r) : max_r;

  std::vector<TensorData> tensors;
  PAFT_ASSIGN_OR_RETURN(
      const DType dtype,
      OutputDType(spec.dtype(), inputs.front().adapter.modules.begin()->second.a->dtype));
  for (const std::string& name : modules) {
    const std::vector<int64_t>& shape = base->Find(name)->second->shape;
    const int64_t out = shape[0], in = shape[1];
    std::vector<float> a, b;
    if (!svd) {
      std::vector<PeftTensor> as, bs;
      for (size_t i = 0; i < inputs.size(); ++i) {
        auto it = inputs[i].adapter.modules.find(name);
        if (it == inputs[i].adapter.modules.end()) continue;
        const double ws = inputs[i].weight * inputs[i].adapter.config.scale();
        const double root = std::sqrt(std::fabs(ws));
        const uint64_t stream = spec.seed() ^ TensorKey(absl::StrCat(name, "#", i));
        as.push_back({ReadAll(*inputs[i].adapter.file, *it->second.a), ws >= 0 ? root : -root,
                      inputs[i].density, stream});
        bs.push_back({ReadAll(*inputs[i].adapter.file, *it->second.b), root, inputs[i].density,
                      ~stream});
      }
      PeftCombine(method, as, &a);
      PeftCombine(method, bs, &b);
    } else {
      std::vector<PeftTensor> deltas;
      for (size_t i = 0; i < inputs.size(); ++i) {
        auto it = inputs[i].adapter.modules.find(name);
        if (it == inputs[i].adapter.modules.end()) continue;
        const std::vector<float> ai = ReadAll(*inputs[i].adapter.file, *it->second.a);
        const std::vector<float> bi = ReadAll(*inputs[i].adapter.file, *it->second.b);
        const int64_t r = it->second.a->shape[0];
        const double s = inputs[i].adapter.config.scale();
        PeftTensor d{std::vector<float>(static_cast<size_t>(out * in)), inputs[i].weight,
                     inputs[i].density, spec.seed() ^ TensorKey(absl::StrCat(name, "#", i))};
        std::vector<double> row(static_cast<size_t>(in));
        for (int64_t o = 0; o < out; ++o) {  // row o of s B A, A read row by row
          std::fill(row.begin(), row.end(), 0.0);
          for (int64_t k = 0; k < r; ++k) {
            const double b_ok = bi[o * r + k];
            const float* a_row = ai.data() + k * in;
            for (int64_t c = 0; c < in; ++c) row[c] += b_ok * a_row[c];
          }
          for (int64_t c = 0; c < in; ++c) d.values[o * in + c] = static_cast<float>(s * row[c]);
        }
        deltas.push_back(std::move(d));
      }
      std::vector<float> merged;
      PeftCombine(method, deltas, &merged);
      auto factors = TruncatedSvdOf(merged, out, in, rank);
      if (!factors.ok()) return Annotate(factors.status(), absl::StrCat("module '", name, "'"));
      b.assign(factors->left.begin(), factors->left.end());
      a.assign(factors->right.begin(), factors->right.end());
      if (spec.has_svd_clamp()) Clamp(a, b, spec.svd_clamp());
    }
    const std::string module = name.substr(0, name.size() - std::string(".weight").size());
    for (auto [suffix, values, dims] :
         {std::make_tuple(".lora_A.weight", &a, std::vector<int64_t>{rank, in}),
          std::make_tuple(".lora_B.weight", &b, std::vector<int64_t>{out, rank})}) {
      TensorData t;
      t.spec = {absl::StrCat("base_model.model.", module, suffix), dtype, dims};
      t.bytes.resize(values->size() * DTypeSize(dtype));
      StoreFloats(dtype, values->data(), static_cast<int64_t>(values->size()), t.bytes.data());
      tensors.push_back(std::move(t));
    }
  }
  PAFT_RETURN_IF_ERROR(WriteSafetensors(JoinPath(dir, "adapter_model.safetensors"), tensors,
                                        {{"format", "pt"}}));
  const nlohmann::json config = PeftAdapterConfig(
      {request.base_model(), rank, static_cast<double>(rank), 0.0, false,
       std::vector<std::string>(leaves.begin(), leaves.end())});
  return WriteFileAtomic(JoinPath(dir, "adapter_config.json"), config.dump(2));
}

}  // namespace paft::merger
