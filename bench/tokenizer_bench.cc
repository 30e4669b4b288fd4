// Tokens per second of the tokenizer.json pipeline (tokenizer/hf) on one core: encodes every line
// of a corpus file (one text per line) REPEATS times, cold (no warm-up: the piece cache fills as
// it would over a dataset), and prints one JSON line: {"tokenizer", "bytes", "tokens",
// "seconds", "tokens_per_s"}.
//   paft-tokenizer-bench --tokenizer=DIR --corpus=FILE [--repeats=3]
#include <chrono>
#include <fstream>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "common/file_util.h"
#include "nlohmann/json.hpp"
#include "tokenizer/hf/tokenizer.h"

ABSL_FLAG(std::string, tokenizer, "", "folder with tokenizer.json");
ABSL_FLAG(std::string, corpus, "", "text file, one text per line");
ABSL_FLAG(int, repeats, 3, "timed passes over the corpus");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string dir = absl::GetFlag(FLAGS_tokenizer);
  auto tokenizer = paft::tokenizer::hf::HfTokenizer::Load(
      paft::JoinPath(dir, "tokenizer.json"), paft::JoinPath(dir, "tokenizer_config.json"));
  if (!tokenizer.ok()) {
    std::cerr << tokenizer.status() << "\n";
    return 2;
  }
  std::ifstream in(absl::GetFlag(FLAGS_corpus));
  std::vector<std::string> lines;
  int64_t bytes = 0;
  for (std::string line; std::getline(in, line);) {
    bytes += static_cast<int64_t>(line.size());
    lines.push_back(std::move(line));
  }
  auto pass = [&] {
    int64_t tokens = 0;
    for (const std::string& line : lines) tokens += static_cast<int64_t>((*tokenizer)->Encode(line)->size());
    return tokens;
  };
  const int repeats = absl::GetFlag(FLAGS_repeats);
  const auto start = std::chrono::steady_clock::now();
  int64_t tokens = 0;
  for (int r = 0; r < repeats; ++r) tokens += pass();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << nlohmann::json{{"impl", "paft"},
                              {"tokenizer", dir},
                              {"bytes", bytes * repeats},
                              {"tokens", tokens},
                              {"seconds", seconds},
                              {"tokens_per_s", tokens / seconds}}
                   .dump()
            << std::endl;
  return 0;
}
