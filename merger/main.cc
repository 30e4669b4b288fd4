// paft-merger: the merge service, a mergekit-compatible CLI, and delta analysis.
//
//   paft-merger serve [--listen=0.0.0.0:50053] [--metrics_listen=0.0.0.0:9093]
//   paft-merger merge CONFIG.yaml OUT [--adapter_out=DIR] [--threads=N] [--max_shard_bytes=B]
//   paft-merger merge --request=REQUEST.json    a paft.v1.MergeRequest as JSON, run as the service
//                                               runs it (the merge search's candidates)
//   paft-merger inspect --base=BASE INPUT... [--relative_threshold=1e-3] [--epsilon=0]
//                       [--summary] [--json] [--density=D [--weights=W,...]]
#include <google/protobuf/util/json_util.h>

#include <csignal>
#include <filesystem>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/time/clock.h"
#include "common/file_util.h"
#include "common/grpc_server.h"
#include "common/logging.h"
#include "common/metrics.h"
#include "common/process_util.h"
#include "merger/inspect.h"
#include "merger/mergekit_config.h"
#include "merger/merger.h"
#include "merger/service.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:50053", "serve: gRPC listen address");
ABSL_FLAG(std::string, metrics_listen, "0.0.0.0:9093", "serve: Prometheus /metrics address");
ABSL_FLAG(std::string, port_file, "", "serve: write the bound ports here as JSON");
ABSL_FLAG(std::string, tls_cert, "", "serve: TLS certificate (PEM)");
ABSL_FLAG(bool, plaintext, false,
          "serve: without TLS (only on a trusted network or a local cluster)");
ABSL_FLAG(std::string, tls_key, "", "serve: TLS private key (PEM)");
ABSL_FLAG(std::string, tls_client_ca, "", "serve: require client certificates signed by this CA");
ABSL_FLAG(std::string, auth_tokens, "",
          "serve: token file (ROLE IDENTITY SHA256 per line); only role coordinator (and admin) "
          "may call; empty: no authentication");
ABSL_FLAG(int, threads, 0, "merge: tensors merged in parallel (default: cores)");
ABSL_FLAG(int64_t, max_shard_bytes, 0, "merge: largest output shard (default 5 GiB)");
ABSL_FLAG(std::string, adapter_out, "",
          "merge: where the merged adapter goes when a model is written too (default OUT-adapter)");
ABSL_FLAG(std::string, request, "",
          "merge: a paft.v1.MergeRequest as JSON (instead of CONFIG.yaml OUT): its outputs, "
          "threads and shard size as it says");
ABSL_FLAG(std::string, base, "", "inspect: base model folder");
ABSL_FLAG(double, epsilon, 0.0, "inspect: |x| above this counts as nonzero (absolute)");
ABSL_FLAG(double, relative_threshold, 1e-3,
          "inspect: |x| above this times the tensor's largest |x| counts as nonzero");
ABSL_FLAG(bool, summary, false, "inspect: only the per-layer sums and the totals");
ABSL_FLAG(double, density, 0,
          "inspect: also measure interference as ties merges at this density (0: not measured)");
ABSL_FLAG(std::vector<std::string>, weights, {},
          "inspect: the inputs' weights for the interference's sign election (default 1 each)");
ABSL_FLAG(bool, json, false, "inspect: JSON output");

namespace {

int Serve() {
  auto registry = std::make_shared<prometheus::Registry>();
  auto service = std::make_unique<paft::merger::MergerServiceImpl>(*registry);
  auto security = paft::LoadServerSecurity(
      paft::TlsConfig{absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
                      absl::GetFlag(FLAGS_tls_client_ca)},
      absl::GetFlag(FLAGS_plaintext), absl::GetFlag(FLAGS_auth_tokens));
  if (!security.ok()) {
    PAFT_LOG(ERROR) << security.status();
    return 2;
  }
  service->set_authenticator(security->authenticator.get());
  auto server = paft::StartGrpcServer(absl::GetFlag(FLAGS_listen), {service.get()}, security->tls);
  if (!server.ok()) {
    PAFT_LOG(ERROR) << server.status();
    return 1;
  }
  auto metrics = paft::MetricsServer::Start(absl::GetFlag(FLAGS_metrics_listen), "merger", registry);
  if (!metrics.ok()) {
    PAFT_LOG(ERROR) << metrics.status();
    return 1;
  }
  if (!absl::GetFlag(FLAGS_port_file).empty()) {
    absl::Status s = paft::WritePortFile(absl::GetFlag(FLAGS_port_file),
                                         {{"grpc", server->port}, {"metrics", (*metrics)->port()}});
    if (!s.ok()) {
      PAFT_LOG(ERROR) << s;
      return 1;
    }
  }
  PAFT_LOG(INFO) << "serving gRPC on port " << server->port << ", metrics on port "
                 << (*metrics)->port();
  // SIGHUP re-reads the principals file (connections and calls in flight carry on); SIGTERM
  // and SIGINT drain.
  int signal_number = paft::WaitForTerminationSignal();
  for (; signal_number == SIGHUP; signal_number = paft::WaitForTerminationSignal()) {
    paft::ReloadPrincipals(security->authenticator.get());
  }
  PAFT_LOG(INFO) << "signal " << signal_number << ": draining (running merges finish first)";
  server->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  service.reset();  // joins running merges
  return 0;
}

int RunAndReport(const paft::v1::MergeRequest& request) {
  paft::merger::MergeProgress progress;
  const absl::Time start = absl::Now();
  absl::Status status = paft::merger::RunMerge(request, &progress);
  if (!status.ok()) {
    std::cerr << "merge failed: " << status << "\n";
    return 1;
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (!request.adapter_output_dir().empty()) {
    std::cout << "merged adapter (" << request.spec().method() << ", "
              << request.spec().merge_space() << " space) in " << request.adapter_output_dir()
              << "\n";
  }
  if (request.output_dir().empty()) return 0;
  std::cout << "merged " << progress.tensors_done << " tensors (" << request.spec().method()
            << ") into " << request.output_dir() << ": read " << progress.bytes_read / 1e9
            << " GB, wrote " << progress.bytes_written / 1e9 << " GB in " << seconds << " s\n";
  return 0;
}

int MergeRequestFile(const std::string& path) {
  auto text = paft::ReadFileToString(path);
  if (!text.ok()) {
    std::cerr << "error: " << text.status() << "\n";
    return 2;
  }
  paft::v1::MergeRequest request;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  if (auto parsed = google::protobuf::util::JsonStringToMessage(*text, &request, options);
      !parsed.ok()) {
    std::cerr << "error: " << path << ": " << parsed.message().as_string() << "\n";
    return 2;
  }
  return RunAndReport(request);
}

int MergeOnce(const std::string& config_path, const std::string& out) {
  auto text = paft::ReadFileToString(config_path);
  if (!text.ok()) {
    std::cerr << "error: " << text.status() << "\n";
    return 2;
  }
  std::error_code ec;
  const std::string dir = std::filesystem::absolute(config_path, ec).parent_path().string();
  auto request = paft::merger::ParseMergekitConfig(*text, dir);
  if (!request.ok()) {
    std::cerr << "error: " << request.status() << "\n";
    return 2;
  }
  request->set_merge_id("cli");
  // OUT is the model folder, or the adapter folder when only an adapter is written; with both,
  // the adapter goes to --adapter_out (default OUT-adapter).
  const std::string& output = request->spec().output();
  if (output == "adapter") {
    request->set_adapter_output_dir(out);
  } else {
    request->set_output_dir(out);
    if (output == "both" || (output.empty() && !request->spec().merge_space().empty() &&
                             request->spec().merge_space() != "delta")) {
      const std::string adapter_out = absl::GetFlag(FLAGS_adapter_out);
      request->set_adapter_output_dir(adapter_out.empty() ? out + "-adapter" : adapter_out);
    }
  }
  request->set_threads(absl::GetFlag(FLAGS_threads));
  request->set_max_shard_bytes(absl::GetFlag(FLAGS_max_shard_bytes));
  return RunAndReport(*request);
}

int Inspect(const std::vector<std::string>& inputs) {
  const paft::merger::Threshold threshold{absl::GetFlag(FLAGS_epsilon),
                                          absl::GetFlag(FLAGS_relative_threshold)};
  paft::merger::InterferenceOptions interference;
  interference.density = absl::GetFlag(FLAGS_density);
  for (const std::string& w : absl::GetFlag(FLAGS_weights)) {
    double value = 0;
    if (!absl::SimpleAtod(w, &value)) {
      std::cerr << "error: --weights: '" << w << "' is not a number\n";
      return 2;
    }
    interference.weights.push_back(value);
  }
  auto report =
      paft::merger::InspectDeltas(absl::GetFlag(FLAGS_base), inputs, threshold, interference);
  if (!report.ok()) {
    std::cerr << "error: " << report.status() << "\n";
    return 1;
  }
  std::cout << (absl::GetFlag(FLAGS_json)
                    ? paft::merger::ReportToJson(*report, inputs, threshold) + "\n"
                    : paft::merger::FormatReport(*report, inputs, absl::GetFlag(FLAGS_summary)));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  paft::BlockTerminationSignals();
  absl::SetProgramUsageMessage(
      "paft-merger serve [--listen=ADDR] [--metrics_listen=ADDR]\n"
      "paft-merger merge CONFIG.yaml OUT [--adapter_out=DIR] [--threads=N] [--max_shard_bytes=B]\n"
      "paft-merger merge --request=REQUEST.json\n"
      "paft-merger inspect --base=BASE INPUT... [--relative_threshold=R] [--epsilon=E] [--summary] "
      "[--json] [--density=D [--weights=W,...]]");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  paft::SetLogTag("merger");
  const std::string command = args.size() >= 2 ? args[1] : "";
  if (command == "serve" && args.size() == 2) return Serve();
  if (command == "merge" && args.size() == 2 && !absl::GetFlag(FLAGS_request).empty()) {
    return MergeRequestFile(absl::GetFlag(FLAGS_request));
  }
  if (command == "merge" && args.size() == 4 && absl::GetFlag(FLAGS_request).empty()) {
    return MergeOnce(args[2], args[3]);
  }
  if (command == "inspect" && args.size() >= 3 && !absl::GetFlag(FLAGS_base).empty()) {
    return Inspect(std::vector<std::string>(args.begin() + 2, args.end()));
  }
  std::cerr << absl::ProgramUsageMessage() << "\n";
  return 2;
}
