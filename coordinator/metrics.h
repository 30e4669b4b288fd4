// The coordinator's Prometheus metrics (names are part of the operations contract: docs/).
#ifndef PAFT_COORDINATOR_METRICS_H_
#define PAFT_COORDINATOR_METRICS_H_

#include <memory>
#include <string>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace paft::coordinator {

struct CoordinatorMetrics {
  explicit CoordinatorMetrics(prometheus::Registry& registry)
      : jobs_submitted(prometheus::BuildCounter()
                           .Name("paft_jobs_submitted_total")
                           .Help("Jobs accepted by SubmitJob (idempotent repeats not counted)")
                           .Register(registry)
                           .Add({})),
        jobs(prometheus::BuildGauge()
                 .Name("paft_jobs")
                 .Help("Jobs known to the coordinator, by state")
                 .Register(registry)),
        job_transitions(prometheus::BuildCounter()
                            .Name("paft_job_transitions_total")
                            .Help("Job state transitions, by the state entered")
                            .Register(registry)),
        branch_restarts(prometheus::BuildCounter()
                            .Name("paft_branch_restarts_total")
                            .Help("Branch restarts, by reason")
                            .Register(registry)),
        workers(prometheus::BuildGauge()
                    .Name("paft_workers")
                    .Help("Registered worker agents, by pool and state (idle: no busy slot)")
                    .Register(registry)),
        branches(prometheus::BuildGauge()
                     .Name("paft_branches")
                     .Help("Branches of the jobs known to the coordinator, by kind and state")
                     .Register(registry)),
        queue_depth(prometheus::BuildGauge()
                        .Name("paft_queue_depth")
                        .Help("Branches waiting for a gang of devices, by pool")
                        .Register(registry)),
        heartbeat_age(prometheus::BuildGauge()
                          .Name("paft_worker_heartbeat_age_max_seconds")
                          .Help("Seconds since the stalest heartbeat among a pool's agents")
                          .Register(registry)),
        jobs_evicted(prometheus::BuildCounter()
                         .Name("paft_jobs_evicted_total")
                         .Help("Finished jobs dropped from memory after the retention period "
                               "(still served from the state database)")
                         .Register(registry)
                         .Add({})),
        identity_denied(prometheus::BuildCounter()
                            .Name("paft_identity_denied_total")
                            .Help("Worker calls refused because the caller's identity may not act "
                                  "as the worker or rank named, by method")
                            .Register(registry)),
        checkpoints(prometheus::BuildCounter()
                        .Name("paft_checkpoints_total")
                        .Help("Checkpoints committed, by branch kind")
                        .Register(registry)),
        branch_step(prometheus::BuildGauge()
                        .Name("paft_branch_step")
                        .Help("Optimizer step of a running branch (rank 0)")
                        .Register(registry)),
        branch_total_steps(prometheus::BuildGauge()
                               .Name("paft_branch_total_steps")
                               .Help("Steps a running branch will train")
                               .Register(registry)),
        branch_loss(prometheus::BuildGauge()
                        .Name("paft_branch_loss")
                        .Help("Newest training loss of a running branch")
                        .Register(registry)),
        branch_tokens_per_second(prometheus::BuildGauge()
                                     .Name("paft_branch_tokens_per_second")
                                     .Help("Training throughput of a running branch, all ranks")
                                     .Register(registry)),
        branch_eta(prometheus::BuildGauge()
                       .Name("paft_branch_eta_seconds")
                       .Help("Estimated seconds until a running branch finishes training")
                       .Register(registry)),
        branch_checkpoint_age(prometheus::BuildGauge()
                                  .Name("paft_branch_checkpoint_age_seconds")
                                  .Help("Seconds since a running branch's newest checkpoint "
                                        "(or since it started, if none)")
                                  .Register(registry)),
        pool_slots(prometheus::BuildGauge()
                       .Name("paft_pool_slots")
                       .Help("Device slots, by pool and state (free, busy)")
                       .Register(registry)),
        rpcs(prometheus::BuildCounter()
                 .Name("paft_coordinator_rpcs_total")
                 .Help("RPCs handled, by method and status code")
                 .Register(registry)),
        rpc_duration(prometheus::BuildHistogram()
                         .Name("paft_coordinator_rpc_duration_seconds")
                         .Help("Time to handle a unary RPC, by method")
                         .Register(registry)) {}

  // Buckets of rpc_duration: 50 us to 10 s.
  static prometheus::Histogram::BucketBoundaries RpcBuckets() {
    return {5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5,
            1, 2.5, 5, 10};
  }

  prometheus::Counter& jobs_submitted;
  prometheus::Family<prometheus::Gauge>& jobs;
  prometheus::Family<prometheus::Counter>& job_transitions;
  prometheus::Family<prometheus::Counter>& branch_restarts;
  prometheus::Family<prometheus::Gauge>& workers;
  prometheus::Family<prometheus::Gauge>& branches;
  prometheus::Family<prometheus::Gauge>& queue_depth;
  prometheus::Family<prometheus::Gauge>& heartbeat_age;
  prometheus::Counter& jobs_evicted;
  prometheus::Family<prometheus::Counter>& identity_denied;
  prometheus::Family<prometheus::Counter>& checkpoints;
  prometheus::Family<prometheus::Gauge>& branch_step;
  prometheus::Family<prometheus::Gauge>& branch_total_steps;
  prometheus::Family<prometheus::Gauge>& branch_loss;
  prometheus::Family<prometheus::Gauge>& branch_tokens_per_second;
  prometheus::Family<prometheus::Gauge>& branch_eta;
  prometheus::Family<prometheus::Gauge>& branch_checkpoint_age;
  prometheus::Family<prometheus::Gauge>& pool_slots;
  prometheus::Family<prometheus::Counter>& rpcs;
  prometheus::Family<prometheus::Histogram>& rpc_duration;
};

}  // namespace paft::coordinator

#endif  // PAFT_COORDINATOR_METRICS_H_
