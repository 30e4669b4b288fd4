#include "merger/inspect.h"

#include <gtest/gtest.h>

#include <cstring>

#include "common/file_util.h"
#include "common/safetensors.h"
#include "tests/testing/temp_dir.h"

namespace paft::merger {
namespace {

void Write(const std::string& dir, const std::vector<float>& w) {
  ASSERT_TRUE(MakeDirs(dir).ok());
  TensorData t{{"w", DType::kF32, {static_cast<int64_t>(w.size())}},
               std::vector<uint8_t>(w.size() * 4)};
  std::memcpy(t.bytes.data(), w.data(), t.bytes.size());
  TensorData ids{{"ids", DType::kI32, {1}}, std::vector<uint8_t>(4)};
  ASSERT_TRUE(WriteSafetensors(JoinPath(dir, "model.safetensors"), {t, ids}).ok());
}

TEST(InspectTest, DensityNormsAndSignConflicts) {
  testing::TempDir dir;
  Write(dir.Join("base"), {1, 1, 1, 1, 1});
  Write(dir.Join("dense"), {2, 0, 1.5, 0.5, 3});   // deltas 1, -1, 0.5, -0.5, 2
  Write(dir.Join("sparse"), {1, 2, 1, 0.25, 1});  // deltas 0, 1, 0, -0.75, 0
  auto report = InspectDeltas(dir.Join("base"), {dir.Join("dense"), dir.Join("sparse")}, {});
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_EQ(report->tensors.size(), 1u);  // integer buffers are skipped
  const TensorReport& t = report->tensors[0];
  EXPECT_DOUBLE_EQ(t.inputs[0].density(), 1.0);
  EXPECT_DOUBLE_EQ(t.inputs[1].density(), 0.4);
  EXPECT_DOUBLE_EQ(t.inputs[0].l1, 5.0);
  EXPECT_DOUBLE_EQ(t.inputs[0].l2_squared, 1 + 1 + 0.25 + 0.25 + 4);
  EXPECT_DOUBLE_EQ(t.inputs[1].l1, 1.75);
  EXPECT_EQ(t.sign_conflicts, 1);  // entry 1: -1 vs +1; entry 3 agrees (both negative)
  EXPECT_EQ(report->total.inputs[1].nonzero, 2);
  // An absolute threshold above 0.6 hides the small deltas...
  auto coarse = InspectDeltas(dir.Join("base"), {dir.Join("dense"), dir.Join("sparse")}, {0.6, 0});
  EXPECT_DOUBLE_EQ(coarse->tensors[0].inputs[0].density(), 0.6);
  EXPECT_DOUBLE_EQ(coarse->tensors[0].inputs[1].density(), 0.4);
  // ... and a relative one scales with each input's largest |delta| (2 and 1): 0.3 of it is
  // 0.6 for the dense input and 0.3 for the sparse one.
  auto relative = InspectDeltas(dir.Join("base"), {dir.Join("dense"), dir.Join("sparse")}, {0, 0.3});
  EXPECT_DOUBLE_EQ(relative->tensors[0].inputs[0].density(), 0.6);
  EXPECT_DOUBLE_EQ(relative->tensors[0].inputs[1].density(), 0.4);
  EXPECT_DOUBLE_EQ(relative->tensors[0].inputs[0].max_abs, 2.0);
  EXPECT_NE(FormatReport(*report, {"a", "b"}, false).find("total"), std::string::npos);
  EXPECT_NE(ReportToJson(*report, {"a", "b"}, {}).find("\"sign_conflicts\": 1"), std::string::npos);
}

// Interference as ties merges, by hand: density 0.6 keeps 3 of 5 entries per delta.
//   dense  deltas 1, -1, 0.5, -0.5, 2  -> trimmed 1, -1, 0, 0, 2      (mass 5)
//   sparse deltas 0,  1, 0, -0.75, 0   -> trimmed 0,  1, 0, -0.75, 0  (mass 1.75)
// Only entry 1 is kept by both, with opposite signs: one shared entry, one conflict, which the
// weights decide (weights 1, 2: sum +1, sparse wins; weights 3, 1: sum -2, dense wins).
TEST(InspectTest, InterferenceTrimsElectsAndCountsConflicts) {
  testing::TempDir dir;
  Write(dir.Join("base"), {1, 1, 1, 1, 1});
  Write(dir.Join("dense"), {2, 0, 1.5, 0.5, 3});
  Write(dir.Join("sparse"), {1, 2, 1, 0.25, 1});
  const std::vector<std::string> inputs = {dir.Join("dense"), dir.Join("sparse")};
  auto report = InspectDeltas(dir.Join("base"), inputs, {}, {0.6, {1, 2}});
  ASSERT_TRUE(report.ok()) << report.status();
  const Interference& x = report->tensors[0].interference;
  EXPECT_EQ(x.shared, 1);
  EXPECT_EQ(x.conflicts, 1);
  EXPECT_EQ(x.conflicts_won, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(x.mass, (std::vector<double>{5, 1.75}));
  EXPECT_EQ(x.kept_mass, (std::vector<double>{4, 1.75}));
  // Elected signs +, +, + (a zero sum elects +), -, +: dense loses entry 1, sparse keeps both.
  EXPECT_EQ(x.elected_mass, (std::vector<double>{3, 1.75}));
  auto flipped = InspectDeltas(dir.Join("base"), inputs, {}, {0.6, {3, 1}});
  ASSERT_TRUE(flipped.ok());
  EXPECT_EQ(flipped->total.interference.conflicts_won, (std::vector<int64_t>{1, 0}));
  EXPECT_EQ(flipped->total.interference.elected_mass, (std::vector<double>{4, 0.75}));
  // The tensor "w" is no decoder layer's: its sums are "other", and the total's.
  ASSERT_EQ(report->layers.size(), 1u);
  EXPECT_EQ(report->layers[0].name, "other");
  EXPECT_EQ(report->layers[0].interference.elected_mass, x.elected_mass);
  EXPECT_NE(FormatReport(*report, {"a", "b"}, true).find("interference as ties merges"),
            std::string::npos);
  EXPECT_NE(ReportToJson(*report, {"a", "b"}, {}).find("\"conflicts_won\""), std::string::npos);
  // Not measured unless asked; refused when it cannot be.
  auto plain = InspectDeltas(dir.Join("base"), inputs, {});
  EXPECT_TRUE(plain->total.interference.empty());
  EXPECT_FALSE(InspectDeltas(dir.Join("base"), inputs, {}, {1.5, {}}).ok());
  EXPECT_FALSE(InspectDeltas(dir.Join("base"), inputs, {}, {0.5, {1}}).ok());
  EXPECT_FALSE(InspectDeltas(dir.Join("base"), {inputs[0]}, {}, {0.5, {}}).ok());
}

// A LoRA adapter: the density of its factors and of its delta s B A are reported apart.
TEST(InspectTest, AdapterFactorsAndDeltaDensities) {
  testing::TempDir dir;
  const std::string name = "model.layers.0.self_attn.q_proj.weight";
  ASSERT_TRUE(MakeDirs(dir.Join("base")).ok());
  TensorData w{{name, DType::kF32, {2, 4}}, std::vector<uint8_t>(32, 0)};
  ASSERT_TRUE(WriteSafetensors(dir.Join("base/model.safetensors"), {w}).ok());
  ASSERT_TRUE(MakeDirs(dir.Join("adapter")).ok());
  const std::vector<float> a = {1, 0.0001f, 0, -2}, b = {3, 0};  // A [1, 4], B [2, 1]
  TensorData ta{{"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", DType::kF32, {1, 4}},
                std::vector<uint8_t>(16)};
  TensorData tb{{"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", DType::kF32, {2, 1}},
                std::vector<uint8_t>(8)};
  std::memcpy(ta.bytes.data(), a.data(), 16);
  std::memcpy(tb.bytes.data(), b.data(), 8);
  ASSERT_TRUE(WriteSafetensors(dir.Join("adapter/adapter_model.safetensors"), {ta, tb}).ok());
  ASSERT_TRUE(WriteFileAtomic(dir.Join("adapter/adapter_config.json"),
                              R"({"r": 1, "lora_alpha": 1, "peft_type": "LORA"})").ok());
  auto report = InspectDeltas(dir.Join("base"), {dir.Join("adapter")}, {0, 1e-3});
  ASSERT_TRUE(report.ok()) << report.status();
  // Factors: A keeps 1 and -2 (0.0001 is under 1e-3 * 2), B keeps 3: 3 of 6.
  EXPECT_EQ(report->total.factors[0].numel, 6);
  EXPECT_DOUBLE_EQ(report->total.factors[0].density(), 0.5);
  // Delta [[3, 0.0003, 0, -6], [0, 0, 0, 0]]: 2 of 8 above 1e-3 * 6.
  EXPECT_DOUBLE_EQ(report->total.inputs[0].density(), 0.25);
  EXPECT_NE(ReportToJson(*report, {"x"}, {0, 1e-3}).find("\"factors\""), std::string::npos);
  ASSERT_EQ(report->layers.size(), 1u);  // model.layers.0.*: layer 0, no "other"
  EXPECT_EQ(report->layers[0].name, "layer 0");
  EXPECT_EQ(report->layers[0].factors[0].numel, 6);
}

}  // namespace
}  // namespace paft::merger
