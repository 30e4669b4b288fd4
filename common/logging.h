// Minimal structured-enough logging to stderr: "I 2026-11-27T07:58:13.123Z coordinator.cc:42] msg".
// (torch headers define glog's LOG/CHECK, so ours are PAFT_LOG/PAFT_CHECK.)
#ifndef PAFT_COMMON_LOGGING_H_
#define PAFT_COMMON_LOGGING_H_

#include <sstream>
#include <string>

namespace paft {

enum class LogSeverity { kInfo = 0, kWarning = 1, kError = 2, kFatal = 3 };

// Messages below this severity are dropped. Default kInfo; PAFT_LOG_LEVEL=warning|error overrides.
void SetMinLogSeverity(LogSeverity severity);
// Prefix added to every line (the binary's name), e.g. "coordinator".
void SetLogTag(const std::string& tag);

class LogMessage {
 public:
  LogMessage(LogSeverity severity, const char* file, int line);
  ~LogMessage();  // writes the line; aborts for kFatal
  std::ostream& stream() { return stream_; }

 private:
  LogSeverity severity_;
  std::ostringstream stream_;
};

}  // namespace paft

#define PAFT_LOG_INFO ::paft::LogSeverity::kInfo
#define PAFT_LOG_WARNING ::paft::LogSeverity::kWarning
#define PAFT_LOG_ERROR ::paft::LogSeverity::kError
#define PAFT_LOG_FATAL ::paft::LogSeverity::kFatal
#define PAFT_LOG(severity) ::paft::LogMessage(PAFT_LOG_##severity, __FILE__, __LINE__).stream()
#define PAFT_CHECK(cond) \
  if (!(cond)) PAFT_LOG(FATAL) << "Check failed: " #cond " "

#endif  // PAFT_COMMON_LOGGING_H_
