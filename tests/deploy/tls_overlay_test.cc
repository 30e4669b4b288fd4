// The TLS overlay (deploy/k8s/overlays/tls), applied to the base the way kustomize's strategic
// merge does for these fields (containers and volumes merged by name; a container's args and a
// `$patch: replace` probe replaced): every server serves TLS from Secret files, every caller
// verifies it and sends a token, no probe needs plaintext gRPC, and the NetworkPolicies admit the
// components' own traffic only.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <map>
#include <set>

#include "absl/strings/match.h"
#include "common/file_util.h"
#include "tests/deploy/manifest_util.h"
#include "tests/testing/process.h"

namespace paft {
namespace {

using ::testing::HasSubstr;

std::string Key(const YAML::Node& o) {
  return o["kind"].as<std::string>() + "/" + o["metadata"]["name"].as<std::string>();
}

// Replaces or appends the entries of `patch` in the list `base`, matched by "name".
void MergeByName(YAML::Node base, const YAML::Node& patch) {
  for (const auto& p : patch) {
    bool merged = false;
    for (auto b : base) {
      if (b["name"].as<std::string>() != p["name"].as<std::string>()) continue;
      for (const auto& kv : p) {
        const std::string field = kv.first.as<std::string>();
        if (field == "volumeMounts") {
          MergeByName(b[field], kv.second);
        } else {
          YAML::Node value = YAML::Clone(kv.second);
          if (value.IsMap() && value["$patch"]) value.remove("$patch");
          b[field] = value;
        }
      }
      merged = true;
    }
    if (!merged) base.push_back(YAML::Clone(p));
  }
}

class TlsOverlayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* file : {"coordinator", "merger", "worker-sft", "worker-align"}) {
      for (auto& doc : LoadDocs(kDeploy + "/k8s/base/" + file + ".yaml")) {
        if (doc["spec"]["template"]) workloads_[Key(doc)] = YAML::Clone(doc);
      }
    }
    ASSERT_EQ(workloads_.size(), 4u);
    for (const auto& patch : LoadDocs(kDeploy + "/k8s/overlays/tls/tls.yaml")) {
      ASSERT_TRUE(workloads_.count(Key(patch))) << Key(patch);
      YAML::Node pod = workloads_[Key(patch)]["spec"]["template"]["spec"];
      MergeByName(pod["containers"], patch["spec"]["template"]["spec"]["containers"]);
      MergeByName(pod["volumes"], patch["spec"]["template"]["spec"]["volumes"]);
      ++patched_;
    }
    policies_ = LoadDocs(kDeploy + "/k8s/overlays/tls/networkpolicy.yaml");
  }

  // The flags a binary accepts (from its --helpfull).
  static std::string Help(const std::string& image) {
    const std::string binary = image == "paft-coordinator" ? PAFT_COORDINATOR
                               : image == "paft-merger"    ? PAFT_MERGER
                               : image == "paftctl"        ? PAFTCTL
                                                           : PAFT_WORKER;
    std::string out;
    testing::RunCommand({binary, "--helpfull"}, &out);
    return out;
  }

  // The Secret a file path of the pod is read from ("" when it is not on a Secret volume).
  static std::string SecretOf(const YAML::Node& pod, const YAML::Node& container,
                              const std::string& path) {
    for (const auto& m : container["volumeMounts"]) {
      const std::string dir = m["mountPath"].as<std::string>() + "/";
      if (!absl::StartsWith(path, dir)) continue;
      for (const auto& v : pod["volumes"]) {
        if (v["name"].as<std::string>() != m["name"].as<std::string>() || !v["secret"]) continue;
        const std::string file = path.substr(dir.size());
        if (v["secret"]["items"]) {  // only the listed keys are there
          bool listed = false;
          for (const auto& item : v["secret"]["items"]) listed |= item["path"].as<std::string>() == file;
          if (!listed) return "";
        }
        return v["secret"]["secretName"].as<std::string>();
      }
    }
    return "";
  }

  std::map<std::string, YAML::Node> workloads_;  // merged
  int patched_ = 0;
  std::vector<YAML::Node> policies_;
};

TEST_F(TlsOverlayTest, ServersServeTlsAndCallersVerifyItWithTokensFromSecrets) {
  EXPECT_EQ(patched_, 4);
  auto dockerfile = ReadFileToString(kDeploy + "/docker/Dockerfile");
  ASSERT_TRUE(dockerfile.ok());
  for (const auto& [key, workload] : workloads_) {
    const YAML::Node pod = workload["spec"]["template"]["spec"];
    for (const auto& c : pod["containers"]) {
      const std::string image = c["image"].as<std::string>();
      const std::string help = Help(image);
      std::map<std::string, std::string> flags;
      for (const auto& a : c["args"]) {
        const auto [flag, value] = Flag(a.as<std::string>());
        if (flag.empty()) continue;
        flags[flag] = value;
        EXPECT_THAT(help, HasSubstr("--" + flag + " ")) << key << ": " << image << " --" << flag;
        if (absl::StartsWith(value, "/etc/paft/")) {
          EXPECT_FALSE(SecretOf(pod, c, value).empty()) << key << ": --" << flag << "=" << value
                                                        << " is not a file of a mounted Secret";
        }
      }
      EXPECT_FALSE(flags.count("plaintext")) << key;
      if (image == "paft-worker") {
        EXPECT_TRUE(flags.count("tls_ca") && flags.count("token_file")) << key;
      } else {
        for (const char* needed : {"tls_cert", "tls_key", "auth_tokens"}) {
          EXPECT_TRUE(flags.count(needed)) << key << " lacks --" << needed;
        }
      }
      if (image == "paft-coordinator") {
        EXPECT_TRUE(flags.count("merger_tls_ca") && flags.count("merger_token_file")) << key;
      }
      // Kubernetes' gRPC probes speak plaintext only: TCP, HTTP (the metrics port), or an exec
      // of paftctl's health check over TLS against the container's own port.
      for (const char* probe : {"readinessProbe", "livenessProbe"}) {
        const YAML::Node p = c[probe];
        ASSERT_TRUE(p) << key << " " << probe;
        EXPECT_FALSE(p["grpc"]) << key << " " << probe << " is a plaintext gRPC probe";
        if (!p["exec"]) continue;
        const YAML::Node command = p["exec"]["command"];
        EXPECT_EQ(command[0].as<std::string>(), "/usr/local/bin/paftctl") << key;
        EXPECT_THAT(*dockerfile, HasSubstr("/build/cli/paftctl"));
        int target_port = -1;
        bool verifies = false;
        for (size_t i = 1; i < command.size(); ++i) {
          const auto [flag, value] = Flag(command[i].as<std::string>());
          if (flag.empty()) continue;
          EXPECT_THAT(Help("paftctl"), HasSubstr("--" + flag + " ")) << "paftctl --" << flag;
          if (flag == "coordinator") target_port = PortOf(value);
          if (flag == "tls_ca") verifies = !SecretOf(pod, c, value).empty();
        }
        EXPECT_EQ(target_port, PortOf(flags["listen"])) << key << " " << probe;
        EXPECT_TRUE(verifies) << key << " " << probe << " does not verify with the Secret's CA";
      }
    }
  }
}

TEST_F(TlsOverlayTest, NetworkPoliciesAdmitOnlyTheComponentsOwnTraffic) {
  ASSERT_GE(policies_.size(), 5u);
  // Which workloads a selector picks, and the port names of their containers.
  auto selected = [&](const YAML::Node& selector) {
    std::set<std::string> out;
    for (const auto& [key, w] : workloads_) {
      const YAML::Node labels = w["spec"]["template"]["metadata"]["labels"];
      if (!selector["matchLabels"] || Subset(selector["matchLabels"], labels)) out.insert(key);
    }
    return out;
  };
  auto ports_of = [&](const std::set<std::string>& keys) {
    std::set<std::string> names;
    for (const auto& key : keys) {
      for (const auto& c : workloads_[key]["spec"]["template"]["spec"]["containers"]) {
        for (const auto& p : c["ports"]) names.insert(p["name"].as<std::string>());
      }
    }
    return names;
  };
  bool default_deny = false;
  std::map<std::string, std::set<std::string>> grpc_from;  // workload -> workloads admitted
  std::set<std::string> covered;
  for (const auto& policy : policies_) {
    const std::string name = policy["metadata"]["name"].as<std::string>();
    const auto targets = selected(policy["spec"]["podSelector"]);
    ASSERT_FALSE(targets.empty()) << name << " selects no workload";
    if (!policy["spec"]["ingress"]) {  // deny-all: selects every pod, admits nothing
      default_deny = targets.size() == workloads_.size();
      continue;
    }
    covered.insert(targets.begin(), targets.end());
    for (const auto& rule : policy["spec"]["ingress"]) {
      std::set<std::string> ports;
      for (const auto& p : rule["ports"]) ports.insert(p["port"].as<std::string>());
      for (const auto& port : ports) {
        EXPECT_TRUE(ports_of(targets).count(port)) << name << ": port " << port << " is no container port";
      }
      for (const auto& from : rule["from"]) {
        if (from["namespaceSelector"]) {  // only monitoring, only metrics
          EXPECT_EQ(ports, std::set<std::string>{"metrics"}) << name;
          continue;
        }
        ASSERT_TRUE(from["podSelector"]) << name;
        const auto sources = selected(from["podSelector"]);
        const bool client = Subset(from["podSelector"]["matchLabels"],
                                   YAML::Load("{paft.io/client: \"true\"}"));
        EXPECT_TRUE(client || !sources.empty()) << name << " admits pods of no component";
        if (ports.empty() || ports.count("grpc")) {
          for (const auto& t : targets) grpc_from[t].insert(sources.begin(), sources.end());
        }
      }
    }
  }
  EXPECT_TRUE(default_deny) << "no policy denies what the others do not admit";
  EXPECT_EQ(covered.size(), workloads_.size());
  EXPECT_EQ(grpc_from["Deployment/paft-merger"],
            std::set<std::string>{"StatefulSet/paft-coordinator"});
  EXPECT_EQ(grpc_from["StatefulSet/paft-coordinator"],
            (std::set<std::string>{"StatefulSet/paft-worker-sft", "StatefulSet/paft-worker-align"}));
  // A pool's ranks reach each other (rendezvous and collectives), not the other pool's.
  EXPECT_EQ(grpc_from["StatefulSet/paft-worker-sft"],
            std::set<std::string>{"StatefulSet/paft-worker-sft"});
  EXPECT_EQ(grpc_from["StatefulSet/paft-worker-align"],
            std::set<std::string>{"StatefulSet/paft-worker-align"});
}

}  // namespace
}  // namespace paft
