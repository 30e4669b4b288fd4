// The one-of checks of the spec validators (common/job_spec.cc, common/merge_search.cc): whether
// a value is among the allowed ones, and the "one of a, b, c" an error names them with.
#ifndef PAFT_COMMON_ALLOWED_VALUES_H_
#define PAFT_COMMON_ALLOWED_VALUES_H_

#include <initializer_list>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace paft {

inline bool OneOf(const std::string& value, std::initializer_list<const char*> allowed) {
  for (const char* a : allowed) {
    if (value == a) return true;
  }
  return false;
}

inline std::string Allowed(std::initializer_list<const char*> allowed) {
  return absl::StrCat("one of ", absl::StrJoin(allowed, ", "));
}

}  // namespace paft

#endif  // PAFT_COMMON_ALLOWED_VALUES_H_
