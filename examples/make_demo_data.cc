// Writes the demo's datasets (committed under examples/data/; rerun this to regenerate them):
//
//   pretrain.jsonl          {"text"}: counting ("four five six seven."), the alphabet ("c d e f."),
//                           and greeting exchanges, polite and rude equally often.
//   sft.jsonl / sft_eval.jsonl
//                           {"prompt", "completion"}: "Question: what comes after five? Answer:"
//                           -> " six." The skill SFT teaches is the question format; the facts
//                           are in the pre-training text. The eval split holds out every fifth
//                           item, so held-out accuracy measures the skill, not memorisation.
//   preference.jsonl / preference_eval.jsonl
//                           {"prompt", "chosen", "rejected"}: the assistant greets the user by
//                           name politely (chosen) or brushes them off (rejected). The eval split
//                           holds out names the training split never uses.
//
//   paft-make-demo-data --out=DIR [--seed=1]
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "common/logging.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, out, "", "Output folder");
ABSL_FLAG(uint64_t, seed, 1, "Random seed of the pre-training text");

namespace {

const std::vector<std::string> kNumbers = {
    "one",    "two",     "three",    "four",     "five",    "six",     "seven",
    "eight",  "nine",    "ten",      "eleven",   "twelve",  "thirteen", "fourteen",
    "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"};
const std::vector<std::string> kNames = {
    "anna", "ben",  "carl", "dora", "emil", "fred", "gina", "hugo", "ida",  "jack",
    "kate", "leo",  "mia",  "nick", "olga", "paul", "rosa", "sam",  "tina", "uwe",
    "vera", "walt", "xena", "yves", "zoe",  "alma", "boris", "cleo", "dean", "eva"};
const std::vector<std::string> kPolite = {"Hello NAME, nice to meet you!",
                                          "Hi NAME, welcome! How can I help?",
                                          "Good to see you, NAME. What can I do for you?"};
const std::vector<std::string> kRude = {"Go away.", "Not now, NAME.", "I do not care."};
const std::vector<std::string> kGreetings = {"hi, i am NAME.", "hello, my name is NAME.",
                                             "good morning, i am NAME."};

std::vector<std::string> Letters() {
  std::vector<std::string> out;
  for (char c = 'a'; c <= 'z'; ++c) out.emplace_back(1, c);
  return out;
}

std::string WithName(std::string text, const std::string& name) {
  for (size_t pos; (pos = text.find("NAME")) != std::string::npos;) text.replace(pos, 4, name);
  return text;
}

std::string Lines(const std::vector<nlohmann::json>& records) {
  std::string out;
  for (const auto& r : records) out += r.dump() + "\n";
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) {
    PAFT_LOG(ERROR) << "--out is required";
    return 2;
  }
  if (absl::Status s = paft::MakeDirs(out); !s.ok()) {
    PAFT_LOG(ERROR) << s;
    return 1;
  }
  std::mt19937_64 rng(absl::GetFlag(FLAGS_seed));
  auto uniform = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  const std::vector<std::string> letters = Letters();

  // Pre-training text: runs of consecutive numbers or letters, and greeting exchanges.
  std::vector<nlohmann::json> pretrain;
  for (int i = 0; i < 1200; ++i) {
    const auto& seq = i % 2 == 0 ? kNumbers : letters;
    const size_t length = 3 + uniform(6);
    const size_t start = uniform(seq.size() - length + 1);
    std::vector<std::string> run(seq.begin() + start, seq.begin() + start + length);
    pretrain.push_back({{"text", absl::StrCat(absl::StrJoin(run, " "), ".")}});
    if (i % 3 == 0) {
      const std::string& name = kNames[uniform(kNames.size())];
      const auto& replies = uniform(2) == 0 ? kPolite : kRude;
      pretrain.push_back({{"text", absl::StrCat("User: ", WithName(kGreetings[uniform(3)], name),
                                                " Assistant: ",
                                                WithName(replies[uniform(3)], name))}});
    }
  }

  // SFT: successor questions; every fifth item is held out.
  std::vector<nlohmann::json> sft, sft_eval;
  int item = 0;
  for (const auto* seq : {&kNumbers, &letters}) {
    for (size_t i = 0; i + 1 < seq->size(); ++i, ++item) {
      nlohmann::json record = {
          {"prompt", absl::StrCat("Question: what comes after ", (*seq)[i], "? Answer:")},
          {"completion", absl::StrCat(" ", (*seq)[i + 1], ".")}};
      (item % 5 == 2 ? sft_eval : sft).push_back(record);
    }
  }

  // Preference: greet politely; names from index 22 on are held out.
  std::vector<nlohmann::json> preference, preference_eval;
  for (size_t n = 0; n < kNames.size(); ++n) {
    for (size_t g = 0; g < kGreetings.size(); ++g) {
      nlohmann::json record = {
          {"prompt", absl::StrCat("User: ", WithName(kGreetings[g], kNames[n]), " Assistant:")},
          {"chosen", " " + WithName(kPolite[(n + g) % kPolite.size()], kNames[n])},
          {"rejected", " " + WithName(kRude[(n + 2 * g) % kRude.size()], kNames[n])}};
      (n >= 22 ? preference_eval : preference).push_back(record);
    }
  }

  for (const auto& [name, records] :
       std::vector<std::pair<std::string, const std::vector<nlohmann::json>*>>{
           {"pretrain.jsonl", &pretrain},
           {"sft.jsonl", &sft},
           {"sft_eval.jsonl", &sft_eval},
           {"preference.jsonl", &preference},
           {"preference_eval.jsonl", &preference_eval}}) {
    if (absl::Status s = paft::WriteFileAtomic(paft::JoinPath(out, name), Lines(*records));
        !s.ok()) {
      PAFT_LOG(ERROR) << s;
      return 1;
    }
  }
  PAFT_LOG(INFO) << "wrote " << pretrain.size() << " pre-training texts, " << sft.size() << "+"
                 << sft_eval.size() << " SFT and " << preference.size() << "+"
                 << preference_eval.size() << " preference examples to " << out;
  return 0;
}
