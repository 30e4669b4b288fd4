#include "common/status.h"

#include <cerrno>
#include <cstring>

#include "common/failure.h"

namespace paft {

absl::Status ErrnoToStatus(int errno_value, absl::string_view context) {
  std::string message = absl::StrCat(context, ": ", std::strerror(errno_value));
  switch (errno_value) {
    case ENOENT:
    case ENOTDIR:
      return absl::NotFoundError(message);
    case EEXIST:
    case ENOTEMPTY:
      return absl::AlreadyExistsError(message);
    case EACCES:
    case EPERM:
    case EROFS:
      return absl::PermissionDeniedError(message);
    case ENOSPC:
    case EDQUOT:
      return MarkFailure(absl::ResourceExhaustedError(message), Failure::kDiskFull);
    case ENOMEM:
      // A system call's ENOMEM (mmap, fork, a read's buffer) is the host's memory or address
      // space at that moment, not the job's need: retryable, unlike a training step's out of
      // memory (LibTorch's, or the kernel's OOM kill), which would fail again.
      return MarkFailure(absl::ResourceExhaustedError(message), Failure::kInfrastructure);
    case EINVAL:
    case EISDIR:
      return absl::InvalidArgumentError(message);
    case EAGAIN:
    case EINTR:
      return absl::UnavailableError(message);
    default:
      return absl::InternalError(message);
  }
}

}  // namespace paft
