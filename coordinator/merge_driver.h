// Drives the merges of jobs in MERGING: asks the merger (idempotently, by merge id) and records
// the outcome in the job. Retries while the merger is unavailable.
#ifndef PAFT_COORDINATOR_MERGE_DRIVER_H_
#define PAFT_COORDINATOR_MERGE_DRIVER_H_

#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "coordinator/job_manager.h"
#include "paft/v1/merger.grpc.pb.h"

namespace paft::coordinator {

// The seam to the merger service (a fake in tests).
class MergerClient {
 public:
  virtual ~MergerClient() = default;
  // Starts the merge or returns the existing operation with the same merge_id.
  virtual absl::StatusOr<paft::v1::MergeOperation> Merge(const paft::v1::MergeRequest& request) = 0;
};

class GrpcMergerClient : public MergerClient {
 public:
  // `channel`: plaintext or TLS (MakeClientChannel); `token`: sent as a bearer token if set.
  GrpcMergerClient(std::shared_ptr<grpc::Channel> channel, std::string token);
  absl::StatusOr<paft::v1::MergeOperation> Merge(const paft::v1::MergeRequest& request) override;
  // Ends the call in flight (if any) with CANCELLED, and every later one: for shutdown, so that
  // draining does not wait out a hanging merger's deadline.
  void Shutdown();

 private:
  std::unique_ptr<paft::v1::MergerService::Stub> stub_;
  std::string token_;
  std::mutex mu_;
  grpc::ClientContext* in_flight_ = nullptr;  // GUARDED_BY(mu_)
  bool shut_down_ = false;                    // GUARDED_BY(mu_)
};

class MergeDriver {
 public:
  MergeDriver(JobManager* manager, MergerClient* client) : manager_(manager), client_(client) {}
  // One pass over the jobs waiting in MERGING.
  void Poll();

 private:
  JobManager* manager_;
  MergerClient* client_;
};

}  // namespace paft::coordinator

#endif  // PAFT_COORDINATOR_MERGE_DRIVER_H_
