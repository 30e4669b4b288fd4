// The agent's slots from the devices it sees: one per GPU by default, CPU slots without GPUs, and
// a --devices beyond the visible GPUs refused.
#include "worker/device_slots.h"

#include <gtest/gtest.h>

namespace paft::worker {
namespace {

std::vector<paft::trainer::CudaDevice> Gpus(int n) {
  std::vector<paft::trainer::CudaDevice> gpus;
  for (int i = 0; i < n; ++i) gpus.push_back({i, "NVIDIA H100 80GB HBM3", int64_t{85} << 30, 9, 0});
  return gpus;
}

TEST(DeviceSlotsTest, WithoutGpusTheDefaultIsOneCpuSlot) {
  auto slots = ResolveDeviceSlots(0, {});
  ASSERT_TRUE(slots.ok()) << slots.status();
  ASSERT_EQ(slots->size(), 1u);
  EXPECT_EQ((*slots)[0].name(), "cpu:0");
  EXPECT_EQ((*slots)[0].memory_bytes(), 0);
  auto three = ResolveDeviceSlots(3, {});
  ASSERT_TRUE(three.ok());
  EXPECT_EQ(three->size(), 3u);
  EXPECT_EQ((*three)[2].name(), "cpu:2");
}

TEST(DeviceSlotsTest, EveryVisibleGpuByDefaultWithItsModelAndMemory) {
  auto slots = ResolveDeviceSlots(0, Gpus(8));
  ASSERT_TRUE(slots.ok()) << slots.status();
  ASSERT_EQ(slots->size(), 8u);
  EXPECT_EQ((*slots)[7].name(), "cuda:7");
  EXPECT_EQ((*slots)[7].model(), "NVIDIA H100 80GB HBM3");
  EXPECT_EQ((*slots)[7].memory_bytes(), int64_t{85} << 30);
  auto two = ResolveDeviceSlots(2, Gpus(8));
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(two->size(), 2u);
}

TEST(DeviceSlotsTest, MoreSlotsThanGpusOrANegativeCountIsRefused) {
  auto over = ResolveDeviceSlots(4, Gpus(2));
  ASSERT_FALSE(over.ok());
  EXPECT_NE(over.status().message().find("--devices=4"), std::string::npos);
  EXPECT_NE(over.status().message().find("2 CUDA device"), std::string::npos);
  EXPECT_FALSE(ResolveDeviceSlots(-1, {}).ok());
}

}  // namespace
}  // namespace paft::worker
