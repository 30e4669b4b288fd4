// The coordinator's Prometheus metrics (names are part of the operations contract: docs/).
#ifndef PAFT_COORDINATOR_METRICS_H_
#define PAFT_COORDINATOR_METRICS_H_

#include <memory>
#include <string>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
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
                    .Help("Registered worker agents, by pool")
                    .Register(registry)),
        pool_slots(prometheus::BuildGauge()
                       .Name("paft_pool_slots")
                       .Help("Device slots, by pool and state (free, busy)")
                       .Register(registry)),
        rpcs(prometheus::BuildCounter()
                 .Name("paft_coordinator_rpcs_total")
                 .Help("RPCs handled, by method and status code")
                 .Register(registry)) {}

  prometheus::Counter& jobs_submitted;
  prometheus::Family<prometheus::Gauge>& jobs;
  prometheus::Family<prometheus::Counter>& job_transitions;
  prometheus::Family<prometheus::Counter>& branch_restarts;
  prometheus::Family<prometheus::Gauge>& workers;
  prometheus::Family<prometheus::Gauge>& pool_slots;
  prometheus::Family<prometheus::Counter>& rpcs;
};

}  // namespace paft::coordinator

#endif  // PAFT_COORDINATOR_METRICS_H_
