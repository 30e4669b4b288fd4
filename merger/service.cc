#include "merger/service.h"

#include <google/protobuf/util/message_differencer.h>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/logging.h"
#include "common/time_util.h"

namespace paft::merger {

MergerServiceImpl::MergerServiceImpl(prometheus::Registry& registry)
    : merges_(prometheus::BuildCounter()
                  .Name("paft_merges_total")
                  .Help("Merges finished, by method and result")
                  .Register(registry)),
      bytes_read_(prometheus::BuildCounter()
                      .Name("paft_merger_bytes_read_total")
                      .Help("Tensor bytes read from base and input models")
                      .Register(registry)
                      .Add({})),
      bytes_written_(prometheus::BuildCounter()
                         .Name("paft_merger_bytes_written_total")
                         .Help("Bytes of merged safetensors written")
                         .Register(registry)
                         .Add({})),
      tensors_(prometheus::BuildCounter()
                   .Name("paft_merger_tensors_total")
                   .Help("Tensors merged")
                   .Register(registry)
                   .Add({})),
      duration_(prometheus::BuildHistogram()
                    .Name("paft_merge_duration_seconds")
                    .Help("Wall time of finished merges")
                    .Register(registry)
                    .Add({}, prometheus::Histogram::BucketBoundaries{1, 5, 15, 60, 300, 900, 3600})),
      refusals_(prometheus::BuildCounter()
                    .Name("paft_merger_rpc_refusals_total")
                    .Help("Calls refused: no or unknown token (UNAUTHENTICATED), wrong role "
                          "(PERMISSION_DENIED)")
                    .Register(registry)) {
  for (const char* code : {"UNAUTHENTICATED", "PERMISSION_DENIED"}) refusals_.Add({{"code", code}});
  // Series exist from the start (rates and alerts work from the first failure on).
  for (const char* method : {"linear", "task_arithmetic", "ties", "dare_linear", "dare_ties",
                             "breadcrumbs", "breadcrumbs_ties", "magnitude_prune"}) {
    for (const char* result : {"ok", "error"}) merges_.Add({{"method", method}, {"result", result}});
  }
}

MergerServiceImpl::~MergerServiceImpl() {
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(mu_);
    threads.swap(threads_);
  }
  for (auto& t : threads) t.join();
}

paft::v1::MergeOperation MergerServiceImpl::Snapshot(const Operation& op) const {
  paft::v1::MergeOperation out;
  out.set_merge_id(op.request.merge_id());
  out.set_state(op.state);
  out.set_tensors_done(op.progress.tensors_done.load());
  out.set_tensors_total(op.progress.tensors_total.load());
  out.set_bytes_read(op.progress.bytes_read.load());
  out.set_bytes_written(op.progress.bytes_written.load());
  out.set_output_dir(op.request.output_dir());
  out.set_adapter_output_dir(op.request.adapter_output_dir());
  if (!op.result.ok()) {
    out.set_error(std::string(op.result.message()));
    out.set_error_code(static_cast<int>(op.result.code()));
  }
  *out.mutable_start_time() = ToProtoTime(op.start_time);
  if (op.state != paft::v1::MERGE_STATE_RUNNING) *out.mutable_end_time() = ToProtoTime(op.end_time);
  return out;
}

absl::Status MergerServiceImpl::Check(grpc::ServerContext* context, const char* method) {
  auto who = Authorize(auth_, context, {Role::kCoordinator, Role::kAdmin}, method);
  if (who.ok()) return absl::OkStatus();
  refusals_.Add({{"code", absl::StatusCodeToString(who.status().code())}}).Increment();
  return who.status();
}

grpc::Status MergerServiceImpl::Merge(grpc::ServerContext* context,
                                      const paft::v1::MergeRequest* request,
                                      paft::v1::MergeOperation* response) {
  if (absl::Status s = Check(context, "Merge"); !s.ok()) return ToGrpcStatus(s);
  if (request->merge_id().empty()) {
    return ToGrpcStatus(absl::InvalidArgumentError("merge_id: is required"));
  }
  if (request->base_model().empty()) {
    return ToGrpcStatus(absl::InvalidArgumentError("base_model: is required"));
  }
  if (request->inputs().empty()) {
    return ToGrpcStatus(absl::InvalidArgumentError("inputs: at least one is required"));
  }
  if (request->output_dir().empty() && request->adapter_output_dir().empty()) {
    return ToGrpcStatus(
        absl::InvalidArgumentError("output_dir or adapter_output_dir: one is required"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = operations_.find(request->merge_id());
  if (it != operations_.end()) {
    if (!google::protobuf::util::MessageDifferencer::Equals(it->second->request, *request)) {
      return ToGrpcStatus(absl::AlreadyExistsError(absl::StrCat(
          "merge_id '", request->merge_id(), "' was already used with a different request")));
    }
    *response = Snapshot(*it->second);
    return grpc::Status::OK;
  }
  auto op = std::make_shared<Operation>();
  op->request = *request;
  op->start_time = absl::Now();
  operations_[request->merge_id()] = op;
  threads_.emplace_back([this, op] { Run(op); });
  *response = Snapshot(*op);
  PAFT_LOG(INFO) << "merge " << request->merge_id() << " started: " << request->spec().method()
                 << " of " << request->inputs_size() << " input(s) into " << request->output_dir();
  return grpc::Status::OK;
}

void MergerServiceImpl::Run(std::shared_ptr<Operation> op) {
  absl::Status status = RunMerge(op->request, &op->progress);
  std::lock_guard<std::mutex> lock(mu_);
  op->result = status;
  op->end_time = absl::Now();
  op->state = status.ok() ? paft::v1::MERGE_STATE_SUCCEEDED : paft::v1::MERGE_STATE_FAILED;
  bytes_read_.Increment(static_cast<double>(op->progress.bytes_read.load()));
  bytes_written_.Increment(static_cast<double>(op->progress.bytes_written.load()));
  tensors_.Increment(static_cast<double>(op->progress.tensors_done.load()));
  duration_.Observe(absl::ToDoubleSeconds(op->end_time - op->start_time));
  merges_.Add({{"method", op->request.spec().method()}, {"result", status.ok() ? "ok" : "error"}})
      .Increment();
  if (status.ok()) {
    PAFT_LOG(INFO) << "merge " << op->request.merge_id() << " done: " << op->request.output_dir();
  } else {
    PAFT_LOG(ERROR) << "merge " << op->request.merge_id() << " failed: " << status;
  }
}

grpc::Status MergerServiceImpl::GetMerge(grpc::ServerContext* context,
                                         const paft::v1::GetMergeRequest* request,
                                         paft::v1::MergeOperation* response) {
  if (absl::Status s = Check(context, "GetMerge"); !s.ok()) return ToGrpcStatus(s);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = operations_.find(request->merge_id());
  if (it == operations_.end()) {
    return ToGrpcStatus(
        absl::NotFoundError(absl::StrCat("merge '", request->merge_id(), "' not found")));
  }
  *response = Snapshot(*it->second);
  return grpc::Status::OK;
}

}  // namespace paft::merger
