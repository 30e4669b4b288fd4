// paft-coordinator: the control plane. Composition root: store, registry, manager, services,
// metrics, control loop; SIGTERM drains.
#include <algorithm>
#include <csignal>
#include <atomic>
#include <climits>
#include <cstdlib>
#include <map>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/auth.h"
#include "common/clock.h"
#include "common/grpc_server.h"
#include "common/logging.h"
#include "common/metrics.h"
#include "common/process_util.h"
#include "coordinator/job_manager.h"
#include "coordinator/job_store.h"
#include "coordinator/merge_driver.h"
#include "coordinator/services.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:50051", "gRPC listen address (port 0: any free port)");
ABSL_FLAG(std::string, metrics_listen, "0.0.0.0:9091", "Prometheus /metrics listen address");
ABSL_FLAG(std::string, state_db, "paft-coordinator.db", "SQLite state database (WAL mode)");
ABSL_FLAG(std::string, merger, "localhost:50053", "Address of the merger service");
ABSL_FLAG(absl::Duration, lease_ttl, absl::Seconds(10), "Worker lease; lost after this silence");
ABSL_FLAG(absl::Duration, heartbeat_interval, absl::Seconds(2), "Heartbeat period for agents");
ABSL_FLAG(absl::Duration, tick_interval, absl::Milliseconds(250), "Control-loop period");
ABSL_FLAG(int, rendezvous_port_base, 29500, "First c10d rendezvous port handed to rank 0");
ABSL_FLAG(absl::Duration, adoption_grace, absl::Seconds(30),
          "After a restart, how long running gangs wait for their agents to report them");
ABSL_FLAG(absl::Duration, progress_timeout, absl::Minutes(30),
          "Restart a branch whose ranks report no progress for this long (0: never)");
ABSL_FLAG(absl::Duration, stop_grace_period, absl::Seconds(30),
          "A stopped rank gets SIGTERM, then SIGKILL after this long");
ABSL_FLAG(std::string, pool_capacity, "",
          "Declared device slots per pool, e.g. 'sft=16,align=8': admission then accepts only "
          "these pools and world sizes up to these figures. Empty: pools are learnt from the "
          "agents that register, with the most slots each has offered");
ABSL_FLAG(std::string, storage_roots, "",
          "Comma-separated folders every job path must resolve into (symlinks followed), e.g. "
          "'/data'; empty: no confinement (a local cluster)");
ABSL_FLAG(std::string, tls_cert, "", "TLS certificate (PEM) of the gRPC server");
ABSL_FLAG(bool, plaintext, false,
          "Serve gRPC without TLS (only on a trusted network or a local cluster)");
ABSL_FLAG(std::string, tls_key, "", "TLS private key (PEM)");
ABSL_FLAG(std::string, tls_client_ca, "", "Require client certificates signed by this CA (mTLS)");
ABSL_FLAG(std::string, auth_tokens, "",
          "Principals file (ROLE IDENTITY SHA256|x509:NAME [names=PATTERN,...] per line, re-read "
          "on SIGHUP): clients (own jobs only) and admins use the JobService, workers (as their "
          "own names only) and admins the WorkerService; empty: no authentication");
ABSL_FLAG(absl::Duration, finished_job_retention, absl::Hours(1),
          "A finished job leaves memory this long after its last change and is then served from "
          "the state database ('inf': never)");
ABSL_FLAG(int, max_active_jobs_per_client, 100,
          "Unfinished jobs one authenticated client may have (0: no limit)");
ABSL_FLAG(int, max_streams_per_client, 32,
          "Open WatchJob/StreamLogs streams one authenticated client may hold (0: no limit)");
ABSL_FLAG(int, handler_threads, 32,
          "Threads that run the unary gRPC calls (started on demand); at most 64 calls per thread "
          "wait for one, more are refused with RESOURCE_EXHAUSTED (callers retry). Streams and "
          "heartbeats use none of them. Also the cap of gRPC's own synchronous threads (its "
          "resource quota)");
ABSL_FLAG(std::string, merger_tls_ca, "", "Verify the merger's TLS certificate with this CA");
ABSL_FLAG(std::string, merger_token_file, "", "Bearer token (role coordinator) for the merger");
ABSL_FLAG(std::string, port_file, "", "If set, write the bound ports here as JSON");

namespace {

// "sft=16,align=8" -> {sft: 16, align: 8}.
absl::StatusOr<std::map<std::string, int>> ParsePoolCapacity(const std::string& text) {
  std::map<std::string, int> out;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(item, absl::MaxSplits('=', 1));
    int slots = 0;
    if (kv.first.empty() || !absl::SimpleAtoi(kv.second, &slots) || slots < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--pool_capacity: '", item, "' is not POOL=SLOTS with SLOTS >= 1"));
    }
    out[kv.first] = slots;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  paft::BlockTerminationSignals();
  absl::SetProgramUsageMessage("paft-coordinator: schedules PAFT jobs onto worker pools");
  absl::ParseCommandLine(argc, argv);
  paft::SetLogTag("coordinator");

  auto pool_capacity = ParsePoolCapacity(absl::GetFlag(FLAGS_pool_capacity));
  if (!pool_capacity.ok()) {
    PAFT_LOG(ERROR) << pool_capacity.status();
    return 2;
  }
  std::vector<std::string> storage_roots;
  for (absl::string_view root :
       absl::StrSplit(absl::GetFlag(FLAGS_storage_roots), ',', absl::SkipWhitespace())) {
    char resolved[PATH_MAX];
    if (::realpath(std::string(root).c_str(), resolved) == nullptr) {
      PAFT_LOG(ERROR) << "--storage_roots: '" << root << "' does not exist";
      return 2;
    }
    storage_roots.push_back(resolved);
  }
  auto store = paft::coordinator::JobStore::Open(absl::GetFlag(FLAGS_state_db));
  if (!store.ok()) {
    PAFT_LOG(ERROR) << store.status();
    return 1;
  }
  auto registry_prom = std::make_shared<prometheus::Registry>();
  paft::coordinator::CoordinatorMetrics metrics(*registry_prom);
  paft::RealClock clock;
  paft::coordinator::WorkerRegistry registry(absl::GetFlag(FLAGS_lease_ttl));
  paft::coordinator::JobManagerOptions options;
  options.heartbeat_interval = absl::GetFlag(FLAGS_heartbeat_interval);
  options.rendezvous_port_base = absl::GetFlag(FLAGS_rendezvous_port_base);
  options.progress_timeout = absl::GetFlag(FLAGS_progress_timeout);
  options.adoption_grace = absl::GetFlag(FLAGS_adoption_grace);
  options.stop_grace_period = absl::GetFlag(FLAGS_stop_grace_period);
  options.pool_capacity = *pool_capacity;
  options.storage_roots = storage_roots;
  options.max_active_jobs_per_client = absl::GetFlag(FLAGS_max_active_jobs_per_client);
  options.finished_job_retention = absl::GetFlag(FLAGS_finished_job_retention);
  paft::coordinator::JobManager manager(options, store->get(), &registry, &clock, &metrics);
  paft::coordinator::WatchHub watch_hub;  // wakes WatchJob/StreamLogs streams
  manager.set_watch_hub(&watch_hub);
  if (absl::Status s = manager.Recover(); !s.ok()) {
    PAFT_LOG(ERROR) << "recovering state: " << s;
    return 1;
  }
  auto merger_channel = paft::MakeClientChannel(
      absl::GetFlag(FLAGS_merger), paft::TlsConfig{"", "", absl::GetFlag(FLAGS_merger_tls_ca)});
  auto merger_token = paft::ReadToken(absl::GetFlag(FLAGS_merger_token_file));
  if (!merger_channel.ok() || !merger_token.ok()) {
    PAFT_LOG(ERROR) << (merger_channel.ok() ? merger_token.status() : merger_channel.status());
    return 2;
  }
  paft::coordinator::GrpcMergerClient merger_client(*merger_channel, *merger_token);
  paft::coordinator::MergeDriver merge_driver(&manager, &merger_client);

  std::atomic<bool> shutting_down{false};
  // Unary calls run here, off gRPC's threads (coordinator/handler_pool.h).
  const int handler_threads = std::max(1, absl::GetFlag(FLAGS_handler_threads));
  paft::coordinator::HandlerPool handler_pool(handler_threads,
                                              static_cast<size_t>(handler_threads) * 64);
  paft::coordinator::JobServiceImpl job_service(&manager, &registry, &watch_hub, &metrics,
                                                &shutting_down);
  paft::coordinator::WorkerServiceImpl worker_service(&manager, &registry, &metrics,
                                                      &shutting_down);
  auto security = paft::LoadServerSecurity(
      paft::TlsConfig{absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
                      absl::GetFlag(FLAGS_tls_client_ca)},
      absl::GetFlag(FLAGS_plaintext), absl::GetFlag(FLAGS_auth_tokens));
  if (!security.ok()) {
    PAFT_LOG(ERROR) << security.status();
    return 2;
  }
  job_service.set_authenticator(security->authenticator.get());
  job_service.set_max_streams_per_client(absl::GetFlag(FLAGS_max_streams_per_client));
  worker_service.set_authenticator(security->authenticator.get());
  job_service.set_handler_pool(&handler_pool);
  worker_service.set_handler_pool(&handler_pool);
  auto server = paft::StartGrpcServer(absl::GetFlag(FLAGS_listen),
                                      {&job_service, &worker_service}, security->tls,
                                      handler_threads);
  if (!server.ok()) {
    PAFT_LOG(ERROR) << server.status();
    return 1;
  }
  auto metrics_server =
      paft::MetricsServer::Start(absl::GetFlag(FLAGS_metrics_listen), "coordinator", registry_prom);
  if (!metrics_server.ok()) {
    PAFT_LOG(ERROR) << metrics_server.status();
    return 1;
  }
  if (!absl::GetFlag(FLAGS_port_file).empty()) {
    absl::Status s = paft::WritePortFile(absl::GetFlag(FLAGS_port_file),
                                         {{"grpc", server->port},
                                          {"metrics", (*metrics_server)->port()}});
    if (!s.ok()) {
      PAFT_LOG(ERROR) << s;
      return 1;
    }
  }
  PAFT_LOG(INFO) << "serving gRPC on port " << server->port << ", metrics on port "
                 << (*metrics_server)->port() << ", state in " << absl::GetFlag(FLAGS_state_db);

  // The control loop (leases, scheduling, progress) never waits on the merger: merges are
  // driven from their own thread, whose calls may take up to their deadline.
  const absl::Duration tick = absl::GetFlag(FLAGS_tick_interval);
  std::thread control_loop([&] {
    while (!shutting_down.load()) {
      manager.Tick();
      absl::SleepFor(tick);
    }
  });
  std::thread merge_loop([&] {
    while (!shutting_down.load()) {
      merge_driver.Poll();
      absl::SleepFor(tick);
    }
  });

  // SIGHUP re-reads the principals file (connections and calls in flight carry on); SIGTERM
  // and SIGINT drain.
  int signal_number = paft::WaitForTerminationSignal();
  for (; signal_number == SIGHUP; signal_number = paft::WaitForTerminationSignal()) {
    paft::ReloadPrincipals(security->authenticator.get());
  }
  PAFT_LOG(INFO) << "signal " << signal_number << ": draining";
  shutting_down.store(true);
  registry.WakeAll();    // open assignment streams end now (agents reconnect elsewhere)
  watch_hub.NotifyAll();  // and so do watches and log streams (clients resume)
  server->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  merger_client.Shutdown();
  control_loop.join();
  merge_loop.join();
  PAFT_LOG(INFO) << "stopped";
  return 0;
}
