// A fresh temporary folder per test, removed afterwards.
#ifndef PAFT_TESTS_TESTING_TEMP_DIR_H_
#define PAFT_TESTS_TESTING_TEMP_DIR_H_

#include <stdlib.h>

#include <string>

#include "common/file_util.h"

namespace paft::testing {

class TempDir {
 public:
  TempDir() {
    std::string pattern = "/tmp/paft-test-XXXXXX";
    path_ = ::mkdtemp(pattern.data()) ? pattern : "";
  }
  ~TempDir() { (void)RemoveAll(path_); }
  const std::string& path() const { return path_; }
  std::string Join(const std::string& name) const { return JoinPath(path_, name); }

 private:
  std::string path_;
};

}  // namespace paft::testing

#endif  // PAFT_TESTS_TESTING_TEMP_DIR_H_
