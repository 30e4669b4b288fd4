// StreamAssignments on gRPC's callback API: an open stream costs no thread. Each stream watches
// its worker in the registry and is woken only when that worker has assignments (or leaves the
// registry, or the coordinator shuts down); it then writes them one at a time.
#ifndef PAFT_COORDINATOR_ASSIGNMENT_STREAM_H_
#define PAFT_COORDINATOR_ASSIGNMENT_STREAM_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "coordinator/worker_registry.h"
#include "paft/v1/worker.pb.h"

namespace paft::coordinator {

class AssignmentStream : public grpc::ServerWriteReactor<paft::v1::Assignment> {
 public:
  // `done` is called once with the stream's final status (for metrics). Starts at once: the
  // caller returns this reactor from the service method.
  AssignmentStream(WorkerRegistry* registry, std::string worker_id,
                   const std::atomic<bool>* shutting_down,
                   std::function<void(const absl::Status&)> done);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  // What the registry's wake-up reaches; outlives the reactor (a wake may race OnDone).
  struct Core {
    std::mutex mu;
    AssignmentStream* stream = nullptr;  // null once done
  };
  static void Wake(const std::shared_ptr<Core>& core);
  // Takes the worker's pending assignments and writes the next one, or finishes the stream.
  void PumpLocked();
  void FinishLocked(const absl::Status& status);

  WorkerRegistry* const registry_;
  const std::string worker_id_;
  const std::atomic<bool>* const shutting_down_;
  std::function<void(const absl::Status&)> done_;
  std::shared_ptr<Core> core_;
  uint64_t watch_ = 0;
  // Guarded by core_->mu:
  std::deque<paft::v1::Assignment> queue_;  // taken from the registry, not yet written
  bool writing_ = false;
  bool finished_ = false;
};

}  // namespace paft::coordinator

#endif  // PAFT_COORDINATOR_ASSIGNMENT_STREAM_H_
