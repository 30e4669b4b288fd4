// Writes the demo's datasets (committed under examples/data/; rerun this to regenerate them).
// Every split is disjoint from the others and from the pre-training text (docs/demo.md):
//
//   pretrain.jsonl   {"text"}: runs of six sequences (number words one..twenty, letters,
//                    weekdays, months, planets, rainbow colours: "four five six seven.") and
//                    greeting exchanges
//                    ("User: hi, i am NAME. Assistant: ...", polite and rude equally often) with
//                    names used nowhere else. No "Question: ... Answer:" text at all.
//   sft_{train,val,test}.jsonl
//                    {"prompt", "completion"}: "Question: what comes after five? Answer:" ->
//                    " six." for every fact (item -> next item) of the six sequences, in five
//                    phrasings. Split by phrasing: training has two, validation a third, test
//                    the last two, so no test question is ever trained on; test accuracy says
//                    whether the SFT behaviour holds for questions worded anew (what an
//                    alignment tax takes away), not whether unseen facts can be recalled (a
//                    model this small does not learn that from SFT: measured, docs/demo.md).
//   pref_{train,val,test}.jsonl
//                    {"prompt", "chosen", "rejected"} in the same "Question: ... Answer:"
//                    format: greet the user by name politely (chosen) rather than curtly, with
//                    one word (rejected). Split by name; names are made of two syllables.
//
// Both tasks answer right after "Answer:", so a preference for opening with a greeting can bleed
// into the SFT answers: an alignment tax is possible by construction.
//
//   paft-make-demo-data --out=DIR [--seed=1]
#include <algorithm>
#include <random>
#include <set>
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
ABSL_FLAG(uint64_t, seed, 1, "Random seed of the splits and the pre-training text");

namespace {

using Sequence = std::vector<std::string>;

std::vector<Sequence> Sequences() {
  Sequence letters;
  for (char c = 'a'; c <= 'z'; ++c) letters.emplace_back(1, c);
  return {{"one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
           "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
           "eighteen", "nineteen", "twenty"},
          letters,
          {"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"},
          {"january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december"},
          {"mercury", "venus", "earth", "mars", "jupiter", "saturn", "uranus", "neptune"},
          {"red", "orange", "yellow", "green", "blue", "indigo", "violet"}};
}

const std::vector<std::string> kPhrasings = {"what comes after X?", "what follows X?",
                                             "which one is next after X?",
                                             "what is right after X?"};
const std::vector<std::string> kGreetings = {"hi, i am NAME.", "hello, my name is NAME.",
                                             "good morning, i am NAME."};
const std::vector<std::string> kPolite = {"Hello NAME, nice to meet you!",
                                          "Hi NAME, welcome! How can I help?",
                                          "Good to see you, NAME. What can I do for you?"};
// Curt replies: one word and a full stop, the very shape of an SFT answer (" six."). A
// preference against them is a preference against that shape: where an alignment tax can come
// from.
const std::vector<std::string> kRude = {"NAME.", "no.", "bye."};

std::string Fill(std::string text, const std::string& key, const std::string& value) {
  for (size_t pos; (pos = text.find(key)) != std::string::npos;) text.replace(pos, key.size(), value);
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
  auto shuffle = [&](auto& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[uniform(i)]);
  };
  const std::vector<Sequence> sequences = Sequences();

  // Names of two consonant-vowel syllables, shuffled, then cut into disjoint pools.
  std::vector<std::string> names;
  for (char c1 : std::string("bdfgklmnprstvz")) {
    for (char v1 : std::string("aeiou")) {
      for (char c2 : std::string("bdfgklmnprstvz")) {
        for (char v2 : std::string("aeiou")) names.push_back({c1, v1, c2, v2});
      }
    }
  }
  shuffle(names);
  // Preference names first; every other name is for pre-training.
  const size_t kTrainNames = 150, kValNames = 60, kTestNames = 120;
  const size_t kPretrainNames = kTrainNames + kValNames + kTestNames;
  auto pool = [&](size_t from, size_t count) {
    return std::vector<std::string>(names.begin() + from, names.begin() + from + count);
  };
  const auto pretrain_names = pool(kPretrainNames, names.size() - kPretrainNames);

  // Pre-training text: runs of consecutive items, and greeting exchanges.
  std::vector<nlohmann::json> pretrain;
  for (int i = 0; i < 1600; ++i) {
    const Sequence& seq = sequences[i % sequences.size()];
    const size_t length = 3 + uniform(std::min<size_t>(6, seq.size() - 3));
    const size_t start = uniform(seq.size() - length + 1);
    std::vector<std::string> run(seq.begin() + start, seq.begin() + start + length);
    pretrain.push_back({{"text", absl::StrCat(absl::StrJoin(run, " "), ".")}});
    {  // the facts as terse Q/A notes: knowledge, not the SFT format
      const Sequence& q = sequences[uniform(sequences.size())];
      const size_t k = uniform(q.size() - 1);
      pretrain.push_back({{"text", absl::StrCat("Q: what comes after ", q[k], "? A: ", q[k + 1])}});
    }
    {
      const std::string& name = pretrain_names[uniform(pretrain_names.size())];
      const auto& replies = uniform(2) == 0 ? kPolite : kRude;
      pretrain.push_back({{"text", absl::StrCat("User: ", Fill(kGreetings[uniform(3)], "NAME", name),
                                                " Assistant: ",
                                                Fill(replies[uniform(3)], "NAME", name))}});
    }
  }

  // SFT facts (item -> next item), shuffled and split 40 / 9 / 25 facts, in four phrasings.
  std::vector<std::pair<std::string, std::string>> facts;
  for (const Sequence& seq : sequences) {
    for (size_t i = 0; i + 1 < seq.size(); ++i) facts.emplace_back(seq[i], seq[i + 1]);
  }
  shuffle(facts);
  const size_t kTrainFacts = 40, kValFacts = 9;
  std::vector<nlohmann::json> sft[3];
  for (size_t f = 0; f < facts.size(); ++f) {
    const int split = f < kTrainFacts ? 0 : (f < kTrainFacts + kValFacts ? 1 : 2);
    for (const std::string& phrasing : kPhrasings) {
      sft[split].push_back(
          {{"prompt", absl::StrCat("Question: ", Fill(phrasing, "X", facts[f].first), " Answer:")},
           {"completion", absl::StrCat(" ", facts[f].second, ".")}});
    }
  }

  // Preference pairs: one per name, greeting and replies cycled.
  std::vector<nlohmann::json> pref[3];
  const size_t from[3] = {0, kTrainNames, kTrainNames + kValNames};
  const size_t count[3] = {kTrainNames, kValNames, kTestNames};
  for (int split = 0; split < 3; ++split) {
    for (size_t k = 0; k < count[split]; ++k) {
      const std::string& name = names[from[split] + k];
      pref[split].push_back(
          {{"prompt", absl::StrCat("Question: ", Fill(kGreetings[k % 3], "NAME", name), " Answer:")},
           {"chosen", " " + Fill(kPolite[(k / 3) % 3], "NAME", name)},
           {"rejected", " " + Fill(kRude[(k + k / 3) % 3], "NAME", name)}});
    }
  }

  const char* kSplits[3] = {"train", "val", "test"};
  std::vector<std::pair<std::string, const std::vector<nlohmann::json>*>> files = {
      {"pretrain.jsonl", &pretrain}};
  for (int split = 0; split < 3; ++split) {
    files.push_back({absl::StrCat("sft_", kSplits[split], ".jsonl"), &sft[split]});
    files.push_back({absl::StrCat("pref_", kSplits[split], ".jsonl"), &pref[split]});
  }
  for (const auto& [name, records] : files) {
    if (absl::Status s = paft::WriteFileAtomic(paft::JoinPath(out, name), Lines(*records));
        !s.ok()) {
      PAFT_LOG(ERROR) << s;
      return 1;
    }
  }
  PAFT_LOG(INFO) << "wrote " << pretrain.size() << " pre-training texts, SFT " << sft[0].size()
                 << "/" << sft[1].size() << "/" << sft[2].size() << " and preference "
                 << pref[0].size() << "/" << pref[1].size() << "/" << pref[2].size()
                 << " (train/val/test) examples to " << out;
  return 0;
}
