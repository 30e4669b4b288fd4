#include "coordinator/job_event_stream.h"

#include <utility>

namespace paft::coordinator {

JobEventStream::JobEventStream(JobManager* manager, Context context,
                               const paft::v1::WatchJobRequest& request)
    : HubStream(std::move(context), request.job_id(),
                "resume the watch from the last seq received"),
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
  const uint64_t seen = progress_version_;
  for (auto& event : manager_->ProgressEvents(job_id_, &progress_version_)) {
    if (event.seq() != after_) {
      // A transition is on its way: it is sent first, and this progress again after it.
      progress_version_ = seen;
      continue;
    }
    queue_.push_back(std::move(event));
  }
  if (queue_.empty() && manager_->WatchComplete(job_id_, after_)) FinishLocked(absl::OkStatus());
  // Otherwise the job's next event or progress report pumps again.
}

}  // namespace paft::coordinator
