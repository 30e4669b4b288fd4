// A merge killed with SIGKILL part-way leaves nothing at the output path; a rerun succeeds.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "common/file_util.h"
#include "tests/testing/process.h"
#include "tests/testing/temp_dir.h"

namespace paft {
namespace {

TEST(MergerKillTest, KilledMergeLeavesNoPartialOutput) {
  testing::TempDir dir;
  std::string output;
  for (const auto& [name, seed] : {std::pair<std::string, std::string>{"base", "1"},
                                   {"a", "2"}, {"b", "3"}}) {
    ASSERT_EQ(testing::RunCommand({PAFT_MAKE_TOY_MODEL, "--out=" + dir.Join(name),
                                   "--vocab_size=8192", "--hidden_size=512",
                                   "--intermediate_size=1024", "--layers=4", "--heads=8",
                                   "--kv_heads=4", "--dtype=float32", "--seed=" + seed},
                                  &output),
              0)
        << output;
  }
  ASSERT_TRUE(WriteFileAtomic(dir.Join("merge.yaml"), R"(
merge_method: ties
base_model: base
models:
  - {model: a, parameters: {weight: 1.0, density: 0.3}}
  - {model: b, parameters: {weight: 1.0, density: 0.3}}
)").ok());
  const std::string out = dir.Join("out/merged");
  {
    testing::ChildProcess merge({PAFT_MERGER, "merge", dir.Join("merge.yaml"), out,
                                 "--threads=1", "--max_shard_bytes=8000000"},
                                {}, dir.Join("merge.log"));
    // Wait until the merge is writing (its temp folder holds a shard), then kill it.
    bool writing = false;
    for (int i = 0; i < 2000 && !writing; ++i) {
      auto entries = ListDir(dir.Join("out"));
      if (entries.ok()) {
        for (const auto& e : *entries) {
          if (!absl::StrContains(e, ".tmp-")) continue;
          auto files = ListDir(dir.Join("out/" + e));
          writing = files.ok() && !files->empty();
        }
      }
      absl::SleepFor(absl::Milliseconds(2));
    }
    ASSERT_TRUE(writing) << "the merge never started writing";
    merge.Signal(SIGKILL);
    auto status = merge.Wait(absl::Seconds(10));
    ASSERT_TRUE(status.has_value());
    ASSERT_TRUE(WIFSIGNALED(*status)) << "the merge finished before it could be killed";
  }
  EXPECT_FALSE(PathExists(out));
  auto stale = [&] {
    auto entries = ListDir(dir.Join("out"));
    if (!entries.ok()) return -1;
    int count = 0;
    for (const auto& e : *entries) count += absl::StrContains(e, ".tmp-") ? 1 : 0;
    return count;
  };
  EXPECT_EQ(stale(), 1);  // the killed merge's temp folder
  // A rerun into the same output removes it, succeeds and produces a complete folder.
  ASSERT_EQ(testing::RunCommand({PAFT_MERGER, "merge", dir.Join("merge.yaml"), out,
                                 "--max_shard_bytes=8000000"},
                                &output),
            0)
      << output;
  EXPECT_TRUE(IsRegularFile(out + "/model.safetensors.index.json"));
  EXPECT_TRUE(IsRegularFile(out + "/config.json"));
  EXPECT_EQ(stale(), 0);
}

}  // namespace
}  // namespace paft
