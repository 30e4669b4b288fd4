#include "coordinator/job_event_stream.h"

#include <utility>

namespace paft::coordinator {

JobEventStream::JobEventStream(JobManager* manager, WatchHub* hub,
                               const std::atomic<bool>* shutting_down,
                               const paft::v1::WatchJobRequest& request, StreamSlots::Slot slot,
                               std::function<void(const absl::Status&)> done)
    : HubStream(hub, request.job_id(), shutting_down, "resume the watch from the last seq received",
                std::move(slot), std::move(done)),
      manager_(manager),
      job_id_(request.job_id()),
      after_(request.after_seq()) {
  Start();
}

void JobEventStream::FillLocked() {
  auto events = manager_->EventsAfter(job_id_, after_, kEventsPerRead);
  if (!events.ok()) {
    FinishLocked(events.status());
    return;
  }
  for (auto& event : *events) {
    after_ = event.seq();
    queue_.push_back(std::move(event));
  }
  if (static_cast<int>(queue_.size()) == kEventsPerRead) return;  // more stored: read on
  // Progress only once the stored history is replayed, so that it is never stale.
  for (auto& event : manager_->ProgressEvents(job_id_, &progress_version_)) {
    if (event.seq() != after_) continue;  // a transition is on its way: it is sent first
    queue_.push_back(std::move(event));
  }
  if (queue_.empty() && manager_->WatchComplete(job_id_, after_)) FinishLocked(absl::OkStatus());
  // Otherwise the job's next event or progress report pumps again.
}

}  // namespace paft::coordinator
