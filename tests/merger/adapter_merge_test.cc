// Merging LoRA adapters in adapter space (PEFT's add_weighted_adapter) and by SVD, against
// goldens from tests/merger/golden/make_peft_merge_goldens.py (a torch reference of PEFT's
// merge_utils); the merged model against base + B A by loops; DARE by its statistics.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "common/file_util.h"
#include "common/safetensors.h"
#include "merger/adapter_merge.h"
#include "merger/inputs.h"
#include "merger/merger.h"
#include "merger/peft_combine.h"
#include "merger/svd.h"
#include "nlohmann/json.hpp"
#include "tests/testing/temp_dir.h"

namespace paft::merger {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

const std::string kGolden = std::string(PAFT_MERGER_GOLDEN_DIR) + "/peft_merge";

json Cases() {
  std::ifstream in(kGolden + "/cases.json");
  std::stringstream text;
  text << in.rdbuf();
  return json::parse(text.str())["cases"];
}

paft::v1::MergeRequest RequestFor(const json& c) {
  paft::v1::MergeRequest r;
  r.set_merge_id(c["name"].get<std::string>());
  r.set_base_model(kGolden + "/base");
  for (size_t i = 0; i < c["inputs"].size(); ++i) {
    auto* input = r.add_inputs();
    input->set_path(kGolden + "/" + c["inputs"][i].get<std::string>());
    input->mutable_params()->set_weight(c["weights"][i].get<double>());
    input->mutable_params()->set_density(c["density"].get<double>());
  }
  r.mutable_spec()->set_method(c["method"].get<std::string>());
  r.mutable_spec()->set_merge_space(c["merge_space"].get<std::string>());
  r.mutable_spec()->set_svd_rank(c["svd_rank"].get<int>());
  if (!c["svd_clamp"].is_null()) r.mutable_spec()->set_svd_clamp(c["svd_clamp"].get<double>());
  return r;
}

std::vector<float> Floats(const SafetensorsFile& file, const std::string& name) {
  const TensorInfo* info = file.Find(name);
  EXPECT_NE(info, nullptr) << name;
  if (info == nullptr) return {};
  std::vector<float> out(static_cast<size_t>(info->numel()));
  ReadRangeAsFloat(file, *info, 0, info->numel(), out.data());
  return out;
}

TEST(AdapterMergeTest, MatchesTheTorchReferenceOfPeft) {
  const json cases = Cases();
  ASSERT_EQ(cases.size(), 8u);
  for (const json& c : cases) {
    SCOPED_TRACE(c["name"].get<std::string>());
    testing::TempDir dir;
    absl::Status status = WriteMergedAdapter(RequestFor(c), dir.path());
    ASSERT_TRUE(status.ok()) << status;
    auto file = SafetensorsFile::Open(dir.Join("adapter_model.safetensors"));
    ASSERT_TRUE(file.ok()) << file.status();
    EXPECT_EQ((*file)->tensors().size(), 2 * c["modules"].size());
    for (const auto& [module, expected] : c["modules"].items()) {
      for (const char* factor : {"A", "B"}) {
        const std::string name = "base_model.model." + module + ".lora_" + factor + ".weight";
        const std::vector<float> got = Floats(**file, name);
        const auto want = expected[factor].get<std::vector<double>>();
        ASSERT_EQ(got.size(), want.size()) << name;
        EXPECT_EQ((*file)->Find(name)->shape,
                  expected[std::string(factor) + "_shape"].get<std::vector<int64_t>>());
        for (size_t i = 0; i < want.size(); ++i) {
          EXPECT_NEAR(got[i], want[i], 2e-5 * (1 + std::fabs(want[i]))) << name << "[" << i << "]";
        }
      }
    }
    // The config says scale 1 (alpha = r), no rsLoRA, the union of the adapted modules.
    auto config_text = ReadFileToString(dir.Join("adapter_config.json"));
    ASSERT_TRUE(config_text.ok());
    const json config = json::parse(*config_text);
    EXPECT_EQ(config["r"], c["rank"]);
    EXPECT_EQ(config["lora_alpha"].get<double>(), c["rank"].get<double>());
    EXPECT_EQ(config["use_rslora"], false);
    auto parsed = ParseAdapterConfig(*config_text);
    ASSERT_TRUE(parsed.ok());
    EXPECT_DOUBLE_EQ(parsed->scale(), 1.0);
  }
}

// Output "both": the adapter folder, and the model = base + B A of that adapter (loops here).
TEST(AdapterMergeTest, BothOutputsAndTheModelIsTheBasePlusTheMergedAdapter) {
  const json c = Cases()[1];  // adapter_ties
  testing::TempDir dir;
  paft::v1::MergeRequest request = RequestFor(c);
  request.set_output_dir(dir.Join("model"));
  request.set_adapter_output_dir(dir.Join("adapter"));
  request.mutable_spec()->set_output("both");
  MergeProgress progress;
  absl::Status status = RunMerge(request, &progress);
  ASSERT_TRUE(status.ok()) << status;
  auto adapter = SafetensorsFile::Open(dir.Join("adapter/adapter_model.safetensors"));
  auto base = SafetensorsFile::Open(kGolden + "/base/model.safetensors");
  auto model = SafetensorsFile::Open(dir.Join("model/model.safetensors"));
  ASSERT_TRUE(adapter.ok() && base.ok() && model.ok());
  EXPECT_TRUE(IsRegularFile(dir.Join("model/config.json")));
  for (const TensorInfo& t : (*base)->tensors()) {
    const std::vector<float> b = Floats(**base, t.name), m = Floats(**model, t.name);
    const std::string module = t.name.substr(0, t.name.size() - 7);  // ".weight"
    const TensorInfo* a_info = (*adapter)->Find("base_model.model." + module + ".lora_A.weight");
    if (a_info == nullptr) {
      EXPECT_EQ(m, b) << t.name;  // not adapted
      continue;
    }
    const std::vector<float> a = Floats(**adapter, a_info->name);
    const std::vector<float> bb = Floats(**adapter, "base_model.model." + module + ".lora_B.weight");
    const int64_t out = t.shape[0], in = t.shape[1], r = a_info->shape[0];
    for (int64_t o = 0; o < out; ++o) {
      for (int64_t i = 0; i < in; ++i) {
        double want = b[o * in + i];
        for (int64_t k = 0; k < r; ++k) want += static_cast<double>(bb[o * r + k]) * a[k * in + i];
        EXPECT_NEAR(m[o * in + i], want, 1e-5 * (1 + std::fabs(want))) << t.name;
      }
    }
  }
  // The same request again finds its outputs (their paft_merge.json) and succeeds; after a
  // crash between the two renames (the adapter in place, the model not), its retry finishes the
  // model from the adapter already written. Another request is refused.
  EXPECT_TRUE(RunMerge(request, &progress).ok());
  ASSERT_TRUE(RemoveAll(dir.Join("model")).ok());
  ASSERT_TRUE(RunMerge(request, &progress).ok());
  auto again = SafetensorsFile::Open(dir.Join("model/model.safetensors"));
  ASSERT_TRUE(again.ok());
  for (const TensorInfo& t : (*base)->tensors()) {
    EXPECT_EQ(Floats(**again, t.name), Floats(**model, t.name)) << t.name;
  }
  paft::v1::MergeRequest other = request;
  other.mutable_inputs(0)->mutable_params()->set_weight(0.5);
  status = RunMerge(other, &progress);
  EXPECT_EQ(status.code(), absl::StatusCode::kAlreadyExists) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("already exists"));
  auto left = ListDir(dir.path());
  ASSERT_TRUE(left.ok());
  EXPECT_EQ(left->size(), 2u);  // model and adapter, no temp folder
}

TEST(AdapterMergeTest, RefusalsNameWhatIsWrong) {
  const json c = Cases()[0];  // adapter_linear of a1 (r 3) and a2 (r 3)
  testing::TempDir dir;
  auto error = [&](paft::v1::MergeRequest r) {
    return std::string(WriteMergedAdapter(r, dir.path()).message());
  };
  paft::v1::MergeRequest r = RequestFor(c);
  r.mutable_inputs(1)->set_path(kGolden + "/a3");  // r 2
  EXPECT_THAT(error(r), HasSubstr("needs adapters of one rank"));
  r = RequestFor(c);
  r.mutable_inputs(1)->set_path(kGolden + "/base");
  EXPECT_THAT(error(r), HasSubstr("this is a full model"));
  r = RequestFor(c);
  r.mutable_spec()->set_normalize(true);
  EXPECT_THAT(error(r), HasSubstr("normalize: not an option of PEFT"));
  r = RequestFor(c);
  r.mutable_spec()->set_method("breadcrumbs");
  EXPECT_THAT(error(r), HasSubstr("not one of PEFT's combination types"));
  r = RequestFor(Cases()[5]);  // svd
  r.mutable_spec()->set_svd_rank(5);  // v_proj is 4 x 8
  EXPECT_THAT(error(r), HasSubstr("rank 5 is outside [1, 4]"));
  // A delta-space merge writes no adapter.
  r = RequestFor(c);
  r.mutable_spec()->set_merge_space("delta");
  r.mutable_spec()->set_output("adapter");
  r.set_adapter_output_dir(dir.Join("x"));
  MergeProgress progress;
  EXPECT_THAT(std::string(RunMerge(r, &progress).message()), HasSubstr("full-rank deltas"));
}

// DARE keeps each entry with probability density and divides the kept ones by it (PEFT's
// random_pruning with rescale): over 200k entries, the kept fraction within 1% of density.
TEST(AdapterMergeTest, DareKeepsTheDensityAndRescales) {
  std::vector<PeftTensor> inputs(1);
  inputs[0].values.assign(200000, 1.0f);
  inputs[0].weight = 1.0;
  inputs[0].density = 0.3;
  inputs[0].stream = 7;
  std::vector<float> out;
  PeftCombine(PeftMethod::kDareLinear, inputs, &out);
  int64_t kept = 0;
  for (float v : out) {
    if (v != 0) {
      ++kept;
      EXPECT_FLOAT_EQ(v, 1.0f / 0.3f);
    }
  }
  EXPECT_NEAR(static_cast<double>(kept) / out.size(), 0.3, 0.01);
}

TEST(SvdTest, ReconstructsALowRankMatrixAndOrdersSingularValues) {
  // M = u1 v1^T * 3 + u2 v2^T * 1 (orthonormal u, v): singular values 3, 1, 0...
  const int64_t rows = 4, cols = 3;
  const double u1[4] = {0.5, 0.5, 0.5, 0.5}, u2[4] = {0.5, -0.5, 0.5, -0.5};
  const double v1[3] = {1, 0, 0}, v2[3] = {0, 0.6, 0.8};
  std::vector<float> m(rows * cols);
  for (int64_t o = 0; o < rows; ++o) {
    for (int64_t i = 0; i < cols; ++i) m[o * cols + i] = static_cast<float>(3 * u1[o] * v1[i] + u2[o] * v2[i]);
  }
  auto svd = TruncatedSvdOf(m, rows, cols, 2);
  ASSERT_TRUE(svd.ok()) << svd.status();
  EXPECT_NEAR(svd->singular_values[0], 3, 1e-6);
  EXPECT_NEAR(svd->singular_values[1], 1, 1e-6);
  EXPECT_NEAR(svd->singular_values[2], 0, 1e-6);
  for (int64_t o = 0; o < rows; ++o) {
    for (int64_t i = 0; i < cols; ++i) {
      double x = 0;
      for (int64_t j = 0; j < 2; ++j) x += svd->left[o * 2 + j] * svd->right[j * cols + i];
      EXPECT_NEAR(x, m[o * cols + i], 1e-6);
    }
  }
  EXPECT_NEAR(svd->right[0], 1, 1e-6);  // sign convention: largest entry of each row positive
  EXPECT_NEAR(svd->right[cols + 2], 0.8, 1e-6);
  EXPECT_FALSE(TruncatedSvdOf(m, rows, cols, 4).ok());
}

}  // namespace
}  // namespace paft::merger
