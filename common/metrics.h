// Prometheus metrics: one registry per binary, served at http://ADDRESS/metrics by prometheus-cpp.
#ifndef PAFT_COMMON_METRICS_H_
#define PAFT_COMMON_METRICS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"

namespace paft {

class MetricsServer {
 public:
  // Serves `registry` on `address` ("0.0.0.0:9090"; port 0 picks a free port). Also registers
  // paft_build_info{component,version} = 1 in `registry`.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      const std::string& address, const std::string& component,
      std::shared_ptr<prometheus::Registry> registry);

  int port() const { return port_; }

 private:
  MetricsServer(std::unique_ptr<prometheus::Exposer> exposer, int port)
      : exposer_(std::move(exposer)), port_(port) {}

  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_;
};

}  // namespace paft

#endif  // PAFT_COMMON_METRICS_H_
