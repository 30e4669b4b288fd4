#include "coordinator/services.h"

#include "coordinator/assignment_stream.h"
#include "coordinator/job_event_stream.h"
#include "coordinator/log_stream.h"

#include <system_error>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/logging.h"
#include "common/status.h"

namespace paft::coordinator {
namespace {

// A stream refused before it started.
template <typename Message>
class RefusedStream : public grpc::ServerWriteReactor<Message> {
 public:
  explicit RefusedStream(const grpc::Status& status) { this->Finish(status); }
  void OnDone() override { delete this; }
};

// Runs `handle` (which returns the call's status) on `pool`, inline when there is none, and
// finishes the call with it; `busy` is the answer when the pool's queue is full.
// A call always finishes: a handler that throws answers INTERNAL (an unfinished call would hold
// the client to its deadline and the server's shutdown forever).
template <typename Handle, typename Busy>
grpc::ServerUnaryReactor* FinishOnPool(HandlerPool* pool, grpc::CallbackServerContext* context,
                                       Handle handle, Busy busy) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto run = [reactor, handle]() mutable {
    grpc::Status status;
    try {
      status = handle();
    } catch (const std::exception& e) {
      PAFT_LOG(ERROR) << "gRPC handler failed: " << e.what();
      status = grpc::Status(grpc::StatusCode::INTERNAL, "the coordinator failed this call");
    } catch (...) {
      status = grpc::Status(grpc::StatusCode::INTERNAL, "the coordinator failed this call");
    }
    reactor->Finish(status);
  };
  if (pool == nullptr) {
    run();
    return reactor;
  }
  bool queued = false;
  try {
    queued = pool->Submit(run);
  } catch (const std::system_error& e) {  // no thread could be started
    PAFT_LOG(ERROR) << "handler pool: " << e.what();
  }
  if (!queued) reactor->Finish(busy());
  return reactor;
}

absl::Status Busy() {
  return absl::ResourceExhaustedError(
      "the coordinator has too many calls waiting for a handler thread; retry with backoff");
}

template <typename T>
absl::Status Assign(absl::StatusOr<T> result, T* out) {
  if (!result.ok()) return result.status();
  *out = std::move(result).value();
  return absl::OkStatus();
}

grpc::Status CountAndConvert(CoordinatorMetrics* metrics, const char* method,
                             const absl::Status& status, absl::Time start) {
  if (metrics != nullptr) {
    metrics->rpcs.Add({{"method", method}, {"code", absl::StatusCodeToString(status.code())}})
        .Increment();
    if (start != absl::InfinitePast()) {
      metrics->rpc_duration.Add({{"method", method}}, CoordinatorMetrics::RpcBuckets())
          .Observe(absl::ToDoubleSeconds(absl::Now() - start));
    }
  }
  return ToGrpcStatus(status);
}

}  // namespace

// The unary calls: handed to the handler pool.
#define PAFT_UNARY_ON_POOL(Service, Method, Request, Response, ...)                          \
  grpc::ServerUnaryReactor* Service::Method(grpc::CallbackServerContext* context,             \
                                            const paft::v1::Request* request,                \
                                            paft::v1::Response* response) {                  \
    return FinishOnPool(                                                                      \
        pool_, context, [=, this] { return __VA_ARGS__; },                                    \
        [=, this] { return Done(#Method, Busy()); });                                         \
  }

// --- JobService

grpc::Status JobServiceImpl::Done(const char* method, const absl::Status& status,
                                  absl::Time start) {
  return CountAndConvert(metrics_, method, status, start);
}

absl::StatusOr<Principal> JobServiceImpl::Caller(grpc::ServerContextBase* context,
                                                 const char* method, const std::string& job_id) {
  PAFT_ASSIGN_OR_RETURN(Principal who,
                        Authorize(auth_, context, {Role::kClient, Role::kAdmin}, method));
  PAFT_RETURN_IF_ERROR(CheckOwner(who, job_id));
  return who;
}

absl::Status JobServiceImpl::CheckOwner(const Principal& who, const std::string& job_id) {
  if (who.role != Role::kClient || job_id.empty()) return absl::OkStatus();
  PAFT_ASSIGN_OR_RETURN(paft::v1::Job job, manager_->GetJob(job_id));
  if (job.owner() != who.identity) {
    return absl::PermissionDeniedError(absl::StrCat("job ", job_id, " belongs to another client"));
  }
  return absl::OkStatus();
}

template <typename Message>
absl::StatusOr<typename HubStream<Message>::Context> JobServiceImpl::OpenStream(
    grpc::ServerContextBase* context, const char* method, const std::string& job_id) {
  // Only what never blocks here, on gRPC's thread; the job's owner is checked by the stream's
  // first pump, on the hub's thread (it may read the store).
  PAFT_ASSIGN_OR_RETURN(Principal who,
                        Authorize(auth_, context, {Role::kClient, Role::kAdmin}, method));
  PAFT_ASSIGN_OR_RETURN(StreamSlots::Slot slot, stream_slots_.Acquire(who.identity));
  return typename HubStream<Message>::Context{
      hub_, shutting_down_, std::move(slot),
      [this, who, job_id] { return CheckOwner(who, job_id); },
      [this, method](const absl::Status& status) { (void)Done(method, status); }};
}

grpc::Status JobServiceImpl::DoSubmitJob(grpc::ServerContextBase* context,
                                       const paft::v1::SubmitJobRequest* request,
                                       paft::v1::Job* response) {
  const absl::Time start = absl::Now();
  auto who = Caller(context, "SubmitJob");
  if (!who.ok()) return Done("SubmitJob", who.status(), start);
  return Done("SubmitJob", Assign(manager_->SubmitJob(*request, who->identity), response), start);
}

grpc::Status JobServiceImpl::DoGetJob(grpc::ServerContextBase* context,
                                    const paft::v1::GetJobRequest* request,
                                    paft::v1::Job* response) {
  const absl::Time start = absl::Now();
  if (auto who = Caller(context, "GetJob", request->job_id()); !who.ok()) {
    return Done("GetJob", who.status(), start);
  }
  return Done("GetJob", Assign(manager_->GetJob(request->job_id()), response), start);
}

grpc::Status JobServiceImpl::DoListJobs(grpc::ServerContextBase* context,
                                      const paft::v1::ListJobsRequest* request,
                                      paft::v1::ListJobsResponse* response) {
  const absl::Time start = absl::Now();
  auto who = Caller(context, "ListJobs");
  if (!who.ok()) return Done("ListJobs", who.status(), start);
  paft::v1::ListJobsRequest scoped = *request;
  if (who->role == Role::kClient) scoped.set_owner(who->identity);  // their own jobs only
  return Done("ListJobs", Assign(manager_->ListJobs(scoped), response), start);
}

grpc::ServerWriteReactor<paft::v1::JobEvent>* JobServiceImpl::WatchJob(
    grpc::CallbackServerContext* context, const paft::v1::WatchJobRequest* request) {
  auto stream = OpenStream<paft::v1::JobEvent>(context, "WatchJob", request->job_id());
  if (!stream.ok()) {
    return new RefusedStream<paft::v1::JobEvent>(Done("WatchJob", stream.status()));
  }
  return new JobEventStream(manager_, std::move(stream).value(), *request);
}

grpc::Status JobServiceImpl::DoCancelJob(grpc::ServerContextBase* context,
                                       const paft::v1::CancelJobRequest* request,
                                       paft::v1::Job* response) {
  const absl::Time start = absl::Now();
  if (auto who = Caller(context, "CancelJob", request->job_id()); !who.ok()) {
    return Done("CancelJob", who.status(), start);
  }
  return Done("CancelJob", Assign(manager_->CancelJob(*request), response), start);
}

grpc::Status JobServiceImpl::DoListWorkers(grpc::ServerContextBase* context,
                                         const paft::v1::ListWorkersRequest* request,
                                         paft::v1::ListWorkersResponse* response) {
  const absl::Time start = absl::Now();
  if (auto who = Caller(context, "ListWorkers"); !who.ok()) {
    return Done("ListWorkers", who.status(), start);
  }
  for (auto& w : registry_->List(request->pool())) *response->add_workers() = std::move(w);
  return Done("ListWorkers", absl::OkStatus(), start);
}

grpc::Status JobServiceImpl::DoListCheckpoints(grpc::ServerContextBase* context,
                                             const paft::v1::ListCheckpointsRequest* request,
                                             paft::v1::ListCheckpointsResponse* response) {
  const absl::Time start = absl::Now();
  if (auto who = Caller(context, "ListCheckpoints", request->job_id()); !who.ok()) {
    return Done("ListCheckpoints", who.status(), start);
  }
  return Done("ListCheckpoints", Assign(manager_->ListCheckpoints(*request), response), start);
}

grpc::Status JobServiceImpl::DoListEvents(grpc::ServerContextBase* context,
                                        const paft::v1::ListEventsRequest* request,
                                        paft::v1::ListEventsResponse* response) {
  const absl::Time start = absl::Now();
  if (auto who = Caller(context, "ListEvents", request->job_id()); !who.ok()) {
    return Done("ListEvents", who.status(), start);
  }
  return Done("ListEvents", Assign(manager_->ListEvents(*request), response), start);
}

grpc::ServerWriteReactor<paft::v1::LogChunk>* JobServiceImpl::StreamLogs(
    grpc::CallbackServerContext* context, const paft::v1::StreamLogsRequest* request) {
  auto stream = OpenStream<paft::v1::LogChunk>(context, "StreamLogs", request->job_id());
  if (!stream.ok()) {
    return new RefusedStream<paft::v1::LogChunk>(Done("StreamLogs", stream.status()));
  }
  return new LogStream(manager_, std::move(stream).value(), *request);
}

PAFT_UNARY_ON_POOL(JobServiceImpl, SubmitJob, SubmitJobRequest, Job,
                   DoSubmitJob(context, request, response))
PAFT_UNARY_ON_POOL(JobServiceImpl, GetJob, GetJobRequest, Job, DoGetJob(context, request, response))
PAFT_UNARY_ON_POOL(JobServiceImpl, ListJobs, ListJobsRequest, ListJobsResponse,
                   DoListJobs(context, request, response))
PAFT_UNARY_ON_POOL(JobServiceImpl, CancelJob, CancelJobRequest, Job,
                   DoCancelJob(context, request, response))
PAFT_UNARY_ON_POOL(JobServiceImpl, ListWorkers, ListWorkersRequest, ListWorkersResponse,
                   DoListWorkers(context, request, response))
PAFT_UNARY_ON_POOL(JobServiceImpl, ListCheckpoints, ListCheckpointsRequest,
                   ListCheckpointsResponse, DoListCheckpoints(context, request, response))
PAFT_UNARY_ON_POOL(JobServiceImpl, ListEvents, ListEventsRequest, ListEventsResponse,
                   DoListEvents(context, request, response))

// --- WorkerService

grpc::Status WorkerServiceImpl::Done(const char* method, const absl::Status& status,
                                     absl::Time start) {
  return CountAndConvert(metrics_, method, status, start);
}

absl::StatusOr<Principal> WorkerServiceImpl::Caller(grpc::ServerContextBase* context,
                                                    const char* method, const Acting& acting) {
  PAFT_ASSIGN_OR_RETURN(Principal who,
                        Authorize(auth_, context, {Role::kWorker, Role::kAdmin}, method));
  if (auth_ == nullptr) return who;  // authentication off: nothing to bind
  absl::Status bound = absl::OkStatus();
  if (!acting.name.empty() && !who.MayActAs(acting.name)) {
    bound = absl::PermissionDeniedError(absl::StrCat("identity '", who.identity,
                                                     "' may not register as worker '",
                                                     acting.name, "'"));
  } else if (!acting.worker_id.empty()) {
    bound = manager_->AuthorizeWorker(who, acting.worker_id);
  } else if (!acting.task_id.empty()) {
    bound = manager_->AuthorizeTask(who, acting.task_id);
  }
  if (bound.code() == absl::StatusCode::kPermissionDenied && metrics_ != nullptr) {
    metrics_->identity_denied.Add({{"method", method}}).Increment();
    PAFT_LOG(WARNING) << method << " refused: " << bound.message();
  }
  PAFT_RETURN_IF_ERROR(bound);
  return who;
}

grpc::Status WorkerServiceImpl::DoRegisterWorker(grpc::ServerContextBase* context,
                                               const paft::v1::RegisterWorkerRequest* request,
                                               paft::v1::RegisterWorkerResponse* response) {
  const absl::Time start = absl::Now();
  if (auto who = Caller(context, "RegisterWorker", {request->name(), "", ""}); !who.ok()) {
    return Done("RegisterWorker", who.status(), start);
  }
  return Done("RegisterWorker", Assign(manager_->RegisterWorker(*request), response), start);
}

grpc::ServerUnaryReactor* WorkerServiceImpl::Heartbeat(grpc::CallbackServerContext* context,
                                                       const paft::v1::HeartbeatRequest* request,
                                                       paft::v1::HeartbeatResponse* response) {
  const absl::Time start = absl::Now();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (auto who = Caller(context, "Heartbeat", {"", request->worker_id(), ""}); !who.ok()) {
    reactor->Finish(Done("Heartbeat", who.status(), start));
    return reactor;
  }
  reactor->Finish(Done("Heartbeat", Assign(manager_->Heartbeat(*request), response), start));
  return reactor;
}

grpc::ServerWriteReactor<paft::v1::Assignment>* WorkerServiceImpl::StreamAssignments(
    grpc::CallbackServerContext* context, const paft::v1::StreamAssignmentsRequest* request) {
  if (auto who = Caller(context, "StreamAssignments", {"", request->worker_id(), ""}); !who.ok()) {
    return new RefusedStream<paft::v1::Assignment>(Done("StreamAssignments", who.status()));
  }
  return new AssignmentStream(registry_, request->worker_id(), shutting_down_,
                              [this](const absl::Status& status) {
                                (void)Done("StreamAssignments", status);
                              });
}

grpc::Status WorkerServiceImpl::DoReportProgress(grpc::ServerContextBase* context,
                                              const paft::v1::ReportProgressRequest* request) {
  const absl::Time start = absl::Now();
  if (auto who = Caller(context, "ReportProgress", {"", "", request->task_id()}); !who.ok()) {
    return Done("ReportProgress", who.status(), start);
  }
  return Done("ReportProgress", manager_->ReportProgress(*request), start);
}

grpc::Status WorkerServiceImpl::DoReportCheckpoint(grpc::ServerContextBase* context,
                                              const paft::v1::ReportCheckpointRequest* request) {
  const absl::Time start = absl::Now();
  if (auto who = Caller(context, "ReportCheckpoint", {"", "", request->task_id()}); !who.ok()) {
    return Done("ReportCheckpoint", who.status(), start);
  }
  return Done("ReportCheckpoint", manager_->ReportCheckpoint(*request), start);
}

grpc::Status WorkerServiceImpl::DoReportExit(grpc::ServerContextBase* context,
                                              const paft::v1::ReportExitRequest* request) {
  const absl::Time start = absl::Now();
  if (auto who = Caller(context, "ReportExit", {"", "", request->task_id()}); !who.ok()) {
    return Done("ReportExit", who.status(), start);
  }
  return Done("ReportExit", manager_->ReportExit(*request), start);
}

PAFT_UNARY_ON_POOL(WorkerServiceImpl, RegisterWorker, RegisterWorkerRequest,
                   RegisterWorkerResponse, DoRegisterWorker(context, request, response))
PAFT_UNARY_ON_POOL(WorkerServiceImpl, ReportProgress, ReportProgressRequest, Ack,
                   DoReportProgress(context, request))
PAFT_UNARY_ON_POOL(WorkerServiceImpl, ReportCheckpoint, ReportCheckpointRequest, Ack,
                   DoReportCheckpoint(context, request))
PAFT_UNARY_ON_POOL(WorkerServiceImpl, ReportExit, ReportExitRequest, Ack,
                   DoReportExit(context, request))

#undef PAFT_UNARY_ON_POOL

}  // namespace paft::coordinator
