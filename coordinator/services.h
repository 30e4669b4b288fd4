// Thin gRPC adapters over JobManager: convert status, count RPCs, run the two streams.
#ifndef PAFT_COORDINATOR_SERVICES_H_
#define PAFT_COORDINATOR_SERVICES_H_

#include <atomic>
#include <string>

#include "common/auth.h"
#include "coordinator/job_manager.h"
#include "coordinator/metrics.h"
#include "coordinator/stream_slots.h"
#include "coordinator/watch_hub.h"
#include "paft/v1/job.grpc.pb.h"
#include "paft/v1/worker.grpc.pb.h"

namespace paft::coordinator {

// WatchJob and StreamLogs run on gRPC's callback API, pumped by the WatchHub's thread
// (coordinator/job_event_stream.h, coordinator/log_stream.h): an open watch costs no thread.
class JobServiceImpl final
    : public paft::v1::JobService::WithCallbackMethod_WatchJob<
          paft::v1::JobService::WithCallbackMethod_StreamLogs<paft::v1::JobService::Service>> {
 public:
  JobServiceImpl(JobManager* manager, WorkerRegistry* registry, WatchHub* hub,
                 CoordinatorMetrics* metrics, const std::atomic<bool>* shutting_down)
      : manager_(manager),
        registry_(registry),
        hub_(hub),
        metrics_(metrics),
        shutting_down_(shutting_down) {}
  // With an authenticator, callers need a token of role client (their own jobs only) or admin.
  void set_authenticator(const TokenAuthenticator* auth) { auth_ = auth; }
  // Open WatchJob/StreamLogs streams one authenticated client may hold (0: no limit).
  void set_max_streams_per_client(int n) { stream_slots_.set_limit(n); }

  grpc::Status SubmitJob(grpc::ServerContext*, const paft::v1::SubmitJobRequest* request,
                         paft::v1::Job* response) override;
  grpc::Status GetJob(grpc::ServerContext*, const paft::v1::GetJobRequest* request,
                      paft::v1::Job* response) override;
  grpc::Status ListJobs(grpc::ServerContext*, const paft::v1::ListJobsRequest* request,
                        paft::v1::ListJobsResponse* response) override;
  grpc::ServerWriteReactor<paft::v1::JobEvent>* WatchJob(
      grpc::CallbackServerContext* context, const paft::v1::WatchJobRequest* request) override;
  grpc::Status CancelJob(grpc::ServerContext*, const paft::v1::CancelJobRequest* request,
                         paft::v1::Job* response) override;
  grpc::Status ListWorkers(grpc::ServerContext*, const paft::v1::ListWorkersRequest* request,
                           paft::v1::ListWorkersResponse* response) override;
  grpc::Status ListCheckpoints(grpc::ServerContext*,
                               const paft::v1::ListCheckpointsRequest* request,
                               paft::v1::ListCheckpointsResponse* response) override;
  grpc::Status ListEvents(grpc::ServerContext*, const paft::v1::ListEventsRequest* request,
                          paft::v1::ListEventsResponse* response) override;
  grpc::ServerWriteReactor<paft::v1::LogChunk>* StreamLogs(
      grpc::CallbackServerContext* context, const paft::v1::StreamLogsRequest* request) override;

 private:
  // Counts the RPC (and times it, when `start` is given) and converts the status.
  grpc::Status Done(const char* method, const absl::Status& status,
                    absl::Time start = absl::InfinitePast());
  // The caller, if allowed to call `method` on `job_id` (clients: their own jobs only).
  absl::StatusOr<Principal> Caller(grpc::ServerContextBase* context, const char* method,
                                   const std::string& job_id = "");
  // The caller's stream slot for `method` on `job_id`, or why it gets none.
  absl::StatusOr<StreamSlots::Slot> OpenStream(grpc::ServerContextBase* context,
                                               const char* method, const std::string& job_id);

  JobManager* manager_;
  WorkerRegistry* registry_;
  WatchHub* hub_;
  CoordinatorMetrics* metrics_;
  const std::atomic<bool>* shutting_down_;
  const TokenAuthenticator* auth_ = nullptr;
  StreamSlots stream_slots_;
};

// StreamAssignments and Heartbeat run on gRPC's callback API (coordinator/assignment_stream.h):
// every agent holds a stream open, which must not cost a thread.
class WorkerServiceImpl final
    : public paft::v1::WorkerService::WithCallbackMethod_Heartbeat<
          paft::v1::WorkerService::WithCallbackMethod_StreamAssignments<
              paft::v1::WorkerService::Service>> {
 public:
  WorkerServiceImpl(JobManager* manager, WorkerRegistry* registry, CoordinatorMetrics* metrics,
                    const std::atomic<bool>* shutting_down)
      : manager_(manager), registry_(registry), metrics_(metrics), shutting_down_(shutting_down) {}
  // With an authenticator, callers need a token of role worker or admin.
  void set_authenticator(const TokenAuthenticator* auth) { auth_ = auth; }

  grpc::Status RegisterWorker(grpc::ServerContext*, const paft::v1::RegisterWorkerRequest* request,
                              paft::v1::RegisterWorkerResponse* response) override;
  // Heartbeats too, the most frequent call (one per agent per interval), never block: answered
  // inline on gRPC's callback threads, without a hop to the synchronous thread pool.
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* context,
                                      const paft::v1::HeartbeatRequest* request,
                                      paft::v1::HeartbeatResponse* response) override;
  grpc::ServerWriteReactor<paft::v1::Assignment>* StreamAssignments(
      grpc::CallbackServerContext* context,
      const paft::v1::StreamAssignmentsRequest* request) override;
  grpc::Status ReportProgress(grpc::ServerContext*, const paft::v1::ReportProgressRequest* request,
                              paft::v1::Ack*) override;
  grpc::Status ReportCheckpoint(grpc::ServerContext*,
                                const paft::v1::ReportCheckpointRequest* request,
                                paft::v1::Ack*) override;
  grpc::Status ReportExit(grpc::ServerContext*, const paft::v1::ReportExitRequest* request,
                          paft::v1::Ack*) override;

 private:
  // Counts the RPC (and times it, when `start` is given) and converts the status.
  grpc::Status Done(const char* method, const absl::Status& status,
                    absl::Time start = absl::InfinitePast());
  // What a call acts as: the worker name it registers, its worker id, or the rank it reports
  // for (one of the three).
  struct Acting {
    std::string name, worker_id, task_id;
  };
  // The caller, if its role may use the WorkerService and its identity may act as `acting`;
  // refusals of the latter are counted in paft_identity_denied_total{method}.
  absl::StatusOr<Principal> Caller(grpc::ServerContextBase* context, const char* method,
                                   const Acting& acting);

  JobManager* manager_;
  WorkerRegistry* registry_;
  CoordinatorMetrics* metrics_;
  const std::atomic<bool>* shutting_down_;
  const TokenAuthenticator* auth_ = nullptr;
};

}  // namespace paft::coordinator

#endif  // PAFT_COORDINATOR_SERVICES_H_
