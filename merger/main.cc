// paft-merger: the merge service (`serve`), and a one-shot CLI (`merge`).
#include <iostream>

#include "absl/strings/numbers.h"

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "common/grpc_server.h"
#include "common/logging.h"
#include "common/metrics.h"
#include "common/process_util.h"
#include "merger/merger.h"
#include "merger/service.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:50053", "serve: gRPC listen address");
ABSL_FLAG(std::string, metrics_listen, "0.0.0.0:9093", "serve: Prometheus /metrics address");
ABSL_FLAG(std::string, port_file, "", "serve: write the bound ports here as JSON");
ABSL_FLAG(std::string, base, "", "merge: base model folder");
ABSL_FLAG(std::vector<std::string>, inputs, {}, "merge: comma-separated input model folders");
ABSL_FLAG(std::vector<std::string>, weights, {}, "merge: one weight per input (default 1)");
ABSL_FLAG(std::string, method, "task_arithmetic", "merge: linear, task_arithmetic, ties");
ABSL_FLAG(double, density, 1.0, "merge: density for every input (ties)");
ABSL_FLAG(double, lambda, 1.0, "merge: scale of the merged delta");
ABSL_FLAG(bool, normalize, false, "merge: divide by the sum of weights");
ABSL_FLAG(std::string, dtype, "", "merge: output dtype (float32, bfloat16, float16)");

namespace {

int Serve() {
  auto registry = std::make_shared<prometheus::Registry>();
  auto service = std::make_unique<paft::merger::MergerServiceImpl>(*registry);
  auto server = paft::StartGrpcServer(absl::GetFlag(FLAGS_listen), {service.get()});
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
  int signal_number = paft::WaitForTerminationSignal();
  PAFT_LOG(INFO) << "signal " << signal_number << ": draining (running merges finish first)";
  server->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  service.reset();  // joins running merges
  return 0;
}

int MergeOnce(const std::string& out) {
  paft::v1::MergeRequest request;
  request.set_merge_id("cli");
  request.set_base_model(absl::GetFlag(FLAGS_base));
  request.set_output_dir(out);
  const auto inputs = absl::GetFlag(FLAGS_inputs);
  const auto weights = absl::GetFlag(FLAGS_weights);
  for (size_t i = 0; i < inputs.size(); ++i) {
    auto* input = request.add_inputs();
    input->set_path(inputs[i]);
    double w = 1.0;
    if (i < weights.size() && !absl::SimpleAtod(weights[i], &w)) {
      std::cerr << "--weights: '" << weights[i] << "' is not a number\n";
      return 2;
    }
    input->mutable_params()->set_weight(w);
    input->mutable_params()->set_density(absl::GetFlag(FLAGS_density));
  }
  request.mutable_spec()->set_method(absl::GetFlag(FLAGS_method));
  request.mutable_spec()->set_lambda(absl::GetFlag(FLAGS_lambda));
  request.mutable_spec()->set_normalize(absl::GetFlag(FLAGS_normalize));
  request.mutable_spec()->set_dtype(absl::GetFlag(FLAGS_dtype));
  paft::merger::MergeProgress progress;
  absl::Status status = paft::merger::RunMerge(request, &progress);
  if (!status.ok()) {
    std::cerr << "merge failed: " << status << "\n";
    return 1;
  }
  std::cout << "merged " << progress.tensors_done << " tensors into " << out << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  paft::BlockTerminationSignals();
  absl::SetProgramUsageMessage(
      "paft-merger serve [--listen ...]\n"
      "paft-merger merge --base BASE --inputs A,B [--weights 1,1] [--method ties] OUT");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  paft::SetLogTag("merger");
  if (args.size() >= 2 && std::string(args[1]) == "serve") return Serve();
  if (args.size() == 3 && std::string(args[1]) == "merge") return MergeOnce(args[2]);
  std::cerr << absl::ProgramUsageMessage() << "\n";
  return 2;
}
