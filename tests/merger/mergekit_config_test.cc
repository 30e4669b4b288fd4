#include "merger/mergekit_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace paft::merger {
namespace {

using ::testing::HasSubstr;

TEST(MergekitConfigTest, MapsAMergekitConfig) {
  auto r = ParseMergekitConfig(R"yaml(
models:
  - model: sft
    parameters: {weight: 0.7, density: 0.3}
  - model: /abs/dpo
    parameters:
      weight: 0.3
      density: 0.5
      gamma: 0.02
  - model: base
merge_method: breadcrumbs_ties
base_model: base
parameters:
  normalize: true
  int8_mask: true
  lambda: 0.9
  seed: 11
dtype: bfloat16
)yaml",
                               "/cfg");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->base_model(), "/cfg/base");
  ASSERT_EQ(r->inputs_size(), 2);  // the base listed among the models is skipped
  EXPECT_EQ(r->inputs(0).path(), "/cfg/sft");
  EXPECT_EQ(r->inputs(1).path(), "/abs/dpo");
  EXPECT_DOUBLE_EQ(r->inputs(0).params().weight(), 0.7);
  EXPECT_DOUBLE_EQ(r->inputs(0).params().density(), 0.3);
  EXPECT_FALSE(r->inputs(0).params().has_gamma());
  EXPECT_DOUBLE_EQ(r->inputs(1).params().gamma(), 0.02);
  EXPECT_EQ(r->spec().method(), "breadcrumbs_ties");
  EXPECT_TRUE(r->spec().has_normalize() && r->spec().normalize());
  EXPECT_FALSE(r->spec().has_rescale());
  EXPECT_DOUBLE_EQ(r->spec().lambda(), 0.9);
  EXPECT_EQ(r->spec().seed(), 11u);
  EXPECT_EQ(r->spec().dtype(), "bfloat16");
}

// mergekit's global `parameters` hold every model's defaults (ConfigReader.parameter reads the
// model's own value first): here density for both, weight for the one that sets none.
TEST(MergekitConfigTest, TopLevelParametersAreEveryModelsDefaults) {
  auto r = ParseMergekitConfig(R"yaml(
merge_method: ties
base_model: base
models:
  - model: sft
    parameters: {weight: 0.7}
  - model: dpo
  - model: base
parameters: {density: 0.5, weight: 0.3, gamma: 0.05, normalize: false}
)yaml",
                               "");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->inputs_size(), 2);
  EXPECT_DOUBLE_EQ(r->inputs(0).params().weight(), 0.7);
  EXPECT_DOUBLE_EQ(r->inputs(1).params().weight(), 0.3);
  for (const auto& input : r->inputs()) {
    EXPECT_DOUBLE_EQ(input.params().density(), 0.5);
    EXPECT_DOUBLE_EQ(input.params().gamma(), 0.05);
  }
  EXPECT_TRUE(r->spec().has_normalize() && !r->spec().normalize());
  // A bad global default is reported under its own key.
  auto bad = ParseMergekitConfig(
      "merge_method: ties\nbase_model: b\nmodels: [{model: a, parameters: {weight: 1}}]\n"
      "parameters: {density: 2}\n",
      "");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("parameters.density: must be in (0, 1]"));
}

TEST(MergekitConfigTest, OutDtypeIsTheOutputsDtype) {
  const std::string models =
      "merge_method: ties\nbase_model: b\nmodels: [{model: a, parameters: {weight: 1}}]\n";
  auto both = ParseMergekitConfig(models + "dtype: float32\nout_dtype: bfloat16\n", "");
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_EQ(both->spec().dtype(), "bfloat16");
  auto only = ParseMergekitConfig(models + "out_dtype: float16\n", "");
  ASSERT_TRUE(only.ok()) << only.status();
  EXPECT_EQ(only->spec().dtype(), "float16");
  auto bad = ParseMergekitConfig(models + "out_dtype: int8\n", "");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("out_dtype"));
}

// mergekit's linear needs no base_model: the first model is the output's template.
TEST(MergekitConfigTest, LinearWithoutABaseModel) {
  auto r = ParseMergekitConfig(
      "merge_method: linear\nmodels:\n  - model: a\n    parameters: {weight: 0.3}\n"
      "  - model: b\n    parameters: {weight: 0.7}\n",
      "/cfg");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->inputs_size(), 2);
  EXPECT_EQ(r->base_model(), "/cfg/a");
  EXPECT_EQ(r->inputs(0).path(), "/cfg/a");
  auto ties = ParseMergekitConfig("merge_method: ties\nmodels: [{model: a, parameters: {weight: 1}}]\n", "");
  EXPECT_THAT(std::string(ties.status().message()), HasSubstr("every method but linear"));
}

TEST(MergekitConfigTest, ErrorsNameTheKey) {
  auto expect = [](const std::string& yaml, const std::string& fragment) {
    auto r = ParseMergekitConfig(yaml, "");
    ASSERT_FALSE(r.ok()) << yaml;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(fragment)) << yaml;
  };
  expect("base_model: b\nmodels: [{model: a, parameters: {weight: 1}}]\n", "merge_method");
  expect("merge_method: nope\nbase_model: b\nmodels: [{model: a, parameters: {weight: 1}}]\n",
         "unknown merge method 'nope'");
  expect("merge_method: ties\nmodels: [{model: a, parameters: {weight: 1}}]\n", "base_model");
  expect("merge_method: ties\nbase_model: b\nmodels: [{model: a}]\n",
         "models[0].parameters.weight");
  expect("merge_method: ties\nbase_model: b\nmodels: [{model: a, parameters: {weight: x}}]\n",
         "models[0].parameters.weight");
  expect("merge_method: ties\nbase_model: b\nmodels: [{model: a, parameters: {weight: [0, 1]}}]\n",
         "per-layer gradients");
  expect("merge_method: ties\nbase_model: b\nmodels: [{model: a, parameters: {weight: 1, "
         "density: 1.5}}]\n",
         "models[0].parameters.density");
  expect("merge_method: ties\nbase_model: b\nmodels: [{model: a, parameters: {weight: 1, "
         "dens: 1}}]\n",
         "models[0].parameters.dens: unknown key");
  expect("merge_method: ties\nbase_model: b\nslices: []\nmodels: [{model: a, parameters: "
         "{weight: 1}}]\n",
         "slices: unknown key");
  expect("merge_method: ties\nbase_model: b\nmodels: [{model: b}]\n", "no model other than");
  expect("merge_method: ties\nbase_model: b\ndtype: int4\nmodels: [{model: a, parameters: "
         "{weight: 1}}]\n",
         "dtype");
  expect("merge_method: [ties\n", "not valid YAML");
}

}  // namespace
}  // namespace paft::merger
