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
      return MarkFailure(absl::ResourceExhaustedError(message), Failure::kOutOfMemory);
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
