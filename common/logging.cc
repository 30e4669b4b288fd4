#include "common/logging.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace paft {
namespace {

std::mutex g_log_mutex;
std::string* g_tag = new std::string();  // leaked: usable during static destruction

LogSeverity InitialSeverity() {
  const char* env = std::getenv("PAFT_LOG_LEVEL");
  if (env == nullptr) return LogSeverity::kInfo;
  if (std::strcmp(env, "warning") == 0) return LogSeverity::kWarning;
  if (std::strcmp(env, "error") == 0) return LogSeverity::kError;
  return LogSeverity::kInfo;
}

LogSeverity g_min_severity = InitialSeverity();

}  // namespace

void SetMinLogSeverity(LogSeverity severity) { g_min_severity = severity; }

void SetLogTag(const std::string& tag) {
  std::lock_guard<std::mutex> lock(g_log_mutex);
  *g_tag = tag;
}

LogMessage::LogMessage(LogSeverity severity, const char* file, int line) : severity_(severity) {
  const char* base = std::strrchr(file, '/');
  static const char kLetters[] = {'I', 'W', 'E', 'F'};
  stream_ << kLetters[static_cast<int>(severity)] << ' '
          << absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()) << ' '
          << (base ? base + 1 : file) << ':' << line << "] ";
}

LogMessage::~LogMessage() {
  if (severity_ >= g_min_severity || severity_ == LogSeverity::kFatal) {
    std::lock_guard<std::mutex> lock(g_log_mutex);
    std::string text = stream_.str();
    if (!g_tag->empty()) text = "[" + *g_tag + "] " + text;
    text.push_back('\n');
    std::fwrite(text.data(), 1, text.size(), stderr);
    std::fflush(stderr);
  }
  if (severity_ == LogSeverity::kFatal) std::abort();
}

}  // namespace paft
