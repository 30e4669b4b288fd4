#include "coordinator/log_stream.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

namespace paft::coordinator {

LogStream::LogStream(JobManager* manager, Context context,
                     const paft::v1::StreamLogsRequest& request)
    : HubStream(std::move(context), request.job_id(), "resume from the last offset received"),
      manager_(manager),
      pinned_(request),
      offset_(request.offset()) {
  Start();
}

LogStream::~LogStream() {
  if (fd_ >= 0) ::close(fd_);
}

void LogStream::FillLocked() {
  // Whether the attempt has ended is read before the file: at its end, the output is complete.
  auto target = manager_->LogFile(pinned_);
  if (!target.ok()) {
    if (pinned_.follow() && target.status().code() == absl::StatusCode::kFailedPrecondition) {
      WakeLater(kPoll);  // the branch has not started yet: wait for it
    } else {
      FinishLocked(target.status());
    }
    return;
  }
  pinned_.set_attempt(target->attempt);
  if (fd_ < 0) {
    fd_ = ::open(target->path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) {
      if (errno == ENOENT && pinned_.follow() && !target->attempt_ended) {
        WakeLater(kPoll);  // the rank has not written yet
      } else {
        FinishLocked(
            absl::NotFoundError(absl::StrCat("no output of rank ", pinned_.rank(), " of attempt ",
                                             target->attempt, " (", target->path, ")")));
      }
      return;
    }
  }
  std::string buffer(kChunkBytes, '\0');
  const ssize_t n = ::pread(fd_, buffer.data(), buffer.size(), offset_);
  if (n < 0) {
    FinishLocked(
        absl::InternalError(absl::StrCat("reading ", target->path, ": ", std::strerror(errno))));
    return;
  }
  if (n > 0) {
    buffer.resize(static_cast<size_t>(n));
    paft::v1::LogChunk chunk;
    chunk.set_attempt(target->attempt);
    chunk.set_offset(offset_);
    chunk.set_data(std::move(buffer));
    offset_ += n;
    queue_.push_back(std::move(chunk));
    return;
  }
  if (!pinned_.follow() || target->attempt_ended) {
    FinishLocked(absl::OkStatus());
  } else {
    WakeLater(kPoll);
  }
}

}  // namespace paft::coordinator
