// What an agent's registration carries: its slots' device descriptions, kept per slot, and
// descriptions that do not match the slots refused by field.
#include "absl/strings/str_cat.h"
#include "tests/coordinator/job_manager_fixture.h"

namespace paft::coordinator {
namespace {

TEST_F(JobManagerTest, DeviceInfoIsKeptPerSlotAndRefusedWhenItDoesNotMatch) {
  paft::v1::RegisterWorkerRequest request;
  request.set_name("g1");
  request.set_pool("sft");
  request.set_devices(2);
  request.set_address("g1.local");
  for (int i = 0; i < 2; ++i) {
    auto* device = request.add_device_info();
    device->set_name(absl::StrCat("cuda:", i));
    device->set_model("NVIDIA H100 80GB HBM3");
    device->set_memory_bytes(int64_t{85} << 30);
  }
  ASSERT_TRUE(manager_->RegisterWorker(request).ok());
  const auto listed = registry_->List("sft");
  ASSERT_EQ(listed.size(), 1u);
  ASSERT_EQ(listed[0].device_info_size(), 2);
  EXPECT_EQ(listed[0].device_info(1).name(), "cuda:1");
  EXPECT_EQ(listed[0].device_info(1).memory_bytes(), int64_t{85} << 30);
  // One entry for two slots, or a negative memory: refused, naming the field.
  paft::v1::RegisterWorkerRequest short_info = request;
  short_info.mutable_device_info()->RemoveLast();
  auto refused = manager_->RegisterWorker(short_info);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("device_info"), std::string::npos);
  paft::v1::RegisterWorkerRequest negative = request;
  negative.mutable_device_info(0)->set_memory_bytes(-1);
  EXPECT_FALSE(manager_->RegisterWorker(negative).ok());
}

}  // namespace
}  // namespace paft::coordinator
