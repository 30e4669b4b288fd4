// The Kubernetes manifests, the Dockerfiles and the alert rules agree with each other and with
// the binaries: selectors match labels, Services and probes use ports the containers declare and
// the binaries listen on, every flag passed is one the binary knows, images are Dockerfile
// targets, the PrometheusRule carries deploy/prometheus/paft-alerts.yaml.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/file_util.h"
#include "nlohmann/json.hpp"
#include "tests/deploy/manifest_util.h"
#include "tests/testing/process.h"

namespace paft {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

class ManifestsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* dir : {"/k8s/base", "/k8s/monitoring"}) {
      for (const auto& entry : fs::directory_iterator(kDeploy + dir)) {
        const std::string path = entry.path().string();
        if (entry.path().extension() != ".yaml" || absl::EndsWith(path, "kustomization.yaml")) {
          continue;
        }
        for (auto& doc : LoadDocs(path)) objects_.push_back(doc);
      }
    }
    ASSERT_GT(objects_.size(), 10u);
  }

  std::vector<YAML::Node> OfKind(const std::string& kind) const {
    std::vector<YAML::Node> out;
    for (const auto& o : objects_) {
      if (o["kind"].as<std::string>() == kind) out.push_back(o);
    }
    return out;
  }
  std::vector<YAML::Node> Workloads() const {
    auto out = OfKind("StatefulSet");
    for (auto& d : OfKind("Deployment")) out.push_back(d);
    return out;
  }
  // The flags a binary accepts (from its --helpfull).
  const std::string& Help(const std::string& image) {
    auto it = help_.find(image);
    if (it != help_.end()) return it->second;
    const std::string binary = image == "paft-coordinator" ? PAFT_COORDINATOR
                               : image == "paft-merger"    ? PAFT_MERGER
                                                           : PAFT_WORKER;
    std::string out;
    testing::RunCommand({binary, "--helpfull"}, &out);
    return help_[image] = out;
  }

  void CheckKustomizations();
  // The image of container `container` of the base workload "Kind/name" ("" when none).
  std::string ImageOf(const std::string& key, const std::string& container) const {
    for (const auto& o : objects_) {
      if (o["kind"].as<std::string>() + "/" + o["metadata"]["name"].as<std::string>() != key) {
        continue;
      }
      for (const auto& c : o["spec"]["template"]["spec"]["containers"]) {
        if (c["name"].as<std::string>() == container) return c["image"].as<std::string>();
      }
    }
    return "";
  }

  std::vector<YAML::Node> objects_;
  std::map<std::string, std::string> help_;
};

TEST_F(ManifestsTest, SelectorsServicesAndBudgetsMatchTheWorkloads) {
  const auto workloads = Workloads();
  ASSERT_EQ(workloads.size(), 4u);  // coordinator, merger, worker-sft, worker-align
  for (const auto& w : workloads) {
    const auto name = w["metadata"]["name"].as<std::string>();
    EXPECT_TRUE(Subset(w["spec"]["selector"]["matchLabels"], w["spec"]["template"]["metadata"]["labels"]))
        << name << ": the selector does not match the pod labels";
    EXPECT_TRUE(w["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"].as<bool>()) << name;
    if (w["kind"].as<std::string>() == "StatefulSet") {
      const auto service = w["spec"]["serviceName"].as<std::string>();
      bool found = false;
      for (const auto& s : OfKind("Service")) {
        if (s["metadata"]["name"].as<std::string>() != service) continue;
        found = true;
        if (absl::StrContains(name, "worker")) {
          EXPECT_EQ(s["spec"]["clusterIP"].as<std::string>(), "None") << "headless for rendezvous";
        }
      }
      EXPECT_TRUE(found) << name << ": serviceName " << service << " has no Service";
    }
  }
  for (const auto& s : OfKind("Service")) {
    const auto name = s["metadata"]["name"].as<std::string>();
    int matched = 0;
    for (const auto& w : workloads) {
      if (!Subset(s["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])) continue;
      ++matched;
      std::set<std::string> port_names;
      for (const auto& c : w["spec"]["template"]["spec"]["containers"]) {
        for (const auto& p : c["ports"]) port_names.insert(p["name"].as<std::string>());
      }
      for (const auto& p : s["spec"]["ports"]) {
        EXPECT_TRUE(port_names.count(p["targetPort"].as<std::string>()))
            << name << ": targetPort " << p["targetPort"] << " is not a container port";
      }
    }
    EXPECT_EQ(matched, 1) << name << " selects " << matched << " workloads";
  }
  for (const auto& b : OfKind("PodDisruptionBudget")) {
    int matched = 0;
    for (const auto& w : workloads) {
      matched += Subset(b["spec"]["selector"]["matchLabels"], w["spec"]["template"]["metadata"]["labels"]);
    }
    EXPECT_EQ(matched, 1) << b["metadata"]["name"];
  }
  EXPECT_EQ(OfKind("PodDisruptionBudget").size(), workloads.size());
}

TEST_F(ManifestsTest, PortsProbesFlagsAndImagesMatchTheBinaries) {
  // Images are the Dockerfile's targets, each built in its build stage.
  auto dockerfile = ReadFileToString(kDeploy + "/docker/Dockerfile");
  ASSERT_TRUE(dockerfile.ok());
  std::set<std::string> claims;
  for (const auto& pvc : OfKind("PersistentVolumeClaim")) claims.insert(pvc["metadata"]["name"].as<std::string>());
  for (const auto& w : Workloads()) {
    const auto name = w["metadata"]["name"].as<std::string>();
    const auto& pod = w["spec"]["template"];
    std::set<std::string> volumes;
    for (const auto& v : pod["spec"]["volumes"]) {
      volumes.insert(v["name"].as<std::string>());
      if (v["persistentVolumeClaim"]) {
        EXPECT_TRUE(claims.count(v["persistentVolumeClaim"]["claimName"].as<std::string>())) << name;
      }
    }
    for (const auto& t : w["spec"]["volumeClaimTemplates"]) volumes.insert(t["metadata"]["name"].as<std::string>());
    for (const auto& c : pod["spec"]["containers"]) {
      const auto image = c["image"].as<std::string>();
      EXPECT_THAT(*dockerfile, HasSubstr("AS " + image.substr(5) + "\n")) << name << ": image " << image;
      const std::string folder = image.substr(5);  // paft-worker -> worker
      EXPECT_THAT(*dockerfile, HasSubstr("--from=build /build/" + folder + "/" + image))
          << image << " is not copied from the build stage";
      const auto targets = dockerfile->find("--target ", dockerfile->find("cmake --build"));
      ASSERT_NE(targets, std::string::npos);
      EXPECT_THAT(dockerfile->substr(targets, dockerfile->find('\n', targets) - targets),
                  HasSubstr(" " + image))
          << image << " is not built";
      std::map<std::string, int> ports;
      for (const auto& p : c["ports"]) ports[p["name"].as<std::string>()] = p["containerPort"].as<int>();
      const std::string& help = Help(image);
      ASSERT_THAT(help, HasSubstr("--metrics_listen")) << image << " --helpfull: " << help;
      for (const auto& a : c["args"]) {
        const auto [flag, value] = Flag(a.as<std::string>());
        if (flag.empty()) continue;
        EXPECT_THAT(help, HasSubstr("--" + flag + " ")) << name << ": " << image << " has no --" << flag;
        if (flag == "listen") {
          EXPECT_EQ(PortOf(value), ports["grpc"]) << name;
        }
        if (flag == "metrics_listen") {
          EXPECT_EQ(PortOf(value), ports["metrics"]) << name;
          EXPECT_EQ(pod["metadata"]["annotations"]["prometheus.io/port"].as<std::string>(),
                    std::to_string(ports["metrics"]))
              << name;
        }
      }
      for (const char* probe : {"readinessProbe", "livenessProbe"}) {
        const auto& p = c[probe];
        ASSERT_TRUE(p) << name << " has no " << probe;
        if (p["grpc"]) {
          EXPECT_EQ(p["grpc"]["port"].as<int>(), ports["grpc"]) << name << " " << probe;
        } else {
          EXPECT_EQ(p["httpGet"]["path"].as<std::string>(), "/healthz") << name;
          EXPECT_EQ(p["httpGet"]["port"].as<std::string>(), "metrics") << name;
        }
      }
      for (const auto& m : c["volumeMounts"]) {
        EXPECT_TRUE(volumes.count(m["name"].as<std::string>())) << name << ": mount " << m["name"];
      }
    }
  }
}

TEST_F(ManifestsTest, MonitoringMatchesTheRulesFileAndTheServices) {
  const auto rules = OfKind("PrometheusRule");
  ASSERT_EQ(rules.size(), 1u);
  const YAML::Node file = YAML::LoadFile(kDeploy + "/prometheus/paft-alerts.yaml");
  YAML::Emitter a, b;
  a << rules[0]["spec"]["groups"];
  b << file["groups"];
  EXPECT_EQ(std::string(a.c_str()), std::string(b.c_str()))
      << "deploy/k8s/monitoring/prometheusrule.yaml differs from deploy/prometheus/paft-alerts.yaml";
  const auto monitors = OfKind("ServiceMonitor");
  ASSERT_EQ(monitors.size(), 1u);
  std::set<std::string> names;
  for (const auto& v : monitors[0]["spec"]["selector"]["matchExpressions"][0]["values"]) {
    names.insert(v.as<std::string>());
  }
  int services = 0;
  for (const auto& s : OfKind("Service")) {
    if (!names.count(s["metadata"]["labels"]["app.kubernetes.io/name"].as<std::string>())) continue;
    ++services;
    bool has_metrics = false;
    for (const auto& p : s["spec"]["ports"]) has_metrics |= p["name"].as<std::string>() == "metrics";
    EXPECT_TRUE(has_metrics) << s["metadata"]["name"];
  }
  EXPECT_EQ(services, 4);
}

TEST_F(ManifestsTest, KustomizationsReferExistingFilesAndOverlaysPatchExistingObjects) {
  try {
    CheckKustomizations();
  } catch (const YAML::Exception& e) {
    FAIL() << e.what();
  }
}

void ManifestsTest::CheckKustomizations() {
  std::set<std::string> names;
  for (const auto& o : objects_) names.insert(o["kind"].as<std::string>() + "/" + o["metadata"]["name"].as<std::string>());
  for (const char* dir : {"base", "monitoring", "overlays/cpu-demo", "overlays/gpu", "overlays/tls"}) {
    const std::string root = kDeploy + "/k8s/" + dir;
    const YAML::Node k = YAML::LoadFile(root + "/kustomization.yaml");
    for (const auto& r : k["resources"]) {
      EXPECT_TRUE(PathExists(root + "/" + r.as<std::string>())) << dir << ": " << r;
    }
    for (const auto& g : k["configMapGenerator"]) {
      for (const auto& f : g["files"]) EXPECT_TRUE(IsRegularFile(root + "/" + f.as<std::string>())) << f;
    }
    for (const auto& p : k["patches"]) {
      const std::string path = root + "/" + p["path"].as<std::string>();
      ASSERT_TRUE(IsRegularFile(path)) << path;
      for (const auto& doc : LoadDocs(path)) {
        const std::string key = doc["kind"].as<std::string>() + "/" + doc["metadata"]["name"].as<std::string>();
        EXPECT_TRUE(names.count(key)) << dir << " patches " << key << ", which the base lacks";
        const YAML::Node pod = doc["spec"]["template"];
        if (!pod) continue;  // not a workload (the volume claim)
        for (const auto& c : pod["spec"]["containers"]) {
          const std::string image = ImageOf(key, c["name"].as<std::string>());
          ASSERT_FALSE(image.empty()) << dir << " patches container " << c["name"] << " of " << key;
          for (const auto& a : c["args"]) {
            const auto [flag, value] = Flag(a.as<std::string>());
            if (!flag.empty()) {
              EXPECT_THAT(Help(image), HasSubstr("--" + flag + " ")) << image << " --" << flag;
            }
            if (flag == "metrics_listen" && image == "paft-worker") {
              EXPECT_EQ(PortOf(value), 9092);
            }
          }
        }
      }
    }
  }
}

// With kubectl 1.21 or newer (kustomize v4: `patches` by path) on the machine, the overlays
// render; without it this is skipped (the checks above cover the files). Debian 12's own
// kubernetes-client is kubectl 1.20 (kustomize v2), which cannot read `patches` (measured: "cannot
// unmarshal object into Go struct field Kustomization.patchesStrategicMerge"), so nothing in
// Debian or PyPI installs a kubectl that can; docs/toolchain.md.
TEST_F(ManifestsTest, OverlaysRenderWithKustomize) {
  std::string out;
  if (testing::RunCommand({"/bin/sh", "-c", "command -v kubectl"}, &out) != 0) {
    GTEST_SKIP() << "kubectl is not installed";
  }
  out.clear();
  ASSERT_EQ(testing::RunCommand({"/bin/sh", "-c", "kubectl version --client -o json 2>/dev/null"}, &out), 0)
      << out;
  const auto version = nlohmann::json::parse(out, nullptr, false);
  ASSERT_FALSE(version.is_discarded()) << out;
  const std::string major = version["clientVersion"].value("major", "");
  const int minor = std::atoi(version["clientVersion"].value("minor", "0").c_str());  // "32+"
  if (major != "1" || minor < 21) {
    GTEST_SKIP() << "kubectl " << major << "." << minor
                 << " is older than 1.21: its kustomize cannot read the overlays' `patches`";
  }
  for (const char* overlay : {"cpu-demo", "gpu"}) {
    out.clear();
    ASSERT_EQ(testing::RunCommand({"/bin/sh", "-c",
                                   "kubectl kustomize " + kDeploy + "/k8s/overlays/" + overlay + " 2>&1"},
                                  &out),
              0)
        << out;
    EXPECT_THAT(out, Not(HasSubstr("Warning"))) << overlay;
    EXPECT_THAT(out, HasSubstr("kind: StatefulSet"));
    if (std::string(overlay) == "gpu") {
      EXPECT_THAT(out, HasSubstr("nvidia.com/gpu: \"8\""));
      EXPECT_THAT(out, HasSubstr("kind: PrometheusRule"));
      EXPECT_THAT(out, HasSubstr("registry.example.com/paft/worker:"));  // the one worker image
    } else {
      EXPECT_THAT(out, Not(HasSubstr("nvidia.com/gpu")));
      EXPECT_THAT(out, HasSubstr("--devices=2"));
    }
  }
}

}  // namespace
}  // namespace paft
