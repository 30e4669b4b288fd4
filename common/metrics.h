// Prometheus metrics: one registry per binary, served at http://ADDRESS/metrics.
//
// The HTTP endpoint is our own small server (one thread, one request at a time, 5 s I/O
// timeouts): prometheus-cpp's civetweb-based exposer cannot start its threads inside a process
// that links LibTorch (civetweb asks for 100 KiB thread stacks, smaller than LibTorch's static
// TLS, and pthread_create refuses them), and the worker is such a process.
#ifndef PAFT_COMMON_METRICS_H_
#define PAFT_COMMON_METRICS_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "prometheus/registry.h"

namespace paft {

class MetricsServer {
 public:
  // Serves `registry` on `address` ("0.0.0.0:9090"; port 0 picks a free port): GET /metrics is
  // the text exposition format, GET /healthz answers "ok" (an HTTP liveness probe). Also
  // registers paft_build_info{component,version} = 1 in `registry`.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      const std::string& address, const std::string& component,
      std::shared_ptr<prometheus::Registry> registry);
  ~MetricsServer();

  int port() const { return port_; }

 private:
  MetricsServer(int fd, int port, std::shared_ptr<prometheus::Registry> registry);
  void Serve();
  void Handle(int client);

  const int fd_;
  const int port_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace paft

#endif  // PAFT_COMMON_METRICS_H_
