#include "common/job_spec.h"

#include <google/protobuf/util/json_util.h>
#include <yaml-cpp/yaml.h>

#include <cctype>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <set>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/allowed_values.h"
#include "common/file_util.h"
#include "common/hf_config.h"
#include "common/job_layout.h"
#include "common/merge_search.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace paft {
namespace {

using json = nlohmann::json;
using paft::v1::BranchSpec;
using paft::v1::JobSpec;

// YAML -> JSON. Plain scalars become numbers, booleans or null when they read as such; quoted
// scalars always stay strings.
absl::StatusOr<json> YamlToJson(const YAML::Node& node, const std::string& where) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return json(nullptr);
    case YAML::NodeType::Sequence: {
      json out = json::array();
      for (size_t i = 0; i < node.size(); ++i) {
        PAFT_ASSIGN_OR_RETURN(json item, YamlToJson(node[i], absl::StrCat(where, "[", i, "]")));
        out.push_back(std::move(item));
      }
      return out;
    }
    case YAML::NodeType::Map: {
      json out = json::object();
      for (const auto& kv : node) {
        if (!kv.first.IsScalar()) {
          return absl::InvalidArgumentError(absl::StrCat(where, ": keys must be plain strings"));
        }
        std::string key = kv.first.Scalar();
        if (out.contains(key)) {
          return absl::InvalidArgumentError(
              absl::StrCat(where.empty() ? "" : where + ".", key, ": given twice"));
        }
        PAFT_ASSIGN_OR_RETURN(json value,
                              YamlToJson(kv.second, where.empty() ? key : where + "." + key));
        out[key] = std::move(value);
      }
      return out;
    }
    case YAML::NodeType::Scalar: {
      const std::string& s = node.Scalar();
      if (node.Tag() != "?") return json(s);  // quoted or explicitly tagged: a string
      if (s == "true" || s == "True") return json(true);
      if (s == "false" || s == "False") return json(false);
      if (s == "null" || s == "~") return json(nullptr);
      int64_t i;
      if (absl::SimpleAtoi(s, &i)) return json(i);
      uint64_t u;
      if (absl::SimpleAtoi(s, &u)) return json(u);
      double d;
      if (!s.empty() && (std::isdigit(static_cast<unsigned char>(s[0])) || s[0] == '-' ||
                         s[0] == '+' || s[0] == '.') &&
          absl::SimpleAtod(s, &d)) {
        return json(d);
      }
      return json(s);
    }
  }
  return json(nullptr);
}

class Errors {
 public:
  void Add(const std::string& field, const std::string& what) {
    errors_.push_back(absl::StrCat(field, ": ", what));
  }
  void AddLine(const std::string& field_and_what) { errors_.push_back(field_and_what); }
  absl::Status ToStatus() const {
    if (errors_.empty()) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat("invalid job spec: ", absl::StrJoin(errors_, "; ")));
  }

 private:
  std::vector<std::string> errors_;
};

void CheckRange(Errors& e, const std::string& field, double value, double lo, double hi,
                bool lo_open = false) {
  if (!std::isfinite(value) || value < lo || value > hi || (lo_open && value == lo)) {
    e.Add(field, absl::StrCat("must be in ", lo_open ? "(" : "[", lo, ", ", hi, "], got ", value));
  }
}

void CheckPath(Errors& e, const std::string& field, const std::string& path, bool required) {
  if (path.empty()) {
    if (required) e.Add(field, "is required");
    return;
  }
  if (path.size() > static_cast<size_t>(kMaxPathLength)) {
    e.Add(field, absl::StrCat("is longer than ", kMaxPathLength, " characters"));
  }
  if (path.find('\0') != std::string::npos) e.Add(field, "contains a NUL character");
  if (path[0] != '/') e.Add(field, absl::StrCat("must be an absolute path, got '", path, "'"));
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part == "..") {
      e.Add(field, absl::StrCat("must not contain '..', got '", path, "'"));
      break;
    }
  }
}

}  // namespace

void ApplyBranchDefaults(BranchSpec* b, bool is_sft) {
  if (b->dataset().format().empty()) b->mutable_dataset()->set_format("auto");
  if (b->dataset().assistant_turns().empty()) b->mutable_dataset()->set_assistant_turns("last");
  if (is_sft && b->objective_case() == BranchSpec::OBJECTIVE_NOT_SET) b->mutable_sft();
  if (!is_sft && b->objective_case() == BranchSpec::OBJECTIVE_NOT_SET) b->mutable_dpo();
  if (b->has_sft()) {
    // PAFT's L1 default is for LoRA adapters; a full fine-tune would need a frozen copy of the
    // base for it (a second model in memory), so there it is opt-in.
    if (!b->sft().has_l1_lambda()) {
      b->mutable_sft()->set_l1_lambda(b->has_full() ? 0.0 : kPaftL1Lambda);
    }
    if (b->sft().l1_target().empty()) b->mutable_sft()->set_l1_target("adapter");
  }
  if (b->has_dpo()) {
    if (!b->dpo().has_beta()) b->mutable_dpo()->set_beta(0.1);
    if (b->dpo().loss_type().empty()) b->mutable_dpo()->set_loss_type("sigmoid");
  }
  if (b->has_orpo()) {
    if (!b->orpo().has_beta()) b->mutable_orpo()->set_beta(0.1);
    if (!b->orpo().has_prompt_loss()) b->mutable_orpo()->set_prompt_loss(true);
  }
  if (b->has_simpo()) {
    if (!b->simpo().has_beta()) b->mutable_simpo()->set_beta(2.0);
    if (!b->simpo().has_gamma()) b->mutable_simpo()->set_gamma(0.5);
  }
  if (b->tuning_case() == BranchSpec::TUNING_NOT_SET) b->mutable_lora();
  if (b->has_lora()) {
    auto* lora = b->mutable_lora();
    if (lora->r() == 0) lora->set_r(8);
    if (!lora->has_alpha()) lora->set_alpha(2.0 * lora->r());
    if (lora->target_modules().empty()) {
      for (const char* m : {"q_proj", "k_proj", "v_proj", "o_proj"}) lora->add_target_modules(m);
    }
  }
  auto* opt = b->mutable_optimizer();
  if (opt->name().empty()) opt->set_name("adamw");
  if (!opt->has_learning_rate()) opt->set_learning_rate(b->has_lora() ? 2e-4 : 2e-5);
  if (!opt->has_beta1()) opt->set_beta1(0.9);
  if (!opt->has_beta2()) opt->set_beta2(0.999);
  if (!opt->has_epsilon()) opt->set_epsilon(1e-8);
  if (opt->lr_schedule().empty()) opt->set_lr_schedule("cosine");
  auto* batch = b->mutable_batch();
  if (batch->per_device_batch_size() == 0) batch->set_per_device_batch_size(1);
  if (batch->gradient_accumulation_steps() == 0) batch->set_gradient_accumulation_steps(1);
  // max_seq_len is max_length's old name: it fills an unset max_length (a conflict is refused).
  if (batch->max_length() == 0) {
    batch->set_max_length(batch->max_seq_len() > 0 ? batch->max_seq_len() : 1024);
  }
  if (batch->truncation_mode().empty()) batch->set_truncation_mode("keep_start");
  if (b->max_steps() == 0 && b->epochs() == 0) b->set_epochs(1.0);
  if (b->checkpoint().keep_last() == 0) b->mutable_checkpoint()->set_keep_last(2);
  if (!b->has_seed()) b->set_seed(42);
  if (b->precision().empty()) b->set_precision("auto");
  if (b->attn_implementation().empty()) b->set_attn_implementation("sdpa");
}

namespace {

void ValidateBranch(Errors& e, const BranchSpec& b, const std::string& p, bool is_sft) {
  if (b.pool().empty()) e.Add(p + ".pool", "is required");
  if (b.pool().size() > 63) e.Add(p + ".pool", "is longer than 63 characters");
  if (b.world_size() < 1 || b.world_size() > kMaxWorldSize) {
    e.Add(p + ".world_size",
          absl::StrCat("must be between 1 and ", kMaxWorldSize, ", got ", b.world_size()));
  }
  CheckPath(e, p + ".dataset.path", b.dataset().path(), /*required=*/true);
  CheckPath(e, p + ".dataset.eval_path", b.dataset().eval_path(), /*required=*/false);
  const auto kFormats = {"auto", "prompt_completion", "messages", "text", "preference"};
  if (!OneOf(b.dataset().format(), kFormats)) {
    e.Add(p + ".dataset.format", Allowed(kFormats));
  }
  const auto kTemplates = {"", "auto", "model", "chatml", "plain"};
  if (!OneOf(b.dataset().chat_template(), kTemplates)) {
    e.Add(p + ".dataset.chat_template", Allowed(kTemplates));
  }
  const auto kTurns = {"last", "all"};
  if (!OneOf(b.dataset().assistant_turns(), kTurns)) {
    e.Add(p + ".dataset.assistant_turns", Allowed(kTurns));
  }
  if (is_sft && !b.has_sft()) {
    e.Add(p + ".objective", "the SFT branch must use the 'sft' objective");
  }
  if (!is_sft && b.has_sft()) {
    e.Add(p + ".objective", "the alignment branch needs a preference objective (dpo, orpo, simpo)");
  }
  if (b.has_sft()) {
    CheckRange(e, p + ".sft.l1_lambda", b.sft().l1_lambda(), 0, 1e3);
    const auto kTargets = {"adapter", "delta"};
    if (!OneOf(b.sft().l1_target(), kTargets)) e.Add(p + ".sft.l1_target", Allowed(kTargets));
  }
  if (b.has_dpo()) {
    CheckRange(e, p + ".dpo.beta", b.dpo().beta(), 0, 1e3, /*lo_open=*/true);
    const auto kLosses = {"sigmoid", "ipo", "hinge", "robust"};
    if (!OneOf(b.dpo().loss_type(), kLosses)) e.Add(p + ".dpo.loss_type", Allowed(kLosses));
    if (!(b.dpo().label_smoothing() >= 0 && b.dpo().label_smoothing() < 0.5)) {
      e.Add(p + ".dpo.label_smoothing",
            absl::StrCat("must be in [0, 0.5), got ", b.dpo().label_smoothing()));
    }
  }
  if (b.has_orpo()) CheckRange(e, p + ".orpo.beta", b.orpo().beta(), 0, 1e3, true);
  if (b.has_simpo()) {
    CheckRange(e, p + ".simpo.beta", b.simpo().beta(), 0, 1e3, true);
    CheckRange(e, p + ".simpo.gamma", b.simpo().gamma(), -1e3, 1e3);
  }
  if (b.has_lora()) {
    if (b.lora().r() < 1 || b.lora().r() > 4096) {
      e.Add(p + ".lora.r", absl::StrCat("must be between 1 and 4096, got ", b.lora().r()));
    }
    CheckRange(e, p + ".lora.alpha", b.lora().alpha(), 0, 1e6, true);
    if (!(b.lora().dropout() >= 0 && b.lora().dropout() < 1)) {
      e.Add(p + ".lora.dropout", absl::StrCat("must be in [0, 1), got ", b.lora().dropout()));
    }
    const auto kModules = {"q_proj", "k_proj", "v_proj", "o_proj",
                           "gate_proj", "up_proj", "down_proj"};
    for (const std::string& m : b.lora().target_modules()) {
      if (!OneOf(m, kModules)) {
        e.Add(p + ".lora.target_modules", absl::StrCat("'", m, "' is not ", Allowed(kModules)));
      }
    }
  }
  const auto& opt = b.optimizer();
  const auto kOptimizers = {"adamw", "sgd"};
  if (!OneOf(opt.name(), kOptimizers)) e.Add(p + ".optimizer.name", Allowed(kOptimizers));
  CheckRange(e, p + ".optimizer.learning_rate", opt.learning_rate(), 0, 10, true);
  CheckRange(e, p + ".optimizer.weight_decay", opt.weight_decay(), 0, 10);
  if (!(opt.beta1() >= 0 && opt.beta1() < 1)) {
    e.Add(p + ".optimizer.beta1", absl::StrCat("must be in [0, 1), got ", opt.beta1()));
  }
  if (!(opt.beta2() >= 0 && opt.beta2() < 1)) {
    e.Add(p + ".optimizer.beta2", absl::StrCat("must be in [0, 1), got ", opt.beta2()));
  }
  CheckRange(e, p + ".optimizer.epsilon", opt.epsilon(), 0, 1, true);
  const auto kSchedules = {"cosine", "linear", "constant"};
  if (!OneOf(opt.lr_schedule(), kSchedules)) {
    e.Add(p + ".optimizer.lr_schedule", Allowed(kSchedules));
  }
  if (opt.warmup_steps() < 0) e.Add(p + ".optimizer.warmup_steps", "must be >= 0");
  CheckRange(e, p + ".optimizer.max_grad_norm", opt.max_grad_norm(), 0, 1e6);
  const auto& batch = b.batch();
  if (batch.per_device_batch_size() < 1 || batch.per_device_batch_size() > 4096) {
    e.Add(p + ".batch.per_device_batch_size",
          absl::StrCat("must be between 1 and 4096, got ", batch.per_device_batch_size()));
  }
  if (batch.gradient_accumulation_steps() < 1 || batch.gradient_accumulation_steps() > 4096) {
    e.Add(p + ".batch.gradient_accumulation_steps",
          absl::StrCat("must be between 1 and 4096, got ", batch.gradient_accumulation_steps()));
  }
  if (batch.max_length() < 8 || batch.max_length() > 1 << 20) {
    e.Add(p + ".batch.max_length",
          absl::StrCat("must be between 8 and 1048576, got ", batch.max_length()));
  }
  if (batch.max_seq_len() != 0 && batch.max_seq_len() != batch.max_length()) {
    e.Add(p + ".batch.max_seq_len",
          absl::StrCat("is the old name of max_length; given ", batch.max_seq_len(),
                       " beside max_length ", batch.max_length()));
  }
  const auto kTruncation = {"keep_start", "keep_end"};
  if (!OneOf(batch.truncation_mode(), kTruncation)) {
    e.Add(p + ".batch.truncation_mode", Allowed(kTruncation));
  } else if (!is_sft && batch.truncation_mode() == "keep_end") {
    // TRL cuts prompt+chosen and prompt+rejected separately from the left, so their prompts
    // would differ; the token format holds one prompt per pair.
    e.Add(p + ".batch.truncation_mode",
          "keep_end is not supported for preference data (TRL would cut the chosen and rejected "
          "sequences' prompts differently); use keep_start");
  }
  const auto kPrecisions = {"auto", "fp32", "bf16"};
  if (!b.precision().empty() && !OneOf(b.precision(), kPrecisions)) {
    e.Add(p + ".precision", Allowed(kPrecisions));
  }
  const auto kAttention = {"sdpa", "eager"};
  if (!b.attn_implementation().empty() && !OneOf(b.attn_implementation(), kAttention)) {
    e.Add(p + ".attn_implementation", Allowed(kAttention));
  }
  if (b.max_steps() < 0) e.Add(p + ".max_steps", "must be >= 0");
  if (!(b.epochs() >= 0 && b.epochs() <= 1e4)) e.Add(p + ".epochs", "must be in [0, 10000]");
  if (b.max_steps() == 0 && b.epochs() == 0) {
    e.Add(p + ".max_steps", "either max_steps or epochs must be positive");
  }
  if (b.checkpoint().every_steps() < 0) e.Add(p + ".checkpoint.every_steps", "must be >= 0");
  if (b.checkpoint().keep_last() < 1 || b.checkpoint().keep_last() > 1000) {
    e.Add(p + ".checkpoint.keep_last", "must be between 1 and 1000");
  }
}

}  // namespace

namespace {

absl::StatusOr<JobSpec> ParseJobSpecOrThrow(const std::string& text) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("job spec is not valid YAML/JSON: ", e.what()));
  }
  if (!root.IsMap()) return absl::InvalidArgumentError("job spec must be a mapping (object)");
  PAFT_ASSIGN_OR_RETURN(json j, YamlToJson(root, ""));
  JobSpec spec;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto status = google::protobuf::util::JsonStringToMessage(j.dump(), &spec, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("job spec does not match the schema: ", status.message().as_string()));
  }
  return spec;
}

}  // namespace

absl::StatusOr<JobSpec> ParseJobSpec(const std::string& text) {
  // Found by fuzzing: invalid UTF-8 and non-string YAML keys throw from deep inside the JSON and
  // YAML libraries; they are bad input, not crashes.
  try {
    return ParseJobSpecOrThrow(text);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("job spec is not valid: ", e.what()));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("job spec is not valid YAML/JSON: ", e.what()));
  }
}

absl::StatusOr<JobSpec> LoadJobSpecFile(const std::string& path) {
  PAFT_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  auto spec = ParseJobSpec(text);
  if (!spec.ok()) return Annotate(spec.status(), path);
  return spec;
}

void ApplyJobSpecDefaults(JobSpec* spec) {
  ApplyBranchDefaults(spec->mutable_sft(), /*is_sft=*/true);
  ApplyBranchDefaults(spec->mutable_alignment(), /*is_sft=*/false);
  auto* merge = spec->mutable_merge();
  if (merge->method().empty()) merge->set_method(kPaftMergeMethod);
  for (auto* input : {merge->mutable_sft(), merge->mutable_alignment()}) {
    if (!input->has_weight()) input->set_weight(1.0);
  }
  if (!merge->sft().has_density()) merge->mutable_sft()->set_density(kPaftSftDensity);
  if (!merge->alignment().has_density()) {
    merge->mutable_alignment()->set_density(kPaftAlignmentDensity);
  }
  if (!merge->has_lambda()) merge->set_lambda(1.0);
  if (merge->merge_space().empty()) merge->set_merge_space("delta");
  if (merge->output().empty()) merge->set_output(merge->merge_space() == "delta" ? "model" : "both");
  ApplyMergeSearchDefaults(spec);
}

absl::Status ValidateJobSpec(const JobSpec& spec) {
  Errors e;
  if (spec.name().size() > static_cast<size_t>(kMaxNameLength)) {
    e.Add("name", absl::StrCat("is longer than ", kMaxNameLength, " characters"));
  }
  CheckPath(e, "base_model", spec.base_model(), /*required=*/true);
  CheckPath(e, "output_dir", spec.output_dir(), /*required=*/true);
  ValidateBranch(e, spec.sft(), "sft", /*is_sft=*/true);
  ValidateBranch(e, spec.alignment(), "alignment", /*is_sft=*/false);
  const auto& merge = spec.merge();
  if (!OneOf(merge.method(), kDeltaMergeMethods)) {
    e.Add("merge.method", Allowed(kDeltaMergeMethods));
  }
  for (const auto& [name, input] : {std::make_pair("merge.sft", &merge.sft()),
                                    std::make_pair("merge.alignment", &merge.alignment())}) {
    CheckRange(e, absl::StrCat(name, ".weight"), input->weight(), -kMaxMergeWeight,
               kMaxMergeWeight);
    CheckRange(e, absl::StrCat(name, ".density"), input->density(), 0, 1, /*lo_open=*/true);
    if (input->has_gamma() && !(input->gamma() >= 0 && input->gamma() < 1)) {
      e.Add(absl::StrCat(name, ".gamma"), absl::StrCat("must be in [0, 1), got ", input->gamma()));
    }
    if (input->has_gamma() && merge.merge_space() != "delta") {
      e.Add(absl::StrCat(name, ".gamma"), "breadcrumbs' gamma is not an option of PEFT's merges");
    }
  }
  CheckRange(e, "merge.lambda", merge.lambda(), 0, 100);
  const auto kSpaces = {"delta", "adapter", "adapter_svd"};
  const auto kOutputs = {"model", "adapter", "both"};
  if (!OneOf(merge.merge_space(), kSpaces)) e.Add("merge.merge_space", Allowed(kSpaces));
  if (!OneOf(merge.output(), kOutputs)) e.Add("merge.output", Allowed(kOutputs));
  if (merge.merge_space() == "delta" && merge.output() != "model") {
    e.Add("merge.output", "a delta-space merge gives full-rank deltas: only 'model' can be "
                          "written (merge_space adapter or adapter_svd write adapters)");
  }
  if (merge.merge_space() != "delta") {
    for (const auto& [name, branch] : {std::make_pair("sft", &spec.sft()),
                                       std::make_pair("alignment", &spec.alignment())}) {
      if (branch->has_full()) {
        e.Add("merge.merge_space", absl::StrCat(merge.merge_space(), " merges LoRA adapters; ",
                                                name, " is a full fine-tune"));
      }
    }
    if (merge.has_normalize() || merge.has_rescale() || merge.lambda() != 1.0) {
      e.Add("merge.merge_space", absl::StrCat("normalize, rescale and lambda are options of ",
                                              "delta-space merges, not of PEFT's (merge_space ",
                                              merge.merge_space(), ")"));
    }
    if (!OneOf(merge.method(), kAdapterMergeMethods)) {
      e.Add("merge.method", absl::StrCat("in merge_space ", merge.merge_space(), " must be ",
                                         Allowed(kAdapterMergeMethods)));
    }
  }
  if (merge.svd_rank() < 0 || merge.svd_rank() > 4096) {
    e.Add("merge.svd_rank", absl::StrCat("must be between 0 and 4096, got ", merge.svd_rank()));
  }
  if (merge.has_svd_clamp()) CheckRange(e, "merge.svd_clamp", merge.svd_clamp(), 0, 1);
  if (merge.merge_space() != "adapter_svd" && (merge.svd_rank() != 0 || merge.has_svd_clamp())) {
    e.Add("merge.svd_rank", "svd_rank and svd_clamp are options of merge_space adapter_svd");
  }
  if (merge.merge_space() == "adapter" && spec.sft().has_lora() && spec.alignment().has_lora() &&
      spec.sft().lora().r() != spec.alignment().lora().r()) {
    e.Add("merge.merge_space", absl::StrCat("adapter merges factors of one rank (as PEFT): sft.lora.r ",
                                            spec.sft().lora().r(), " differs from alignment.lora.r ",
                                            spec.alignment().lora().r(), " (adapter_svd takes any ranks)"));
  }
  const auto kDtypes = {"", "float32", "bfloat16", "float16"};
  if (!OneOf(merge.dtype(), kDtypes)) e.Add("merge.dtype", Allowed(kDtypes));
  for (const std::string& error : MergeSearchErrors(spec)) e.AddLine(error);
  if (spec.restart_budget() < 0 || spec.restart_budget() > kMaxRestartBudget) {
    e.Add("restart_budget", absl::StrCat("must be between 0 and ", kMaxRestartBudget, ", got ",
                                         spec.restart_budget()));
  }
  for (const auto& [key, value] : spec.labels()) {
    if (key.empty() || key.size() > 63 || value.size() > 63) {
      e.Add("labels", absl::StrCat("key '", key, "': keys 1-63 and values 0-63 characters"));
    }
  }
  return e.ToStatus();
}

absl::Status CheckJobInputs(const JobSpec& spec) {
  auto precondition = [](const std::string& field, const std::string& what) {
    return absl::FailedPreconditionError(absl::StrCat(field, ": ", what));
  };
  if (!IsDirectory(spec.base_model())) {
    return precondition("base_model", absl::StrCat("'", spec.base_model(), "' is not a folder"));
  }
  auto config = LoadModelConfig(spec.base_model());
  if (!config.ok()) return precondition("base_model", std::string(config.status().message()));
  if (!PathExists(JoinPath(spec.base_model(), "model.safetensors")) &&
      !PathExists(JoinPath(spec.base_model(), "model.safetensors.index.json"))) {
    return precondition("base_model", absl::StrCat("no safetensors weights in '",
                                                   spec.base_model(), "'"));
  }
  for (const auto& [field, branch] : {std::make_pair("sft", &spec.sft()),
                                      std::make_pair("alignment", &spec.alignment())}) {
    if (!IsRegularFile(branch->dataset().path())) {
      return precondition(absl::StrCat(field, ".dataset.path"),
                          absl::StrCat("'", branch->dataset().path(), "' is not a readable file"));
    }
    if (!branch->dataset().eval_path().empty() && !IsRegularFile(branch->dataset().eval_path())) {
      return precondition(absl::StrCat(field, ".dataset.eval_path"),
                          absl::StrCat("'", branch->dataset().eval_path(), "' is not a file"));
    }
  }
  if (IsDirectory(spec.output_dir()) && !spec.overwrite_output()) {
    auto entries = ListDir(spec.output_dir());
    if (!entries.ok() || !entries->empty()) {
      return precondition("output_dir", absl::StrCat("'", spec.output_dir(),
                                                     "' exists and is not empty; choose a new "
                                                     "output_dir or set overwrite_output"));
    }
  }
  const JobLayout layout(spec.output_dir());
  for (const std::string& merged : {layout.MergedModelDir(), layout.MergedAdapterDir()}) {
    if (PathExists(merged)) {
      return precondition("output_dir", absl::StrCat("'", merged, "' already exists; choose a "
                                                     "new output_dir or remove it"));
    }
  }
  return absl::OkStatus();
}

namespace {

// `path` with symlinks resolved: realpath of its longest existing prefix, then the rest (which
// cannot hold symlinks yet, and ".." was refused by ValidateJobSpec).
absl::StatusOr<std::string> ResolveExisting(const std::string& path) {
  std::string prefix = path, rest;
  while (true) {
    char buffer[PATH_MAX];
    if (::realpath(prefix.c_str(), buffer) != nullptr) {
      return rest.empty() ? std::string(buffer) : JoinPath(buffer, rest);
    }
    if (errno != ENOENT && errno != ENOTDIR) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot resolve '", prefix, "': ", std::strerror(errno)));
    }
    const auto slash = prefix.rfind('/');
    if (slash == std::string::npos || prefix == "/") {
      return absl::FailedPreconditionError(absl::StrCat("cannot resolve '", path, "'"));
    }
    const std::string last = prefix.substr(slash + 1);
    rest = rest.empty() ? last : JoinPath(last, rest);
    prefix = slash == 0 ? "/" : prefix.substr(0, slash);
  }
}

}  // namespace

absl::Status CheckPathsConfined(const JobSpec& spec, const std::vector<std::string>& roots) {
  if (roots.empty()) return absl::OkStatus();
  std::vector<std::pair<std::string, std::string>> paths = {{"base_model", spec.base_model()},
                                                            {"output_dir", spec.output_dir()}};
  for (const auto& [field, branch] : {std::make_pair("sft", &spec.sft()),
                                      std::make_pair("alignment", &spec.alignment())}) {
    paths.push_back({absl::StrCat(field, ".dataset.path"), branch->dataset().path()});
    if (!branch->dataset().eval_path().empty()) {
      paths.push_back({absl::StrCat(field, ".dataset.eval_path"), branch->dataset().eval_path()});
    }
  }
  for (const auto& [field, path] : paths) {
    PAFT_ASSIGN_OR_RETURN(const std::string resolved, ResolveExisting(path));
    bool inside = false;
    for (const auto& root : roots) {
      inside = inside || resolved == root || absl::StartsWith(resolved, root + "/");
    }
    if (!inside) {
      return absl::PermissionDeniedError(absl::StrCat(
          field, ": '", path, "'", resolved == path ? "" : absl::StrCat(" (resolves to '", resolved, "')"),
          " is outside the storage roots (", absl::StrJoin(roots, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

void ResolveRelativePaths(JobSpec* spec, const std::string& base_dir) {
  auto resolve = [&](std::string* path) {
    if (!path->empty() && (*path)[0] != '/') *path = JoinPath(base_dir, *path);
  };
  resolve(spec->mutable_base_model());
  resolve(spec->mutable_output_dir());
  for (BranchSpec* b : {spec->mutable_sft(), spec->mutable_alignment()}) {
    if (!b->has_dataset()) continue;
    resolve(b->mutable_dataset()->mutable_path());
    resolve(b->mutable_dataset()->mutable_eval_path());
  }
}

std::string JobSpecToJson(const JobSpec& spec) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(spec, &out, options);
  return out;
}

}  // namespace paft
