// The worker registry on its own: leases, gang allocation, device occupancy and the per-worker
// assignment queues the streams drain.
#include "coordinator/worker_registry.h"

#include <gtest/gtest.h>


#include "absl/time/clock.h"

namespace paft::coordinator {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);

paft::v1::RegisterWorkerRequest Agent(const std::string& name, const std::string& pool,
                                      int devices) {
  paft::v1::RegisterWorkerRequest request;
  request.set_name(name);
  request.set_pool(pool);
  request.set_devices(devices);
  request.set_address(name + ".local");
  return request;
}

paft::v1::Assignment Stop(const std::string& task_id) {
  paft::v1::Assignment a;
  a.mutable_stop()->set_task_id(task_id);
  return a;
}

TEST(WorkerRegistryTest, ARegistrationUnderTheSameNameReplacesTheOldOne) {
  WorkerRegistry registry(absl::Seconds(10));
  const std::string first = registry.Register(Agent("n1", "sft", 2), kT0);
  const std::string second = registry.Register(Agent("n1", "sft", 4), kT0);
  EXPECT_NE(first, second);
  EXPECT_FALSE(registry.Exists(first));
  EXPECT_EQ(registry.NameOf(second), "n1");
  EXPECT_EQ(registry.NameOf(first), std::nullopt);
  EXPECT_EQ(registry.PoolCapacity("sft"), 4);
  EXPECT_EQ(registry.Heartbeat(first, kT0).code(), absl::StatusCode::kNotFound);
}

TEST(WorkerRegistryTest, LeasesRunOutWithoutHeartbeats) {
  WorkerRegistry registry(absl::Seconds(10));
  const std::string a = registry.Register(Agent("a", "sft", 1), kT0);
  const std::string b = registry.Register(Agent("b", "sft", 1), kT0);
  ASSERT_TRUE(registry.Heartbeat(b, kT0 + absl::Seconds(8)).ok());
  EXPECT_TRUE(registry.ExpireLeases(kT0 + absl::Seconds(10)).empty());  // not before the ttl
  EXPECT_EQ(registry.ExpireLeases(kT0 + absl::Seconds(11)), std::vector<std::string>{a});
  EXPECT_TRUE(registry.Exists(b));
  EXPECT_EQ(registry.ExpireLeases(kT0 + absl::Seconds(19)), std::vector<std::string>{b});
}

TEST(WorkerRegistryTest, GangsAreAllOrNothingAndFillTheEmptiestAgentsFirst) {
  WorkerRegistry registry(absl::Seconds(10));
  const std::string small = registry.Register(Agent("small", "sft", 1), kT0);
  const std::string big = registry.Register(Agent("big", "sft", 4), kT0);
  registry.Register(Agent("other", "align", 8), kT0);
  EXPECT_EQ(registry.Allocate("sft", 6), std::nullopt);  // 5 slots: nothing is taken
  auto gang = registry.Allocate("sft", 3);
  ASSERT_TRUE(gang.has_value());
  for (const Slot& slot : *gang) EXPECT_EQ(slot.worker_id, big);  // kept together
  EXPECT_EQ((*gang)[0].address, "big.local");
  EXPECT_EQ((*gang)[2].device, 2);
  auto rest = registry.Allocate("sft", 2);  // big's last slot and small's
  ASSERT_TRUE(rest.has_value());
  EXPECT_EQ(registry.Allocate("sft", 1), std::nullopt);
  registry.Release(small, 0);
  registry.Release(small, 7);     // out of range: ignored
  registry.Release("gone-1", 0);  // unknown worker: ignored
  EXPECT_FALSE(registry.Occupy(small, 5));
  auto again = registry.Allocate("sft", 1);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ((*again)[0].worker_id, small);
  int busy = 0;
  for (const auto& w : registry.List("sft")) busy += w.busy_devices();
  EXPECT_EQ(busy, 5);
  EXPECT_EQ(registry.List("align").size(), 1u);
  EXPECT_EQ(registry.List("").size(), 3u);
}

TEST(WorkerRegistryTest, AssignmentsQueueInOrderAndWakeTheirStream) {
  WorkerRegistry registry(absl::Seconds(10));
  const std::string id = registry.Register(Agent("n", "sft", 1), kT0);
  // The worker's stream watches it: a send wakes that watcher, once, and nobody else's.
  int woken = 0, other = 0;
  const uint64_t handle = registry.Watch(id, [&] { ++woken; });
  const std::string id2 = registry.Register(Agent("m", "sft", 1), kT0);
  registry.Watch(id2, [&] { ++other; });
  // Nothing queued: nothing is taken.
  auto none = registry.TakeAssignments(id);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  registry.Send(id, Stop("t1"));
  EXPECT_EQ(woken, 1);
  EXPECT_EQ(other, 0);
  auto taken = registry.TakeAssignments(id);
  ASSERT_TRUE(taken.ok());
  ASSERT_EQ(taken->size(), 1u);
  EXPECT_TRUE(registry.Watching(id, handle));
  // Requeued (a write failed) assignments go back in front, in their order.
  registry.Send(id, Stop("t4"));
  registry.Requeue(id, {Stop("t2"), Stop("t3")});
  auto all = registry.TakeAssignments(id);
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].stop().task_id(), "t2");
  EXPECT_EQ((*all)[1].stop().task_id(), "t3");
  EXPECT_EQ((*all)[2].stop().task_id(), "t4");
  // Sends to an unknown worker are dropped; its stream learns it is not registered.
  registry.Send("nobody-9", Stop("x"));
  EXPECT_EQ(registry.TakeAssignments("nobody-9").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace paft::coordinator
