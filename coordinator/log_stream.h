// StreamLogs on gRPC's callback API: one rank's output file of one attempt from an offset, in
// chunks; with `follow`, polled until the attempt has ended (a restart mid-stream never switches
// files under the offset: the attempt is pinned once known).
#ifndef PAFT_COORDINATOR_LOG_STREAM_H_
#define PAFT_COORDINATOR_LOG_STREAM_H_

#include <cstdint>
#include <string>

#include "coordinator/hub_stream.h"
#include "coordinator/job_manager.h"
#include "paft/v1/job.pb.h"

namespace paft::coordinator {

class LogStream final : public HubStream<paft::v1::LogChunk> {
 public:
  LogStream(JobManager* manager, Context context, const paft::v1::StreamLogsRequest& request);
  ~LogStream() override;

  static constexpr size_t kChunkBytes = 64 * 1024;
  static constexpr absl::Duration kPoll = absl::Milliseconds(500);

 private:
  void FillLocked() override;

  JobManager* const manager_;
  paft::v1::StreamLogsRequest pinned_;  // the request, with the attempt once known
  int64_t offset_;
  int fd_ = -1;  // the pinned attempt's file, once it exists
};

}  // namespace paft::coordinator

#endif  // PAFT_COORDINATOR_LOG_STREAM_H_
