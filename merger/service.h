// MergerService: runs merges in background threads; Merge is idempotent on merge_id.
#ifndef PAFT_MERGER_SERVICE_H_
#define PAFT_MERGER_SERVICE_H_

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "merger/merger.h"
#include "common/auth.h"
#include "paft/v1/merger.grpc.pb.h"
#include "prometheus/counter.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace paft::merger {

class MergerServiceImpl final : public paft::v1::MergerService::Service {
 public:
  explicit MergerServiceImpl(prometheus::Registry& registry);
  // With an authenticator, only the coordinator (and admins) may call the merger.
  void set_authenticator(const TokenAuthenticator* auth) { auth_ = auth; }
  ~MergerServiceImpl() override;  // waits for running merges

  grpc::Status Merge(grpc::ServerContext*, const paft::v1::MergeRequest* request,
                     paft::v1::MergeOperation* response) override;
  grpc::Status GetMerge(grpc::ServerContext*, const paft::v1::GetMergeRequest* request,
                        paft::v1::MergeOperation* response) override;

 private:
  struct Operation {
    paft::v1::MergeRequest request;
    MergeProgress progress;
    paft::v1::MergeState state = paft::v1::MERGE_STATE_RUNNING;  // GUARDED_BY(mu_)
    absl::Status result;                                        // GUARDED_BY(mu_)
    absl::Time start_time;
    absl::Time end_time;  // GUARDED_BY(mu_)
  };

  void Run(std::shared_ptr<Operation> op);
  paft::v1::MergeOperation Snapshot(const Operation& op) const;  // REQUIRES: mu_ held

  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Operation>> operations_;  // GUARDED_BY(mu_)
  std::vector<std::thread> threads_;                               // GUARDED_BY(mu_)

  prometheus::Family<prometheus::Counter>& merges_;
  prometheus::Counter& bytes_read_;
  prometheus::Counter& bytes_written_;
  prometheus::Counter& tensors_;
  prometheus::Histogram& duration_;
  prometheus::Family<prometheus::Counter>& refusals_;  // calls refused by authentication
  const TokenAuthenticator* auth_ = nullptr;
  // Authorizes a call to `method`, counting refusals.
  absl::Status Check(grpc::ServerContext* context, const char* method);
};

}  // namespace paft::merger

#endif  // PAFT_MERGER_SERVICE_H_
