// The agent's reader of one trainer's stdout: every line to the rank's log, events parsed field
// by field and reported (progress at most every progress_interval, checkpoints with retries),
// malformed or over-long lines counted and dropped; after the trainer exits, drained until EOF
// or kDrainAfterExit.
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <optional>

#include "common/logging.h"
#include "worker/agent.h"
#include "worker/trainer_events.h"
#include "worker/trainer_protocol.h"

namespace paft::worker {

void Agent::ReadOutput(Child* child) {
  std::string log_path = child->log_path;
  int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  std::optional<paft::v1::ReportProgressRequest> pending_progress;
  absl::Time last_progress_report = absl::InfinitePast();
  auto flush_progress = [&] {
    if (!pending_progress) return;
    paft::v1::Ack ack;
    auto context = NewContext();
    (void)stub_->ReportProgress(context.get(), *pending_progress, &ack);
    pending_progress.reset();
  };
  int64_t rejected = 0;
  auto reject = [&](const std::string& reason, const std::string& what) {
    lines_rejected_->Add({{"reason", reason}}).Increment();
    // The first few of a rank, then one in a thousand: a trainer cannot flood the agent's log.
    if (++rejected <= 5 || rejected % 1000 == 0) {
      PAFT_LOG(WARNING) << child->task.task_id() << ": trainer line rejected (" << rejected
                        << " so far): " << what;
    }
  };
  auto handle_line = [&](const std::string& line, bool truncated) {
    if (log_fd >= 0) {
      std::string with_newline = line + (truncated ? " [line cut]\n" : "\n");
      (void)!::write(log_fd, with_newline.data(), with_newline.size());
    }
    if (truncated) {
      if (line.rfind(kEventPrefix, 0) == 0) reject("too_long", "an event line over the length cap");
      return;
    }
    auto event = ParseTrainerEvent(line);
    if (!event.ok()) {
      reject("malformed", std::string(event.status().message()));
      return;
    }
    const auto& task = child->task;
    if (const auto* p = std::get_if<ProgressEvent>(&*event)) {
      paft::v1::ReportProgressRequest request;
      request.set_task_id(task.task_id());
      request.set_step(p->step);
      request.set_total_steps(p->total_steps);
      request.set_loss(p->loss);
      request.set_tokens_per_second(p->tokens_per_second);
      for (const auto& [key, value] : p->metrics) (*request.mutable_metrics())[key] = value;
      pending_progress = std::move(request);
      // At most one report per progress_interval (a fast trainer prints every step), and always
      // the last step's.
      const absl::Time now = absl::Now();
      if (now - last_progress_report >= options_.progress_interval ||
          pending_progress->step() >= pending_progress->total_steps()) {
        flush_progress();
        last_progress_report = now;
      }
    } else if (const auto* c = std::get_if<CheckpointEvent>(&*event)) {
      flush_progress();  // the checkpoint's metrics are those of its step
      paft::v1::ReportCheckpointRequest request;
      request.set_task_id(task.task_id());
      request.set_step(c->step);
      request.set_path(c->path);
      request.set_size_bytes(c->size_bytes);
      request.set_digest(c->digest);
      request.set_final(c->final);
      for (int attempt = 0; attempt < kReportAttempts; ++attempt) {
        paft::v1::Ack ack;
        auto context = NewContext();
        grpc::Status s = stub_->ReportCheckpoint(context.get(), request, &ack);
        if (s.ok() || s.error_code() == grpc::StatusCode::NOT_FOUND ||
            s.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
          break;
        }
        absl::SleepFor(absl::Seconds(1));
      }
    } else if (const auto* e = std::get_if<ErrorEvent>(&*event)) {
      std::lock_guard<std::mutex> lock(mu_);
      child->last_error = e->message;
    }
  };
  // A line that still throws (a protobuf or gRPC failure) is dropped, not the reader: the pipe
  // must be drained or the trainer blocks on its stdout.
  LineSplitter lines(kMaxTrainerLine, [&](const std::string& line, bool truncated) {
    try {
      handle_line(line, truncated);
    } catch (const std::exception& e) {
      reject("exception", e.what());
    }
  });
  char chunk[4096];
  while (true) {
    pollfd ready{child->stdout_fd, POLLIN, 0};
    const int polled = ::poll(&ready, 1, /*timeout_ms=*/250);
    if (polled < 0 && errno == EINTR) continue;
    if (polled == 0) {
      // Nothing to read. Past the deadline (the trainer exited a while ago and a process
      // outside its group still holds the pipe): stop; what was written is read first.
      if (absl::ToUnixNanos(absl::Now()) > child->drain_deadline_ns.load()) {
        PAFT_LOG(WARNING) << child->task.task_id() << ": output still open " << kDrainAfterExit
                          << " after the trainer exited (a process outside its group holds it): "
                          << "no longer read";
        break;
      }
      continue;
    }
    ssize_t n = ::read(child->stdout_fd, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    lines.Feed(absl::string_view(chunk, static_cast<size_t>(n)));
  }
  lines.Finish();
  flush_progress();
  ::close(child->stdout_fd);
  if (log_fd >= 0) ::close(log_fd);
}

}  // namespace paft::worker
