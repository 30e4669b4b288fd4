// Bytes from outside (a trainer's log, a file's tail) made fit for a proto `string` field, which
// must hold valid UTF-8: a message with one stray byte fails to parse on the receiving side and
// the call with it (an agent's exit report, retried until it gives up, left its slot busy).
#ifndef PAFT_COMMON_UTF8_H_
#define PAFT_COMMON_UTF8_H_

#include <string>

#include "absl/strings/string_view.h"

namespace paft {

// `bytes` with every byte that does not begin a well-formed UTF-8 sequence (RFC 3629: no
// overlong forms, no surrogates, nothing above U+10FFFF, no cut sequence) replaced by U+FFFD.
// Valid text comes back unchanged.
std::string ToValidUtf8(absl::string_view bytes);

}  // namespace paft

#endif  // PAFT_COMMON_UTF8_H_
