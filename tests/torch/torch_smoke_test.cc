// LibTorch is found and linked, its BLAS computes the right numbers, and c10d's Gloo backend
// all-reduces across ranks (here two ranks as threads of one process, over a shared HashStore).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <thread>

namespace {

TEST(TorchSmokeTest, MatmulMatchesAHandLoop) {
  at::manual_seed(0);
  at::Tensor a = at::randn({33, 17});
  at::Tensor b = at::randn({17, 9});
  at::Tensor c = at::matmul(a, b);
  auto pa = a.accessor<float, 2>(), pb = b.accessor<float, 2>(), pc = c.accessor<float, 2>();
  for (int i = 0; i < 33; ++i) {
    for (int j = 0; j < 9; ++j) {
      double acc = 0;
      for (int k = 0; k < 17; ++k) acc += static_cast<double>(pa[i][k]) * pb[k][j];
      EXPECT_NEAR(pc[i][j], acc, 1e-4);
    }
  }
}

TEST(TorchSmokeTest, GlooAllReduceSumsAcrossRanks) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  const int world = 2;
  std::vector<at::Tensor> results(world);
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < world; ++rank) {
    ranks.emplace_back([&, rank] {
      auto options = c10d::ProcessGroupGloo::Options::create();
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      c10d::ProcessGroupGloo group(store, rank, world, options);
      std::vector<at::Tensor> tensors = {at::full({4}, static_cast<float>(rank + 1))};
      group.allreduce(tensors)->wait();
      results[rank] = tensors[0];
    });
  }
  for (auto& t : ranks) t.join();
  for (int rank = 0; rank < world; ++rank) {
    ASSERT_TRUE(results[rank].defined());
    EXPECT_TRUE(at::allclose(results[rank], at::full({4}, 3.0f))) << "rank " << rank;
  }
}

}  // namespace
