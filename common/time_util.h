// absl::Time <-> google.protobuf.Timestamp.
#ifndef PAFT_COMMON_TIME_UTIL_H_
#define PAFT_COMMON_TIME_UTIL_H_

#include <google/protobuf/timestamp.pb.h>

#include "absl/time/time.h"

namespace paft {

inline google::protobuf::Timestamp ToProtoTime(absl::Time t) {
  google::protobuf::Timestamp ts;
  const int64_t ns = absl::ToUnixNanos(t);
  ts.set_seconds(ns / 1000000000);
  ts.set_nanos(static_cast<int32_t>(ns % 1000000000));
  return ts;
}

inline absl::Time FromProtoTime(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

}  // namespace paft

#endif  // PAFT_COMMON_TIME_UTIL_H_
