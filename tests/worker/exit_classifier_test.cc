// How the agent names a trainer's end, and where it finds the kernel's OOM kills.
#include "worker/exit_classifier.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/file_util.h"
#include "tests/testing/temp_dir.h"

namespace paft::worker {
namespace {

using ::testing::HasSubstr;

class OomKillsTest : public ::testing::Test {
 protected:
  void Write(const std::string& relative, const std::string& text) {
    const std::string path = dir_.Join(relative);
    ASSERT_TRUE(MakeDirs(path.substr(0, path.rfind('/'))).ok());
    ASSERT_TRUE(WriteFileAtomic(path, text).ok());
  }
  testing::TempDir dir_;
};

TEST_F(OomKillsTest, CgroupV2MemoryEvents) {
  Write("kubepods/pod1/memory.events", "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\n");
  EXPECT_EQ(ReadOomKills("0::/kubepods/pod1\n", dir_.path()), 2);
}

TEST_F(OomKillsTest, CgroupV1OomControlInAHybridLayout) {
  // v1's memory controller next to an empty v2 root (as on this machine).
  Write("memory/process_api/abc/memory.oom_control",
        "oom_kill_disable 0\nunder_oom 0\noom_kill 7\n");
  EXPECT_EQ(ReadOomKills("5:devices:/\n4:memory:/process_api/abc\n3:cpuset:/\n0::/\n", dir_.path()),
            7);
  // Controllers listed together ("cpu,memory") are found too.
  Write("memory/x/memory.oom_control", "oom_kill 1\n");
  EXPECT_EQ(ReadOomKills("4:cpu,memory:/x\n", dir_.path()), 1);
}

TEST_F(OomKillsTest, NothingReadable) {
  EXPECT_EQ(ReadOomKills("0::/nowhere\n", dir_.path()), std::nullopt);
  EXPECT_EQ(ReadOomKills("", dir_.path()), std::nullopt);
  Write("memory/y/memory.oom_control", "oom_kill_disable 0\n");  // a kernel before 4.13
  EXPECT_EQ(ReadOomKills("4:memory:/y\n", dir_.path()), std::nullopt);
}

TEST(ClassifyExitTest, ExitCodesFollowTheTable) {
  ExitFacts facts;
  EXPECT_EQ(ClassifyExit(facts).failure, Failure::kNone);
  facts.exit_code = 5;
  EXPECT_EQ(ClassifyExit(facts).failure, Failure::kDiskFull);
  facts.exit_code = 6;
  EXPECT_EQ(ClassifyExit(facts).failure, Failure::kPeerLost);
  facts.exit_code = 4;
  EXPECT_EQ(ClassifyExit(facts).failure, Failure::kOutOfMemory);
  facts.exit_code = 1;  // a Python trainer's traceback, say
  const ExitClass unknown = ClassifyExit(facts);
  EXPECT_EQ(unknown.failure, Failure::kUnknown);
  EXPECT_THAT(unknown.explanation, HasSubstr("code 1"));
  facts.stop_requested = true;  // whatever the code, a rank we stopped is stopped
  EXPECT_EQ(ClassifyExit(facts).failure, Failure::kStopped);
}

TEST(ClassifyExitTest, SigkillIsOutOfMemoryOnlyWithTheKernelsCount) {
  ExitFacts facts;
  facts.exit_code = -1;
  facts.signal = SIGKILL;
  facts.oom_kills_before = 4;
  facts.oom_kills_after = 5;
  const ExitClass oom = ClassifyExit(facts);
  EXPECT_EQ(oom.failure, Failure::kOutOfMemory);
  EXPECT_THAT(oom.explanation, HasSubstr("OOM killer"));
  EXPECT_THAT(oom.explanation, HasSubstr("4 -> 5"));
  facts.oom_kills_after = 4;  // a SIGKILL from someone else
  EXPECT_EQ(ClassifyExit(facts).failure, Failure::kSignal);
  facts.oom_kills_before.reset();
  facts.oom_kills_after.reset();
  const ExitClass unknowable = ClassifyExit(facts);
  EXPECT_EQ(unknowable.failure, Failure::kSignal);
  EXPECT_THAT(unknowable.explanation, HasSubstr("cannot be told apart"));
  facts.signal = SIGSEGV;  // other signals never count as OOM
  facts.oom_kills_before = 0;
  facts.oom_kills_after = 9;
  EXPECT_EQ(ClassifyExit(facts).failure, Failure::kSignal);
}

// The kernel's real count: a child in a memory cgroup of 32 MiB that touches 512 MiB is killed by
// the OOM killer, and the counter the agent reads says so. Needs a writable memory cgroup
// (skipped otherwise).
TEST(OomKillsLiveTest, TheKernelsCountRisesWhenItKillsInTheCgroup) {
  auto self = ReadFileToString("/proc/self/cgroup");
  ASSERT_TRUE(self.ok());
  // This process's memory cgroup, v1 or v2, and the line to name a child of it.
  std::string folder, line_prefix, limit_file;
  for (absl::string_view line : absl::StrSplit(*self, '\n')) {
    std::vector<std::string> parts = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (parts.size() != 3) continue;
    if (absl::StrContains(parts[1], "memory")) {
      folder = "/sys/fs/cgroup/memory" + parts[2];
      line_prefix = parts[0] + ":" + parts[1] + ":" + parts[2];
      limit_file = "memory.limit_in_bytes";
    } else if (parts[0] == "0" && parts[1].empty() && folder.empty() &&
               IsRegularFile("/sys/fs/cgroup" + parts[2] + "/memory.events")) {
      folder = "/sys/fs/cgroup" + parts[2];
      line_prefix = "0::" + parts[2];
      limit_file = "memory.max";
    }
  }
  const std::string name = absl::StrCat("paft-oom-test-", ::getpid());
  const std::string child_dir = JoinPath(folder, name);
  if (folder.empty() || ::mkdir(child_dir.c_str(), 0755) != 0) {
    GTEST_SKIP() << "no writable memory cgroup here";
  }
  const std::string cgroup_text =
      absl::StrCat(line_prefix, absl::EndsWith(line_prefix, "/") ? "" : "/", name, "\n");
  auto write = [](const std::string& path, const std::string& text) {
    FILE* f = std::fopen(path.c_str(), "w");
    if (f == nullptr) return false;
    const bool ok = std::fputs(text.c_str(), f) >= 0;
    return std::fclose(f) == 0 && ok;
  };
  ASSERT_TRUE(write(JoinPath(child_dir, limit_file), "33554432"));
  (void)write(JoinPath(child_dir, "memory.swap.max"), "0");  // v2; v1 without swap accounting
  const auto before = ReadOomKills(cgroup_text);
  ASSERT_TRUE(before.has_value()) << cgroup_text;
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (!write(JoinPath(child_dir, "cgroup.procs"), std::to_string(::getpid()))) ::_exit(3);
    const size_t size = size_t{512} << 20;
    char* p = static_cast<char*>(std::malloc(size));
    for (size_t i = 0; p != nullptr && i < size; i += 4096) p[i] = 1;
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  const auto after = ReadOomKills(cgroup_text);
  ::rmdir(child_dir.c_str());
  ASSERT_TRUE(WIFSIGNALED(status)) << "status " << status;
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  ASSERT_TRUE(after.has_value());
  EXPECT_GT(*after, *before);
  ExitFacts facts;
  facts.exit_code = -1;
  facts.signal = WTERMSIG(status);
  facts.oom_kills_before = before;
  facts.oom_kills_after = after;
  EXPECT_EQ(ClassifyExit(facts).failure, Failure::kOutOfMemory);
}

}  // namespace
}  // namespace paft::worker
