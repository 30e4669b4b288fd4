#include "coordinator/assignment_stream.h"

#include <utility>
#include <vector>

#include "common/grpc_status.h"

namespace paft::coordinator {

AssignmentStream::AssignmentStream(WorkerRegistry* registry, std::string worker_id,
                                   const std::atomic<bool>* shutting_down,
                                   std::function<void(const absl::Status&)> done)
    : registry_(registry),
      worker_id_(std::move(worker_id)),
      shutting_down_(shutting_down),
      done_(std::move(done)),
      core_(std::make_shared<Core>()) {
  // Under the core's lock until the first pump: a wake-up racing the construction waits.
  std::lock_guard<std::mutex> lock(core_->mu);
  core_->stream = this;
  std::weak_ptr<Core> weak = core_;
  watch_ = registry_->Watch(worker_id_, [weak] {
    if (auto core = weak.lock()) Wake(core);
  });
  PumpLocked();
}

void AssignmentStream::Wake(const std::shared_ptr<Core>& core) {
  std::lock_guard<std::mutex> lock(core->mu);
  if (core->stream != nullptr) core->stream->PumpLocked();
}

void AssignmentStream::PumpLocked() {
  if (finished_ || writing_) return;
  if (shutting_down_->load()) {
    FinishLocked(absl::UnavailableError("coordinator shutting down; reconnect"));
    return;
  }
  if (!registry_->Watching(worker_id_, watch_)) {
    FinishLocked(absl::CancelledError("replaced by a newer stream of this worker"));
    return;
  }
  auto taken = registry_->TakeAssignments(worker_id_);
  if (!taken.ok()) {  // the worker left the registry: the agent registers again
    FinishLocked(taken.status());
    return;
  }
  for (auto& a : *taken) queue_.push_back(std::move(a));
  if (queue_.empty()) return;  // nothing to write: wait for the next wake-up
  writing_ = true;
  StartWrite(&queue_.front());
}

void AssignmentStream::OnWriteDone(bool ok) {
  std::lock_guard<std::mutex> lock(core_->mu);
  writing_ = false;
  if (!ok) {
    // The agent went away: what it did not get goes back for its next stream.
    registry_->Requeue(worker_id_, std::vector<paft::v1::Assignment>(queue_.begin(), queue_.end()));
    queue_.clear();
    FinishLocked(absl::CancelledError("agent went away"));
    return;
  }
  queue_.pop_front();
  if (!queue_.empty()) {
    writing_ = true;
    StartWrite(&queue_.front());
    return;
  }
  PumpLocked();
}

void AssignmentStream::OnCancel() {
  std::lock_guard<std::mutex> lock(core_->mu);
  // A write in flight completes (not ok) and finishes the stream from OnWriteDone.
  if (!writing_) FinishLocked(absl::CancelledError("agent went away"));
}

void AssignmentStream::FinishLocked(const absl::Status& status) {
  if (finished_) return;
  finished_ = true;
  if (!queue_.empty()) {
    registry_->Requeue(worker_id_, std::vector<paft::v1::Assignment>(queue_.begin(), queue_.end()));
    queue_.clear();
  }
  done_(status);
  Finish(ToGrpcStatus(status));
}

void AssignmentStream::OnDone() {
  registry_->Unwatch(worker_id_, watch_);
  {
    std::lock_guard<std::mutex> lock(core_->mu);
    core_->stream = nullptr;
  }
  delete this;
}

}  // namespace paft::coordinator
