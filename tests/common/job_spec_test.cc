#include "common/job_spec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <functional>

#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "tests/testing/temp_dir.h"

namespace paft {
namespace {

using ::testing::HasSubstr;
using paft::v1::JobSpec;

constexpr char kValidYaml[] = R"yaml(
name: demo
base_model: /models/base
output_dir: /jobs/demo
restart_budget: 2
sft:
  pool: sft
  world_size: 2
  dataset: {path: /data/sft.jsonl}
  sft: {l1_lambda: 0.001}
  lora: {r: 16, alpha: 32, target_modules: [q_proj, v_proj]}
  optimizer: {learning_rate: 1.0e-4}
  batch: {per_device_batch_size: 4, gradient_accumulation_steps: 2, max_seq_len: 256}
  max_steps: 100
  checkpoint: {every_steps: 50, keep_last: 3}
alignment:
  pool: align
  world_size: 1
  dataset: {path: "/data/pref.jsonl"}
  dpo: {beta: 0.2, loss_type: ipo}
merge:
  method: ties
  sft: {weight: 0.7, density: 0.3}
  alignment: {weight: 0.3, density: 0.5}
  normalize: true
)yaml";

JobSpec Valid() {
  auto spec = ParseJobSpec(kValidYaml);
  EXPECT_TRUE(spec.ok()) << spec.status();
  ApplyJobSpecDefaults(&*spec);
  return *spec;
}

TEST(JobSpecTest, ParsesYamlOntoTheProto) {
  JobSpec spec = Valid();
  EXPECT_EQ(spec.name(), "demo");
  EXPECT_EQ(spec.sft().world_size(), 2);
  EXPECT_DOUBLE_EQ(spec.sft().sft().l1_lambda(), 0.001);
  EXPECT_EQ(spec.sft().lora().r(), 16);
  EXPECT_EQ(spec.sft().lora().target_modules_size(), 2);
  EXPECT_DOUBLE_EQ(spec.sft().optimizer().learning_rate(), 1e-4);
  EXPECT_EQ(spec.alignment().dpo().loss_type(), "ipo");
  EXPECT_DOUBLE_EQ(spec.merge().sft().density(), 0.3);
  EXPECT_TRUE(spec.merge().normalize());
  EXPECT_TRUE(ValidateJobSpec(spec).ok()) << ValidateJobSpec(spec);
}

TEST(JobSpecTest, JsonIsAcceptedToo) {
  auto spec = ParseJobSpec(R"({"name": "j", "base_model": "/b", "sft": {"worldSize": 3}})");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->sft().world_size(), 3);
}

TEST(JobSpecTest, DefaultsAreApplied) {
  JobSpec spec = Valid();
  EXPECT_EQ(spec.alignment().lora().r(), 8);  // LoRA by default
  EXPECT_DOUBLE_EQ(spec.alignment().lora().alpha(), 16);
  EXPECT_EQ(spec.alignment().optimizer().name(), "adamw");
  EXPECT_DOUBLE_EQ(spec.alignment().epochs(), 1.0);
  EXPECT_EQ(spec.alignment().batch().max_length(), 1024);  // TRL's default and truncation
  EXPECT_EQ(spec.alignment().batch().truncation_mode(), "keep_start");
  EXPECT_EQ(spec.sft().batch().max_length(), 256);  // from the old name max_seq_len
  EXPECT_DOUBLE_EQ(spec.alignment().dpo().beta(), 0.2);  // given values stay
  JobSpec again = spec;
  ApplyJobSpecDefaults(&again);
  EXPECT_EQ(again.DebugString(), spec.DebugString());  // idempotent
}

// A spec without L1 or merge settings gets PAFT's defaults; explicit zeros stay zeros (proto3
// optional fields), they are not mistaken for "unset".
TEST(JobSpecTest, PaftDefaultsAndExplicitZeros) {
  auto bare = ParseJobSpec(R"yaml(
base_model: /m
output_dir: /o
sft: {pool: a, world_size: 1, dataset: {path: /d}}
alignment: {pool: b, world_size: 1, dataset: {path: /p}}
)yaml");
  ASSERT_TRUE(bare.ok()) << bare.status();
  ApplyJobSpecDefaults(&*bare);
  EXPECT_DOUBLE_EQ(bare->sft().sft().l1_lambda(), kPaftL1Lambda);
  EXPECT_EQ(bare->sft().sft().l1_target(), "adapter");
  EXPECT_EQ(bare->merge().method(), "ties");
  EXPECT_DOUBLE_EQ(bare->merge().sft().density(), kPaftSftDensity);
  EXPECT_DOUBLE_EQ(bare->merge().alignment().density(), kPaftAlignmentDensity);
  EXPECT_EQ(bare->merge().merge_space(), "delta");
  EXPECT_EQ(bare->merge().output(), "model");
  EXPECT_EQ(bare->sft().seed(), 42u);
  EXPECT_TRUE(ValidateJobSpec(*bare).ok()) << ValidateJobSpec(*bare);

  auto zeros = ParseJobSpec(R"yaml(
base_model: /m
output_dir: /o
sft:
  pool: a
  world_size: 1
  dataset: {path: /d}
  sft: {l1_lambda: 0}
  optimizer: {beta1: 0, beta2: 0}
  seed: 0
alignment:
  pool: b
  world_size: 1
  dataset: {path: /p}
  simpo: {gamma: 0}
merge: {method: ties, sft: {weight: 0}, lambda: 0}
)yaml");
  ASSERT_TRUE(zeros.ok()) << zeros.status();
  ApplyJobSpecDefaults(&*zeros);
  EXPECT_EQ(zeros->sft().sft().l1_lambda(), 0);
  EXPECT_EQ(zeros->sft().optimizer().beta1(), 0);
  EXPECT_EQ(zeros->sft().optimizer().beta2(), 0);
  EXPECT_EQ(zeros->sft().seed(), 0u);
  EXPECT_EQ(zeros->alignment().simpo().gamma(), 0);
  EXPECT_DOUBLE_EQ(zeros->alignment().simpo().beta(), 2.0);
  EXPECT_EQ(zeros->merge().sft().weight(), 0);
  EXPECT_DOUBLE_EQ(zeros->merge().alignment().weight(), 1.0);
  EXPECT_EQ(zeros->merge().lambda(), 0);
  EXPECT_TRUE(ValidateJobSpec(*zeros).ok()) << ValidateJobSpec(*zeros);
  // An adapter-space merge writes both forms by default; lambda is not PEFT's.
  zeros->mutable_merge()->set_merge_space("adapter");
  zeros->mutable_merge()->clear_output();
  ApplyJobSpecDefaults(&*zeros);
  EXPECT_EQ(zeros->merge().output(), "both");
  EXPECT_THAT(ValidateJobSpec(*zeros).message(), HasSubstr("merge.merge_space: normalize, rescale and lambda"));
  zeros->mutable_merge()->set_lambda(1);
  EXPECT_TRUE(ValidateJobSpec(*zeros).ok()) << ValidateJobSpec(*zeros);
}

TEST(JobSpecTest, UnknownFieldsAndBadYamlAreRejected) {
  auto unknown = ParseJobSpec("name: x\nsft: {worldsize: 2}\n");
  ASSERT_FALSE(unknown.ok());
  EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("worldsize"));
  EXPECT_FALSE(ParseJobSpec("name: [unclosed").ok());
  EXPECT_FALSE(ParseJobSpec("- just\n- a list\n").ok());
  auto duplicate = ParseJobSpec("name: a\nname: b\n");
  ASSERT_FALSE(duplicate.ok());
  EXPECT_THAT(std::string(duplicate.status().message()), HasSubstr("name: given twice"));
  auto wrong_type = ParseJobSpec("sft: {world_size: many}\n");
  EXPECT_FALSE(wrong_type.ok());
}

TEST(JobSpecTest, QuotedScalarsStayStrings) {
  auto spec = ParseJobSpec("name: \"123\"\nbase_model: '/m'\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->name(), "123");
}

struct InvalidCase {
  const char* field;
  std::function<void(JobSpec&)> mutate;
};

class InvalidFieldTest : public ::testing::TestWithParam<InvalidCase> {};

TEST_P(InvalidFieldTest, ErrorNamesTheField) {
  JobSpec spec = Valid();
  GetParam().mutate(spec);
  absl::Status status = ValidateJobSpec(spec);
  ASSERT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << GetParam().field;
  EXPECT_THAT(std::string(status.message()), HasSubstr(std::string(GetParam().field) + ":"));
}

INSTANTIATE_TEST_SUITE_P(
    Fields, InvalidFieldTest,
    ::testing::Values(
        InvalidCase{"base_model", [](JobSpec& s) { s.clear_base_model(); }},
        InvalidCase{"output_dir", [](JobSpec& s) { s.clear_output_dir(); }},
        InvalidCase{"output_dir", [](JobSpec& s) { s.set_output_dir("jobs/relative"); }},
        InvalidCase{"base_model", [](JobSpec& s) { s.set_base_model("/data/../etc"); }},
        InvalidCase{"sft.dataset.path",
                    [](JobSpec& s) { s.mutable_sft()->mutable_dataset()->set_path("/d/../../x"); }},
        InvalidCase{"name", [](JobSpec& s) { s.set_name(std::string(300, 'x')); }},
        InvalidCase{"sft.pool", [](JobSpec& s) { s.mutable_sft()->clear_pool(); }},
        InvalidCase{"sft.world_size", [](JobSpec& s) { s.mutable_sft()->set_world_size(0); }},
        InvalidCase{"alignment.world_size",
                    [](JobSpec& s) { s.mutable_alignment()->set_world_size(5000); }},
        InvalidCase{"sft.dataset.path",
                    [](JobSpec& s) { s.mutable_sft()->mutable_dataset()->clear_path(); }},
        InvalidCase{"sft.dataset.format",
                    [](JobSpec& s) { s.mutable_sft()->mutable_dataset()->set_format("csv"); }},
        InvalidCase{"sft.objective", [](JobSpec& s) { s.mutable_sft()->mutable_dpo(); }},
        InvalidCase{"alignment.objective", [](JobSpec& s) { s.mutable_alignment()->mutable_sft(); }},
        InvalidCase{"sft.sft.l1_lambda",
                    [](JobSpec& s) { s.mutable_sft()->mutable_sft()->set_l1_lambda(-1); }},
        InvalidCase{"alignment.dpo.beta",
                    [](JobSpec& s) { s.mutable_alignment()->mutable_dpo()->set_beta(-0.1); }},
        InvalidCase{"alignment.dpo.loss_type",
                    [](JobSpec& s) { s.mutable_alignment()->mutable_dpo()->set_loss_type("kto"); }},
        InvalidCase{"alignment.dpo.label_smoothing",
                    [](JobSpec& s) {
                      s.mutable_alignment()->mutable_dpo()->set_label_smoothing(0.5);
                    }},
        InvalidCase{"sft.lora.r", [](JobSpec& s) { s.mutable_sft()->mutable_lora()->set_r(0); }},
        InvalidCase{"sft.lora.alpha",
                    [](JobSpec& s) { s.mutable_sft()->mutable_lora()->set_alpha(-1); }},
        InvalidCase{"sft.lora.dropout",
                    [](JobSpec& s) { s.mutable_sft()->mutable_lora()->set_dropout(1.0); }},
        InvalidCase{"sft.lora.target_modules",
                    [](JobSpec& s) { s.mutable_sft()->mutable_lora()->add_target_modules("fc9"); }},
        InvalidCase{"sft.optimizer.name",
                    [](JobSpec& s) { s.mutable_sft()->mutable_optimizer()->set_name("lion"); }},
        InvalidCase{"sft.optimizer.learning_rate",
                    [](JobSpec& s) { s.mutable_sft()->mutable_optimizer()->set_learning_rate(-1); }},
        InvalidCase{"sft.optimizer.beta2",
                    [](JobSpec& s) { s.mutable_sft()->mutable_optimizer()->set_beta2(1.0); }},
        InvalidCase{"sft.optimizer.lr_schedule",
                    [](JobSpec& s) { s.mutable_sft()->mutable_optimizer()->set_lr_schedule("exp"); }},
        InvalidCase{"sft.optimizer.warmup_steps",
                    [](JobSpec& s) { s.mutable_sft()->mutable_optimizer()->set_warmup_steps(-5); }},
        InvalidCase{"sft.batch.per_device_batch_size",
                    [](JobSpec& s) { s.mutable_sft()->mutable_batch()->set_per_device_batch_size(-1); }},
        InvalidCase{"sft.batch.max_length",
                    [](JobSpec& s) { s.mutable_sft()->mutable_batch()->set_max_length(4); }},
        InvalidCase{"sft.batch.max_seq_len",  // the old name, different from max_length
                    [](JobSpec& s) { s.mutable_sft()->mutable_batch()->set_max_seq_len(300); }},
        InvalidCase{"alignment.batch.truncation_mode",  // keep_end is SFT-only
                    [](JobSpec& s) {
                      s.mutable_alignment()->mutable_batch()->set_truncation_mode("keep_end");
                    }},
        InvalidCase{"sft.sft.l1_target",
                    [](JobSpec& s) { s.mutable_sft()->mutable_sft()->set_l1_target("weights"); }},
        InvalidCase{"alignment.dpo.beta",  // an explicit zero is not replaced by the default
                    [](JobSpec& s) { s.mutable_alignment()->mutable_dpo()->set_beta(0); }},
        InvalidCase{"merge.output",  // a delta-space merge has no adapter to write
                    [](JobSpec& s) { s.mutable_merge()->set_output("adapter"); }},
        InvalidCase{"merge.svd_rank",  // an option of adapter_svd only
                    [](JobSpec& s) { s.mutable_merge()->set_svd_rank(4); }},
        InvalidCase{"merge.merge_space",  // adapter space needs one rank (sft r 16, alignment 8)
                    [](JobSpec& s) {
                      s.mutable_merge()->set_merge_space("adapter");
                      s.mutable_merge()->set_output("both");
                      s.mutable_merge()->clear_normalize();
                    }},
        InvalidCase{"merge.method",  // PEFT has no breadcrumbs
                    [](JobSpec& s) {
                      s.mutable_merge()->set_merge_space("adapter");
                      s.mutable_merge()->set_output("both");
                      s.mutable_merge()->set_method("breadcrumbs");
                    }},
        InvalidCase{"alignment.precision",
                    [](JobSpec& s) { s.mutable_alignment()->set_precision("fp16"); }},
        InvalidCase{"sft.attn_implementation",
                    [](JobSpec& s) { s.mutable_sft()->set_attn_implementation("flash_attention_2"); }},
        InvalidCase{"sft.max_steps", [](JobSpec& s) { s.mutable_sft()->set_max_steps(-1); }},
        InvalidCase{"sft.epochs", [](JobSpec& s) { s.mutable_sft()->set_epochs(-2); }},
        InvalidCase{"sft.checkpoint.every_steps",
                    [](JobSpec& s) { s.mutable_sft()->mutable_checkpoint()->set_every_steps(-1); }},
        InvalidCase{"merge.method", [](JobSpec& s) { s.mutable_merge()->set_method("average"); }},
        InvalidCase{"merge.sft.density",
                    [](JobSpec& s) { s.mutable_merge()->mutable_sft()->set_density(1.5); }},
        InvalidCase{"merge.alignment.weight",
                    [](JobSpec& s) { s.mutable_merge()->mutable_alignment()->set_weight(1e9); }},
        InvalidCase{"merge.lambda", [](JobSpec& s) { s.mutable_merge()->set_lambda(-1); }},
        InvalidCase{"merge.dtype", [](JobSpec& s) { s.mutable_merge()->set_dtype("int8"); }},
        InvalidCase{"restart_budget", [](JobSpec& s) { s.set_restart_budget(-1); }}),
    [](const ::testing::TestParamInfo<InvalidCase>& info) {
      std::string name;
      for (char c : std::string(info.param.field)) name += std::isalnum(c) ? c : '_';
      return absl::StrCat(name, "_", info.index);  // a field may have several cases
    });

TEST(JobSpecTest, AllErrorsAreReportedTogether) {
  JobSpec spec = Valid();
  spec.mutable_sft()->set_world_size(0);
  spec.mutable_alignment()->clear_pool();
  absl::Status status = ValidateJobSpec(spec);
  EXPECT_THAT(std::string(status.message()), HasSubstr("sft.world_size:"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("alignment.pool:"));
}

TEST(JobSpecTest, CheckJobInputsNamesWhatIsMissing) {
  testing::TempDir dir;
  JobSpec spec = Valid();
  spec.set_base_model(dir.Join("no-model"));
  absl::Status status = CheckJobInputs(spec);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(status.message()), HasSubstr("base_model:"));

  ASSERT_TRUE(MakeDirs(dir.Join("model")).ok());
  spec.set_base_model(dir.Join("model"));
  ASSERT_TRUE(WriteFileAtomic(dir.Join("model/config.json"), R"({"model_type": "llama", "vocab_size": 8})").ok());
  status = CheckJobInputs(spec);
  EXPECT_THAT(std::string(status.message()), HasSubstr("base_model: "));
  EXPECT_THAT(std::string(status.message()), HasSubstr("'hidden_size' is required"));
}

TEST(JobSpecTest, RelativePathsResolveAgainstTheSpecFolder) {
  JobSpec spec = Valid();
  spec.set_base_model("models/base");
  spec.mutable_sft()->mutable_dataset()->set_path("data/sft.jsonl");
  ResolveRelativePaths(&spec, "/srv/specs");
  EXPECT_EQ(spec.base_model(), "/srv/specs/models/base");
  EXPECT_EQ(spec.sft().dataset().path(), "/srv/specs/data/sft.jsonl");
  EXPECT_EQ(spec.output_dir(), "/jobs/demo");  // absolute paths stay
}

TEST(JobSpecTest, PathsMustResolveInsideTheStorageRoots) {
  testing::TempDir dir;
  const std::string root = dir.Join("root");
  ASSERT_TRUE(MakeDirs(root + "/models/base").ok());
  ASSERT_TRUE(MakeDirs(dir.Join("outside")).ok());
  ASSERT_TRUE(WriteFileAtomic(root + "/sft.jsonl", "{}\n").ok());
  ASSERT_TRUE(WriteFileAtomic(dir.Join("outside/secret.jsonl"), "{}\n").ok());
  ASSERT_EQ(::symlink(dir.Join("outside").c_str(), (root + "/escape").c_str()), 0);
  JobSpec spec = Valid();
  spec.set_base_model(root + "/models/base");
  spec.set_output_dir(root + "/jobs/new/deeper");  // does not exist yet: fine
  spec.mutable_sft()->mutable_dataset()->set_path(root + "/sft.jsonl");
  spec.mutable_alignment()->mutable_dataset()->set_path(root + "/sft.jsonl");
  const std::vector<std::string> roots = {root};
  EXPECT_TRUE(CheckPathsConfined(spec, roots).ok()) << CheckPathsConfined(spec, roots);
  EXPECT_TRUE(CheckPathsConfined(spec, {}).ok());  // no roots: no confinement

  JobSpec outside = spec;
  outside.mutable_sft()->mutable_dataset()->set_path(dir.Join("outside/secret.jsonl"));
  absl::Status status = CheckPathsConfined(outside, roots);
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(status.message()), HasSubstr("sft.dataset.path: "));
  // A symlink inside the root that leads out of it.
  JobSpec symlinked = spec;
  symlinked.mutable_alignment()->mutable_dataset()->set_path(root + "/escape/secret.jsonl");
  status = CheckPathsConfined(symlinked, roots);
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(status.message()), HasSubstr("alignment.dataset.path: "));
  EXPECT_THAT(std::string(status.message()), HasSubstr("resolves to '" + dir.Join("outside")));
  // An output folder to be made under a symlink that leads out.
  JobSpec output = spec;
  output.set_output_dir(root + "/escape/jobs/x");
  EXPECT_EQ(CheckPathsConfined(output, roots).code(), absl::StatusCode::kPermissionDenied);
  // A root's sibling with the root's name as a prefix is outside.
  ASSERT_TRUE(MakeDirs(dir.Join("root2")).ok());
  JobSpec sibling = spec;
  sibling.set_base_model(dir.Join("root2"));
  EXPECT_EQ(CheckPathsConfined(sibling, roots).code(), absl::StatusCode::kPermissionDenied);
}

TEST(JobSpecTest, AnExistingOutputIsNotOverwrittenUnlessAsked) {
  testing::TempDir dir;
  ASSERT_TRUE(MakeDirs(dir.Join("model")).ok());
  ASSERT_TRUE(WriteFileAtomic(dir.Join("model/config.json"),
                              R"({"model_type": "llama", "vocab_size": 8, "hidden_size": 8,
                                  "intermediate_size": 16, "num_hidden_layers": 1,
                                  "num_attention_heads": 2})")
                  .ok());
  ASSERT_TRUE(WriteFileAtomic(dir.Join("model/model.safetensors"), "x").ok());
  ASSERT_TRUE(WriteFileAtomic(dir.Join("d.jsonl"), "{}\n").ok());
  JobSpec spec = Valid();
  spec.set_base_model(dir.Join("model"));
  spec.mutable_sft()->mutable_dataset()->set_path(dir.Join("d.jsonl"));
  spec.mutable_alignment()->mutable_dataset()->set_path(dir.Join("d.jsonl"));
  spec.set_output_dir(dir.Join("out"));
  EXPECT_TRUE(CheckJobInputs(spec).ok()) << CheckJobInputs(spec);
  ASSERT_TRUE(MakeDirs(dir.Join("out")).ok());
  EXPECT_TRUE(CheckJobInputs(spec).ok());  // exists but empty
  ASSERT_TRUE(WriteFileAtomic(dir.Join("out/old.txt"), "previous job").ok());
  absl::Status status = CheckJobInputs(spec);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(status.message()), HasSubstr("output_dir: "));
  EXPECT_THAT(std::string(status.message()), HasSubstr("overwrite_output"));
  spec.set_overwrite_output(true);
  EXPECT_TRUE(CheckJobInputs(spec).ok()) << CheckJobInputs(spec);
}

TEST(JobSpecTest, HostileBytesAreBadInputNotCrashes) {
  // Found by fuzzing (fuzz/corpus/job_spec/crash-invalid-utf8): invalid UTF-8 made the JSON
  // library throw out of ParseJobSpec.
  auto spec = ParseJobSpec("name: \"bad \x89 byte\"\n");
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseJobSpec("? [a, b]\n: 1\n").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace paft
