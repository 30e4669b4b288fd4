#include "worker/trainer_events.h"

#include <algorithm>
#include <climits>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "worker/trainer_protocol.h"

namespace paft::worker {
namespace {

using json = nlohmann::json;

absl::Status Bad(const std::string& type, const std::string& key, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(type, ".", key, ": ", what));
}

// An optional non-negative integer field (absent: `fallback`).
absl::StatusOr<int64_t> Count(const json& j, const std::string& type, const std::string& key,
                              int64_t fallback, bool required = false) {
  if (!j.contains(key)) {
    if (required) return Bad(type, key, "is required");
    return fallback;
  }
  const json& v = j[key];
  if (!v.is_number_integer()) return Bad(type, key, "must be an integer >= 0");
  if (v.is_number_unsigned()) {
    if (v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) return Bad(type, key, "is too large");
    return static_cast<int64_t>(v.get<uint64_t>());
  }
  const int64_t x = v.get<int64_t>();
  if (x < 0) return Bad(type, key, "must be an integer >= 0");
  return x;
}

absl::StatusOr<double> Real(const json& j, const std::string& type, const std::string& key) {
  if (!j.contains(key)) return 0.0;
  if (!j[key].is_number() || !std::isfinite(j[key].get<double>())) {
    return Bad(type, key, "must be a finite number");
  }
  return j[key].get<double>();
}

absl::StatusOr<std::string> Text(const json& j, const std::string& type, const std::string& key,
                                 bool required = false) {
  if (!j.contains(key)) {
    if (required) return Bad(type, key, "is required");
    return std::string();
  }
  if (!j[key].is_string()) return Bad(type, key, "must be a string");
  return j[key].get<std::string>();
}

}  // namespace

absl::StatusOr<TrainerEvent> ParseTrainerEvent(absl::string_view line) {
  const absl::string_view prefix(kEventPrefix);
  if (line.substr(0, prefix.size()) != prefix) return TrainerEvent(NotAnEvent{});
  line.remove_prefix(prefix.size());
  const json j = json::parse(line.begin(), line.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("event: not a JSON object");
  }
  if (!j.contains("type") || !j["type"].is_string()) {
    return absl::InvalidArgumentError("event.type: must be a string");
  }
  const std::string type = j["type"].get<std::string>();
  if (type == "progress") {
    ProgressEvent e;
    PAFT_ASSIGN_OR_RETURN(e.step, Count(j, type, "step", 0));
    PAFT_ASSIGN_OR_RETURN(e.total_steps, Count(j, type, "total_steps", 0));
    PAFT_ASSIGN_OR_RETURN(e.loss, Real(j, type, "loss"));
    PAFT_ASSIGN_OR_RETURN(e.tokens_per_second, Real(j, type, "tokens_per_second"));
    for (const auto& [key, value] : j.items()) {
      if (key == "type" || key == "step" || key == "total_steps" || key == "loss" ||
          key == "tokens_per_second" || !value.is_number()) {
        continue;  // non-numeric extras are not metrics
      }
      if (std::isfinite(value.get<double>())) e.metrics[key] = value.get<double>();
    }
    return TrainerEvent(e);
  }
  if (type == "checkpoint") {
    CheckpointEvent e;
    PAFT_ASSIGN_OR_RETURN(e.step, Count(j, type, "step", 0, /*required=*/true));
    PAFT_ASSIGN_OR_RETURN(e.path, Text(j, type, "path", /*required=*/true));
    if (e.path.empty()) return Bad(type, "path", "must not be empty");
    PAFT_ASSIGN_OR_RETURN(e.size_bytes, Count(j, type, "size_bytes", 0));
    PAFT_ASSIGN_OR_RETURN(e.digest, Text(j, type, "digest"));
    if (j.contains("final")) {
      if (!j["final"].is_boolean()) return Bad(type, "final", "must be true or false");
      e.final = j["final"].get<bool>();
    }
    return TrainerEvent(e);
  }
  if (type == "error") {
    ErrorEvent e;
    PAFT_ASSIGN_OR_RETURN(e.message, Text(j, type, "message"));
    return TrainerEvent(e);
  }
  return absl::InvalidArgumentError(absl::StrCat("event.type: unknown type '", type, "'"));
}

void LineSplitter::Feed(absl::string_view bytes) {
  while (!bytes.empty()) {
    const size_t newline = bytes.find('\n');
    const absl::string_view part = bytes.substr(0, newline);
    if (discarding_) {
      if (newline == absl::string_view::npos) return;  // still inside the long line
      discarding_ = false;
    } else {
      // Never more than one byte past the cap: enough to know the line is too long.
      buffer_.append(part.data(), std::min(part.size(), max_line_ + 1 - buffer_.size()));
      if (buffer_.size() > max_line_) {
        buffer_.resize(max_line_);
        sink_(buffer_, /*truncated=*/true);
        buffer_.clear();
        discarding_ = newline == absl::string_view::npos;
      } else if (newline != absl::string_view::npos) {
        sink_(buffer_, /*truncated=*/false);
        buffer_.clear();
      }
    }
    if (newline == absl::string_view::npos) return;
    bytes.remove_prefix(newline + 1);
  }
}

void LineSplitter::Finish() {
  if (!buffer_.empty()) sink_(buffer_, /*truncated=*/false);
  buffer_.clear();
  discarding_ = false;
}

}  // namespace paft::worker
