// Reading Kubernetes manifests in the deploy tests: YAML documents, label selectors, flags.
#ifndef PAFT_TESTS_DEPLOY_MANIFEST_UTIL_H_
#define PAFT_TESTS_DEPLOY_MANIFEST_UTIL_H_

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"

namespace paft {

const std::string kDeploy = std::string(PAFT_SOURCE_DIR) + "/deploy";

inline std::vector<YAML::Node> LoadDocs(const std::string& path) {
  std::vector<YAML::Node> docs;
  for (const auto& doc : YAML::LoadAllFromFile(path)) {
    if (doc && doc.IsMap()) docs.push_back(doc);
  }
  return docs;
}

// Whether every label of `small` is in `big` with the same value (a selector matches labels).
inline bool Subset(const YAML::Node& small, const YAML::Node& big) {
  if (!small || !small.IsMap()) return false;
  for (const auto& kv : small) {
    const auto key = kv.first.as<std::string>();
    if (!big[key] || big[key].as<std::string>() != kv.second.as<std::string>()) return false;
  }
  return true;
}

// "--name=value" -> (name, value); "serve" -> ("", "serve").
inline std::pair<std::string, std::string> Flag(const std::string& arg) {
  if (arg.rfind("--", 0) != 0) return {"", arg};
  const auto eq = arg.find('=');
  return {arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2),
          eq == std::string::npos ? "" : arg.substr(eq + 1)};
}

inline int PortOf(const std::string& address) {
  int port = -1;
  EXPECT_TRUE(absl::SimpleAtoi(address.substr(address.rfind(':') + 1), &port)) << address;
  return port;
}

}  // namespace paft

#endif  // PAFT_TESTS_DEPLOY_MANIFEST_UTIL_H_
