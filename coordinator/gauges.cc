// The gauges the control loop refreshes each tick: pools, workers, branches, queue depth.
#include <set>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status.h"
#include "common/time_util.h"
#include "coordinator/job_manager.h"
#include "coordinator/job_manager_internal.h"

namespace paft::coordinator {

void JobManager::UpdateGaugesLocked() {
  if (metrics_ == nullptr) return;
  const absl::Time now = clock_->Now();
  struct PoolGauges {
    int idle = 0, busy_workers = 0, free = 0, busy = 0, queued = 0;
    double heartbeat_age = 0;
  };
  std::map<std::string, PoolGauges> pools;
  for (const auto& [pool, slots] : pool_high_water_) pools[pool];  // zeros for emptied pools
  for (const auto& [pool, slots] : options_.pool_capacity) pools[pool];
  for (const auto& [pool, stats] : registry_->Stats(now)) {
    auto& p = pools[pool];
    p.idle = stats.idle;
    p.busy_workers = stats.busy_workers;
    p.free = stats.free;
    p.busy = stats.busy;
    p.heartbeat_age = absl::ToDoubleSeconds(stats.stalest_heartbeat);
  }
  std::map<std::pair<int, int>, int> branch_counts;  // (kind, state) -> count
  std::set<std::pair<std::string, std::string>> series;
  for (const auto& [id, record] : jobs_) {
    for (BranchKind kind : kGangs) {
      const BranchStatus& b = Branch(record.job, kind);
      branch_counts[{kind, b.state()}] += 1;
      if (BranchWaiting(b.state()) && !IsTerminal(record.job.state())) {
        pools[Spec(record.job, kind).pool()].queued += 1;
      }
      if (b.state() != paft::v1::BRANCH_STATE_RUNNING) continue;
      const prometheus::Labels labels = {{"job_id", id}, {"branch", BranchName(kind)}};
      series.insert({id, BranchName(kind)});
      metrics_->branch_step.Add(labels).Set(static_cast<double>(b.step()));
      metrics_->branch_total_steps.Add(labels).Set(static_cast<double>(b.total_steps()));
      metrics_->branch_loss.Add(labels).Set(b.loss());
      metrics_->branch_tokens_per_second.Add(labels).Set(b.tokens_per_second());
      metrics_->branch_eta.Add(labels).Set(b.eta_seconds());
      const auto& since = b.has_checkpoint_time() ? b.checkpoint_time() : b.start_time();
      metrics_->branch_checkpoint_age.Add(labels).Set(
          absl::ToDoubleSeconds(now - FromProtoTime(since)));
    }
  }
  // Series of branches that stopped running since the last tick go away.
  for (const auto& [job_id, branch] : branch_series_) {
    if (series.count({job_id, branch})) continue;
    const prometheus::Labels labels = {{"job_id", job_id}, {"branch", branch}};
    for (auto* family : {&metrics_->branch_step, &metrics_->branch_total_steps,
                         &metrics_->branch_loss, &metrics_->branch_tokens_per_second,
                         &metrics_->branch_eta, &metrics_->branch_checkpoint_age}) {
      family->Remove(&family->Add(labels));
    }
  }
  branch_series_ = std::move(series);
  for (BranchKind kind : kGangs) {
    for (int s = paft::v1::BRANCH_STATE_PENDING; s <= paft::v1::BRANCH_STATE_CANCELLED; ++s) {
      metrics_->branches
          .Add({{"branch", BranchName(kind)},
                {"state", paft::v1::BranchState_Name(static_cast<BranchState>(s))}})
          .Set(branch_counts[{kind, s}]);
    }
  }
  for (const auto& [pool, p] : pools) {
    metrics_->workers.Add({{"pool", pool}, {"state", "idle"}}).Set(p.idle);
    metrics_->workers.Add({{"pool", pool}, {"state", "busy"}}).Set(p.busy_workers);
    metrics_->pool_slots.Add({{"pool", pool}, {"state", "free"}}).Set(p.free);
    metrics_->pool_slots.Add({{"pool", pool}, {"state", "busy"}}).Set(p.busy);
    metrics_->queue_depth.Add({{"pool", pool}}).Set(p.queued);
    metrics_->heartbeat_age.Add({{"pool", pool}}).Set(p.heartbeat_age);
  }
}

}  // namespace paft::coordinator
