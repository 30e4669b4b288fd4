#include "coordinator/merge_driver.h"

#include <chrono>

#include "common/auth.h"
#include "common/grpc_server.h"
#include "common/grpc_status.h"
#include "common/logging.h"

namespace paft::coordinator {

GrpcMergerClient::GrpcMergerClient(std::shared_ptr<grpc::Channel> channel, std::string token)
    : stub_(paft::v1::MergerService::NewStub(std::move(channel))), token_(std::move(token)) {}

absl::StatusOr<paft::v1::MergeOperation> GrpcMergerClient::Merge(
    const paft::v1::MergeRequest& request) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  AddToken(&context, token_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shut_down_) return absl::CancelledError("the coordinator is shutting down");
    in_flight_ = &context;
  }
  paft::v1::MergeOperation operation;
  grpc::Status status = stub_->Merge(&context, request, &operation);
  {
    std::lock_guard<std::mutex> lock(mu_);
    in_flight_ = nullptr;
  }
  if (!status.ok()) return FromGrpcStatus(status);
  return operation;
}

void GrpcMergerClient::Shutdown() {
  std::lock_guard<std::mutex> lock(mu_);
  shut_down_ = true;
  if (in_flight_ != nullptr) in_flight_->TryCancel();
}

void MergeDriver::Poll() {
  for (const auto& [job_id, request] : manager_->PendingMerges()) {
    auto operation = client_->Merge(request);
    if (!operation.ok()) {
      const auto code = operation.status().code();
      if (code == absl::StatusCode::kCancelled) continue;  // shutting down: retried after a restart
      if (code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kDeadlineExceeded ||
          code == absl::StatusCode::kResourceExhausted) {
        PAFT_LOG(WARNING) << "merger unavailable for " << request.merge_id() << " ("
                          << operation.status() << "); will retry";
        continue;
      }
      paft::v1::MergeOperation failed;
      failed.set_merge_id(request.merge_id());
      failed.set_state(paft::v1::MERGE_STATE_FAILED);
      failed.set_error(std::string(operation.status().message()));
      failed.set_error_code(static_cast<int>(code));
      manager_->OnMergeFinished(job_id, failed);
      continue;
    }
    if (operation->state() == paft::v1::MERGE_STATE_SUCCEEDED ||
        operation->state() == paft::v1::MERGE_STATE_FAILED) {
      manager_->OnMergeFinished(job_id, *operation);
    }
  }
}

}  // namespace paft::coordinator
