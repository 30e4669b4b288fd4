#include "merger/mergekit_config.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "common/status.h"
#include "merger/merge_methods.h"

namespace paft::merger {
namespace {

absl::Status Bad(const std::string& key, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("merge config: ", key, ": ", what));
}

std::string Resolve(const std::string& path, const std::string& base_dir) {
  if (path.empty() || path[0] == '/' || base_dir.empty()) return path;
  return JoinPath(base_dir, path);
}

absl::Status CheckKeys(const YAML::Node& node, const std::string& where,
                       const std::set<std::string>& allowed) {
  for (const auto& kv : node) {
    if (!kv.first.IsScalar())
      return Bad(where.empty() ? "(top level)" : where, "a key is not a string");
    const std::string key = kv.first.as<std::string>();
    if (!allowed.count(key)) return Bad(where.empty() ? key : where + "." + key, "unknown key");
  }
  return absl::OkStatus();
}

absl::StatusOr<double> Number(const YAML::Node& node, const std::string& key) {
  if (node.IsSequence()) {
    return absl::UnimplementedError(
        absl::StrCat("merge config: ", key, ": per-layer gradients (lists) are not supported"));
  }
  if (node.IsMap()) {
    return absl::UnimplementedError(
        absl::StrCat("merge config: ", key, ": filtered parameters are not supported"));
  }
  try {
    return node.as<double>();
  } catch (const YAML::Exception&) {
    return Bad(key, absl::StrCat("'", node.Scalar(), "' is not a number"));
  }
}

absl::StatusOr<bool> Bool(const YAML::Node& node, const std::string& key) {
  try {
    return node.as<bool>();
  } catch (const YAML::Exception&) {
    return Bad(key, "must be true or false");
  }
}

}  // namespace

static absl::StatusOr<paft::v1::MergeRequest> ParseOrThrow(const std::string& yaml_text,
                                                           const std::string& base_dir) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("merge config is not valid YAML: ", e.what()));
  }
  if (!root.IsMap()) return absl::InvalidArgumentError("merge config must be a mapping");
  PAFT_RETURN_IF_ERROR(
      CheckKeys(root, "",
                {"merge_method", "base_model", "models", "parameters", "dtype", "out_dtype", "tokenizer_source",
                 "name", "merge_space", "output", "svd_rank", "svd_clamp"}));
  paft::v1::MergeRequest request;
  auto* spec = request.mutable_spec();
  if (!root["merge_method"] || !root["merge_method"].IsScalar()) {
    return Bad("merge_method", "is required");
  }
  spec->set_method(root["merge_method"].as<std::string>());
  PAFT_RETURN_IF_ERROR(LookupMergeMethod(spec->method()).status());
  // paft's extensions: where to merge (delta, adapter, adapter_svd) and what to write.
  for (const auto& [key, allowed] :
       {std::make_pair("merge_space", std::set<std::string>{"delta", "adapter", "adapter_svd"}),
        std::make_pair("output", std::set<std::string>{"model", "adapter", "both"})}) {
    if (!root[key]) continue;
    const std::string value = root[key].as<std::string>();
    if (!allowed.count(value)) return Bad(key, absl::StrCat("'", value, "' is not allowed"));
    if (std::string(key) == "merge_space") spec->set_merge_space(value);
    if (std::string(key) == "output") spec->set_output(value);
  }
  if (root["svd_rank"]) {
    PAFT_ASSIGN_OR_RETURN(double v, Number(root["svd_rank"], "svd_rank"));
    if (!(v >= 1 && v <= 4096 && v == std::floor(v)))
      return Bad("svd_rank", "must be an integer in [1, 4096]");
    spec->set_svd_rank(static_cast<int32_t>(v));
  }
  if (root["svd_clamp"]) {
    PAFT_ASSIGN_OR_RETURN(double v, Number(root["svd_clamp"], "svd_clamp"));
    if (!(v >= 0 && v <= 1)) return Bad("svd_clamp", "must be in [0, 1]");
    spec->set_svd_clamp(v);
  }
  const YAML::Node base = root["base_model"];
  if (base && !base.IsScalar()) return Bad("base_model", "must be one model's path");
  if (!base && spec->method() != "linear") {
    return Bad("base_model", "is required (every method but linear works on task vectors)");
  }
  const std::string base_name = base ? base.as<std::string>() : "";
  if (base) request.set_base_model(Resolve(base_name, base_dir));
  if (root["tokenizer_source"] && root["tokenizer_source"].as<std::string>() != "base") {
    return absl::UnimplementedError("merge config: tokenizer_source: only 'base' is supported");
  }
  // mergekit: `dtype` is what it computes in, `out_dtype` (default: dtype) what it writes. paft
  // always computes in fp32 and writes out_dtype, else dtype (docs/merger.md).
  for (const char* key : {"dtype", "out_dtype"}) {
    if (!root[key]) continue;
    const std::string dtype = root[key].as<std::string>();
    if (dtype != "float32" && dtype != "bfloat16" && dtype != "float16") {
      return Bad(key, "must be float32, bfloat16 or float16");
    }
    if (std::string(key) == "out_dtype" || !root["out_dtype"]) spec->set_dtype(dtype);
  }
  if (const YAML::Node params = root["parameters"]) {
    if (!params.IsMap()) return Bad("parameters", "must be a mapping");
    // Besides the method's own parameters, the defaults of every model's (below).
    PAFT_RETURN_IF_ERROR(CheckKeys(
        params, "parameters",
        {"normalize", "lambda", "rescale", "int8_mask", "seed", "weight", "density", "gamma"}));
    if (params["normalize"]) {
      PAFT_ASSIGN_OR_RETURN(bool v, Bool(params["normalize"], "parameters.normalize"));
      spec->set_normalize(v);
    }
    if (params["rescale"]) {
      PAFT_ASSIGN_OR_RETURN(bool v, Bool(params["rescale"], "parameters.rescale"));
      spec->set_rescale(v);
    }
    if (params["int8_mask"]) {  // a memory option of mergekit's; nothing to do here
      PAFT_RETURN_IF_ERROR(Bool(params["int8_mask"], "parameters.int8_mask").status());
    }
    if (params["lambda"]) {
      PAFT_ASSIGN_OR_RETURN(double v, Number(params["lambda"], "parameters.lambda"));
      spec->set_lambda(v);
    }
    if (params["seed"]) {
      PAFT_ASSIGN_OR_RETURN(double v, Number(params["seed"], "parameters.seed"));
      if (v < 0) return Bad("parameters.seed", "must be >= 0");
      spec->set_seed(static_cast<uint64_t>(v));
    }
  }
  const YAML::Node models = root["models"];
  if (!models || !models.IsSequence() || models.size() == 0) {
    return Bad("models", "a non-empty list is required");
  }
  for (size_t i = 0; i < models.size(); ++i) {
    const std::string where = absl::StrCat("models[", i, "]");
    const YAML::Node m = models[i];
    if (!m.IsMap() || !m["model"] || !m["model"].IsScalar()) {
      return Bad(where, "needs a 'model' path");
    }
    PAFT_RETURN_IF_ERROR(CheckKeys(m, where, {"model", "parameters"}));
    const std::string path = m["model"].as<std::string>();
    const YAML::Node params = m["parameters"];
    if (path == base_name && !params) continue;  // the base listed among the models
    if (params && !params.IsMap()) return Bad(where + ".parameters", "must be a mapping");
    if (params) {
      PAFT_RETURN_IF_ERROR(
          CheckKeys(params, where + ".parameters", {"weight", "density", "gamma"}));
    }
    // As mergekit's ConfigReader.parameter: the model's own value, else the top-level one.
    const YAML::Node global = root["parameters"];
    using Found = std::optional<std::pair<YAML::Node, std::string>>;  // the value and its key
    auto lookup = [&](const std::string& name) -> Found {
      if (params && params[name])
        return std::make_pair(params[name], where + ".parameters." + name);
      if (global && global[name]) return std::make_pair(global[name], "parameters." + name);
      return std::nullopt;
    };
    auto* input = request.add_inputs();
    input->set_path(Resolve(path, base_dir));
    const Found weight_value = lookup("weight");
    if (!weight_value) {
      return Bad(where + ".parameters.weight",
                 "is required (there or in the top-level parameters)");
    }
    PAFT_ASSIGN_OR_RETURN(double weight, Number(weight_value->first, weight_value->second));
    input->mutable_params()->set_weight(weight);
    input->mutable_params()->set_density(1.0);
    if (const Found density = lookup("density")) {
      PAFT_ASSIGN_OR_RETURN(double d, Number(density->first, density->second));
      if (!(d > 0 && d <= 1)) return Bad(density->second, "must be in (0, 1]");
      input->mutable_params()->set_density(d);
    }
    if (const Found gamma = lookup("gamma")) {
      PAFT_ASSIGN_OR_RETURN(double g, Number(gamma->first, gamma->second));
      if (!(g >= 0 && g < 1)) return Bad(gamma->second, "must be in [0, 1)");
      input->mutable_params()->set_gamma(g);
    }
  }
  if (request.inputs().empty()) return Bad("models", "no model other than the base");
  // linear without a base_model (mergekit's usual form): the first model is the template whose
  // config.json and tokenizer files the output gets, as in mergekit. The merge reads each input
  // as base + (input - base), so any model of the same shapes serves as the base here.
  if (!base) request.set_base_model(request.inputs(0).path());
  return request;
}

absl::StatusOr<paft::v1::MergeRequest> ParseMergekitConfig(const std::string& yaml_text,
                                                           const std::string& base_dir) {
  // Found by fuzzing: a YAML value of an unexpected shape (a mapping used as a key, say) throws
  // from yaml-cpp's conversions; that is bad input, not a crash.
  try {
    return ParseOrThrow(yaml_text, base_dir);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("merge config is not valid: ", e.what()));
  }
}

}  // namespace paft::merger
