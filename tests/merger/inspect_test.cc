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
  auto report = InspectDeltas(dir.Join("base"), {dir.Join("dense"), dir.Join("sparse")}, 0.0);
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_EQ(report->tensors.size(), 1u);  // integer buffers are skipped
  const TensorReport& t = report->tensors[0];
  EXPECT_DOUBLE_EQ(t.inputs[0].density(), 1.0);
  EXPECT_DOUBLE_EQ(t.inputs[1].density(), 0.4);
  EXPECT_DOUBLE_EQ(t.inputs[0].l1, 5.0);
  EXPECT_DOUBLE_EQ(t.inputs[0].l2_squared, 1 + 1 + 0.25 + 0.25 + 4);
  EXPECT_DOUBLE_EQ(t.inputs[1].l1, 1.75);
  EXPECT_EQ(t.sign_conflicts, 1);  // entry 1: -1 vs +1; entry 3 agrees (both negative)
  EXPECT_EQ(report->total.inputs[1].above_epsilon, 2);
  // A threshold above 0.6 hides the small deltas.
  auto coarse = InspectDeltas(dir.Join("base"), {dir.Join("dense"), dir.Join("sparse")}, 0.6);
  EXPECT_DOUBLE_EQ(coarse->tensors[0].inputs[0].density(), 0.6);
  EXPECT_DOUBLE_EQ(coarse->tensors[0].inputs[1].density(), 0.4);
  EXPECT_NE(FormatReport(*report, {"a", "b"}, false).find("total"), std::string::npos);
  EXPECT_NE(ReportToJson(*report, {"a", "b"}).find("\"sign_conflicts\": 1"), std::string::npos);
}

}  // namespace
}  // namespace paft::merger
