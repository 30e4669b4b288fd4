#include "common/metrics.h"

#include <exception>

#include "absl/strings/str_cat.h"
#include "prometheus/gauge.h"

namespace paft {

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const std::string& address, const std::string& component,
    std::shared_ptr<prometheus::Registry> registry) {
  prometheus::BuildGauge()
      .Name("paft_build_info")
      .Help("Always 1; labels say which paft component and version this is")
      .Register(*registry)
      .Add({{"component", component}, {"version", PAFT_VERSION}})
      .Set(1);
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(address);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", address, ": ", e.what()));
  }
  exposer->RegisterCollectable(registry);
  std::vector<int> ports = exposer->GetListeningPorts();
  int port = ports.empty() ? 0 : ports.front();
  return std::unique_ptr<MetricsServer>(new MetricsServer(std::move(exposer), port));
}

}  // namespace paft
