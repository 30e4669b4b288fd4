// The coordinator under load from simulated agents, through the real gRPC API: the coordinator
// is a separate paft-coordinator process with its SQLite state, as deployed.
//
//   paft-coordinator-load-bench [--agents=1000,5000] [--duration_s=20] [--submit_rate=20]
//                               [--connections=64] [--recovery_jobs=10000]
//
// 1. For each agent count N: N agents register (pools sft and align, one slot each), then each
//    heartbeats once a second (spread evenly over the second) for --duration_s while a client
//    submits --submit_rate jobs a second (world size 1 per branch: the first N/2 jobs are
//    scheduled onto the simulated agents, the rest queue). Reported: p50/p99/max latency of
//    Heartbeat and SubmitJob as seen by the callers, the rates achieved, the coordinator's CPU.
//    With --streams (the default) every simulated agent holds a StreamAssignments stream open,
//    as real agents do, and receives the assignments of the jobs scheduled onto it; reported
//    also: the coordinator's threads and RSS with all streams open. --watches WatchJob streams
//    (clients following 10 jobs submitted first) are held open too.
// 2. Recovery: --recovery_jobs jobs submitted (all queued), the coordinator SIGKILLed and
//    started again on the same database: time until it serves (port file written after the
//    state is loaded), until GetJob and a ListJobs page answer, and its memory.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/file_util.h"
#include "grpcpp/grpcpp.h"
#include "paft/v1/job.grpc.pb.h"
#include "paft/v1/worker.grpc.pb.h"
#include "tests/testing/process.h"

ABSL_FLAG(std::string, agents, "1000,5000", "Simulated agent counts, one run each");
ABSL_FLAG(int, duration_s, 20, "Seconds of heartbeats per run");
ABSL_FLAG(double, submit_rate, 20, "Job submissions per second during a run");
ABSL_FLAG(int, connections, 64, "HTTP/2 connections the simulated agents share");
ABSL_FLAG(int, recovery_jobs, 10000, "Jobs stored before the recovery measurement (0: skip)");
ABSL_FLAG(int, submit_threads, 8, "Parallel submitters while filling the store for recovery");
ABSL_FLAG(std::string, work_dir, "/tmp", "Where the run's state folder is made");
ABSL_FLAG(bool, streams, true, "Each simulated agent holds an assignment stream open");
ABSL_FLAG(int, watches, 1000, "WatchJob streams held open during each run (on 10 jobs)");

namespace {

using paft::testing::ChildProcess;
using SteadyClock = std::chrono::steady_clock;

double Seconds(SteadyClock::duration d) { return std::chrono::duration<double>(d).count(); }

struct Latencies {
  std::mutex mu;
  std::vector<double> ms;
  int errors = 0;
  void Add(double value_ms, bool ok) {
    std::lock_guard<std::mutex> lock(mu);
    if (ok) {
      ms.push_back(value_ms);
    } else {
      ++errors;
    }
  }
  std::string Summary() {
    std::lock_guard<std::mutex> lock(mu);
    if (ms.empty()) return absl::StrCat("no calls succeeded (", errors, " errors)");
    std::sort(ms.begin(), ms.end());
    auto at = [&](double q) { return ms[std::min(ms.size() - 1, static_cast<size_t>(q * ms.size()))]; };
    char line[256];
    std::snprintf(line, sizeof(line), "n=%zu p50=%.2f ms p90=%.2f ms p99=%.2f ms max=%.2f ms errors=%d",
                  ms.size(), at(0.5), at(0.9), at(0.99), ms.back(), errors);
    return line;
  }
};

// CPU seconds (user + system) a process has used.
double CpuSeconds(pid_t pid) {
  auto stat = paft::ReadFileToString(absl::StrCat("/proc/", pid, "/stat"));
  if (!stat.ok()) return 0;
  std::vector<std::string> fields = absl::StrSplit(stat->substr(stat->rfind(')') + 2), ' ');
  double utime = 0, stime = 0;
  (void)absl::SimpleAtod(fields[11], &utime);  // field 14 of the whole line
  (void)absl::SimpleAtod(fields[12], &stime);
  return (utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

std::string RssMiB(pid_t pid) {
  auto status = paft::ReadFileToString(absl::StrCat("/proc/", pid, "/status"));
  if (!status.ok()) return "?";
  auto pos = status->find("VmRSS:");
  if (pos == std::string::npos) return "?";
  int64_t kb = 0;
  std::string rest = status->substr(pos + 6, status->find('\n', pos) - pos - 6);
  (void)absl::SimpleAtoi(absl::StripAsciiWhitespace(absl::StrReplaceAll(rest, {{"kB", ""}})), &kb);
  return absl::StrCat(kb / 1024, " MiB");
}

int Threads(pid_t pid) {
  auto status = paft::ReadFileToString(absl::StrCat("/proc/", pid, "/status"));
  if (!status.ok()) return -1;
  auto pos = status->find("Threads:");
  if (pos == std::string::npos) return -1;
  int threads = -1;
  (void)absl::SimpleAtoi(
      absl::StripAsciiWhitespace(status->substr(pos + 8, status->find('\n', pos) - pos - 8)),
      &threads);
  return threads;
}

// One open server stream read to its end (gRPC's callback client API: no thread each): an
// agent's StreamAssignments or a client's WatchJob. `start` begins the call on this reactor.
template <typename Request, typename Message>
class StreamReader : public grpc::ClientReadReactor<Message> {
 public:
  template <typename Start>
  StreamReader(Request request, std::atomic<int>* open, std::atomic<int>* received, Start start)
      : request_(std::move(request)), open_(open), received_(received) {
    ++*open_;
    start(&context_, &request_, this);
    this->StartRead(&message_);
    this->StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    ++*received_;
    this->StartRead(&message_);
  }
  void OnDone(const grpc::Status&) override { --*open_; }
  void Cancel() { context_.TryCancel(); }

 private:
  grpc::ClientContext context_;
  Request request_;
  Message message_;
  std::atomic<int>* open_;
  std::atomic<int>* received_;
};
using AssignmentReader = StreamReader<paft::v1::StreamAssignmentsRequest, paft::v1::Assignment>;
using WatchReader = StreamReader<paft::v1::WatchJobRequest, paft::v1::JobEvent>;

class Coordinator {
 public:
  Coordinator(const std::string& dir, const std::vector<std::string>& extra, const std::string& log)
      : dir_(dir) {
    (void)paft::RemoveAll(dir + "/ports");
    std::vector<std::string> argv = {PAFT_COORDINATOR,
                                     "--plaintext",
                                     "--listen=127.0.0.1:0",
                                     "--metrics_listen=127.0.0.1:0",
                                     "--state_db=" + dir + "/state.db",
                                     "--merger=127.0.0.1:1",
                                     "--port_file=" + dir + "/ports",
                                     "--lease_ttl=10s",
                                     "--heartbeat_interval=1s"};
    for (const auto& e : extra) argv.push_back(e);
    started_ = SteadyClock::now();
    process_ = std::make_unique<ChildProcess>(argv, std::vector<std::string>{}, dir + "/" + log);
    auto ports = paft::testing::WaitForPortFile(dir + "/ports", absl::Seconds(300));
    serving_ = SteadyClock::now();
    if (!ports) {
      std::fprintf(stderr, "coordinator did not start; see %s/%s\n", dir.c_str(), log.c_str());
      std::exit(1);
    }
    address_ = absl::StrCat("127.0.0.1:", (*ports)["grpc"]);
  }
  ~Coordinator() {
    if (!process_) return;
    process_->Signal(SIGTERM);
    process_->Wait(absl::Seconds(20));
  }
  void Kill() {
    process_->Signal(SIGKILL);
    process_->Wait(absl::Seconds(20));
    process_.reset();
  }
  pid_t pid() const { return process_->pid(); }
  const std::string& address() const { return address_; }
  double StartSeconds() const { return Seconds(serving_ - started_); }
  SteadyClock::time_point started() const { return started_; }

 private:
  std::string dir_, address_;
  std::unique_ptr<ChildProcess> process_;
  SteadyClock::time_point started_, serving_;
};

std::vector<std::shared_ptr<grpc::Channel>> Channels(const std::string& address, int count) {
  std::vector<std::shared_ptr<grpc::Channel>> out;
  for (int i = 0; i < count; ++i) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // one connection per channel
    args.SetInt("paft.bench.connection", i);
    out.push_back(grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
  }
  return out;
}

// A base model folder and datasets that pass admission's input checks.
void WriteInputs(const std::string& dir) {
  (void)paft::MakeDirs(dir + "/base");
  (void)paft::WriteFileAtomic(dir + "/base/config.json", R"({
  "model_type": "llama", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
  "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 4,
  "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "torch_dtype": "float32"})");
  std::string empty_safetensors(8, '\0');
  empty_safetensors[0] = 8;
  empty_safetensors += "{}      ";
  (void)paft::WriteFileAtomic(dir + "/base/model.safetensors", empty_safetensors);
  (void)paft::WriteFileAtomic(dir + "/sft.jsonl", "{\"prompt\": \"a\", \"completion\": \"b\"}\n");
  (void)paft::WriteFileAtomic(dir + "/pref.jsonl",
                              "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}\n");
}

paft::v1::SubmitJobRequest JobRequest(const std::string& dir, const std::string& id) {
  paft::v1::SubmitJobRequest request;
  request.set_request_id(id);
  auto* spec = request.mutable_spec();
  spec->set_name(id);
  spec->set_base_model(dir + "/base");
  spec->set_output_dir(dir + "/jobs/" + id);
  for (auto* branch : {spec->mutable_sft(), spec->mutable_alignment()}) {
    branch->set_world_size(1);
    branch->set_max_steps(100);
  }
  spec->mutable_sft()->set_pool("sft");
  spec->mutable_sft()->mutable_dataset()->set_path(dir + "/sft.jsonl");
  spec->mutable_sft()->mutable_sft();
  spec->mutable_alignment()->set_pool("align");
  spec->mutable_alignment()->mutable_dataset()->set_path(dir + "/pref.jsonl");
  spec->mutable_alignment()->mutable_dpo();
  return request;
}

bool Submit(paft::v1::JobService::Stub& stub, const paft::v1::SubmitJobRequest& request,
            Latencies* latencies) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  paft::v1::Job job;
  const auto start = SteadyClock::now();
  grpc::Status status = stub.SubmitJob(&context, request, &job);
  if (latencies) latencies->Add(Seconds(SteadyClock::now() - start) * 1e3, status.ok());
  if (!status.ok()) std::fprintf(stderr, "submit: %s\n", status.error_message().c_str());
  return status.ok();
}

void AgentRun(const std::string& dir, int agents) {
  // The lease outlasts the registration of every simulated agent (16 at a time: 20,000 take
  // ~20 s), which are only then set heartbeating: the run measures the steady state.
  Coordinator coordinator(dir, {"--tick_interval=250ms", "--lease_ttl=120s"},
                          absl::StrCat("coordinator-", agents, ".log"));
  auto channels = Channels(coordinator.address(), absl::GetFlag(FLAGS_connections));
  std::vector<std::unique_ptr<paft::v1::WorkerService::Stub>> stubs;
  for (auto& c : channels) stubs.push_back(paft::v1::WorkerService::NewStub(c));

  // Registration, 16 at a time.
  std::vector<std::string> ids(agents);
  Latencies registration;
  {
    std::atomic<int> next{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 16; ++t) {
      threads.emplace_back([&] {
        for (int i; (i = next++) < agents;) {
          paft::v1::RegisterWorkerRequest request;
          request.set_name(absl::StrCat("sim-", i));
          request.set_pool(i % 2 == 0 ? "sft" : "align");
          request.set_devices(1);
          request.set_address(absl::StrCat("10.0.", i / 250, ".", i % 250));
          paft::v1::RegisterWorkerResponse response;
          grpc::ClientContext context;
          const auto start = SteadyClock::now();
          grpc::Status s = stubs[i % stubs.size()]->RegisterWorker(&context, request, &response);
          registration.Add(Seconds(SteadyClock::now() - start) * 1e3, s.ok());
          ids[i] = response.worker_id();
        }
      });
    }
    for (auto& t : threads) t.join();
  }

  // Every agent's assignment stream, open for the whole run.
  std::atomic<int> streams_open{0}, assignments{0};
  std::vector<std::unique_ptr<AssignmentReader>> readers;
  if (absl::GetFlag(FLAGS_streams)) {
    for (int i = 0; i < agents; ++i) {
      paft::v1::StreamAssignmentsRequest request;
      request.set_worker_id(ids[i]);
      auto* stub = stubs[i % stubs.size()].get();
      readers.push_back(std::make_unique<AssignmentReader>(
          request, &streams_open, &assignments, [stub](auto* context, auto* req, auto* reactor) {
            stub->async()->StreamAssignments(context, req, reactor);
          }));
    }
    std::this_thread::sleep_for(std::chrono::seconds(2));  // let them all reach the server
  }
  // Clients following jobs.
  std::atomic<int> watches_open{0}, watch_events{0};
  std::vector<std::unique_ptr<paft::v1::JobService::Stub>> job_stubs;  // outlive the watchers
  std::vector<std::unique_ptr<WatchReader>> watchers;
  if (const int watches = absl::GetFlag(FLAGS_watches); watches > 0) {
    auto job_stub = paft::v1::JobService::NewStub(channels[0]);
    std::vector<std::string> watched;
    for (int j = 0; j < 10; ++j) {
      const std::string id = absl::StrCat("watched-", agents, "-", j);
      paft::v1::Job job;
      grpc::ClientContext context;
      if (job_stub->SubmitJob(&context, JobRequest(dir, id), &job).ok()) {
        watched.push_back(job.job_id());
      }
    }
    for (auto& c : channels) job_stubs.push_back(paft::v1::JobService::NewStub(c));
    for (int w = 0; w < watches && !watched.empty(); ++w) {
      paft::v1::WatchJobRequest request;
      request.set_job_id(watched[w % watched.size()]);
      auto* stub = job_stubs[w % job_stubs.size()].get();
      watchers.push_back(std::make_unique<WatchReader>(
          request, &watches_open, &watch_events, [stub](auto* context, auto* req, auto* reactor) {
            stub->async()->WatchJob(context, req, reactor);
          }));
    }
    std::this_thread::sleep_for(std::chrono::seconds(2));
  }
  const int threads_open = Threads(coordinator.pid());

  // Heartbeats: agent i at t0 + k s + i/N s, asynchronously (a slow answer does not delay
  // the next agent's heartbeat, as with real agents).
  Latencies heartbeats, submissions;
  struct Call {
    grpc::ClientContext context;
    paft::v1::HeartbeatRequest request;
    paft::v1::HeartbeatResponse response;
    SteadyClock::time_point start;
  };
  std::atomic<int> in_flight{0};
  const int duration = absl::GetFlag(FLAGS_duration_s);
  const double cpu_before = CpuSeconds(coordinator.pid());
  const auto t0 = SteadyClock::now() + std::chrono::milliseconds(200);
  std::atomic<bool> done{false};
  std::thread submitter([&] {
    auto stub = paft::v1::JobService::NewStub(channels[0]);
    const double rate = absl::GetFlag(FLAGS_submit_rate);
    for (int j = 0; rate > 0 && !done; ++j) {
      std::this_thread::sleep_until(t0 + std::chrono::microseconds(static_cast<int64_t>(j * 1e6 / rate)));
      if (done) break;
      Submit(*stub, JobRequest(dir, absl::StrCat("load-", agents, "-", j)), &submissions);
    }
  });
  for (int k = 0; k < duration; ++k) {
    for (int i = 0; i < agents; ++i) {
      std::this_thread::sleep_until(t0 + std::chrono::seconds(k) +
                                    std::chrono::microseconds(static_cast<int64_t>(i * 1e6 / agents)));
      auto* call = new Call;
      call->request.set_worker_id(ids[i]);
      call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      call->start = SteadyClock::now();
      ++in_flight;
      stubs[i % stubs.size()]->async()->Heartbeat(
          &call->context, &call->request, &call->response, [&, call](grpc::Status status) {
            heartbeats.Add(Seconds(SteadyClock::now() - call->start) * 1e3, status.ok());
            delete call;
            --in_flight;
          });
    }
  }
  done = true;
  submitter.join();
  while (in_flight > 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const double wall = Seconds(SteadyClock::now() - t0);
  const double cpu = CpuSeconds(coordinator.pid()) - cpu_before;
  const std::string rss = RssMiB(coordinator.pid());
  const int threads_end = Threads(coordinator.pid());
  const int open_at_end = streams_open.load();
  const int watches_at_end = watches_open.load();
  for (auto& r : readers) r->Cancel();
  for (auto& w : watchers) w->Cancel();
  for (int i = 0; i < 1000 && (streams_open > 0 || watches_open > 0); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::printf("\n== %d agents, %d s, heartbeats every 1 s each, %g submissions/s\n", agents,
              duration, absl::GetFlag(FLAGS_submit_rate));
  std::printf("register:   %s\n", registration.Summary().c_str());
  std::printf("heartbeat:  %s (%.0f/s achieved)\n", heartbeats.Summary().c_str(),
              static_cast<double>(heartbeats.ms.size()) / wall);
  std::printf("submit:     %s (%.1f/s achieved)\n", submissions.Summary().c_str(),
              static_cast<double>(submissions.ms.size()) / wall);
  std::printf("coordinator CPU: %.2f cores busy on average; RSS %s\n", cpu / wall, rss.c_str());
  std::printf("streams:    %d open at the end, %d assignments received; coordinator threads %d "
              "with the streams open, %d at the end\n",
              open_at_end, assignments.load(), threads_open, threads_end);
  std::printf("watches:    %d open at the end, %d events received\n", watches_at_end,
              watch_events.load());
}

void RecoveryRun(const std::string& dir, int jobs) {
  const std::vector<std::string> flags = {"--pool_capacity=sft=1,align=1"};
  double fill_seconds = 0;
  {
    Coordinator coordinator(dir, flags, "coordinator-fill.log");
    std::atomic<int> next{0};
    std::vector<std::thread> threads;
    Latencies latencies;
    const auto start = SteadyClock::now();
    for (int t = 0; t < absl::GetFlag(FLAGS_submit_threads); ++t) {
      threads.emplace_back([&] {
        auto stub = paft::v1::JobService::NewStub(
            grpc::CreateChannel(coordinator.address(), grpc::InsecureChannelCredentials()));
        for (int i; (i = next++) < jobs;) {
          if (!Submit(*stub, JobRequest(dir, absl::StrCat("stored-", i)), &latencies)) std::exit(1);
        }
      });
    }
    for (auto& t : threads) t.join();
    fill_seconds = Seconds(SteadyClock::now() - start);
    std::printf("\n== recovery with %d stored jobs\n", jobs);
    std::printf("filling:    %.1f s (%.0f submissions/s, %d threads), submit %s\n", fill_seconds,
                jobs / fill_seconds, absl::GetFlag(FLAGS_submit_threads),
                latencies.Summary().c_str());
    coordinator.Kill();  // kill -9: no orderly shutdown
  }
  int64_t db_bytes = 0;
  for (const char* suffix : {"", "-wal"}) {
    struct stat st;
    if (::stat((dir + "/state.db" + suffix).c_str(), &st) == 0) db_bytes += st.st_size;
  }
  Coordinator restarted(dir, flags, "coordinator-recovered.log");
  auto stub = paft::v1::JobService::NewStub(
      grpc::CreateChannel(restarted.address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  paft::v1::GetJobRequest get;
  paft::v1::ListJobsRequest list;
  list.add_states(paft::v1::JOB_STATE_QUEUED);
  paft::v1::ListJobsResponse page;
  grpc::Status status = stub->ListJobs(&context, list, &page);
  const double first_list = Seconds(SteadyClock::now() - restarted.started());
  if (!status.ok() || page.jobs_size() == 0) {
    std::fprintf(stderr, "ListJobs after recovery: %s\n", status.error_message().c_str());
    std::exit(1);
  }
  get.set_job_id(page.jobs(0).job_id());
  grpc::ClientContext context2;
  paft::v1::Job job;
  const auto get_start = SteadyClock::now();
  status = stub->GetJob(&context2, get, &job);
  const double get_ms = Seconds(SteadyClock::now() - get_start) * 1e3;
  std::printf("state database: %.1f MiB (with WAL)\n", db_bytes / 1048576.0);
  std::printf("restart: serving after %.2f s (process start, SQLite load, first listen); first "
              "ListJobs page answered after %.2f s; GetJob then %.2f ms (queue position %d); "
              "RSS %s\n",
              restarted.StartSeconds(), first_list, get_ms, job.queue_position(),
              RssMiB(restarted.pid()).c_str());
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::string pattern = absl::GetFlag(FLAGS_work_dir) + "/paft-load-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  const std::string dir = pattern;
  WriteInputs(dir);
  std::printf("state and logs in %s; %u cores\n", dir.c_str(), std::thread::hardware_concurrency());
  for (absl::string_view n : absl::StrSplit(absl::GetFlag(FLAGS_agents), ',', absl::SkipEmpty())) {
    int agents = 0;
    if (!absl::SimpleAtoi(n, &agents) || agents < 2) {
      std::fprintf(stderr, "--agents: bad count '%s'\n", std::string(n).c_str());
      return 2;
    }
    const std::string run_dir = absl::StrCat(dir, "/agents-", agents);
    (void)paft::MakeDirs(run_dir);
    WriteInputs(run_dir);
    AgentRun(run_dir, agents);
  }
  if (absl::GetFlag(FLAGS_recovery_jobs) > 0) {
    const std::string run_dir = dir + "/recovery";
    (void)paft::MakeDirs(run_dir);
    WriteInputs(run_dir);
    RecoveryRun(run_dir, absl::GetFlag(FLAGS_recovery_jobs));
  }
  (void)paft::RemoveAll(dir);
  return 0;
}
