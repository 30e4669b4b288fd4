#include "worker/exit_classifier.h"

#include <signal.h>

#include <cstring>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/file_util.h"

namespace paft::worker {
namespace {

// The value of `key` in a "key value" per line file.
std::optional<int64_t> KeyedValue(const std::string& text, absl::string_view key) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    std::vector<absl::string_view> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
    int64_t value;
    if (fields.size() == 2 && fields[0] == key && absl::SimpleAtoi(fields[1], &value)) {
      return value;
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<int64_t> ReadOomKills(const std::string& proc_self_cgroup_text,
                                    const std::string& cgroup_root) {
  // Lines "hierarchy-id:controllers:path"; v2 is "0::/path", v1's memory line names "memory".
  for (absl::string_view line : absl::StrSplit(proc_self_cgroup_text, '\n')) {
    std::vector<std::string> parts = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (parts.size() != 3) continue;
    if (parts[0] == "0" && parts[1].empty()) {
      auto text = ReadFileToString(JoinPath(cgroup_root, parts[2] + "/memory.events"));
      if (text.ok()) {
        if (auto v = KeyedValue(*text, "oom_kill")) return v;
      }
    }
    std::vector<absl::string_view> controllers = absl::StrSplit(parts[1], ',');
    for (absl::string_view c : controllers) {
      if (c != "memory") continue;
      auto text =
          ReadFileToString(JoinPath(cgroup_root, "memory" + parts[2] + "/memory.oom_control"));
      if (text.ok()) {
        if (auto v = KeyedValue(*text, "oom_kill")) return v;
      }
    }
  }
  return std::nullopt;
}

std::optional<int64_t> ReadOomKills() {
  auto text = ReadFileToString("/proc/self/cgroup");
  if (!text.ok()) return std::nullopt;
  return ReadOomKills(*text);
}

ExitClass ClassifyExit(const ExitFacts& facts) {
  if (facts.stop_requested) return {Failure::kStopped, "stopped on request"};
  if (facts.signal != 0) {
    const bool oom_killed = facts.signal == SIGKILL && facts.oom_kills_before &&
                            facts.oom_kills_after &&
                            *facts.oom_kills_after > *facts.oom_kills_before;
    if (oom_killed) {
      return {Failure::kOutOfMemory,
              absl::StrCat("killed by the kernel's OOM killer (the memory cgroup's oom_kill went ",
                           *facts.oom_kills_before, " -> ", *facts.oom_kills_after, ")")};
    }
    std::string text =
        absl::StrCat("killed by signal ", facts.signal, " (", strsignal(facts.signal), ")");
    if (facts.signal == SIGKILL && !facts.oom_kills_after) {
      absl::StrAppend(&text, "; the OOM killer cannot be told apart here (no memory cgroup)");
    }
    return {Failure::kSignal, text};
  }
  const Failure failure = FailureOfExitCode(facts.exit_code);
  if (failure == Failure::kUnknown) {
    return {failure, absl::StrCat("exited with code ", facts.exit_code,
                                  ", which is not a trainer exit code")};
  }
  return {failure,
          absl::StrCat("exited with code ", facts.exit_code, " (", InfoOf(failure).name, ")")};
}

}  // namespace paft::worker
