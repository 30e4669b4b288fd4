// Room for a checkpoint: retention runs early when the disk is short, never removes the last
// resume point, and a disk still too small is a full disk naming the folder and the bytes.
#include "trainer/checkpoint_retention.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/failure.h"
#include "common/file_util.h"
#include "tests/testing/temp_dir.h"

namespace paft::trainer {
namespace {

using ::testing::HasSubstr;

class CheckpointSpaceTest : public ::testing::Test {
 protected:
  // A committed checkpoint of `bytes` at `step`.
  void Commit(int step, size_t bytes) {
    const std::string dir = Root() + "/checkpoint-" + std::to_string(step);
    ASSERT_TRUE(MakeDirs(dir).ok());
    ASSERT_TRUE(WriteFileAtomic(dir + "/adapter_model.safetensors", std::string(bytes, 'w')).ok());
    ASSERT_TRUE(WriteFileAtomic(dir + "/" + kCheckpointManifest, "{}").ok());
  }
  std::string Root() const { return dir_.Join("checkpoints"); }
  // A disk of `capacity` bytes holding exactly what is under the folder.
  std::function<std::optional<int64_t>(const std::string&)> Disk(int64_t capacity) {
    return [this, capacity](const std::string&) -> std::optional<int64_t> {
      int64_t used = 0;
      auto names = ListDir(Root());
      for (const auto& name : names.ok() ? *names : std::vector<std::string>{}) {
        auto file = ReadFileToString(Root() + "/" + name + "/adapter_model.safetensors");
        if (file.ok()) used += static_cast<int64_t>(file->size());
      }
      return capacity - used;
    };
  }
  std::vector<std::string> Left() {
    auto names = ListDir(Root());
    std::vector<std::string> out = names.ok() ? *names : std::vector<std::string>{};
    std::sort(out.begin(), out.end());
    return out;
  }
  testing::TempDir dir_;
};

TEST_F(CheckpointSpaceTest, EnoughRoomTouchesNothing) {
  Commit(1, 100);
  Commit(2, 100);
  EXPECT_TRUE(EnsureCheckpointSpace(Root(), 100, 2, Disk(1000)).ok());
  EXPECT_EQ(Left(), (std::vector<std::string>{"checkpoint-1", "checkpoint-2"}));
}

TEST_F(CheckpointSpaceTest, RetentionRunsBeforeTheSaveWhenShort) {
  Commit(1, 100);
  Commit(2, 100);
  Commit(3, 100);
  // Another attempt's save in progress: not touched.
  ASSERT_TRUE(MakeDirs(Root() + "/checkpoint-4.staging").ok());
  // keep_last 2: after the save only checkpoint-3 and the new one stay; removing 1 and 2 first
  // makes room for it.
  EXPECT_TRUE(EnsureCheckpointSpace(Root(), 150, 2, Disk(350)).ok());
  EXPECT_EQ(Left(), (std::vector<std::string>{"checkpoint-3", "checkpoint-4.staging"}));
}

TEST_F(CheckpointSpaceTest, TheLastResumePointIsNeverRemoved) {
  Commit(1, 100);
  Commit(2, 100);
  // keep_last 1 would leave only the new one, but until it is committed checkpoint-2 stays.
  const absl::Status status = EnsureCheckpointSpace(Root(), 151, 1, Disk(250));
  EXPECT_EQ(Left(), (std::vector<std::string>{"checkpoint-2"}));
  EXPECT_EQ(FailureOf(status), Failure::kDiskFull) << status;
  EXPECT_THAT(status.message(), HasSubstr("in " + Root() + ": 150 bytes free, 151 needed"));
  EXPECT_THAT(status.message(), HasSubstr("after removing 1 older"));
}

TEST_F(CheckpointSpaceTest, StillTooSmallIsAFullDiskNamingTheBytes) {
  Commit(5, 100);
  const absl::Status status = EnsureCheckpointSpace(Root(), 500, 3, Disk(300));
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(FailureOf(status), Failure::kDiskFull);
  EXPECT_THAT(status.message(), HasSubstr("not enough free space for a checkpoint in " + Root() +
                                          ": 200 bytes free, 500 needed"));
  EXPECT_EQ(Left(), (std::vector<std::string>{"checkpoint-5"}));
}

TEST_F(CheckpointSpaceTest, UnknownFreeSpacePasses) {
  Commit(1, 100);
  auto unknown = [](const std::string&) -> std::optional<int64_t> { return std::nullopt; };
  EXPECT_TRUE(EnsureCheckpointSpace(Root(), 1 << 30, 1, unknown).ok());
}

}  // namespace
}  // namespace paft::trainer
