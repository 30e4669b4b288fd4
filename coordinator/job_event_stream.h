// WatchJob on gRPC's callback API: replays a job's stored events after a seq, then follows it —
// woken by the job's every stored event and progress report — until the job is finished and its
// last event sent. Progress (not stored) is sent only once the history is replayed.
#ifndef PAFT_COORDINATOR_JOB_EVENT_STREAM_H_
#define PAFT_COORDINATOR_JOB_EVENT_STREAM_H_

#include <cstdint>
#include <string>

#include "coordinator/hub_stream.h"
#include "coordinator/job_manager.h"
#include "paft/v1/job.pb.h"

namespace paft::coordinator {

class JobEventStream final : public HubStream<paft::v1::JobEvent> {
 public:
  JobEventStream(JobManager* manager, Context context, const paft::v1::WatchJobRequest& request);

 private:
  void FillLocked() override;

  static constexpr int kEventsPerRead = 256;

  JobManager* const manager_;
  const std::string job_id_;
  int64_t after_;                  // the last seq queued
  uint64_t progress_version_ = 0;  // of the last progress queued
};

}  // namespace paft::coordinator

#endif  // PAFT_COORDINATOR_JOB_EVENT_STREAM_H_
