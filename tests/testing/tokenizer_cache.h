// Where tests/tokenizer/golden/fetch_tokenizers.sh keeps the real tokenizer files:
// $PAFT_TOKENIZER_CACHE, else ~/.cache/paft/tokenizers (the script's default too).
#ifndef PAFT_TESTS_TESTING_TOKENIZER_CACHE_H_
#define PAFT_TESTS_TESTING_TOKENIZER_CACHE_H_

#include <cstdlib>
#include <string>

#include "common/file_util.h"

namespace paft::testing {

inline std::string TokenizerCacheDir() {
  if (const char* dir = std::getenv("PAFT_TOKENIZER_CACHE")) return dir;
  const char* home = std::getenv("HOME");
  return JoinPath(home != nullptr ? home : "/tmp", ".cache/paft/tokenizers");
}

}  // namespace paft::testing

#endif  // PAFT_TESTS_TESTING_TOKENIZER_CACHE_H_
