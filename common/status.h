// The project's error vocabulary is absl::Status. Helpers that absl 20220623 lacks live here.
#ifndef PAFT_COMMON_STATUS_H_
#define PAFT_COMMON_STATUS_H_

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

#define PAFT_STATUS_CONCAT_INNER_(x, y) x##y
#define PAFT_STATUS_CONCAT_(x, y) PAFT_STATUS_CONCAT_INNER_(x, y)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define PAFT_RETURN_IF_ERROR(expr)                  \
  do {                                              \
    ::absl::Status paft_status_ = (expr);           \
    if (!paft_status_.ok()) return paft_status_;    \
  } while (false)

// `lhs` = value of `rexpr` (an absl::StatusOr<T>), or returns its status from the enclosing
// function. `lhs` may be a declaration: PAFT_ASSIGN_OR_RETURN(auto x, Foo());
#define PAFT_ASSIGN_OR_RETURN(lhs, rexpr) \
  PAFT_ASSIGN_OR_RETURN_IMPL_(PAFT_STATUS_CONCAT_(paft_statusor_, __LINE__), lhs, rexpr)

#define PAFT_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

namespace paft {

// Prefixes the status message with context, keeping its code and payloads (the failure class
// of common/failure.h): "reading x: <message>".
inline absl::Status Annotate(const absl::Status& status, absl::string_view context) {
  if (status.ok()) return status;
  absl::Status annotated(status.code(), absl::StrCat(context, ": ", status.message()));
  status.ForEachPayload([&](absl::string_view url, const absl::Cord& payload) {
    annotated.SetPayload(url, payload);
  });
  return annotated;
}

// errno-based error: code chosen from the errno value (ENOENT -> NotFound, ENOSPC ->
// ResourceExhausted, EACCES -> PermissionDenied, else Internal). ENOSPC and EDQUOT are marked
// as a full disk; ENOMEM as infrastructure (retryable: the host's memory at that moment, not the
// job's need; common/failure.h).
absl::Status ErrnoToStatus(int errno_value, absl::string_view context);

}  // namespace paft

#endif  // PAFT_COMMON_STATUS_H_
