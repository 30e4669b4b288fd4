// What a trainer's stdout tells its agent, parsed defensively: a trainer is user code (or a
// crashed one), so no line it prints may take the agent down. Lines are capped in length, event
// fields are checked one by one, and everything else is counted and logged as a rejection.
#ifndef PAFT_WORKER_TRAINER_EVENTS_H_
#define PAFT_WORKER_TRAINER_EVENTS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <variant>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace paft::worker {

struct ProgressEvent {
  int64_t step = 0;
  int64_t total_steps = 0;
  double loss = 0;
  double tokens_per_second = 0;
  std::map<std::string, double> metrics;  // every other numeric field
};

struct CheckpointEvent {
  int64_t step = 0;
  std::string path;
  int64_t size_bytes = 0;
  std::string digest;
  bool final = false;
};

struct ErrorEvent {
  std::string message;
};

struct NotAnEvent {};  // an ordinary log line

using TrainerEvent = std::variant<NotAnEvent, ProgressEvent, CheckpointEvent, ErrorEvent>;

// A line without the "PAFT_EVENT " prefix is NotAnEvent. A prefixed line that is not a JSON
// object, has an unknown type or a field of the wrong type or range is InvalidArgument naming the
// field ("checkpoint.step: must be an integer >= 0").
absl::StatusOr<TrainerEvent> ParseTrainerEvent(absl::string_view line);

// Splits a byte stream into lines of at most `max_line` bytes: a longer line is delivered cut
// at max_line (with `truncated` set) and the rest of it, up to its newline, is discarded.
class LineSplitter {
 public:
  using Sink = std::function<void(const std::string& line, bool truncated)>;
  LineSplitter(size_t max_line, Sink sink) : max_line_(max_line), sink_(std::move(sink)) {}
  void Feed(absl::string_view bytes);
  void Finish();  // delivers an unterminated last line

 private:
  size_t max_line_;
  Sink sink_;
  std::string buffer_;
  bool discarding_ = false;  // inside the overflow of a line already delivered cut
};

}  // namespace paft::worker

#endif  // PAFT_WORKER_TRAINER_EVENTS_H_
