// Thin gRPC adapters over JobManager: convert status, count RPCs, run the two streams.
#ifndef PAFT_COORDINATOR_SERVICES_H_
#define PAFT_COORDINATOR_SERVICES_H_

#include <atomic>
#include <string>

#include "common/auth.h"
#include "coordinator/handler_pool.h"
#include "coordinator/hub_stream.h"
#include "coordinator/job_manager.h"
#include "coordinator/metrics.h"
#include "coordinator/stream_slots.h"
#include "coordinator/watch_hub.h"
#include "paft/v1/job.grpc.pb.h"
#include "paft/v1/worker.grpc.pb.h"

namespace paft::coordinator {

// Every method is on gRPC's callback API. WatchJob and StreamLogs are pumped by the WatchHub's
// thread (coordinator/job_event_stream.h, coordinator/log_stream.h): an open watch costs no
// thread; the unary calls run on the HandlerPool (coordinator/handler_pool.h).
class JobServiceImpl final : public paft::v1::JobService::CallbackService {
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
  // Where unary calls run (null: inline on gRPC's thread).
  void set_handler_pool(HandlerPool* pool) { pool_ = pool; }

  grpc::ServerUnaryReactor* SubmitJob(grpc::CallbackServerContext* context,
                                    const paft::v1::SubmitJobRequest* request, paft::v1::Job* response) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* context,
                                    const paft::v1::GetJobRequest* request, paft::v1::Job* response) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* context,
                                    const paft::v1::ListJobsRequest* request, paft::v1::ListJobsResponse* response) override;
  grpc::ServerWriteReactor<paft::v1::JobEvent>* WatchJob(
      grpc::CallbackServerContext* context, const paft::v1::WatchJobRequest* request) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* context,
                                    const paft::v1::CancelJobRequest* request, paft::v1::Job* response) override;
  grpc::ServerUnaryReactor* ListWorkers(grpc::CallbackServerContext* context,
                                    const paft::v1::ListWorkersRequest* request, paft::v1::ListWorkersResponse* response) override;
  grpc::ServerUnaryReactor* ListCheckpoints(grpc::CallbackServerContext* context,
                                    const paft::v1::ListCheckpointsRequest* request, paft::v1::ListCheckpointsResponse* response) override;
  grpc::ServerUnaryReactor* ListEvents(grpc::CallbackServerContext* context,
                                    const paft::v1::ListEventsRequest* request, paft::v1::ListEventsResponse* response) override;
  grpc::ServerWriteReactor<paft::v1::LogChunk>* StreamLogs(
      grpc::CallbackServerContext* context, const paft::v1::StreamLogsRequest* request) override;

 private:
  // Counts the RPC (and times it, when `start` is given) and converts the status.
  grpc::Status Done(const char* method, const absl::Status& status,
                    absl::Time start = absl::InfinitePast());
  // The unary calls, run on the handler pool.
  grpc::Status DoSubmitJob(grpc::ServerContextBase* context,
                           const paft::v1::SubmitJobRequest* request, paft::v1::Job* response);
  grpc::Status DoGetJob(grpc::ServerContextBase* context, const paft::v1::GetJobRequest* request,
                        paft::v1::Job* response);
  grpc::Status DoListJobs(grpc::ServerContextBase* context,
                          const paft::v1::ListJobsRequest* request,
                          paft::v1::ListJobsResponse* response);
  grpc::Status DoCancelJob(grpc::ServerContextBase* context,
                           const paft::v1::CancelJobRequest* request, paft::v1::Job* response);
  grpc::Status DoListWorkers(grpc::ServerContextBase* context,
                             const paft::v1::ListWorkersRequest* request,
                             paft::v1::ListWorkersResponse* response);
  grpc::Status DoListCheckpoints(grpc::ServerContextBase* context,
                                 const paft::v1::ListCheckpointsRequest* request,
                                 paft::v1::ListCheckpointsResponse* response);
  grpc::Status DoListEvents(grpc::ServerContextBase* context,
                            const paft::v1::ListEventsRequest* request,
                            paft::v1::ListEventsResponse* response);
  // The caller, if allowed to call `method` on `job_id` (clients: their own jobs only).
  absl::StatusOr<Principal> Caller(grpc::ServerContextBase* context, const char* method,
                                   const std::string& job_id = "");
  // Whether `who` may read `job_id` (clients: their own jobs only). May read the store.
  absl::Status CheckOwner(const Principal& who, const std::string& job_id);
  // What a new WatchJob/StreamLogs stream of the caller needs (its slot, its owner check), or
  // why it gets none. Never blocks.
  template <typename Message>
  absl::StatusOr<typename HubStream<Message>::Context> OpenStream(grpc::ServerContextBase* context,
                                                                  const char* method,
                                                                  const std::string& job_id);

  JobManager* manager_;
  WorkerRegistry* registry_;
  WatchHub* hub_;
  CoordinatorMetrics* metrics_;
  const std::atomic<bool>* shutting_down_;
  const TokenAuthenticator* auth_ = nullptr;
  HandlerPool* pool_ = nullptr;
  StreamSlots stream_slots_;
};

// StreamAssignments and Heartbeat run on gRPC's callback API (coordinator/assignment_stream.h):
// every agent holds a stream open, which must not cost a thread.
class WorkerServiceImpl final : public paft::v1::WorkerService::CallbackService {
 public:
  WorkerServiceImpl(JobManager* manager, WorkerRegistry* registry, CoordinatorMetrics* metrics,
                    const std::atomic<bool>* shutting_down)
      : manager_(manager), registry_(registry), metrics_(metrics), shutting_down_(shutting_down) {}
  // With an authenticator, callers need a token of role worker or admin.
  void set_authenticator(const TokenAuthenticator* auth) { auth_ = auth; }
  // Where unary calls other than Heartbeat run (null: inline on gRPC's thread).
  void set_handler_pool(HandlerPool* pool) { pool_ = pool; }

  grpc::ServerUnaryReactor* RegisterWorker(grpc::CallbackServerContext* context,
                                           const paft::v1::RegisterWorkerRequest* request,
                                           paft::v1::RegisterWorkerResponse* response) override;
  // Heartbeats, the most frequent call (one per agent per interval), never block (they touch only
  // the registry): answered inline on gRPC's callback threads, without a hop to the pool.
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* context,
                                      const paft::v1::HeartbeatRequest* request,
                                      paft::v1::HeartbeatResponse* response) override;
  grpc::ServerWriteReactor<paft::v1::Assignment>* StreamAssignments(
      grpc::CallbackServerContext* context,
      const paft::v1::StreamAssignmentsRequest* request) override;
  grpc::ServerUnaryReactor* ReportProgress(grpc::CallbackServerContext* context,
                                           const paft::v1::ReportProgressRequest* request,
                                           paft::v1::Ack* ack) override;
  grpc::ServerUnaryReactor* ReportCheckpoint(grpc::CallbackServerContext* context,
                                             const paft::v1::ReportCheckpointRequest* request,
                                             paft::v1::Ack* ack) override;
  grpc::ServerUnaryReactor* ReportExit(grpc::CallbackServerContext* context,
                                       const paft::v1::ReportExitRequest* request,
                                       paft::v1::Ack* ack) override;

 private:
  // Counts the RPC (and times it, when `start` is given) and converts the status.
  grpc::Status Done(const char* method, const absl::Status& status,
                    absl::Time start = absl::InfinitePast());
  grpc::Status DoRegisterWorker(grpc::ServerContextBase* context,
                                const paft::v1::RegisterWorkerRequest* request,
                                paft::v1::RegisterWorkerResponse* response);
  grpc::Status DoReportProgress(grpc::ServerContextBase* context,
                                const paft::v1::ReportProgressRequest* request);
  grpc::Status DoReportCheckpoint(grpc::ServerContextBase* context,
                                  const paft::v1::ReportCheckpointRequest* request);
  grpc::Status DoReportExit(grpc::ServerContextBase* context,
                            const paft::v1::ReportExitRequest* request);
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
  HandlerPool* pool_ = nullptr;
};

}  // namespace paft::coordinator

#endif  // PAFT_COORDINATOR_SERVICES_H_
